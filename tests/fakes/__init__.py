"""Test-only stand-ins for external services."""
