"""Errors a user can act on.

Anything derived from :class:`FeatdiscoError` is printed by the CLI as one line and exits
with status 2, never as a traceback.
"""

from __future__ import annotations


class FeatdiscoError(Exception):
    """A problem with the user's input or configuration, stated so they can fix it."""


class BadRecord(Exception):
    """One record cannot be read. Raised by parsers, which do not know where they are.

    ``reason`` is a short stable code (``malformed-json``, ``wrong-type``, ...) used to
    count skipped records by reason under ``--skip-bad``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InputError(FeatdiscoError):
    """A bad record or file, located by file and line / row / record."""

    def __init__(self, path: str, where: str, reason: str, message: str) -> None:
        self.path = path
        self.where = where
        self.reason = reason
        self.message = message
        loc = f"{path}, {where}" if where else path
        super().__init__(f"{loc}: {message} [{reason}]")
