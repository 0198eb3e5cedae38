"""Files in, typed transcripts out: detect each file's format, parse, stream.

Detection looks at the first records of each file and picks the most specific format that
matches them; ``format`` forces one. Every bad record is either raised as an
:class:`InputError` naming file and record, or (``skip_bad``) counted by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from featdisco.errors import BadRecord, FeatdiscoError, InputError
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import FORMATS, FormatSpec, ParseContext
from featdisco.transcripts.formats.benchmarks import (
    QUESTION_FIELDS,
    QUESTION_FILE_NAMES,
    question_key,
)
from featdisco.transcripts.formats.common import FailedRequest, dotted
from featdisco.transcripts.formats.tabular import parse_mapping
from featdisco.transcripts.formats.template import expand_templates
from featdisco.transcripts.formats.think import ThinkCounts, extract_think
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
    ambiguous_think: int = 0  # assistant texts whose think tags were kept as response
    think: ThinkCounts = field(default_factory=ThinkCounts)  # every decision on think tags
    failed_requests: Counter[str] = field(default_factory=Counter)  # errored API calls by reason
    with_text: int = 0  # transcripts holding any text: a file with none gave no piece
    error: str | None = None  # the file gave nothing: why, with the likely fix
    first_bad: str | None = None  # the first skipped record, to explain a file of them
    cut_short: str | None = None  # where and why a truncation or break ended the file
    lost: int | None = None  # about how many records the cut lost (None: cannot tell)


@dataclass(slots=True)
class ReadReport:
    """What reading found: the format chosen per file and every skipped record by reason."""

    files: list[FileReport] = field(default_factory=list)
    duplicate_ids: int = 0
    warnings: list[str] = field(default_factory=list)
    judge_files: list[Path] = field(default_factory=list)  # benchmark judge folders, not read
    run_dirs: list[Path] = field(default_factory=list)  # featdisco run folders inside the inputs, not read

    @property
    def bad(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.bad)
        return total

    @property
    def transcripts(self) -> int:
        return sum(f.transcripts for f in self.files)

    @property
    def skipped_files(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    @property
    def cut_short(self) -> list[FileReport]:
        return [f for f in self.files if f.cut_short and not f.error]

    def all_skipped_message(self) -> str:
        """Why a run has nothing to write, for the error that ends it."""
        lines = ["every record was skipped"]
        lines += [f"{f.path}: {f.error}" for f in self.skipped_files[:5]]
        if len(self.skipped_files) > 5:
            lines.append(f"... and {len(self.skipped_files) - 5} more files")
        return "\n  ".join(lines)

    @property
    def ambiguous_think(self) -> int:
        return sum(f.ambiguous_think for f in self.files)

    @property
    def think(self) -> ThinkCounts:
        total = ThinkCounts()
        for f in self.files:
            total.add(f.think)
        return total

    @property
    def failed_requests(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.failed_requests)
        return total

    def file_notes(self) -> list[str]:
        """Files skipped whole and files cut short, one line each: never a lone record count;
        then what was decided about think tags and failed requests, so none is silent."""
        lines = self._file_lines()
        think = self.think
        if think.template_closed:
            lines.append(f"  replies whose </think> closed reasoning the template opened (no <think>), "
                         f"split there: {think.template_closed:,}")
        if think.stray_close:
            models = ", ".join(f"{m} {n:,}" for m, n in think.stray_close.most_common(5))
            lines.append(f"  stray </think> in replies of models not known to reason in tags, kept as "
                         f"response: {sum(think.stray_close.values()):,} ({models})")
        if think.duplicates:
            lines.append(f"  reasoning given both in a reasoning field and in think tags, kept once: "
                         f"{think.duplicates:,}")
        if failed := self.failed_requests:
            lines.append(f"  failed requests (errors with no answer, not transcripts): {sum(failed.values()):,} ("
                         + ", ".join(f"{r} {n:,}" for r, n in failed.most_common()) + ")")
        return lines

    def _file_lines(self) -> list[str]:
        lines: list[str] = []
        if self.run_dirs:
            lines.append(f"  skipped {len(self.run_dirs):,} featdisco run folders inside the inputs (a run's files "
                         "are not transcripts; name a run's pieces.parquet to read its pieces):")
            lines += [f"    {d}" for d in self.run_dirs]
        if self.judge_files:
            lines.append(f"  skipped {len(self.judge_files):,} judge files (reference answers and judgments "
                         "are not model transcripts; name a file to read it):")
            lines += [f"    {f}" for f in self.judge_files]
        if self.skipped_files:
            lines.append(f"  skipped files: {len(self.skipped_files):,}")
            lines += [f"    {f.path}: {f.error}" for f in self.skipped_files]
        for f in self.cut_short:
            lost = (f"about {f.lost:,} records lost (estimated from the bytes left)" if f.lost
                    else "the break is at the end of the file, so how many records it cost cannot be estimated")
            lines.append(f"  {f.path}: cut short at {f.cut_short}: {f.records:,} records kept, {lost}")
        return lines

    def notes(self) -> list[str]:
        """What a run's summary must say about reading: skipped records by reason, ambiguous
        think tags kept as response, and each skipped or cut-short file."""
        lines: list[str] = []
        if bad := self.bad:
            lines.append("skipped bad records: " + ", ".join(f"{r} {n:,}" for r, n in sorted(bad.items())))
        if self.ambiguous_think:
            lines.append(f"ambiguous think tags (kept as response): {self.ambiguous_think:,}")
        lines += [line.strip() for line in self.file_notes()]
        lines += self.warnings
        return lines


def read_transcripts(
    inputs: str | Path | Iterable[str | Path],
    options: ReadOptions | None = None,
    *,
    report: ReadReport | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Iterator[tm.Transcript]:
    """Stream :class:`Transcript` objects from files, folders or saved HF datasets.

    Keyword arguments are :class:`ReadOptions` fields (``format``, ``mapping``, ``model``,
    ``meta``, ``skip_bad``, ``questions``, ``max_record_bytes``).
    """
    opts = options or ReadOptions(**kwargs)
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    report = report if report is not None else ReadReport()
    files = expand_inputs(paths, report.judge_files, report.run_dirs)
    reader = _Reader(opts, report, log or (lambda _msg: None))
    return reader.run(files)


class _Reader:
    def __init__(self, opts: ReadOptions, report: ReadReport, log: Callable[[str], None]) -> None:
        self.opts = opts
        self.report = report
        self.log = log
        self.seen_ids: set[int] = set()
        self.question_cache: dict[Path, tuple[dict[str, Mapping[str, object]], str]] = {}
        self.meta_found: set[str] = set()  # --meta fields some record had
        self.model_field_found = False  # whether any record had the --source-model-from field
        self.first_fields: list[str] | None = None

    def run(self, files: list[Path]) -> Iterator[tm.Transcript]:
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
            # MT-bench answers need their questions; other answers (Arena-Hard v2's
            # messages) take category and the like from a question file beside them.
            qfile = self._question_file(path, explicit_questions)
            if qfile is not None and (spec.name == "mt-bench" or qfile in explicit_questions
                                      or self.opts.questions or _looks_like_questions(qfile)):
                ctx.questions, ctx.questions_source = self._load_questions(qfile)
            records = iter_raw(path, self.opts.max_record_bytes)
            if spec.group is not None:
                records = spec.group(path, records, self.log)
            yield from self._parse_file(path, spec, ctx, records, file_report)
            if not file_report.with_text and file_report.error is None:
                if spec.empty_ok and file_report.records and not sum(file_report.bad.values()):
                    file_report.error = f"{spec.empty_ok} [no-conversation]"
                    self.log(f"{path}: skipped file: {file_report.error}")
                else:
                    self._no_text(path, spec, detected, file_report)
        for name in self.opts.meta:
            if name not in self.meta_found and self.first_fields is not None:
                self._warn(f"--meta {name}: no record has this field, so its column is empty "
                           f"(the first record's fields: {', '.join(self.first_fields[:15])})")
        field_name = self.opts.source_model_from
        if field_name not in (None, "filename", "dirname") and not self.model_field_found and self.first_fields:
            self._warn(f"--source-model-from {field_name}: no record has this field, so models come from the "
                       f"records themselves (the first record's fields: {', '.join(self.first_fields[:15])})")

    def _warn(self, message: str) -> None:
        self.report.warnings.append(message)
        self.log(f"warning: {message}")

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
            self._file_error(path, first.where, err)
            return None
        spec = _detect(samples)
        if spec is None:
            names = [str(k) for k in samples[0]]
            keys = ", ".join(names[:12])
            sep = next((c for c in (";", "\t", "|") if len(names) == 1 and c in names[0]), None)
            fix = (f"the header was read as one column, its cells separated by {sep!r}: featdisco reads "
                   "comma-separated CSV, so re-save it with commas" if sep and path.suffix.lower() == ".csv"
                   else "pass --format or --map")
            err = BadRecord("unknown-format", f"cannot tell the transcript format (first record has "
                            f"keys: {keys}); {fix}")
            self._file_error(path, head[0].where, err)
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

    def _load_questions(self, qfile: Path) -> tuple[dict[str, Mapping[str, object]], str]:
        if qfile not in self.question_cache:
            questions: dict[str, Mapping[str, object]] = {}
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
                    records: Iterator[RawRecord], file_report: FileReport) -> Iterator[tm.Transcript]:
        source = str(path)
        # a column mapped as both thought and response declares reasoning in tags
        declared = True if ctx.mapping.get("thought") and ctx.mapping.get("thought") == ctx.mapping.get(
            "response") else None
        for raw in records:
            if self.opts.limit is not None and file_report.records >= self.opts.limit:
                break
            if raw.data is None:
                assert raw.error is not None
                if raw.fatal:
                    self._fatal(path, raw, file_report)
                    return
                self._bad(path, raw.where, raw.error, file_report)
                continue
            file_report.records += 1
            try:
                conversations = spec.parse(raw.data, ctx)
            except FailedRequest as e:  # an API call that errored: counted, never a transcript
                file_report.failed_requests[e.reason] += 1
                self.log(f"{path}, {raw.where}: failed request, not a transcript: {e.message} [{e.reason}]")
                continue
            except BadRecord as e:
                self._bad(path, raw.where, e, file_report)
                continue
            except (KeyError, TypeError, AttributeError, ValueError, IndexError) as e:
                self._bad(path, raw.where, BadRecord("wrong-type", f"unexpected structure for "
                                                     f"{spec.name} ({type(e).__name__}: {e})"), file_report)
                continue
            if self.first_fields is None:
                sample = raw.data.get("sample")
                self.first_fields = list(sample if isinstance(sample, dict) else raw.data)
            meta_extra: dict[str, object] = dict(raw.context or {})
            for name in self.opts.meta:
                value = dotted(raw.data, name)
                if value is not None:
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
                metadata = {**conv.metadata, **meta_extra}  # the record's own fields win
                if ctx.questions and spec.name != "mt-bench":
                    _join_question(metadata, raw.data, ctx)
                for name in self.opts.meta:
                    metadata.setdefault(name, None)
                self.meta_found.update(n for n in self.opts.meta if metadata[n] is not None)
                file_report.transcripts += 1
                model = file_model or conv.model or self.opts.model
                messages, think = extract_think(expand_templates(conv.messages), model, reasoner=declared)
                file_report.think.add(think)
                file_report.ambiguous_think += think.ambiguous
                file_report.with_text += has_text(messages)
                yield tm.Transcript(
                    id=tid,
                    messages=messages,
                    model=model,
                    source=source,
                    record=raw.where,
                    format=spec.name,
                    metadata=metadata,
                    tree=conv.tree,
                )

    def _source_model(self, path: Path, rec: Mapping[str, object]) -> str | None:
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
        if value in (None, ""):
            return None
        self.model_field_found = True
        return str(value)

    def _unique(self, tid: str) -> str:
        candidate, n = tid, 1
        while hash(candidate) in self.seen_ids:
            n += 1
            candidate = f"{tid}#{n}"
        if n > 1:
            self.report.duplicate_ids += 1
        self.seen_ids.add(hash(candidate))
        return candidate

    def _bad(self, path: Path, where: str, err: BadRecord, file_report: FileReport) -> None:
        if not self.opts.skip_bad:
            raise InputError(str(path), where, err.reason, err.message)
        file_report.bad[err.reason] += 1
        if file_report.first_bad is None:
            file_report.first_bad = f"{where}: {err.message} [{err.reason}]"
        self.log(f"{path}, {where}: skipped: {err.message} [{err.reason}]")

    def _file_error(self, path: Path, where: str, err: BadRecord,
                    file_report: FileReport | None = None) -> None:
        """The file gives nothing: an error, or under ``skip_bad`` a skipped file."""
        if not self.opts.skip_bad:
            raise InputError(str(path), where, err.reason, err.message)
        if file_report is None:
            file_report = FileReport(str(path), "-", False)
            self.report.files.append(file_report)
        loc = f"{where}: " if where and where != "file" else ""
        file_report.error = f"{loc}{err.message} [{err.reason}]"
        self.log(f"{path}: skipped file: {file_report.error}")

    def _fatal(self, path: Path, raw: RawRecord, file_report: FileReport) -> None:
        """A break that ends the file: what was read before it stands, and is said."""
        assert raw.error is not None
        if not self.opts.skip_bad or not file_report.records:
            self._file_error(path, raw.where, raw.error, file_report)
            return
        file_report.cut_short = f"{raw.where} ({raw.error.message} [{raw.error.reason}])"
        file_report.lost = raw.lost
        file_report.bad[raw.error.reason] += raw.lost or 1
        self.log(f"{path}: cut short at {file_report.cut_short}")

    def _no_text(self, path: Path, spec: FormatSpec, detected: bool, file_report: FileReport) -> None:
        n = file_report.records
        failed = file_report.failed_requests
        if failed and not file_report.transcripts:
            why = ("every request in it failed, so it holds no answer ("
                   + ", ".join(f"{r} {k:,}" for r, k in failed.most_common()) + ")")
        elif n == 0 or not file_report.transcripts:
            why = f"every record was skipped; the first, {file_report.first_bad or 'none'}"
        else:
            hint = ("name its columns with --map user=COLUMN,response=COLUMN" if spec.name == "tabular"
                    else f"if it is not {spec.name}, name its format with --format" if detected
                    else f"check that --format {spec.name} fits it")
            why = (f"no user, thought or response text in {n:,} record{'s' if n != 1 else ''} read as "
                   f"{spec.name}; {hint}")
        self._file_error(path, "", BadRecord("no-text", why), file_report)


def _looks_like_questions(path: Path) -> bool:
    stream = iter_raw(path)
    first = next(stream, None)
    stream.close()  # type: ignore[attr-defined]
    return first is not None and first.data is not None and _safe_sniff(FORMATS["mt-bench-questions"],
                                                                         first.data)


def _join_question(metadata: dict[str, object], rec: Mapping[str, object], ctx: ParseContext) -> None:
    key = question_key(rec)
    question = ctx.questions.get(key) if key is not None else None
    if question is None:
        return
    metadata.setdefault("question_id", key)
    for name in QUESTION_FIELDS:
        if isinstance(value := question.get(name), str) and metadata.get(name) is None:
            metadata[name] = value


def has_text(messages: list[tm.Message]) -> bool:
    """Whether a transcript can give any piece (text, reasoning, a tool call, media)."""
    for msg in messages:
        if isinstance(msg, tm.SystemMessage | tm.ToolMessage):
            continue
        for p in msg.content:
            if isinstance(p, tm.TextPart | tm.ReasoningPart):
                if p.text.strip():
                    return True
            elif isinstance(p, tm.RedactedReasoningPart | tm.ToolCallPart | tm.MediaPart):
                return True
    return False


def _detect(samples: list[Mapping[str, object]]) -> FormatSpec | None:
    best: FormatSpec | None = None
    best_hits = 0
    for spec in FORMATS.values():
        hits = sum(1 for s in samples if _safe_sniff(spec, s))
        if hits > best_hits:
            best, best_hits = spec, hits
    return best


def _safe_sniff(spec: FormatSpec, rec: Mapping[str, object]) -> bool:
    try:
        return bool(spec.sniff(rec))
    except Exception:  # a sniffer must never turn odd data into a crash
        return False


def _distance(answer: Path, question: Path) -> int:
    try:
        return len(answer.parent.relative_to(question.parent).parts)
    except ValueError:
        return 99


def _content_hash(rec: Mapping[str, object]) -> str:
    raw = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS, default=str)
    return "h" + hashlib.sha1(raw).hexdigest()[:16]
