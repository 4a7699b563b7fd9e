"""The sections of the `tnt_llm` recipe kind (the kind itself is `llmlabel.kinds.tnt_llm`): from an unlabeled
corpus to a label taxonomy (phase 1) and a cheap classifier that applies it at scale (phase 2), with metrics. Gold labels, when the data has them, are read only for the final evaluation.

Outputs in `output.dir`: taxonomy.yaml (editable, with its history), taxonomy_log.jsonl (every LLM request of phase 1
with each attempt), llm_labels.jsonl (the LLM-labeled sample), labeled.jsonl (the whole corpus labeled by the
classifier), classifier.joblib, metrics.json, and the labeling cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmlabel.config import all_registered, LabelingConfig, Strict
from llmlabel.errors import unknown

#: Phase-1 sample size per method when `taxonomy.sample` is not set (the LLM method reads every text; clustering
#: only embeds them, and the LLM reads a few central members per cluster).
DEFAULT_SAMPLE = {"llm": 60, "cluster": 400, "given": 0}


class TaxonomyConfig(Strict):
    """Phase 1: how the taxonomy is induced."""

    #: llm (summarize / generate / update / review), cluster (embed + k-means + LLM-named clusters), given
    method: str = "llm"
    #: what the taxonomy is for; starts every prompt (the paper's use-case instruction)
    use_case: str = "Categorize the texts by what they are about."
    text_name: str = "Text"
    #: texts phase 1 reads, drawn at random (seeded) from the corpus (default: 60 for llm, 400 for cluster)
    sample: int | None = Field(None, gt=0)
    min_labels: int = Field(3, ge=2)
    max_labels: int = Field(8, ge=2, le=50)
    name_max_chars: int = Field(32, ge=4, le=80)
    description_max_chars: int = Field(80, ge=16, le=400)
    rationale_max_chars: int = Field(60, ge=8, le=300)
    #: a text longer than this is cut before it goes into a prompt
    item_max_chars: int = Field(200, ge=20)
    #: re-asks after an answer that does not parse or validate
    retries: int = Field(2, ge=0, le=5)
    #: prompt template per step (summarize, generate, update, review, name_cluster), e.g. {generate: tnt_generate.v1}
    prompts: dict[str, str] = Field(default_factory=dict)
    # -- llm method
    minibatch_size: int = Field(20, gt=0)
    minibatches: int = Field(3, gt=0)
    review: bool = True
    #: token budget of one generate / update / review answer
    max_tokens: int = Field(360, gt=16)
    #: texts with more words than this are summarized first (null: never summarize)
    summarize_min_words: int | None = Field(40, ge=0)
    summary_max_tokens: int = Field(40, gt=0)
    # -- cluster method
    embedder: str = "minilm"
    #: number of clusters (null: the best silhouette between min_labels and max_labels)
    k: int | None = Field(None, ge=2)
    central_members: int = Field(8, gt=0)
    #: merge clusters whose names' embeddings are at least this similar (or whose names are the same words)
    merge_threshold: float = Field(0.9, gt=0, le=1)
    name_max_tokens: int = Field(80, gt=8)
    # -- given method
    labels: list[Any] | dict[str, Any] | None = None
    path: str | None = None
    # -- hierarchy
    #: 2 adds a second level under each label, induced by the same method from the texts under it
    levels: Literal[1, 2] = 1
    max_children: int = Field(5, ge=2)
    #: a label needs this many phase-1 texts under it to get children
    min_children_texts: int = Field(8, ge=2)

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        from llmlabel.taxonomy import induction_methods

        if value not in induction_methods:
            raise ValueError(unknown("taxonomy method", value, induction_methods.names()))
        return value

    @model_validator(mode="after")
    def _bounds(self) -> "TaxonomyConfig":
        if self.min_labels > self.max_labels:
            raise ValueError(f"min_labels ({self.min_labels}) is above max_labels ({self.max_labels})")
        return self


class TntLabelingConfig(LabelingConfig):
    """Phase 2: the LLM labels a sample with the taxonomy: the label recipe's `labeling:` section (core Labeler,
    score mode, descriptions in the prompt) with phase-2 defaults, plus the sample size and the catch-all label."""

    sample: int = Field(200, gt=0)
    #: default: the use case, then "Pick the label that fits the <text> best."
    instruction: str | None = None
    normalize: Literal["sum", "mean", "first"] = "mean"
    calibration: str = "contextual"
    #: a catch-all label added to the taxonomy for phase 2 (null: none); coverage counts the rows not given it
    other_label: str | None = "other"
    chunk_size: int = Field(64, gt=0)


class DistillConfig(Strict):
    """Phase 2: students trained on the LLM labels and applied to the whole corpus."""

    classifiers: list[str] = Field(default_factory=lambda: ["embedding_lr", "tfidf_lr"], min_length=1)
    #: share of the LLM-labeled sample held out to measure agreement with the LLM
    holdout: float = Field(0.25, ge=0, lt=1)
    #: label the whole corpus with the best student
    apply: bool = True
    #: rows timed (features from scratch) for the students' items/s
    timing_rows: int = Field(500, gt=0)

    @field_validator("classifiers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return all_registered("students", value, "llmlabel.taxonomy")


class TntOutputConfig(Strict):
    """Output files, inside `dir`."""

    dir: str = "runs/tnt_llm"
    taxonomy: str = "taxonomy.yaml"
    log: str = "taxonomy_log.jsonl"
    llm_labels: str = "llm_labels.jsonl"
    labeled: str = "labeled.jsonl"
    classifier: str = "classifier.joblib"
    metrics: str = "metrics.json"
    cache: str | None = "cache.sqlite"

    def path(self, name: str) -> Path:
        """`name` resolved inside `dir`."""
        return Path(self.dir).expanduser() / name
