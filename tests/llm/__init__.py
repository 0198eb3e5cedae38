"""Reliability tests for the LLM layer, run against the fake OpenAI-compatible server."""
