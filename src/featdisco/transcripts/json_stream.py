"""JSON documents streamed record by record: a top-level array, a wrapper object holding
one (``{"data": [...]}``), or an Inspect log's ``samples``.

A 200 MB array read whole peaked at about 1.5 GB; streamed with ``ijson`` (its C
backend builds each record) memory stays near that of one record. A document cut off or
broken part-way keeps every complete record before the break, and says about how many
records the rest held when the bytes left make that estimable.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import ijson
import orjson

from featdisco.errors import BadRecord

LIST_KEYS = ("data", "records", "rows", "examples", "items", "transcripts", "samples")
_READ_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


class _Skip:
    """A binary reader that skips a leading UTF-8 byte-order mark and, for gzip, reads in
    small steps so the bytes before a cut-off reach the parser before the error does."""

    def __init__(self, f: IO[bytes], skip: int) -> None:
        self.f = f
        self.step = 4096 if isinstance(f, gzip.GzipFile) else 0
        self.error: BaseException | None = None
        if skip:
            f.read(skip)

    def read(self, n: int = -1) -> bytes:
        if self.error is not None:
            raise self.error
        if not self.step or n < 0:
            return self.f.read(n)
        out: list[bytes] = []
        got = 0
        while got < n:
            try:
                chunk = self.f.read(min(self.step, n - got))
            except _READ_ERRORS as e:
                self.error = e
                break
            if not chunk:
                break
            out.append(chunk)
            got += len(chunk)
        if not out and self.error is not None:
            raise self.error
        return b"".join(out)


def position(f: IO[bytes]) -> int:
    """Bytes of the file on disk consumed so far (the compressed bytes for gzip)."""
    inner = getattr(f, "fileobj", None) or f
    try:
        return int(inner.tell())
    except (OSError, ValueError):
        return 0


def lost_estimate(size: int, consumed: int, records: int) -> int | None:
    """About how many records the unread bytes held (with the one that broke), from the
    bytes per record so far; ``None`` when there is nothing to estimate from."""
    if records <= 0 or consumed <= 0:
        return None
    per_record = consumed / records
    left = size - consumed
    if left < per_record:  # the file ends at the break: what followed is not there to count
        return None
    return round(left / per_record) + 1


def json_error(e: Exception) -> BadRecord:
    raw = e.args[0] if e.args else str(e)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if "UTF8" in first or "UTF-8" in first:
        return BadRecord("invalid-utf8", "invalid UTF-8 (re-save the file as UTF-8)")
    if "premature EOF" in first:
        return BadRecord("truncated", "the file ends part-way through a record (cut off?)")
    return BadRecord("malformed-json", f"malformed JSON ({first})")


class MoreValues(Exception):
    """The document is followed by more JSON values: it is JSON Lines under a .json name."""


def find_list_key(open_: Callable[[], IO[bytes]], skip: int) -> tuple[str | None, dict[str, object]]:
    """Scan a top-level object up to the first of :data:`LIST_KEYS` holding objects.

    Returns that key (or ``None``) and the top-level fields before it (all of them when
    there is no such key: the object is then one record). Raises :class:`MoreValues` when
    more values follow the object, and what ijson raises.
    """
    head: dict[str, object] = {}
    with open_() as f:
        events = ijson.parse(_Skip(f, skip), use_float=True)
        key: str | None = None
        builder: Any = None
        depth = 0
        pending_list = False
        for prefix, event, value in events:
            if pending_list:
                pending_list = False
                if event == "start_map":
                    return key, head
                builder = ijson.ObjectBuilder()
                builder.event("start_array", None)
                depth = 1
            if builder is None:
                if prefix == "" and event == "start_map":
                    continue
                if prefix == "" and event == "map_key":
                    key = value
                    continue
                if prefix == "" and event == "end_map":
                    try:
                        next(events, None)
                    except ijson.JSONError as e:
                        if "trailing garbage" in str(e):
                            raise MoreValues from None  # one object per line: JSON Lines
                        raise
                    return None, head
                if event == "start_array" and key in LIST_KEYS and prefix == key:
                    pending_list = True
                    continue
                builder = ijson.ObjectBuilder()
                depth = 0
            builder.event(event, value)
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
            if depth == 0:
                assert key is not None
                head[key] = builder.value
                builder = None
    return None, head


def stream_items(open_: Callable[[], IO[bytes]], skip: int, prefix: str, size: int,
                 on_item: Callable[[int, Any], Any], on_error: Callable[[int, BadRecord, int | None], Any]
                 ) -> Iterator[Any]:
    """Yield ``on_item(i, item)`` for the items at ``prefix``; a break ends with
    ``on_error(i, error, estimated records lost)``."""
    n = 0
    with open_() as f:
        try:
            for item in ijson.items(_Skip(f, skip), prefix, use_float=True):
                n += 1
                yield on_item(n, item)
        except ijson.JSONError as e:
            yield on_error(n + 1, json_error(e), lost_estimate(size, position(f), n))
        except _READ_ERRORS as e:
            err = BadRecord("truncated-gzip", f"gzip stream is truncated or corrupt ({e})")
            yield on_error(n + 1, err, lost_estimate(size, position(f), n))


def first_line_object(line: bytes) -> dict[str, object] | None:
    """The first line as a complete JSON object, if it is one (a JSON Lines file)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
