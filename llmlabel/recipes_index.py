"""Find recipes: a path, or the name of a recipe shipped with the package (recipes/<name>.yaml)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from llmlabel.errors import ConfigError, unknown


def _shipped_dir() -> Path:
    try:
        path = Path(str(resources.files("llmlabel.recipes")))
        if path.is_dir() and any(path.glob("*.yaml")):
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "recipes"


def shipped_recipes() -> list[tuple[str, Path, str]]:
    """(name, path, description) of every shipped recipe."""
    out = []
    for path in sorted(_shipped_dir().glob("*.yaml")):
        try:
            description = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("description", "")
        except yaml.YAMLError:
            description = "(invalid YAML)"
        out.append((path.stem, path, " ".join(str(description).split())))
    return out


def find_recipe(name_or_path: str) -> Path:
    """An existing file path as is; otherwise a shipped recipe by name; otherwise a one-line error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    shipped = {name: p for name, p, _ in shipped_recipes()}
    stem = path.stem if path.suffix in (".yaml", ".yml") else name_or_path
    if stem in shipped and path.parent in (Path("."), Path("recipes")):
        return shipped[stem]
    raise ConfigError(f"recipe not found: {name_or_path}" + (f"; {unknown('recipe', stem, shipped)}"
                                                             if shipped else ""))
