"""Versioned prompt files, loaded by name.

A prompt file is ``<name>.v<N>.txt`` with ``### system`` and ``### user`` sections and
``$placeholders`` (``string.Template``, so JSON braces need no escaping). A prompt's
``version`` is its file name plus a hash of its text: it goes into every cache key, so an
edit invalidates exactly the replies that prompt produced, even without a version bump.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from featdisco.errors import FeatdiscoError
from featdisco.llm.base import ChatMessage

_SECTION = re.compile(r"^### (system|user)\s*$", re.MULTILINE)
PROMPT_NAMES = ("featurize", "name", "merge", "rate")  # the run's prompts: each a stage's declared input
# What each prompt must use: without its subject the LLM would be asked about nothing.
REQUIRED = {"featurize": {"text"}, "name": {"members"}, "rate": {"clusters"}, "merge": {"clusters"},
            "name_parent": {"members"}, "score_label": {"items", "label"}, "scan": {"text", "question"},
            "ask_plan": {"question", "dictionary", "tools"}, "ask_answer": {"question", "results"}}


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    file: str
    system: str
    user: str
    sha256: str
    text: str

    @property
    def version(self) -> str:
        return f"{self.file}@{self.sha256[:12]}"

    def render(self, **values: object) -> tuple[ChatMessage, ...]:
        try:
            system = Template(self.system).substitute(values)
            user = Template(self.user).substitute(values)
        except KeyError as e:
            raise FeatdiscoError(f"prompt {self.file} needs a value for ${e.args[0]}") from None
        return (ChatMessage("system", system), ChatMessage("user", user))


def parse_prompt(name: str, file: str, text: str) -> Prompt:
    parts = _SECTION.split(text)
    sections = dict(zip(parts[1::2], (p.strip() for p in parts[2::2]), strict=True))
    if "user" not in sections:
        raise FeatdiscoError(f"prompt {file} has no '### user' section")
    return Prompt(name, file, sections.get("system", ""), sections["user"],
                  hashlib.sha256(text.encode()).hexdigest(), text)


def load_prompt(name: str, path: str | Path | None = None, version: int | None = None) -> Prompt:
    """The newest packaged version of prompt ``name`` (or packaged ``version``), or the user's
    file at ``path``. A user's prompt must use the placeholders the packaged one uses for its
    subject and no others, checked here, before anything is spent."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FeatdiscoError(f"prompt file {p} " + ("is a folder; give the prompt's file" if p.is_dir()
                                                        else "does not exist"))
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise FeatdiscoError(f"prompt file {p} is not UTF-8 text ({e.reason})") from None
        prompt = parse_prompt(name, p.name, text)
        check_placeholders(prompt, packaged=_packaged(name), where=str(p))
        return prompt
    return _packaged(name, version)


def placeholders(prompt: Prompt) -> set[str]:
    return set(Template(prompt.system).get_identifiers()) | set(Template(prompt.user).get_identifiers())


def check_placeholders(prompt: Prompt, packaged: Prompt, where: str) -> None:
    used, known = placeholders(prompt), placeholders(packaged)
    missing = sorted(REQUIRED.get(prompt.name, set()) - used)
    if missing:
        raise FeatdiscoError(f"prompt {where} for {prompt.name!r} must use "
                             f"{', '.join('$' + m for m in missing)} (the packaged {packaged.file} "
                             f"uses {', '.join('$' + k for k in sorted(known))})")
    unknown = sorted(used - known)
    if unknown:
        raise FeatdiscoError(f"prompt {where} for {prompt.name!r} uses {', '.join('$' + u for u in unknown)}, "
                             f"which featdisco does not fill (it fills {', '.join('$' + k for k in sorted(known))}; "
                             "write a literal $ as $$)")


def _packaged(name: str, version: int | None = None) -> Prompt:
    folder = resources.files(__package__)
    candidates = []
    for entry in folder.iterdir():
        m = re.fullmatch(rf"{re.escape(name)}\.v(\d+)\.txt", entry.name)
        if m and (version is None or int(m.group(1)) == version):
            candidates.append((int(m.group(1)), entry))
    if not candidates:
        raise FeatdiscoError(f"no packaged prompt named {name!r}" + (f" of version {version}" if version else ""))
    _, entry = max(candidates, key=lambda c: c[0])
    return parse_prompt(name, entry.name, entry.read_text(encoding="utf-8"))


def saved_copy(run_dir: Path, prompt: Prompt) -> Path:
    """Where a run keeps its copy of ``prompt``, under the same file name (so the copy has
    the same version, and the same cache keys): a user's file in a folder of its own name."""
    if prompt.file.startswith(f"{prompt.name}."):
        return run_dir / "prompts" / prompt.file
    return run_dir / "prompts" / prompt.name / prompt.file


def saved_prompt_files(run_dir: Path, versions: dict[str, str]) -> dict[str, str]:
    """The run's copies of its prompts, by name, from the manifest's ``prompts`` versions."""
    out: dict[str, str] = {}
    for name, version in versions.items():
        file = str(version).rsplit("@", 1)[0]
        for path in (run_dir / "prompts" / file, run_dir / "prompts" / name / file):
            if path.is_file() and (path.parent.name == name or file.startswith(f"{name}.")):
                out[name] = str(path)
                break
    return out
