"""Files in, typed transcripts out: detect each file's format, parse, stream.

Detection looks at the first records of each file and picks the most specific format that
matches them; ``format`` forces one. Every bad record is either raised as an
:class:`InputError` naming file and record, or (``skip_bad``) counted by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from featdisco.errors import BadRecord, FeatdiscoError, InputError
from featdisco.transcripts.formats import FORMATS, FormatSpec, ParseContext
from featdisco.transcripts.formats.benchmarks import QUESTION_FILE_NAMES, question_key
from featdisco.transcripts.formats.common import dotted, extract_think
from featdisco.transcripts.formats.tabular import parse_mapping
from featdisco.transcripts.model import Transcript
from featdisco.transcripts.sources import (
    DATA_SUFFIXES,
    DEFAULT_MAX_RECORD_BYTES,
    RawRecord,
    expand_inputs,
    iter_raw,
)

SNIFF_RECORDS = 20


@dataclass(slots=True)
class ReadOptions:
    """How to read inputs. ``mapping`` is ``--map``; ``meta`` lists record fields (dotted
    paths allowed) to carry as metadata columns."""

    format: str | None = None
    mapping: dict[str, str] | str = field(default_factory=dict)
    model: str | None = None
    meta: list[str] = field(default_factory=list)
    skip_bad: bool = False
    questions: list[Path] = field(default_factory=list)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    limit: int | None = None  # records read per file: a quick look at a big input
    source_model_from: str | None = None  # "filename", "dirname" or a record field (dotted path)
    tree: str = "all"  # conversation trees: "all" root-to-leaf paths or the "first" (top-ranked)

    def __post_init__(self) -> None:
        if isinstance(self.mapping, str):
            self.mapping = parse_mapping(self.mapping)
        if self.mapping and self.format is None:
            self.format = "tabular"
        if self.format is not None and self.format not in FORMATS:
            raise FeatdiscoError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        self.questions = [Path(q) for q in self.questions]
        if self.tree not in ("all", "first"):
            raise FeatdiscoError(f"--tree {self.tree!r}: use all (every root-to-leaf path) or first")


@dataclass(slots=True)
class FileReport:
    path: str
    format: str
    detected: bool
    records: int = 0
    transcripts: int = 0
    bad: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class ReadReport:
    """What reading found: the format chosen per file and every skipped record by reason."""

    files: list[FileReport] = field(default_factory=list)
    duplicate_ids: int = 0

    @property
    def bad(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.bad)
        return total

    @property
    def transcripts(self) -> int:
        return sum(f.transcripts for f in self.files)


def read_transcripts(
    inputs: str | Path | Iterable[str | Path],
    options: ReadOptions | None = None,
    *,
    report: ReadReport | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Iterator[Transcript]:
    """Stream :class:`Transcript` objects from files, folders or saved HF datasets.

    Keyword arguments are :class:`ReadOptions` fields (``format``, ``mapping``, ``model``,
    ``meta``, ``skip_bad``, ``questions``, ``max_record_bytes``).
    """
    opts = options or ReadOptions(**kwargs)
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files = expand_inputs(paths)
    report = report if report is not None else ReadReport()
    reader = _Reader(opts, report, log or (lambda _msg: None))
    return reader.run(files)


class _Reader:
    def __init__(self, opts: ReadOptions, report: ReadReport, log: Callable[[str], None]) -> None:
        self.opts = opts
        self.report = report
        self.log = log
        self.seen_ids: set[int] = set()
        self.question_cache: dict[Path, tuple[dict[str, dict[str, Any]], str]] = {}

    def run(self, files: list[Path]) -> Iterator[Transcript]:
        plans: list[tuple[Path, FormatSpec, bool]] = []
        for path in files:
            planned = self._plan(path)
            if planned is not None:
                plans.append(planned)
        explicit_questions = [p for p, spec, _ in plans if spec.auxiliary]
        for path, spec, detected in plans:
            file_report = FileReport(str(path), spec.name, detected)
            self.report.files.append(file_report)
            how = "detected" if detected else "forced"
            self.log(f"{path}: {spec.name} ({how})")
            if spec.auxiliary:
                continue
            mapping = self.opts.mapping if isinstance(self.opts.mapping, dict) else {}
            ctx = ParseContext(mapping=mapping, tree=self.opts.tree)
            if spec.name == "mt-bench":
                qfile = self._question_file(path, explicit_questions)
                if qfile is not None:
                    ctx.questions, ctx.questions_source = self._load_questions(qfile)
            records = iter_raw(path, self.opts.max_record_bytes)
            if spec.group is not None:
                records = spec.group(path, records, self.log)
            yield from self._parse_file(path, spec, ctx, records, file_report)

    # ------------------------------------------------------------ detection

    def _plan(self, path: Path) -> tuple[Path, FormatSpec, bool] | None:
        """Pick the file's format from its first records (the file is re-read to parse)."""
        if self.opts.format is not None:
            return path, FORMATS[self.opts.format], False
        stream = iter_raw(path, self.opts.max_record_bytes)  # a generator: closed below
        head: list[RawRecord] = []
        good = 0
        for raw in stream:
            head.append(raw)
            if raw.data is not None:
                good += 1
            if good >= SNIFF_RECORDS or raw.fatal:
                break
        stream.close()  # type: ignore[attr-defined]
        samples = [r.data for r in head if r.data is not None]
        if not samples:
            # Nothing readable to sniff: let the first error speak for the file.
            first = head[0] if head else RawRecord("file", None, BadRecord("empty-file", "file is empty"))
            err = first.error or BadRecord("empty-file", "file is empty")
            self._bad(path, first.where, err, None)
            return None
        spec = _detect(samples)
        if spec is None:
            keys = ", ".join(list(samples[0])[:12])
            err = BadRecord("unknown-format", f"cannot tell the transcript format (first record has "
                            f"keys: {keys}); pass --format or --map")
            self._bad(path, head[0].where, err, None)
            return None
        return path, spec, True

    # ------------------------------------------------------------ MT-bench questions

    def _question_file(self, path: Path, explicit: list[Path]) -> Path | None:
        if self.opts.questions:
            return self.opts.questions[0]
        candidates = [*explicit]
        for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
            candidates.extend(folder / name for name in QUESTION_FILE_NAMES)
        # Prefer the nearest: a question file in the answer file's own tree.
        for cand in sorted(candidates, key=lambda c: _distance(path, c)):
            if cand.is_file():
                return cand
        return None

    def _load_questions(self, qfile: Path) -> tuple[dict[str, dict[str, Any]], str]:
        if qfile not in self.question_cache:
            questions: dict[str, dict[str, Any]] = {}
            for raw in iter_raw(qfile, self.opts.max_record_bytes):
                if raw.data is None:
                    assert raw.error is not None
                    raise InputError(str(qfile), raw.where, raw.error.reason, raw.error.message)
                key = question_key(raw.data)
                if key is not None:
                    questions[key] = raw.data
            self.question_cache[qfile] = (questions, str(qfile))
        return self.question_cache[qfile]

    # ------------------------------------------------------------ parsing

    def _parse_file(self, path: Path, spec: FormatSpec, ctx: ParseContext,
                    records: Iterator[RawRecord], file_report: FileReport) -> Iterator[Transcript]:
        source = str(path)
        for raw in records:
            if self.opts.limit is not None and file_report.records >= self.opts.limit:
                break
            if raw.data is None:
                assert raw.error is not None
                self._bad(path, raw.where, raw.error, file_report)
                if raw.fatal:
                    return
                continue
            file_report.records += 1
            try:
                conversations = spec.parse(raw.data, ctx)
            except BadRecord as e:
                self._bad(path, raw.where, e, file_report)
                continue
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
                self._bad(path, raw.where, BadRecord("wrong-type", f"unexpected structure for "
                                                     f"{spec.name} ({type(e).__name__}: {e})"), file_report)
                continue
            meta_extra = dict(raw.context or {})
            for name in self.opts.meta:
                value = dotted(raw.data, name)
                if value is not None or name not in meta_extra:  # context (split) as fallback
                    meta_extra[name] = value
            base_hash: str | None = None
            file_model = self._source_model(path, raw.data)
            for conv in conversations:
                tid = conv.id
                if tid is None:
                    base_hash = base_hash or _content_hash(raw.data)
                    tid = base_hash
                if conv.suffix:
                    tid = f"{tid}:{conv.suffix}"
                tid = self._unique(tid)
                metadata = {**conv.metadata, **meta_extra}
                file_report.transcripts += 1
                yield Transcript(
                    id=tid,
                    messages=extract_think(conv.messages),
                    model=file_model or conv.model or self.opts.model,
                    source=source,
                    record=raw.where,
                    format=spec.name,
                    metadata=metadata,
                    tree=conv.tree,
                )

    def _source_model(self, path: Path, rec: dict[str, Any]) -> str | None:
        """``--source-model-from``: the model named by the file, its folder or a record field;
        it wins over the record's own model field, since the user chose it."""
        how = self.opts.source_model_from
        if how is None:
            return None
        if how == "filename":
            name = path.name
            for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
                if name.lower().endswith(suffix):
                    return name[: -len(suffix)] or None
            return path.stem
        if how == "dirname":
            return path.parent.name or None
        value = dotted(rec, how)
        return str(value) if value not in (None, "") else None

    def _unique(self, tid: str) -> str:
        candidate, n = tid, 1
        while hash(candidate) in self.seen_ids:
            n += 1
            candidate = f"{tid}#{n}"
        if n > 1:
            self.report.duplicate_ids += 1
        self.seen_ids.add(hash(candidate))
        return candidate

    def _bad(self, path: Path, where: str, err: BadRecord, file_report: FileReport | None) -> None:
        if not self.opts.skip_bad:
            raise InputError(str(path), where, err.reason, err.message)
        if file_report is None:
            file_report = FileReport(str(path), "-", False)
            self.report.files.append(file_report)
        file_report.bad[err.reason] += 1
        self.log(f"{path}, {where}: skipped: {err.message} [{err.reason}]")


def _detect(samples: list[dict[str, Any]]) -> FormatSpec | None:
    best: FormatSpec | None = None
    best_hits = 0
    for spec in FORMATS.values():
        hits = sum(1 for s in samples if _safe_sniff(spec, s))
        if hits > best_hits:
            best, best_hits = spec, hits
    return best


def _safe_sniff(spec: FormatSpec, rec: dict[str, Any]) -> bool:
    try:
        return bool(spec.sniff(rec))
    except Exception:  # a sniffer must never turn odd data into a crash
        return False


def _distance(answer: Path, question: Path) -> int:
    try:
        return len(answer.parent.relative_to(question.parent).parts)
    except ValueError:
        return 99


def _content_hash(rec: dict[str, Any]) -> str:
    raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS, default=str)
    return "h" + hashlib.sha1(raw).hexdigest()[:16]
