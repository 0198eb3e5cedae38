"""Float32 ``.npy`` matrices written atomically and read a window at a time.

A run's matrix is never held whole: :class:`NpyWriter` puts each batch's rows in place as
they are embedded, and :func:`read_rows` reads only the rows asked for.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from featdisco.embedders.base import EmbedderError


class NpyWriter:
    """Rows written in place into a float32 ``.npy`` file, in any order, with ``pwrite``.

    Why not a writable memmap: every page of a memmap the process has written stays in its
    resident set until the kernel writes it back, so a 4 GB matrix shows up as 4 GB of
    RSS; pages written with ``pwrite`` belong to the OS page cache, not the process. The
    file is built under a temporary name and renamed by :meth:`commit` once every row has
    been written, so a crash leaves the old file or none, never a half-filled matrix.
    """

    def __init__(self, path: str | os.PathLike[str], n: int, dim: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.shape = (n, dim)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
        self._offset = header.tell()
        self._row_bytes = 4 * dim
        self._done = np.zeros(n, dtype=bool)
        self._fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, header.getvalue())
        os.ftruncate(self._fd, self._offset + n * self._row_bytes)

    def write(self, rows: NDArray[np.int64], x: NDArray[np.float32]) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype="<f4")
        if x.shape != (len(rows), self.shape[1]):
            raise ValueError(f"{len(rows)} rows but an array of shape {x.shape}")
        order = np.argsort(rows, kind="stable")
        rows, x = rows[order], x[order]
        # one pwrite per run of consecutive rows
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
            if a < b:
                os.pwrite(self._fd, x[a:b].tobytes(), self._offset + int(rows[a]) * self._row_bytes)
        self._done[rows] = True

    def commit(self) -> Path:
        """Check every row was written, sync, and move the file into place."""
        missing = int((~self._done).sum())
        if missing:
            self.abort()
            raise EmbedderError(f"{missing} of {self.shape[0]} rows of {self.path} were never "
                                "embedded")
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp.unlink(missing_ok=True)


def save_matrix(path: str | os.PathLike[str], x: np.ndarray) -> Path:
    """Write ``x`` as a float32 ``.npy``, atomically: a crash leaves the old file or none."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(x, dtype=np.float32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def read_rows(path: str | os.PathLike[str], rows: NDArray[np.int64],
              chunk_rows: int = 32_768) -> NDArray[np.float32]:
    """Rows ``rows`` of a float32 ``.npy`` matrix, in that order, read with plain file reads.

    Why not fancy-indexing a memmap: every page a memmap touches stays in the process's
    resident set (a 4 GB matrix read once shows as 4 GB of RSS); pages read with ``pread``
    belong to the OS page cache. The file is read in sequential windows, each only as far
    as the rows it needs, so memory is the result plus one window.
    """
    rows = np.asarray(rows, dtype=np.int64)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype != np.dtype("<f4") or fortran or len(shape) != 2:
            raise EmbedderError(f"{path} is not a C-ordered float32 matrix")
        offset, (n, dim) = f.tell(), shape
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row out of range for {path} with {n} rows")
        out = np.empty((len(rows), dim), dtype=np.float32)
        order = np.argsort(rows, kind="stable")
        wanted = rows[order]
        fd, row_bytes = f.fileno(), 4 * dim
        a = 0
        while a < len(wanted):
            first = int(wanted[a])
            b = int(np.searchsorted(wanted, first + chunk_rows, side="left"))
            last = int(wanted[b - 1])
            buf = os.pread(fd, (last - first + 1) * row_bytes, offset + first * row_bytes)
            if len(buf) != (last - first + 1) * row_bytes:
                raise EmbedderError(f"{path} is shorter than its header says")
            block = np.frombuffer(buf, dtype=np.float32).reshape(-1, dim)
            out[order[a:b]] = block[wanted[a:b] - first]
            a = b
    return out


def load_matrix(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """Read a matrix written by :func:`save_matrix`, memory-mapped read-only by default."""
    x = np.load(Path(path), mmap_mode="r" if mmap else None, allow_pickle=False)
    if x.dtype != np.float32 or x.ndim != 2:
        raise EmbedderError(f"{path} is not a float32 matrix (dtype {x.dtype}, ndim {x.ndim})")
    return x
