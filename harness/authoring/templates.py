"""Versioned prompt files: ``prompts/<stage>-v<N>.md``, sections split by ``=== name ===`` lines.

The first section is the system prompt, ``user`` the user message; other sections are pieces
the job picks from. Placeholders are ``$name`` (:class:`string.Template`), so JSON braces in a
prompt need no escaping. A file's version is its name; its sha256 goes into the manifest.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).parent / "prompts"
_SECTION = re.compile(r"^=== (?P<name>[\w-]+) ===$", re.M)


@dataclass(frozen=True)
class PromptFile:
    version: str
    path: Path
    sections: dict[str, str]
    sha256: str

    def text(self, section: str, **values) -> str:
        return Template(self.sections[section]).substitute(values)

    def messages(self, **values) -> list[dict]:
        return [{"role": "system", "content": self.text("system", **values)},
                {"role": "user", "content": self.text("user", **values)}]

    def provenance(self) -> dict:
        return {"version": self.version, "file": self.path.name, "sha256": self.sha256}


def load_prompt(version: str, folder: Path = PROMPTS_DIR) -> PromptFile:
    """An authoring prompt by version: its sections (system, user, ...) and the file's hash."""
    path = folder / f"{version}.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such authoring prompt (have: "
                                f"{', '.join(sorted(p.stem for p in folder.glob('*.md')))})")
    raw = path.read_text()
    parts = _SECTION.split(raw)
    sections = {"system": parts[0].strip()}
    sections.update({parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)})
    if "user" not in sections:
        raise ValueError(f"{path}: no '=== user ===' section")
    return PromptFile(version, path, sections, hashlib.sha256(raw.encode()).hexdigest())
