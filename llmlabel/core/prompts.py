"""Versioned Jinja prompt templates (`prompts/<name>.v<N>.jinja`), shipped as package data."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from llmlabel.errors import ConfigError, unknown

_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.jinja$")


def _prompt_dir() -> Path:
    try:
        folder = resources.files("llmlabel.prompts")
        path = Path(str(folder))
        if path.is_dir() and any(path.glob("*.jinja")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[2] / "prompts"  # a source checkout


def available() -> dict[str, list[int]]:
    """Template names and their versions, e.g. {'label': [1]}."""
    found: dict[str, list[int]] = {}
    for file in _prompt_dir().glob("*.jinja"):
        match = _NAME.match(file.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {k: sorted(v) for k, v in sorted(found.items())}


class PromptTemplate:
    """One versioned template. `id` (e.g. 'label.v1') and `digest` go into cache keys."""

    def __init__(self, name: str, version: int, source: str):
        import jinja2

        self.name = name
        self.version = version
        self.id = f"{name}.v{version}"
        self.source = source
        self.digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
        self._template = env.from_string(source)

    def render(self, **context: object) -> str:
        """Render with `context`; a variable the template needs but is missing raises ConfigError."""
        import jinja2

        try:
            return self._template.render(**context).strip()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"prompt '{self.id}': {exc.message}") from None


@lru_cache(maxsize=64)
def load_prompt(name: str, version: int | None = None) -> PromptTemplate:
    """Load template `name` at `version` (None = the latest); unknown names/versions give a one-line error.

    `name` may also be written 'label.v1'.
    """
    match = re.match(r"^(.*)\.v(\d+)$", name)
    if match and version is None:
        name, version = match[1], int(match[2])
    versions = available()
    if name not in versions:
        raise ConfigError(unknown("prompt template", name, versions))
    version = versions[name][-1] if version is None else version
    if version not in versions[name]:
        raise ConfigError(f"prompt template '{name}' has no version {version}; available: "
                          + ", ".join(f"v{v}" for v in versions[name]))
    return PromptTemplate(name, version, (_prompt_dir() / f"{name}.v{version}.jinja").read_text(encoding="utf-8"))
