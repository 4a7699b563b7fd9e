"""The review loop: choose rows for a person (random audit, uncertain, disagree, mixed), export them to Label
Studio / Argilla / JSONL / CSV or the built-in review page, import the answers into `reviews.jsonl`, and measure the
LLM against them. Heavy modules load only when used."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Run": "llmlabel.review.run", "ReviewLog": "llmlabel.review.run", "select_rows": "llmlabel.review.select",
    "export_review": "llmlabel.review.base", "import_review": "llmlabel.review.base",
    "agreement": "llmlabel.review.agreement", "reviewed_rows": "llmlabel.review.use",
    "write_report": "llmlabel.review.report_html",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmlabel.review' has no attribute '{name}'")
