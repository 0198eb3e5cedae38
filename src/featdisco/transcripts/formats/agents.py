"""Agent trajectories: SWE-agent ``.traj`` files and OpenHands event streams.

Each agent step (one model call) is one assistant message: its reasoning becomes the
thought piece, its text and tool calls the response piece. What the environment returned
(command output, file views) is kept as tool messages, so it is in the transcript but never
featurized. Demonstrations that SWE-agent puts in the prompt are not the model's work and
are left out (counted in the metadata).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from featdisco.errors import BadRecord
from featdisco.transcripts import model as tm
from featdisco.transcripts.formats import common
from featdisco.transcripts.formats.openai import content_parts, parse_messages
from featdisco.transcripts.raw import RawRecord

# ---------------------------------------------------------------- SWE-agent


def sniff_swe_agent(rec: Mapping[str, object]) -> bool:
    return isinstance(rec.get("trajectory"), list) and (
        isinstance(rec.get("history"), list) or isinstance(rec.get("info"), dict))


def parse_swe_agent(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    skipped: Counter[str] = Counter()
    history = rec.get("history")
    if isinstance(history, list) and history:
        messages = _swe_history(common.get_list(rec, "history"), skipped)
    else:
        messages = _swe_steps(common.get_list(rec, "trajectory"))
    info = rec.get("info") if isinstance(rec.get("info"), dict) else {}
    assert isinstance(info, dict)
    meta: dict[str, object] = {}
    for key in ("exit_status", "submission"):
        if isinstance(info.get(key), str):
            meta[key] = info[key][:500]
    stats = info.get("model_stats")
    if isinstance(stats, dict):
        for key in ("instance_cost", "api_calls", "tokens_sent", "tokens_received"):
            if isinstance(stats.get(key), int | float):
                meta[key] = stats[key]
    if skipped:
        meta["skipped_history"] = dict(skipped)
    model, instance = _replay_config(rec.get("replay_config"))
    file_name = rec.get(_FILE_KEY)
    if instance is None and isinstance(file_name, str):  # SWE-agent names files by instance
        instance = file_name.removesuffix(".traj").removesuffix(".json")
    return [common.Conversation(messages, model=model, id=instance, metadata=meta)]


_FILE_KEY = "_featdisco_file"


def name_by_file(path: Path, records: Iterator[RawRecord],
                 log: Callable[[str], None]) -> Iterator[RawRecord]:
    """Give each trajectory its file's name, the instance id when the config lacks one."""
    for raw in records:
        if raw.data is not None:
            raw = RawRecord(raw.where, {**raw.data, _FILE_KEY: path.name}, context=raw.context)
        yield raw


def _swe_history(history: list[Any], skipped: Counter[str]) -> list[tm.Message]:
    out: list[tm.Message] = []
    acted = False
    for i, item in enumerate(history):
        where = f"history[{i}]"
        if not isinstance(item, dict):
            raise BadRecord("wrong-type", f"{where}: expected an object")
        if item.get("is_demo") or item.get("message_type") == "demonstration":
            skipped["demonstration"] += 1
            continue
        role = item.get("role")
        if role == "assistant":
            acted = True
            msg = {k: item[k] for k in ("role", "content", "tool_calls", "reasoning_content") if k in item}
            parsed = parse_messages([msg], where)[0]
            thinking = [tm.ReasoningPart(b["thinking"]) for b in item.get("thinking_blocks") or []
                        if isinstance(b, dict) and isinstance(b.get("thinking"), str)]
            out.append(tm.AssistantMessage((*thinking, *parsed.content)))
        elif role == "tool" or (role == "user" and acted):
            # what the environment answered: SWE-agent sends it as a user turn without function
            # calling (0.x trajectories without message_type too); no person writes after the start
            text = "\n".join(p.text for p in content_parts(item.get("content"), where, "tool")
                             if isinstance(p, tm.TextPart))
            ids = item.get("tool_call_ids")
            call_id = ids[0] if isinstance(ids, list) and ids and isinstance(ids[0], str) else None
            out.append(tm.ToolMessage((tm.ToolResultPart(text, call_id),), tool_call_id=call_id))
        else:
            out.extend(parse_messages([{"role": role, "content": item.get("content")}], where))
    return out


