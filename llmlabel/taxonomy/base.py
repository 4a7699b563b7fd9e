"""What every taxonomy method shares: the context it runs in, the JSON schemas of the LLM's answers, and the clean-up
that turns an answer into labels (trimmed, de-duplicated, capped), recording every fix."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmlabel.errors import LLMLabelError
from llmlabel.structured import StructuredResult, generate_structured
from llmlabel.taxonomy.model import NAME_PATTERN, Change, Taxonomy, TaxonomyLabel, norm_name

#: Names the pipeline keeps for itself (the catch-all label added in phase 2).
RESERVED = {"other", "others", "misc", "miscellaneous", "none", "unknown"}


class TaxonomyError(LLMLabelError):
    """No usable taxonomy came out of phase 1 (every step's answer failed); the log file says why."""


@dataclass
class InductionContext:
    """Everything a method may use; the backend and the embedder load only when first asked for.

    `log` collects one record per LLM request (every attempt, raw answer, status), written to taxonomy_log.jsonl.
    """

    config: Any  # llmlabel.taxonomy.recipe.TaxonomyConfig
    seed: int = 0
    progress: bool = False
    get_backend: Callable[[], Any] | None = None
    get_embedder: Callable[[], Any] | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    base_dir: Path = Path(".")

    @property
    def backend(self) -> Any:
        """The LLM backend (loaded on first use)."""
        if self.get_backend is None:
            raise RuntimeError("this taxonomy method needs an LLM backend, and none was given")
        return self.get_backend()

    @property
    def embedder(self) -> Any:
        """The sentence embedder (loaded on first use)."""
        if self.get_embedder is None:
            from llmlabel.embeddings import Embedder

            self._embedder = getattr(self, "_embedder", None) or Embedder(self.config.embedder)
            return self._embedder
        return self.get_embedder()

    def ask(self, step: str, requests: list[str], model: type[BaseModel], schema: dict[str, Any],
            max_tokens: int, check: Callable[[Any], str | None] | None = None) -> list[StructuredResult]:
        """Schema-valid JSON for each request (constrained where the backend can, re-asked when `check` finds a
        problem); every attempt is logged."""
        results = generate_structured(self.backend, requests, model, schema=schema, max_tokens=max_tokens,
                                      retries=self.config.retries, check=check)
        for i, result in enumerate(results):
            self.log.append({"step": step, "request": i, **result.as_dict()})
        return results


@dataclass
class Induced:
    """A method's output: the taxonomy, and (clustering) each input text's label index, -1 for none."""

    taxonomy: Taxonomy
    assignments: list[int] | None = None


class TaxonomyMethod(ABC):
    """Induce a taxonomy of at most `max_labels` labels from `texts` (one method per file, registered in
    `llmlabel.taxonomy.induction_methods`)."""

    #: whether the method calls the LLM in phase 1
    needs_llm: bool = True

    @abstractmethod
    def induce(self, texts: list[str], ctx: InductionContext, max_labels: int, step_prefix: str = "") -> Induced:
        """Build the taxonomy; never raises for bad model output (it is recorded in `ctx.log` and the history)."""


# -- answers the LLM gives ----------------------------------------------------------------------------------------
class LabelOut(BaseModel):
    """A label as the LLM writes it."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    description: str = ""


class ChangeOut(BaseModel):
    """A change as the LLM writes it."""

    model_config = ConfigDict(extra="ignore")
    action: str = ""
    label: str = ""
    rationale: str = ""


class TaxonomyOut(BaseModel):
    """A generate / update / review answer."""

    model_config = ConfigDict(extra="ignore")
    labels: list[LabelOut] = Field(min_length=1)
    changes: list[ChangeOut] = Field(default_factory=list)


def name_schema(max_chars: int) -> dict[str, Any]:
    """A label name: a letter, then letters, digits, spaces and a few separators, at most `max_chars` long."""
    return {"type": "string", "pattern": NAME_PATTERN.replace("]*$", f"]{{1,{max_chars - 1}}}$")}


def label_schema(config: Any) -> dict[str, Any]:
    """One {name, description} object."""
    return {"type": "object", "additionalProperties": False, "required": ["name", "description"],
            "properties": {"name": name_schema(config.name_max_chars),
                           "description": {"type": "string", "minLength": 8,
                                           "maxLength": config.description_max_chars}}}


def taxonomy_schema(config: Any, min_labels: int, max_labels: int) -> dict[str, Any]:
    """A taxonomy answer: 'labels' (min..max {name, description}) and 'changes' (each with a one-line rationale)."""
    change = {"type": "object", "additionalProperties": False, "required": ["action", "label", "rationale"],
              "properties": {"action": {"type": "string", "enum": ["add", "remove", "rename", "merge", "edit"]},
                             "label": name_schema(config.name_max_chars),
                             "rationale": {"type": "string", "maxLength": config.rationale_max_chars}}}
    return {"type": "object", "additionalProperties": False, "required": ["labels", "changes"],
            "properties": {"labels": {"type": "array", "minItems": min_labels, "maxItems": max_labels,
                                      "items": label_schema(config)},
                           "changes": {"type": "array", "maxItems": max_labels, "items": change}}}


# -- clean-up -----------------------------------------------------------------------------------------------------
def clean_labels(raw: list[LabelOut], config: Any, max_labels: int) -> tuple[list[TaxonomyLabel], list[str]]:
    """Labels from an answer, with the fixes made: names cut to length, reserved and duplicate names dropped,
    the list capped at `max_labels`."""
    fixes: list[str] = []
    out: list[TaxonomyLabel] = []
    seen: set[str] = set()
    for lab in raw:
        # Answers from servers that cannot constrain decoding may carry numbering, quotes or markup.
        name = re.sub(r"^[^A-Za-z]+", "", re.sub(r"[^A-Za-z0-9 &/,'()-]", " ", lab.name))
        name = " ".join(name.split()).strip(" ,/&-")
        if name != " ".join(lab.name.split()):
            fixes.append(f"cleaned name {json.dumps(lab.name[:40])} to '{name}'")
        if len(name) > config.name_max_chars:
            name = name[: config.name_max_chars].rsplit(" ", 1)[0] or name[: config.name_max_chars]
            fixes.append(f"cut long name to '{name}'")
        key = norm_name(name)
        if not key:
            fixes.append(f"dropped label with empty name '{lab.name[:30]}'")
            continue
        if key in RESERVED:
            fixes.append(f"dropped reserved label '{name}' (phase 2 adds its own catch-all)")
            continue
        if key in seen:
            fixes.append(f"dropped duplicate label '{name}'")
            continue
        seen.add(key)
        description = " ".join(lab.description.split())[: config.description_max_chars]
        out.append(TaxonomyLabel(name=name, description=description))
    if len(out) > max_labels:
        fixes.append(f"kept the first {max_labels} of {len(out)} labels")
        out = out[:max_labels]
    return out, fixes


def diff_changes(old: list[TaxonomyLabel], new: list[TaxonomyLabel], said: list[ChangeOut]) -> list[Change]:
    """The changes from `old` to `new` (added, removed, edited labels), each with the model's rationale for that
    label where it gave one."""
    why = {norm_name(c.label): c for c in said if c.label}
    old_by, new_by = {norm_name(x.name): x for x in old}, {norm_name(x.name): x for x in new}
    changes = []

    def rationale(key: str) -> str:
        return " ".join(why[key].rationale.split()) if key in why and why[key].rationale.strip() else \
            "(no rationale given)"

    for key, lab in new_by.items():
        if key not in old_by:
            action = why[key].action if key in why and why[key].action in ("add", "rename", "merge") else "add"
            changes.append(Change(action=action, label=lab.name, rationale=rationale(key)))
        elif old_by[key].description != lab.description:
            changes.append(Change(action="edit", label=lab.name, rationale=rationale(key)))
    for key, lab in old_by.items():
        if key not in new_by:
            action = why[key].action if key in why and why[key].action in ("remove", "merge", "rename") else "remove"
            changes.append(Change(action=action, label=lab.name, rationale=rationale(key)))
    return changes


def check_taxonomy(taxonomy: Taxonomy, config: Any) -> list[str]:
    """Problems that make a taxonomy unusable (empty means valid): validates it against the JSON schema its labels
    were generated under (names, lengths, count, distinct names)."""
    problems = []
    try:
        Taxonomy.model_validate(taxonomy.model_dump())
    except Exception as exc:  # noqa: BLE001 - report, do not raise
        problems.append(str(exc).splitlines()[0])
    pattern = re.compile(name_schema(config.name_max_chars)["pattern"])
    if len(taxonomy.labels) < 2 and taxonomy.method != "given":
        problems.append(f"only {len(taxonomy.labels)} label(s)")
    for lab in [x for top in taxonomy.labels for x in [top, *top.children]]:
        if taxonomy.method != "given" and not pattern.match(lab.name):
            problems.append(f"name {json.dumps(lab.name)} does not match {pattern.pattern}")
        if len(lab.description) > config.description_max_chars:
            problems.append(f"description of '{lab.name}' longer than {config.description_max_chars} characters")
    return problems
