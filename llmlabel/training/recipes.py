"""Sections and helpers of the training recipe kinds (`llmlabel.kinds.distill_student`, `weak_to_strong`,
`symbol_tuning`). This module imports only pydantic at load time (torch loads when a recipe runs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmlabel.config import DataConfig, Strict, TaskConfig
from llmlabel.errors import ConfigError


class FilterConfig(Strict):
    """Which teacher labels the student trains on, and with what weight."""

    #: drop rows whose teacher confidence is below this
    min_confidence: float | None = Field(None, ge=0, le=1)
    #: weight each row's loss by the teacher's confidence
    weight_by_confidence: bool = False
    #: drop rows that confident learning flags as likely label errors (Northcutt et al. 2021)
    drop_label_issues: bool = False
    issue_method: Literal["prune_by_noise_rate", "confident_learning"] = "prune_by_noise_rate"
    #: features of the cross-fitted model whose out-of-sample probabilities confident learning reads
    issue_features: Literal["tfidf", "minilm"] = "tfidf"
    folds: int = Field(5, ge=2)


def text_column(task: TaskConfig, data: DataConfig) -> str:
    """The text column students read; pair and multi-label tasks are refused in one line."""
    if data.text_pair_field:
        raise ConfigError("students classify single texts; data.text_pair_field (pair tasks) is not supported")
    if task.multi_label:
        raise ConfigError("students are single-label classifiers; task.multi_label is not supported")
    return data.text_field
