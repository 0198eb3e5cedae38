"""Writing data shards: small ``.js`` files that pass one JSON value to ``FD.put``.

A page opened from ``file://`` cannot ``fetch()`` its neighbours, but it can load scripts;
each shard is therefore a script. The JSON is produced by orjson, never by string
formatting, so untrusted text cannot break out of its string literal; the page renders it
as text only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

# Search shards are keyed by the first two characters of a token; anything outside a-z0-9
# is spelled as its code point so that file names stay portable. The JS twin is keyOf().
_PLAIN = set("abcdefghijklmnopqrstuvwxyz0123456789")


def token_key(token: str) -> str:
    """The search shard a token lives in (same rule as ``keyOf`` in app.js)."""
    return "".join(c if c in _PLAIN else f"u{ord(c):x}" for c in token[:2])


class ShardWriter:
    """Writes shards under one data folder and counts what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0
        self.bytes = 0
        root.mkdir(parents=True, exist_ok=True)

    def write(self, rel: str, key: str, value: Any) -> int:
        """Write ``data/<rel>`` announcing ``value`` under ``key``; returns its size."""
        body = b"FD.put(" + orjson.dumps(key) + b"," + orjson.dumps(
            value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_default) + b");\n"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        self.files += 1
        self.bytes += len(body)
        return len(body)


def _default(obj: Any) -> Any:
    if isinstance(obj, float | int | str):
        return obj
    return str(obj)
