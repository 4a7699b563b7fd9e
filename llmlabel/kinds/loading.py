"""Loading recipes: YAML files validated by pydantic. Unknown keys are errors with a did-you-mean; no code runs on load.

Recipes are read with `yaml.safe_load` (no Python tags, so no code can run) and may not expand past
`MAX_RECIPE_VALUES` values (YAML aliases can blow a tiny file up exponentially). The recipe's `kind` picks its class
from `llmlabel.registry.recipe_kinds` (a `llmlabel.kinds.base.RecipeKind`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from llmlabel.errors import ConfigError, suggest

#: most values (mapping keys, values and list items) a recipe may hold once its YAML aliases are expanded
MAX_RECIPE_VALUES = 100_000


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        annotation = current.model_fields[part].annotation
        candidates = [annotation] + list(get_args(annotation))
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None and get_origin(annotation) is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem: where, what, and the closest valid key for unknown keys."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            fields = list(parent.model_fields) if parent else []
            problems.append(f"unknown key '{where}'{suggest(str(loc[-1]), fields)}")
        elif err["type"] == "missing":
            problems.append(f"missing key '{where}'")
        else:
            value = err.get("input")
            shown = f" (got {value!r})" if value is not None and not isinstance(value, (dict, list)) else ""
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "value_error":
                shown = ""  # our validators name the bad value themselves
            problems.append(f"'{where}': {msg}{shown}")
    return f"{source}: " + "; ".join(problems)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def read_recipe_text(file: Path) -> str:
    """A recipe file's text; a folder, an unreadable file or one that is not UTF-8 is a one-line ConfigError."""
    if file.is_dir():
        raise ConfigError(f"recipe {file} is a folder, not a YAML file")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read recipe {file}: {exc.strerror or exc}") from None


def parse_overrides(pairs: list[str], flag: str = "--set") -> list[tuple[str, Any]]:
    """Parse `key.path=value` strings; values are read as YAML scalars/lists (safely)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects key=value, got '{pair}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def _check_size(data: Any, source: str) -> None:
    """Refuse a recipe that expands to more than `MAX_RECIPE_VALUES` values (a YAML alias bomb), before anything
    walks it as a tree (a shared node is counted every time it is referenced, which is what such a walk costs)."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_RECIPE_VALUES:
            raise ConfigError(f"{source}: the recipe expands to more than {MAX_RECIPE_VALUES:,} values (deeply nested "
                              "YAML aliases?); write it out without them")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None, source: str | None = None) -> Any:
    """Load and validate a recipe from a YAML file (or a dict), applying `--set` style overrides.

    The recipe's `kind` (default 'label') picks its pydantic class from `llmlabel.registry.recipe_kinds`.
    """
    source = source or (str(path) if path is not None else "recipe")
    if data is None:
        file = Path(path) if path is not None else None
        if file is None or not file.exists():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            data = yaml.safe_load(read_recipe_text(file)) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{source}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping")
    _check_size(data, source)
    data = dict(data)
    for key, value in parse_overrides(overrides or []):
        _check_size(value, f"--set {key}")  # an alias bomb can come in through a flag too
        _set_path(data, key, value)
    if overrides:
        _check_size(data, source)  # several flags, each under the limit, may add up past it
    from llmlabel.registry import recipe_kinds

    kind = data.get("kind", "label")
    if str(kind) not in recipe_kinds:
        from llmlabel.errors import unknown

        raise ConfigError(f"{source}: " + unknown("recipe kind", str(kind), recipe_kinds.names()))
    recipe_class = recipe_kinds.get(str(kind))
    try:
        return recipe_class.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, recipe_class, source)) from None
