"""What to label: the label space, the instruction, and which fields of a row hold the text."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmlabel.errors import DataError, unknown


class Label(BaseModel):
    """One label: its name (what the output says), an optional description shown in the prompt, and an optional
    verbalizer: the text the model sees and is scored on instead of the name (e.g. "card arrival" for
    "card_arrival")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str | None = None
    verbalizer: str | None = None

    @property
    def text(self) -> str:
        """What the model sees and answers: the verbalizer, else the name."""
        return self.verbalizer or self.name


class LabelTask(BaseModel):
    """A classification task.

    `labels` is a list of names or a mapping name -> description. The text comes from `text_field` (and, for pair
    tasks such as NLI, `text_pair_field`); gold labels, when present, from `label_field`.
    """

    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(min_length=1)
    instruction: str = "Classify the text into one of the labels."
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str | None = "label"
    text_name: str = "Text"
    text_pair_name: str = "Text 2"
    multi_label: bool = False
    #: probability a label needs to be assigned in multi-label mode
    threshold: float = Field(0.5, gt=0, lt=1)
    #: show and score labels as words: "card_arrival" -> "card arrival" (outputs keep the names)
    humanize_labels: bool = False

    @field_validator("labels", mode="before")
    @classmethod
    def _coerce_labels(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [{"name": str(k), "description": v} for k, v in value.items()]
        if isinstance(value, (list, tuple)):
            # None is no name ("None" would become a label); numbers are names ("1", "2")
            return [{"name": "" if v is None else str(v)} if not isinstance(v, (dict, Label)) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique(self) -> "LabelTask":
        if self.humanize_labels:
            self.labels = [lab if lab.verbalizer else lab.model_copy(update={"verbalizer": " ".join(
                lab.name.replace("_", " ").split())}) for lab in self.labels]
        names = [lab.name for lab in self.labels]
        if any(not n.strip() for n in names):
            raise ValueError(f"labels must be non-empty names; label {[n.strip() for n in names].index('') + 1} of "
                             f"{len(names)} is empty")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate labels: {', '.join(dupes)}")
        texts = [lab.text for lab in self.labels]
        clashes = sorted({t for t in texts if texts.count(t) > 1})
        if clashes:
            raise ValueError(f"labels must be shown as distinct texts; shared: {', '.join(clashes)}")
        return self

    @property
    def names(self) -> list[str]:
        """Label names, in order."""
        return [lab.name for lab in self.labels]

    @property
    def texts_shown(self) -> list[str]:
        """What the model sees and is scored on for each label (verbalizers, else names), in order."""
        return [lab.text for lab in self.labels]

    def gold(self, row: dict[str, Any]) -> str | list[str] | None:
        """The gold label of `row` as a label name (class indices are mapped), or None when the row has none.

        A gold value outside the label space raises a one-line DataError naming it and the closest label.
        """
        if not self.label_field or self.label_field not in row or row[self.label_field] is None:
            return None
        value = row[self.label_field]
        if isinstance(value, list):
            return [self._gold_one(v) for v in value]
        return self._gold_one(value)

    def _gold_one(self, value: Any) -> str:
        names = self.names
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, int) and 0 <= value < len(names) and str(value) not in names:
            return names[value]
        if str(value) in names:
            return str(value)
        raise DataError(unknown(f"gold label in column '{self.label_field}'", value, names))

    def texts(self, row: dict[str, Any]) -> tuple[Any, Any]:
        """(text, text_pair) of `row`; a missing column raises a one-line DataError naming it and the columns."""
        for field in (self.text_field, self.text_pair_field):
            if field is not None and field not in row:
                raise DataError(unknown("text column", field, row.keys()))
        return row[self.text_field], (row[self.text_pair_field] if self.text_pair_field else None)
