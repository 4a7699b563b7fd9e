"""The model card (README.md) written beside a saved student: what it is, how it was trained, what it scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int | None = None) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits is not None else f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_model_card(record: dict[str, Any]) -> str:
    """Markdown model card (Hugging Face front matter + sections) from a student's `student.json` record."""
    cfg = record.get("config", {})
    training = record.get("training", {})
    metrics = record.get("metrics", {})
    base = Path(str(record.get("base_model", ""))).name or record.get("base_model", "")
    labels = record.get("labels", [])
    method = cfg.get("method", "?")
    what = {"lora": f"LoRA (r={cfg.get('lora_r')}, on {', '.join(cfg.get('lora_targets', []))}) on the top "
                    f"{record.get('trained_layers')} of {record.get('num_layers')} layers, plus the head",
            "full": f"all weights of the top {record.get('trained_layers')} of {record.get('num_layers')} layers, "
                    "the final norm and the head",
            "head": "the classification head only (linear probe)"}.get(method, method)
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        f"base_model: {base}",
        "tags: [llmlabel, student, distillation]",
        "---",
        "",
        f"# {record.get('name', 'llmlabel student')}",
        "",
        f"A sequence classifier over {len(labels)} labels ({', '.join(labels)}) trained by llmlabel on generated "
        f"labels. Base model: `{base}`. Trained: {what}.",
        "",
        "## Labels used for training",
        "",
        _fmt(record.get("label_source", "labels given to `Student.fit`")),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in ("loss", "epochs", "batch_size", "max_length", "seed"):
        if key in cfg:
            lines.append(f"| {key} | {_fmt(cfg[key])} |")
    for key in ("lr", "rows", "steps", "seconds", "trainable_parameters"):
        if key in training:
            lines.append(f"| {key} | {_fmt(training[key])} |")
    for key, value in (record.get("selection") or {}).items():
        lines.append(f"| {key} | {_fmt(value, 4) if isinstance(value, float) else _fmt(value)} |")
    lines += ["", "## Metrics", ""]
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}
    if flat:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v, 4)} |" for k, v in flat.items()]
    else:
        lines.append("No evaluation was run.")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from llmlabel.training.student import StudentClassifier",
        "student = StudentClassifier(\"path/to/this/folder\")",
        "student.predict([\"some text\"]), student.label_texts([\"some text\"])[0].label_probs",
        "```",
        "",
        "A merged folder also loads with `transformers.AutoModelForSequenceClassification`; give it `position_ids` "
        "counting real tokens when you pad on the left (StudentClassifier does).",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write README.md into `folder`."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(record), encoding="utf-8")
    return path
