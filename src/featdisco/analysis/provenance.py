"""Where each stored analysis came from, so that a view can tell current from stale.

Every ``analysis_*.parquet`` (and every scan) is recorded in the manifest's ``analyses``
section with a fingerprint of what it was computed on, its arguments and the command that
computes it again. What the fingerprint covers is the entry's ``depends``:

- ``members`` (compare, cooccur, probes, stability, frequency, validate): which features are
  in which cluster — the values of ``assignments.parquet`` and of ``clusters.parquet`` other
  than what the LLM wrote about each cluster (:data:`NAME_COLUMNS`: its label, description,
  the namer's label a rename keeps, its rating) and than the similarities to the centroids
  (:data:`CENTROID_COLUMNS`, which a rerun that reclusters into the same clusters changes). Renaming a cluster leaves these current:
  their numbers do not depend on names, and a view shows each stored ``label`` column with
  the cluster's label now (:class:`LabelsNow`), so the new name is shown, never the old one.
- ``labels`` (the hierarchy, whose parents are named from their children's labels; label
  quality, which scores the label text; a cluster's scan, which asks the question its label
  and description make; ``ask``, whose planner reads the dictionary): the cluster artefacts
  whole, names included, so a rename makes them stale. Entries written before ``members``
  and ``labels`` existed say ``clusters`` and are checked the same way: after any change to
  the clusters, names included, they read as stale until rerun, never as current by mistake.
- ``pieces`` (a scan of a question of your own): ``pieces.parquet`` only.

Which clusters a researcher hid (``featdisco edit RUN hide ID``: the cluster table's
``hidden`` column) is in none of these fingerprints: the table is hashed as if none were
hidden, so hiding leaves an analysis whose numbers do not depend on it (frequency,
stability, the hierarchy, ...) current. An analysis that leaves the hidden clusters out of
its tests and their correction (compare, cooccur, probes; ``ask`` shows its planner only
the clusters not hidden) records their ids (``hidden``); it is current only while the same
clusters are hidden, so hiding another makes it stale and showing it again (``featdisco
edit RUN drop N``) makes it current again. An entry without ``hidden`` was written before
hidden clusters were left out; its fingerprint matches only if none was hidden when it was
written, so one of those analyses is checked as computed with none hidden (and any other
by its fingerprint alone).

After an edit or a rerun changes what an analysis depends on, its fingerprint no longer
matches, so ``featdisco status --json`` and the report say it is stale and how to refresh
it. Runs of one command with other arguments get their own name (:func:`analysis_name`)
instead of overwriting each other.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featdisco.rundir import RunDir, fingerprint, open_run

SECTION = "analyses"
# What an analysis's fingerprint covers (see the module's docstring); "clusters" is what
# entries written before the other two existed say, checked as "labels" is.
DEPENDS = ("members", "labels", "pieces")
LEGACY_DEPENDS = "clusters"
# The columns of clusters.parquet that say what a cluster is called and how it was rated,
# not which features are in it: a rename changes only these, so "members" leaves them out.
NAME_COLUMNS = frozenset({"label", "description", "auto_label", "interest", "interest_reason", "private"})
# The columns that measure how near members are to their centroid, not which they are: a
# rerun that reclusters into the same clusters changes only these.
CENTROID_COLUMNS = frozenset({"similarity", "min_similarity"})
# The column a hide edit sets: hashed as all False (as if nothing were hidden), so that a
# fingerprint taken before hiding, or before this column was left out, still matches; an
# analysis that depends on it records the hidden ids instead (see the module's docstring).
HIDDEN_COLUMN = "hidden"
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def _cluster_table(run: RunDir) -> Path | None:
    """The run's ``clusters.parquet``, or for a transform's output the fitted run's; None
    before there is one."""
    if run.file("clusters.parquet").exists():
        return run.file("clusters.parquet")
    if fitted := run.manifest.get("fitted_run"):
        path = Path(str(fitted)) / "clusters.parquet"
        if path.exists():
            return path
    return None


def clusters_fingerprint(run: RunDir) -> str | None:
    """A hash of the run's final clusters, names included: their members
    (:func:`members_fingerprint`) and every column of the cluster table but the centroids'
    similarities (for a transform's output, its assignments and the fitted dictionary's
    clusters); None before there are any. What ``labels`` analyses depend on."""
    members, path = members_fingerprint(run), _cluster_table(run)
    if members is None:
        return None
    return fingerprint({"members": members, "clusters.parquet": None if path is None
                        else _values_hash(path, CENTROID_COLUMNS)})


def members_fingerprint(run: RunDir) -> str | None:
    """A hash of which features are in which cluster: the values of ``assignments.parquet``
    and of the cluster table other than :data:`NAME_COLUMNS` (so a rename leaves it as it
    was) and :data:`CENTROID_COLUMNS` (a rerun that reclusters into the same clusters moves
    their centroids, not their members); None before there are any clusters. What
    ``members`` analyses depend on."""
    path, assignments = _cluster_table(run), run.file("assignments.parquet")
    parts = {"assignments.parquet members": _values_hash(assignments, CENTROID_COLUMNS) if assignments.exists()
             else None,
             "clusters.parquet without names": None if path is None
             else _values_hash(path, NAME_COLUMNS | CENTROID_COLUMNS)}
    if not any(parts.values()):
        return None
    return fingerprint(parts)


def _values_hash(path: Path, leave_out: frozenset[str]) -> str:
    st = path.stat()
    return _table_hash(str(path.resolve()), st.st_size, st.st_mtime_ns, leave_out)


@functools.lru_cache(maxsize=16)
def _table_hash(path: str, size: int, mtime_ns: int, leave_out: frozenset[str]) -> str:
    """The hash of a table's values (not its bytes: a stage rewrites the whole file on a
    rename) in every column but ``leave_out``; cached per file version, as the report asks
    once per scan."""
    keep = [n for n in pq.read_schema(path).names if n not in leave_out]
    table = pq.read_table(path, columns=keep)
    if HIDDEN_COLUMN in table.column_names:
        i = table.column_names.index(HIDDEN_COLUMN)
        table = table.set_column(i, table.field(i), pa.array([False] * table.num_rows, table.field(i).type))
    return table_fingerprint(table)


def table_fingerprint(table: pa.Table) -> str:
    """The hash of a table's values, every column (not of the bytes of a file holding it)."""
    table = table.combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.blake2b(sink.getvalue().to_pybytes(), digest_size=16).hexdigest()


