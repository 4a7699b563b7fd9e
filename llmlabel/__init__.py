"""llmlabel: turn a large language model into a fast, measurable text labeler.

The public API loads lazily, so `import llmlabel` stays light (no torch, no vllm)::

    from llmlabel import LabelTask, Labeler, load_backend
    backend = load_backend("transformers")            # embedded SmolLM2-135M-Instruct
    task = LabelTask(labels=["negative", "positive"], instruction="Classify the sentiment of the review.")
    results = Labeler(backend, task).label_texts(["A delight from start to finish."])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "LabelTask": "llmlabel.core.task",
    "Label": "llmlabel.core.task",
    "Labeler": "llmlabel.labeling.labeler",
    "LabelResult": "llmlabel.core.results",
    "load_backend": "llmlabel.backends.base",
    "Backend": "llmlabel.backends.base",
    "ResultCache": "llmlabel.cache",
    "Dataset": "llmlabel.data",
    "write_rows": "llmlabel.data",
    "evaluate": "llmlabel.metrics",
    "load_recipe": "llmlabel.kinds.loading",
    "Recipe": "llmlabel.kinds.label",
    "RecipeKind": "llmlabel.kinds.base",
    "run_recipe": "llmlabel.kinds.run",
    "LLMLabelError": "llmlabel.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmlabel' has no attribute '{name}'")
