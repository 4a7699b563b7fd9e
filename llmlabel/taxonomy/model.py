"""The taxonomy: labels (name, description, optional children) plus the history of how it was built, saved as YAML
that a person can edit and feed back (`taxonomy.method: given`, `taxonomy.path: ...`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmlabel.errors import ConfigError

#: What a label name may look like in a generated taxonomy: a letter first, then words (also the JSON-schema pattern
#: used for constrained decoding, so small models cannot emit names of punctuation or code).
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9 &/,'()-]*$"


def norm_name(name: str) -> str:
    """Name key for duplicate checks: lower case, words only."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


class TaxonomyLabel(BaseModel):
    """One label: a short name, a one-sentence description, and optional second-level labels."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    children: list["TaxonomyLabel"] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("label names must be non-empty")
        return value


class Change(BaseModel):
    """One change a step made, with a one-line rationale."""

    model_config = ConfigDict(extra="forbid")
    action: str
    label: str
    rationale: str = ""


class Step(BaseModel):
    """One step of the build (generate, update, review, cluster, name, merge, ...): what it did and how it went."""

    model_config = ConfigDict(extra="forbid")
    step: str
    status: str = "ok"
    reason: str | None = None
    labels: list[str] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)


class Taxonomy(BaseModel):
    """A label taxonomy and the history of its construction."""

    model_config = ConfigDict(extra="forbid")
    use_case: str = ""
    method: str = "given"
    model: str | None = None
    labels: list[TaxonomyLabel] = Field(min_length=1)
    history: list[Step] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[TaxonomyLabel]) -> list[TaxonomyLabel]:
        seen: dict[str, str] = {}
        for lab in labels:
            key = norm_name(lab.name)
            if key in seen:
                raise ValueError(f"duplicate label names '{seen[key]}' and '{lab.name}'")
            seen[key] = lab.name
        return labels

    @property
    def names(self) -> list[str]:
        """Top-level label names, in order."""
        return [lab.name for lab in self.labels]

    @property
    def depth(self) -> int:
        """1 for a flat taxonomy, 2 when some label has children."""
        return 2 if any(lab.children for lab in self.labels) else 1

    def task_labels(self, other: str | None = None) -> dict[str, str]:
        """name -> description of the top level, plus an `other` catch-all label when given."""
        labels = {lab.name: lab.description for lab in self.labels}
        if other and norm_name(other) not in {norm_name(n) for n in labels}:
            labels[other] = "none of the other labels fits"
        return labels

    def save(self, path: str | Path) -> Path:
        """Write as YAML (labels first, then the history), readable and editable by a person."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump(exclude_none=True)
        for lab in data["labels"]:
            for child in [lab, *lab.get("children", [])]:
                if not child.get("children"):
                    child.pop("children", None)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Taxonomy":
        """Read a taxonomy YAML (as written by `save`, or by hand: only `labels` is required)."""
        path = Path(path).expanduser()
        if not path.exists():
            raise ConfigError(f"taxonomy file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: Any, source: str) -> "Taxonomy":
        """A taxonomy from a mapping, a list of names, or a {name: description} mapping of labels."""
        if isinstance(data, (list, tuple)) or (isinstance(data, dict) and "labels" not in data):
            data = {"labels": data}
        labels = data.get("labels")
        if isinstance(labels, dict):
            labels = [{"name": str(k), "description": v or ""} for k, v in labels.items()]
        elif isinstance(labels, (list, tuple)):
            labels = [{"name": str(v)} if not isinstance(v, dict) else v for v in labels]
        try:
            return cls.model_validate({**data, "labels": labels})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: taxonomy '{where}': {err['msg']}") from None