class DictionaryEdition(TypedDict):
    """Which edition of a fitted run's cluster dictionary a transform assigned new data by
    (the manifest's ``fitted_dictionary`` in a transform's output)."""

    clusters: str  # :func:`table_fingerprint` of the cluster table used: ids, names, hidden flags
    edits: list[str] | None  # the edits applied to it (`featdisco edit RUN list`); None: not known
    transformed: str


def dictionary_edition(clusters: pa.Table, fitted: str | Path) -> DictionaryEdition:
    """The edition of ``clusters``, the cluster table of the fitted run (or saved dictionary)
    ``fitted``: its fingerprint, and the edits the run had applied when its table was this
    one (None when the run's table is another now, e.g. an estimator's dictionary loaded
    before an edit, or when the folder does not say: a saved dictionary keeps no edits)."""
    from featdisco.curation import APPLIED, edit_fates

    fp = table_fingerprint(clusters)
    known = (Path(fitted) / APPLIED).exists() and _is_fitted_table(fp, fitted)
    return {"clusters": fp, "edits": [f["edit"] for f in edit_fates(Path(fitted)) if f["status"] == "applied"]
            if known else None, "transformed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def is_current_edition(edition: DictionaryEdition, fitted: str | Path) -> bool:
    """Whether ``fitted``'s cluster table is still the one of ``edition``. Unknown edits
    (``edits`` None) do not say it changed: a saved dictionary keeps no edits."""
    return _is_fitted_table(edition["clusters"], fitted)


def _is_fitted_table(fp: str, fitted: str | Path) -> bool:
    table = Path(fitted) / "clusters.parquet"
    return table.exists() and table_fingerprint(pq.read_table(table)) == fp


def edition_text(edition: DictionaryEdition) -> str:
    """The edits of an edition in words: ``as fitted, no edit``, ``2 edits applied (merge 1 2;
    hide 5)``."""
    edits = edition["edits"]
    if edits is None:
        return "edits unknown"
    if not edits:
        return "as fitted, no edit"
    return f"{len(edits)} edit{'s' if len(edits) != 1 else ''} applied ({'; '.join(edits)})"


def dictionary_changed(run_dir: str | Path) -> str | None:
    """For a transform's output: a warning when the fitted run's clusters are not the ones
    the transform assigned by any more (an edit, or a rerun, since), saying which edits
    applied then and now; None when they are the same, and for a run fitted in place."""
    run = RunDir(run_dir)
    used, fitted = run.manifest.get("fitted_dictionary"), run.manifest.get("fitted_run")
    if not used or not fitted or not (Path(str(fitted)) / "clusters.parquet").exists():
        return None
    now = dictionary_edition(pq.read_table(Path(str(fitted)) / "clusters.parquet"), str(fitted))
    if now["clusters"] == used.get("clusters"):
        return None
    return (f"the clusters of {fitted} changed since this transform ({used.get('transformed')}): it assigned "
            f"by them with {edition_text(used)}, they have {edition_text(now)} now; this folder keeps the "
            "clusters it used: transform again to use the new ones")


def fingerprint_for(run: RunDir, depends: str) -> str | None:
    """The fingerprint an analysis that ``depends`` on members, labels (or, as entries
    written before these existed say, clusters) or pieces has on the run now; None for a
    ``depends`` this version does not know, which no recorded fingerprint matches."""
    if depends == "members":
        return members_fingerprint(run)
    if depends in ("labels", LEGACY_DEPENDS):
        return clusters_fingerprint(run)
    if depends == "pieces":
        return pieces_fingerprint(run)
    return None


def hidden_clusters(run: RunDir, kinds: Sequence[str] | None = None) -> list[int]:
    """The ids of the clusters hidden now (``featdisco edit RUN hide ID``), of ``kinds``
    (None: of every kind), ascending."""
    path = _cluster_table(run)
    if path is None or HIDDEN_COLUMN not in pq.read_schema(path).names:
        return []
    t = pq.read_table(path, columns=["cluster_id", "kind", HIDDEN_COLUMN]).to_pydict()
    return sorted(int(c) for c, k, h in zip(t["cluster_id"], t["kind"], t[HIDDEN_COLUMN], strict=True)
                  if h and (kinds is None or k in kinds))


def pieces_fingerprint(run: RunDir) -> str | None:
    """The content hash of the run's pieces (what a question scan depends on)."""
    h = run.artefact_hash("pieces.parquet")
    return None if h is None else fingerprint({"pieces.parquet": h})


def safe_name(text: str) -> str:
    """``text`` as a part of a file name: letters, digits and ``-`` only."""
    return _UNSAFE.sub("-", text).strip("-") or "x"


def unclaimed_name(name: str, held_by: str | None, owner: str, keep: int | None = None) -> str:
    """``name`` for the results of ``owner`` (a question, a label file's path), unless the
    run holds it for another owner (``held_by``): then ``name`` (its first ``keep``
    characters) with a digest of ``owner``, so two owners alike in name never replace each
    other's results."""
    if held_by is None or held_by == owner:
        return name
    base = name[:keep].rstrip("_") if keep else name
    return f"{base}_{hashlib.sha1(owner.encode()).hexdigest()[:6]}"


def analysis_name(base: str, args: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``base`` when ``args`` are the defaults, else ``base`` and the arguments that differ
    (``compare_model`` with ``--unit transcript`` → ``compare_model_unit-transcript``), so
    that one command run with other arguments keeps each result under its own name."""
    parts = []
    for key, value in args.items():
        if key in defaults and value == defaults[key]:
            continue
        if isinstance(value, list | tuple):
            value = "+".join(map(str, value))
        parts.append(f"{_UNSAFE.sub('-', str(key))}-{_UNSAFE.sub('-', str(value)).strip('-')}")
    suffix = "_".join(parts)
    if len(suffix) > 60:
        suffix = fingerprint(dict(args))[:10]
    return f"{base}_{suffix}" if suffix else base


def command_line(command: str, run_dir: str | Path, args: Mapping[str, Any]) -> str:
    """The shell command that computes an analysis again: ``True`` is a bare flag, ``None``
    and ``False`` are left out, lists are comma-joined; ``_``-prefixed keys are positional."""
    words = ["featdisco", *command.split(), str(run_dir)]
    for key, value in args.items():
        if value is None or value is False:
            continue
        if key.startswith("_"):
            words.append(str(value))
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        else:
            words += [flag, ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return shlex.join(words)


def write_analysis(run_dir: str | Path, name: str, frames: Mapping[str, pd.DataFrame | pa.Table], *,
                   command: str, args: Mapping[str, Any], depends: str = "members",
                   hidden: Sequence[int] | None = None, hidden_kinds: Sequence[str] | None = None) -> list[Path]:
    """Write each frame as ``analysis_<file>.parquet`` (the first under ``name`` itself, e.g.
    ``{"": df, "_rates": rates}``) under the run's lock, and record them in the manifest
    with the fingerprint of what they ``depends`` on, ``args`` and the command that
    refreshes them. ``hidden``: the ids of the hidden clusters the analysis left out (None:
    it does not depend on which are hidden), recorded in the manifest entry and, as
    ``hidden_clusters_left_out``, in the first table's metadata; ``hidden_kinds``: the kinds
    of cluster it tests, when not every kind (the hidden ones of other kinds do not matter)."""
    with open_run(run_dir, write=True) as run:
        paths = []
        for i, (suffix, frame) in enumerate(frames.items()):
            table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
            if i == 0 and hidden is not None:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                       b"hidden_clusters_left_out": hidden_note(hidden).encode()})
            paths.append(run.write_table(f"analysis_{name}{suffix}.parquet", table))
        record(run, name, [p.name for p in paths], command=command, args=args, depends=depends, hidden=hidden,
               hidden_kinds=hidden_kinds)
    return paths


def hidden_note(hidden: Sequence[int]) -> str:
    """What an analysis says of the hidden clusters it left out: how many, and which."""
    if not hidden:
        return "0"
    return f"{len(hidden)} (ids {', '.join(map(str, sorted(hidden)))}): not tested, not counted in the correction"


def record(run: RunDir, name: str, files: Sequence[str], *, command: str, args: Mapping[str, Any],
           depends: str = "members", hidden: Sequence[int] | None = None,
           hidden_kinds: Sequence[str] | None = None) -> None:
    """The manifest entry of one stored result (the caller holds the run's lock); ``depends``
    is one of :data:`DEPENDS`; ``hidden``: the ids of the hidden clusters (of ``hidden_kinds``,
    None: of every kind) when the result depends on which are hidden (None when it does not)."""
    if depends not in DEPENDS:
        raise ValueError(f"depends must be one of {', '.join(DEPENDS)}, not {depends!r}")
    fp = fingerprint_for(run, depends)
    run.merge(SECTION, {name: {"files": list(files), "depends": depends, "fingerprint": fp,
                               "hidden": None if hidden is None else sorted(int(c) for c in hidden),
                               "hidden_kinds": None if hidden_kinds is None else sorted(hidden_kinds),
                               "args": {k: v for k, v in args.items() if not k.startswith("_")},
                               "command": command_line(command, run.path, args),
                               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})


class AnalysisStatus(TypedDict):
    """One stored analysis as ``featdisco status`` and the report tell it."""

    name: str
    files: list[str]
    current: bool  # computed on the cluster members (names too, or pieces) the run has now
    depends: str  # members, labels or pieces (clusters: written before these existed, checked as labels)
    args: dict[str, object]  # as recorded (JSON)
    command: str | None  # what refreshes it
    written: str | None
    hidden: NotRequired[list[int]]  # the hidden clusters it left out, when it depends on them
    reason: NotRequired[str]  # why it is stale, where its fingerprint matches: other clusters hidden now
    note: NotRequired[str]


def analyses_status(run_dir: str | Path) -> list[AnalysisStatus]:
    """Every stored analysis of the run: ``name``, ``files``, ``current`` (computed on what
    it ``depends`` on as the run has it now: the clusters' members, their names too, or for
    a question scan the pieces), ``args``, ``command`` (what refreshes it) and ``written``.
    An ``analysis_*.parquet`` written before provenance was kept is listed as not current,
    with no command."""
    run = RunDir(run_dir)
    now: dict[str, str | None] = {}
    hidden_now: dict[tuple[str, ...] | None, list[int]] = {}  # the kinds an entry tests → hidden ids of those
    entries = run.manifest.get(SECTION) or {}
    out: list[AnalysisStatus] = []
    claimed: set[str] = set()
    for name, e in sorted(entries.items()):
        files = [f for f in e.get("files") or [] if run.file(f).exists()]
        if not files:
            continue
        claimed.update(files)
        fp, depends = e.get("fingerprint"), str(e.get("depends", LEGACY_DEPENDS))
        if depends not in now:
            now[depends] = fingerprint_for(run, depends)
        entry: AnalysisStatus = {"name": name, "files": files, "current": fp is not None and fp == now[depends],
                                 "depends": depends, "args": e.get("args") or {},
                                 "command": _here(e.get("command"), run.path), "written": e.get("written")}
        # absent: written before hidden clusters were left out (see above): computed with none
        # hidden, which matters only to the analyses that leave them out now
        hidden = e.get("hidden", [] if _leaves_hidden_out(name, e.get("command")) else None)
        if hidden is not None:
            kinds = e.get("hidden_kinds")
            key = None if kinds is None else tuple(sorted(kinds))
            if key not in hidden_now:
                hidden_now[key] = hidden_clusters(run, key)
            entry["hidden"] = sorted(int(c) for c in hidden)
            if entry["current"] and entry["hidden"] != hidden_now[key]:
                entry["current"] = False
                entry["reason"] = f"computed with {_ids(entry['hidden'])} hidden, {_ids(hidden_now[key])} now"
        out.append(entry)
    for path in sorted(run.path.glob("analysis_*.parquet")):
        if path.name not in claimed:
            out.append({"name": path.stem.removeprefix("analysis_"), "files": [path.name], "current": False,
                        "depends": LEGACY_DEPENDS, "args": {}, "command": None, "written": None,
                        "note": "written before provenance was kept: rerun its command"})
    return out


# The commands whose results depend on which clusters are hidden (they leave them out).
HIDDEN_COMMANDS = frozenset({"compare", "cooccur", "probe", "ask"})


def _leaves_hidden_out(name: str, command: object) -> bool:
    """Whether the analysis an entry records is one that leaves the hidden clusters out, by
    the command that refreshes it (by its name for an entry without one)."""
    try:
        words = shlex.split(str(command)) if command else []
    except ValueError:
        words = []
    if len(words) > 1:
        return words[1] in HIDDEN_COMMANDS
    return name.startswith(("compare", "cooccurrence", "probes", "ask_"))


def _ids(ids: Sequence[int]) -> str:
    """Hidden cluster ids in words: ``no cluster``, ``cluster 3``, ``clusters 3, 5``."""
    if not ids:
        return "no cluster"
    return ("cluster " if len(ids) == 1 else "clusters ") + ", ".join(map(str, ids))


def _here(command: object, run_dir: Path) -> str | None:
    """A recorded refresh command (``featdisco CMD RUN ...``) naming ``run_dir``, where the run
    is now: a run directory copied or moved elsewhere would otherwise be told to refresh its
    analyses with a command that writes into the directory it was copied from."""
    if not isinstance(command, str):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) < 3 or words[0] != "featdisco" or Path(words[2]) == run_dir:
        return command
    return shlex.join([*words[:2], str(run_dir), *words[3:]])


def files_status(run_dir: str | Path) -> dict[str, AnalysisStatus]:
    """Stored file name (``analysis_*.parquet``, ``scan_*.parquet``) → its status entry."""
    return {f: a for a in analyses_status(run_dir) for f in a["files"]}


def stale_files(run_dir: str | Path) -> dict[str, AnalysisStatus]:
    """``analysis_*.parquet`` file name → its status entry, for the files that are not current."""
    return {f: a for f, a in files_status(run_dir).items() if not a["current"]}


def stale_reason(depends: str) -> str:
    """Why an analysis that ``depends`` on this is stale, as ``featdisco status`` says it."""
    return {"members": "computed on other clusters", "pieces": "computed on other pieces"}.get(
        depends, "computed on other clusters or cluster names")


def _label_ids(column: str, names: Sequence[str]) -> str | None:
    """The id column a stored label column names clusters by: ``label`` → ``cluster_id``,
    ``label_a`` → ``cluster_a`` (or ``cluster_id_a``), ``top_user_labels`` (a list) →
    ``top_user_clusters``; None for any other column."""
    if column == "label":
        wanted = ["cluster_id"]
    elif column.startswith("label_"):
        side = column.removeprefix("label_")
        wanted = [f"cluster_id_{side}", f"cluster_{side}"]
    elif column.endswith("_labels"):
        wanted = [column.removesuffix("_labels") + "_clusters"]
    else:
        return None
    return next((w for w in wanted if w in names), None)


class LabelsNow:
    """The run's label of each cluster now, for showing a stored table: a ``members``
    analysis keeps the labels its clusters had when it was computed, and is still current
    after a rename, so every view shows it through :meth:`apply` to show the new name
    beside its numbers. The cluster table is read once, on first use."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._labels: dict[int, str] | None = None

    @property
    def labels(self) -> dict[int, str]:
        """Cluster id → its label now, for the live clusters (a retired id has none)."""
        if self._labels is None:
            path = _cluster_table(RunDir(self.run_dir))  # its rows are the live clusters
            self._labels = {}
            try:
                if path is not None and "label" in pq.read_schema(path).names:
                    t = pq.read_table(path, columns=["cluster_id", "label"])
                    self._labels = {int(c): str(lab) for c, lab in zip(
                        t.column("cluster_id").to_pylist(), t.column("label").to_pylist(), strict=True)
                        if isinstance(lab, str) and lab}
            except (OSError, pa.ArrowInvalid):
                pass  # no readable table: every stored label is kept
        return self._labels

    def apply(self, table: pa.Table, status: AnalysisStatus | None) -> pa.Table:
        """``table`` with each label column (``label``, ``label_<side>``, ``<x>_labels``)
        holding the label now of the cluster its id column names, when the table is a
        ``members`` analysis (``status``); a label-dependent or unrecorded table, and a
        cluster the run no longer has, keep the label stored."""
        if status is None or status["depends"] != "members":
            return table
        for i, column in enumerate(table.column_names):
            ids = _label_ids(column, table.column_names)
            if ids is None:
                continue
            stored, keys = table.column(column).to_pylist(), table.column(ids).to_pylist()
            if column.endswith("_labels"):  # a list of ids beside the list of their labels
                new: list[Any] = [None if cs is None else self._now(cs, olds or [None] * len(cs))
                                  for cs, olds in zip(keys, stored, strict=True)]
            else:
                new = self._now(keys, stored)
            table = table.set_column(i, table.field(i), pa.array(new, table.field(i).type))
        return table

    def _now(self, ids: Sequence[Any], stored: Sequence[Any]) -> list[Any]:
        """The label now of each of ``ids``; the stored one where the run has no such cluster."""
        now = self.labels
        return [old if c is None else now.get(int(c), old) for c, old in zip(ids, stored, strict=True)]