def _swe_steps(steps: list[Any]) -> list[tm.Message]:
    """Old trajectories without ``history``: each step's response and observation."""
    out: list[tm.Message] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise BadRecord("wrong-type", f"trajectory[{i}]: expected an object")
        if i == 0 and isinstance(step.get("query"), list):  # the prompt the first call saw
            out.extend(m for m in parse_messages([q for q in step["query"] if isinstance(q, dict)
                                                  and q.get("role") in ("system", "user")], "query")
                       if not isinstance(m, tm.AssistantMessage))
        text = step.get("response") or "\n\n".join(
            s for s in (step.get("thought"), step.get("action")) if isinstance(s, str) and s)
        out.append(tm.AssistantMessage((tm.TextPart(str(text)),)))
        if isinstance(step.get("observation"), str):
            out.append(tm.ToolMessage((tm.ToolResultPart(step["observation"]),)))
    return out


def _replay_config(value: object) -> tuple[str | None, str | None]:
    """Model name and instance id from the run's saved configuration (a JSON string)."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None, None
    if not isinstance(value, dict):
        return None, None
    agent = value.get("agent") if isinstance(value.get("agent"), dict) else {}
    model = agent.get("model") if isinstance(agent, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    problem = value.get("problem_statement")
    pid = problem.get("id") if isinstance(problem, dict) else None
    return (name if isinstance(name, str) else None), (pid if isinstance(pid, str) else None)


SWE_AGENT = common.FormatSpec("swe-agent", "SWE-agent trajectories (.traj: history, or trajectory steps)",
                              sniff_swe_agent, parse_swe_agent, group=name_by_file)

# ---------------------------------------------------------------- mini-SWE-agent


def sniff_mini(rec: Mapping[str, object]) -> bool:
    fmt = rec.get("trajectory_format")
    return isinstance(fmt, str) and fmt.startswith("mini-swe-agent") and isinstance(rec.get("messages"), list)


def parse_mini(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    """Chat messages where, once the model has acted, a ``user`` message is the output of
    its command (mini-SWE-agent's observations), so it is tool output, not a user turn."""
    skipped: Counter[str] = Counter()
    messages: list[tm.Message] = []
    acted = False
    for i, item in enumerate(common.get_list(rec, "messages")):
        if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant", "tool"):
            skipped[str(item.get("role") if isinstance(item, dict) else "malformed")] += 1
            continue
        msg = {k: v for k, v in item.items() if k != "extra"}
        parsed = parse_messages([msg], f"messages[{i}]")[0]
        if isinstance(parsed, tm.UserMessage) and acted:
            text = "\n".join(p.text for p in parsed.content if isinstance(p, tm.TextPart))
            parsed = tm.ToolMessage((tm.ToolResultPart(text),))
        acted = acted or isinstance(parsed, tm.AssistantMessage)
        messages.append(parsed)
    info = rec.get("info") if isinstance(rec.get("info"), dict) else {}
    assert isinstance(info, dict)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model_cfg = config.get("model") if isinstance(config, dict) and isinstance(config.get("model"), dict) else {}
    model = model_cfg.get("model_name") if isinstance(model_cfg, dict) else None
    meta: dict[str, object] = {k: info[k][:500] for k in ("exit_status", "submission")
                               if isinstance(info.get(k), str)}
    if skipped:
        meta["skipped_messages"] = dict(skipped)
    instance = rec.get("instance_id")
    file_name = rec.get(_FILE_KEY)
    if not isinstance(instance, str) and isinstance(file_name, str):
        instance = file_name.removesuffix(".json").removesuffix(".traj")
    return [common.Conversation(messages, model=model if isinstance(model, str) else None,
                                id=instance if isinstance(instance, str) else None, metadata=meta)]


MINI_SWE_AGENT = common.FormatSpec("mini-swe-agent", "mini-SWE-agent trajectories (.traj.json: messages; command "
                                   "output as tool output)", sniff_mini, parse_mini, group=name_by_file)

# ---------------------------------------------------------------- OpenHands

_NOT_MODEL_ACTIONS = {"recall", "change_agent_state", "null", "condensation", "condensation_request"}
_NOT_TOOL_OBSERVATIONS = {"agent_state_changed", "null", "recall", "condensation"}


def _is_event(ev: object) -> bool:
    if not isinstance(ev, dict):
        return False
    if isinstance(ev.get("kind"), str) and ev["kind"].endswith("Event"):  # OpenHands SDK (V1)
        return "source" in ev
    return ev.get("source") in ("agent", "user", "environment") and ("action" in ev or "observation" in ev)


def _flat(history: list[Any]) -> list[Any]:
    """Older evaluation outputs hold ``[action, observation]`` pairs; newer ones a flat list."""
    if history and all(isinstance(h, list) for h in history):
        return [e for pair in history for e in pair]
    return history


def sniff_openhands(rec: Mapping[str, object]) -> bool:
    history = rec.get("history")
    if isinstance(history, list) and history:
        history = _flat(history)
        return _is_event(history[0]) or (len(history) > 1 and _is_event(history[1]))
    return _is_event(rec)


def group_events(path: Path, records: Iterator[RawRecord],
                 log: Callable[[str], None]) -> Iterator[RawRecord]:
    """A file of single events (an exported trajectory) is one transcript; records that
    already hold a ``history`` (evaluation output) pass through."""
    return common.group_file(records, "history", lambda first, last: first if first == last
                             else f"{first} to {last}", pass_through=lambda data: "history" in data)


def parse_openhands(rec: Mapping[str, object], ctx: common.ParseContext) -> list[common.Conversation]:
    history = _flat(common.get_list(rec, "history"))
    skipped: Counter[str] = Counter()
    messages: list[tm.Message] = []
    instruction = rec.get("instruction")
    if isinstance(instruction, str) and instruction and not any(
            isinstance(e, dict) and e.get("source") == "user" for e in history):
        messages.append(tm.UserMessage((tm.TextPart(instruction),)))
    responses: set[str] = set()
    step_at: dict[str, int] = {}  # V1: model response id -> index of its assistant step
    model: str | None = None
    for i, ev in enumerate(history):
        if not isinstance(ev, dict):
            raise BadRecord("wrong-type", f"history[{i}]: expected an event object")
        if "kind" not in ev:
            step, step_model = _v0_event(ev, f"history[{i}]", responses, skipped)
            messages.extend(step)
            model = model or step_model
            continue
        rid = ev.get("llm_response_id")
        if ev["kind"] == "ActionEvent" and isinstance(rid, str) and rid in step_at:
            # another tool call of a model response already seen: part of the same step
            prev = messages[step_at[rid]]
            messages[step_at[rid]] = tm.AssistantMessage((*prev.content, _v1_call(ev)))
            continue
        step = _v1_event(ev, f"history[{i}]", skipped)
        if ev["kind"] == "ActionEvent" and isinstance(rid, str):
            step_at[rid] = len(messages)
        messages.extend(step)
    meta_obj = rec.get("metadata")
    if isinstance(meta_obj, dict) and isinstance(meta_obj.get("llm_config"), dict):
        model = meta_obj["llm_config"].get("model") or model
    meta: dict[str, object] = {}
    if skipped:
        meta["skipped_events"] = dict(skipped)
    for key in ("instance_id", "error"):
        value = rec.get(key)
        if isinstance(value, str):
            meta[key] = value[:500]
    iid = rec.get("instance_id")
    return [common.Conversation(messages, model=model if isinstance(model, str) else None,
                                id=iid if isinstance(iid, str) else None, metadata=meta)]


def _v0_event(ev: Mapping[str, object], where: str, responses: set[str],
              skipped: Counter[str]) -> tuple[list[tm.Message], str | None]:
    """An event of the OpenHands V0 runtime (``action``/``args``, ``observation``/``content``)."""
    source = ev.get("source")
    args = ev.get("args")
    if not isinstance(args, dict):
        args = {}
    tcm = ev.get("tool_call_metadata")
    if not isinstance(tcm, dict):
        tcm = None
    if "observation" in ev:
        kind = ev.get("observation")
        if kind in _NOT_TOOL_OBSERVATIONS:
            skipped[f"observation {kind}"] += 1
            return [], None
        call_id = tcm.get("tool_call_id") if tcm else None
        cid = call_id if isinstance(call_id, str) else None
        return [tm.ToolMessage((tm.ToolResultPart(str(ev.get("content") or ""), cid),), tool_call_id=cid,
                               name=str(kind))], None
    action = ev.get("action")
    if action == "system":
        return [tm.SystemMessage((tm.TextPart(str(args.get("content") or "")),))], None
    if action in _NOT_MODEL_ACTIONS or source == "environment":
        skipped[f"action {action}"] += 1
        return [], None
    if source == "user":
        return [tm.UserMessage((tm.TextPart(str(args.get("content") or ev.get("message") or "")),))], None
    response = tcm.get("model_response") if tcm else None
    if isinstance(response, dict) and isinstance(response.get("choices"), list) and response["choices"]:
        # the model call behind this action; its other actions (parallel calls) share it
        rid = response.get("id")
        if isinstance(rid, str):
            if rid in responses:
                return [], None
            responses.add(rid)
        msg = dict(response["choices"][0].get("message") or {})
        msg["role"] = "assistant"
        model = response.get("model")
        return parse_messages([msg], f"{where}.tool_call_metadata.model_response"), (
            model if isinstance(model, str) else None)
    parts: list[tm.Part] = []
    if action == "message":
        parts.append(tm.TextPart(str(args.get("content") or "")))
    else:
        thought = args.get("thought")
        if isinstance(thought, str) and thought.strip():
            parts.append(tm.TextPart(thought))
        call_args = {k: v for k, v in args.items() if k not in ("thought", "security_risk", "confirmation_state",
                                                                  "hidden", "is_confirmed")}
        parts.append(tm.ToolCallPart(str(action), common.compact_json(call_args)))
    return [tm.AssistantMessage(tuple(parts))], None


def _v1_call(ev: Mapping[str, object]) -> tm.ToolCallPart:
    call = ev.get("tool_call")
    if not isinstance(call, dict):
        call = {}
    fn = call.get("function")
    if not isinstance(fn, dict):
        fn = {}
    return tm.ToolCallPart(str(fn.get("name") or ev.get("tool_name") or "tool"),
                           common.compact_json(fn.get("arguments", ev.get("action", {}))),
                           common.opt_str(call.get("id")))


def _v1_event(ev: Mapping[str, object], where: str, skipped: Counter[str]) -> list[tm.Message]:
    """An event of the OpenHands software-agent SDK (``kind``: MessageEvent, ActionEvent, ...)."""
    kind = ev.get("kind")
    if kind == "SystemPromptEvent":
        prompt = ev.get("system_prompt")
        text = prompt.get("text") if isinstance(prompt, dict) else prompt
        return [tm.SystemMessage((tm.TextPart(str(text or "")),))]
    llm_message = ev.get("llm_message")
    if kind == "MessageEvent" and isinstance(llm_message, dict):
        return parse_messages([dict(llm_message)], f"{where}.llm_message")
    if kind == "ActionEvent":
        thinking: list[tm.Part] = []
        reasoning = ev.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning.strip():
            thinking.append(tm.ReasoningPart(reasoning))
        thinking += [tm.ReasoningPart(b["thinking"]) for b in common.iter_field(ev.get("thinking_blocks"))
                     if isinstance(b, dict) and isinstance(b.get("thinking"), str)]
        text = [tm.TextPart(t["text"]) for t in common.iter_field(ev.get("thought")) if isinstance(t, dict)
                and isinstance(t.get("text"), str)]
        return [tm.AssistantMessage((*thinking, *text, _v1_call(ev)))]
    if kind in ("ObservationEvent", "UserRejectObservation", "AgentErrorEvent"):
        obs = ev.get("observation")
        content = obs.get("content") if isinstance(obs, dict) else ev.get("error") or ev.get("rejection_reason")
        body = content if isinstance(content, str) else "\n".join(
            p.text for p in content_parts(content, where, "tool") if isinstance(p, tm.TextPart))
        cid = common.opt_str(ev.get("tool_call_id"))
        return [tm.ToolMessage((tm.ToolResultPart(body, cid, is_error=kind != "ObservationEvent"),),
                               tool_call_id=cid)]
    skipped[str(kind)] += 1
    return []


OPENHANDS = common.FormatSpec("openhands", "OpenHands event streams (exported trajectory, or evaluation output "
                              "with a history of events)", sniff_openhands, parse_openhands, group=group_events)
