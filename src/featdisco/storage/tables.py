"""Parquet artefacts written atomically: a crash leaves the previous file or none."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class TableWriter:
    """Record batches streamed into a Parquet file under a temporary name; the file takes
    its real name only when :meth:`commit` is called, so a crash or an error mid-stage never
    leaves a partial artefact where a finished one is expected."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self._tmp, schema,
                                                                 compression="zstd")

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        assert self._writer is not None, "written after commit or abort"
        if isinstance(batch, pa.Table):
            self._writer.write_table(batch)
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def commit(self) -> Path:
        assert self._writer is not None, "committed twice or after abort"
        self._writer.close()
        self._writer = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (a no-op after :meth:`commit`)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
