"""Conversation trees (OpenAssistant): a prompt, several ranked replies, replies to those.

Read as nested trees (the ``*.trees.jsonl`` exports: ``prompt`` with ``replies``) or as flat
message rows (the Hugging Face ``oasst1``/``oasst2`` tables: ``message_id``,
``parent_id``, rows of one tree together). Each root-to-leaf path is a transcript
(``--tree all``, the default), or only the top-ranked path (``--tree first``: at each
branch the reply of lowest ``rank``). Paths carry the tree id, so the splitter names their
pieces by content and position and a turn several paths share becomes one piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from featdisco.errors import BadRecord
from featdisco.transcripts.formats.common import Conversation, FormatSpec, ParseContext, get_dict
from featdisco.transcripts.model import AssistantMessage, Message, TextPart, UserMessage
from featdisco.transcripts.raw import RawRecord

_ROLES = {"prompter": "user", "user": "user", "assistant": "assistant"}
_NODES = "oasst_nodes"  # the rows of one tree, gathered by group_rows


def sniff_nested(rec: Mapping[str, object]) -> bool:
    prompt = rec.get("prompt")
    return "message_tree_id" in rec and isinstance(prompt, dict) and "role" in prompt and "text" in prompt


def sniff_rows(rec: Mapping[str, object]) -> bool:
    return ("message_id" in rec and "parent_id" in rec and "message_tree_id" in rec
            and rec.get("role") in _ROLES)


def group_rows(path: Path, records: Iterator[RawRecord],
               log: Callable[[str], None]) -> Iterator[RawRecord]:
    """Consecutive rows of one ``message_tree_id`` become one record (one tree). A tree whose
    rows come back after another tree's is an error naming the fix, not a broken tree."""
    rows: list[Mapping[str, object]] = []
    done: set[object] = set()
    first = last = ""
    for raw in records:
        if raw.data is None:
            yield raw
            continue
        tree_id = raw.data.get("message_tree_id")
        if rows and tree_id != rows[0].get("message_tree_id"):
            yield _tree_record(rows, first, last)
            done.add(rows[0].get("message_tree_id"))
            rows = []
        if not rows and tree_id in done:
            yield RawRecord(raw.where, None, BadRecord(
                "wrong-type", f"rows of tree {tree_id} are not together in the file (it appeared "
                "earlier); sort the rows by message_tree_id"))
            continue
        if not rows:
            first = raw.where
        rows.append(raw.data)
        last = raw.where
    if rows:
        yield _tree_record(rows, first, last)


def _tree_record(rows: list[Mapping[str, object]], first: str, last: str) -> RawRecord:
    where = first if first == last else f"{first} to {last}"
    return RawRecord(where, {"message_tree_id": rows[0].get("message_tree_id"), _NODES: rows})


def parse_rows(rec: Mapping[str, object], ctx: ParseContext) -> list[Conversation]:
    rows = rec.get(_NODES)
    if not isinstance(rows, list):  # one row read without grouping (--format with a single row)
        rows = [rec]
    children: dict[object, list[Mapping[str, object]]] = {}
    ids = {r.get("message_id") for r in rows}
    roots: list[Mapping[str, object]] = []
    for r in rows:
        parent = r.get("parent_id")
        if parent is None or parent not in ids:
            roots.append(r)
        else:
            children.setdefault(parent, []).append(r)
    if len(roots) != 1:
        raise BadRecord("wrong-type", f"tree {rec.get('message_tree_id')}: expected one root message "
                        f"(parent_id null), found {len(roots)}; are its rows together in the file?")

    def replies(node: Mapping[str, object]) -> list[Mapping[str, object]]:
        return children.get(node.get("message_id"), [])

    return _paths(roots[0], replies, str(rec.get("message_tree_id") or roots[0].get("message_id")), ctx)


def parse_nested(rec: Mapping[str, object], ctx: ParseContext) -> list[Conversation]:
    root = get_dict(rec.get("prompt"), "prompt")

    def replies(node: Mapping[str, object]) -> list[Mapping[str, object]]:
        value = node.get("replies")
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    tree_id = str(rec.get("message_tree_id") or root.get("message_id"))
    convs = _paths(root, replies, tree_id, ctx)
    for conv in convs:
        if isinstance(state := rec.get("tree_state"), str):
            conv.metadata["tree_state"] = state
    return convs


def _rank(node: Mapping[str, object]) -> tuple[int, float]:
    rank = node.get("rank")
    if isinstance(rank, int | float) and not isinstance(rank, bool) and rank == rank:  # NaN: unranked
        return (0, float(rank))
    return (1, 0.0)


def _paths(root: Mapping[str, object], replies: Callable[[Mapping[str, object]], list[Mapping[str, object]]],
           tree_id: str, ctx: ParseContext) -> list[Conversation]:
    """Every root-to-leaf path (or the top-ranked one), deleted messages left out and counted."""
    out: list[Conversation] = []
    deleted = 0
    stack: list[tuple[Mapping[str, object], list[Mapping[str, object]]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        path = [*path, node]
        kids = [k for k in replies(node) if not k.get("deleted")]
        deleted += len(replies(node)) - len(kids)
        kids.sort(key=_rank)
        if ctx.tree == "first":
            kids = kids[:1]
        if not kids:
            out.append(_conversation(path, tree_id))
        for kid in reversed(kids):  # the best-ranked path first
            stack.append((kid, path))
    if deleted:
        for conv in out:
            conv.metadata["deleted_replies"] = deleted
    return out


def _conversation(path: list[Mapping[str, object]], tree_id: str) -> Conversation:
    messages: list[Message] = []
    for node in path:
        role = _ROLES.get(str(node.get("role")))
        if role is None:
            raise BadRecord("unknown-role", f"message {node.get('message_id')}: role {node.get('role')!r} is "
                            "not prompter or assistant")
        text = node.get("text")
        if not isinstance(text, str):
            raise BadRecord("wrong-type", f"message {node.get('message_id')}: text is not a string")
        part = (TextPart(text),)
        messages.append(UserMessage(part) if role == "user" else AssistantMessage(part))
    leaf = path[-1]
    meta: dict[str, object] = {"leaf_rank": leaf.get("rank")}
    if isinstance(lang := path[0].get("lang"), str):
        meta["lang"] = lang
    models = {name for n in path if isinstance(name := n.get("model_name"), str)}
    return Conversation(messages, model=models.pop() if len(models) == 1 else None, id=tree_id,
                        suffix=str(leaf.get("message_id")), metadata=meta, tree=tree_id)


NESTED = FormatSpec("oasst-trees", "conversation trees, nested (OpenAssistant *.trees.jsonl): every "
                    "root-to-leaf path, or --tree first", sniff_nested, parse_nested)
ROWS = FormatSpec("oasst-messages", "conversation trees as message rows (OpenAssistant oasst1/oasst2: "
                  "message_id, parent_id)", sniff_rows, parse_rows, group=group_rows)
