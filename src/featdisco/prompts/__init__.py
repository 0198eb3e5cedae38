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


def load_prompt(name: str, path: str | Path | None = None) -> Prompt:
    """The newest packaged version of prompt ``name``, or the file at ``path``."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FeatdiscoError(f"prompt file {p} does not exist")
        return parse_prompt(name, p.name, p.read_text(encoding="utf-8"))
    folder = resources.files(__package__)
    candidates = []
    for entry in folder.iterdir():
        m = re.fullmatch(rf"{re.escape(name)}\.v(\d+)\.txt", entry.name)
        if m:
            candidates.append((int(m.group(1)), entry))
    if not candidates:
        raise FeatdiscoError(f"no packaged prompt named {name!r}")
    _, entry = max(candidates, key=lambda c: c[0])
    return parse_prompt(name, entry.name, entry.read_text(encoding="utf-8"))
