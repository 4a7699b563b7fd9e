"""Label Studio: tasks JSON with the LLM's label as a prediction, plus the labeling config XML; reads its exports.

Export writes `label_studio_tasks.json` (a list of tasks: `data` holds the text and llmlabel's provenance fields,
`predictions` the LLM's choice with `model_version` and `score`, so Label Studio pre-fills it) and
`label_studio_config.xml` (a single-choice `Choices` tag over the task's labels). Import reads Label Studio's
"JSON" export (tasks with `annotations`) and its "JSON_MIN" export (one flat object per annotation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from llmlabel.errors import DataError
from llmlabel.io import write_json
from llmlabel.review.base import Answer
from llmlabel.review.run import Run

FROM_NAME = "label"
TO_NAME = "text"
ROW_KEY = "llmlabel_row"


def label_config(run: Run) -> str:
    """The labeling config XML: the text (and second text), the LLM's label and why the row was picked, and one
    single-choice question over the labels."""
    pair = '\n  <Text name="text_pair" value="$text_pair"/>' if run.text_pair_field else ""
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in run.labels)
    return (f'<View>\n  <Header value="LLM label: $llm_label (confidence $confidence) - picked: $why"/>\n'
            f'  <Text name="{TO_NAME}" value="$text"/>{pair}\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n{choices}\n'
            f'  </Choices>\n</View>\n')


def tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label Studio tasks (import format) for the review items."""
    out = []
    for item in items:
        data = {"text": item["text"], ROW_KEY: item["row"], "llmlabel_id": item["id"],
                "llm_label": item["llm_label"], "confidence": round(item["confidence"], 4),
                "label_probs": json.dumps(item["label_probs"]), "selected_by": item["selected_by"],
                "sampling_prob": item["sampling_prob"], "why": item["why"], "run": item["run"],
                "model": item["model"], "prompt": item["prompt"]}
        if item["text_pair"] is not None:
            data["text_pair"] = item["text_pair"]
        task: dict[str, Any] = {"data": data}
        if item["llm_label"] is not None:
            task["predictions"] = [{
                "model_version": f"{item['model']} {item['prompt']}", "score": item["confidence"],
                "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [item["llm_label"]]}}],
            }]
        out.append(task)
    return out


def export(items: list[dict[str, Any]], run: Run, folder: Path) -> list[Path]:
    """Write the tasks JSON and the labeling config XML."""
    from llmlabel.io import atomic_write

    tasks_path = folder / "label_studio_tasks.json"
    write_json(tasks(items), tasks_path)
    config_path = atomic_write(folder / "label_studio_config.xml", lambda h: h.write(label_config(run)))
    return [tasks_path, config_path]


def _reviewer(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or who.get("username") or who.get("id") or "unknown")
    return f"label_studio_user_{who}" if who is not None else "unknown"


def _choice(result: list[dict[str, Any]], where: str) -> str | None:
    for region in result or []:
        if region.get("from_name") == FROM_NAME and region.get("type", "choices") == "choices":
            chosen = (region.get("value") or {}).get("choices") or []
            if len(chosen) > 1:
                raise DataError(f"{where}: {len(chosen)} choices {chosen} in one annotation; the task is single-label")
            return str(chosen[0]) if chosen else None
    return None


def read(path: Path, run: Run) -> list[Answer]:
    """Answers from a Label Studio JSON or JSON_MIN export (cancelled or empty annotations are skipped)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise DataError(f"{path} is not a Label Studio export (a JSON list of tasks)")
    answers = []
    for number, task in enumerate(data):
        fields = task.get("data", task) if isinstance(task, dict) else {}
        if ROW_KEY not in fields:
            raise DataError(f"{path} task {number} has no '{ROW_KEY}': not a task exported by `llmlabel review "
                            f"export --format label_studio`")
        row = int(fields[ROW_KEY])
        common = dict(row=row, selected_by=fields.get("selected_by"), text=fields.get("text"),
                      sampling_prob=float(fields["sampling_prob"]) if fields.get("sampling_prob") is not None
                      else None)
        if "data" in task:  # the full JSON export
            for annotation in task.get("annotations") or []:
                if annotation.get("was_cancelled"):
                    continue
                label = _choice(annotation.get("result") or [], f"{path.name} task {task.get('id', number)}")
                if label is not None:
                    answers.append(Answer(label=label, reviewer=_reviewer(annotation),
                                          time=annotation.get("updated_at") or annotation.get("created_at"),
                                          **common))
        elif task.get(FROM_NAME) not in (None, ""):  # JSON_MIN: one flat object per annotation
            label = task[FROM_NAME]
            if isinstance(label, dict):  # JSON_MIN writes {"choices": [...]} for multi-choice configs
                label = (label.get("choices") or [None])[0]
            answers.append(Answer(label=str(label), reviewer=str(task.get("annotator") or "unknown"),
                                  time=task.get("updated_at") or task.get("created_at"), **common))
    return answers


class _Format:
    export = staticmethod(export)
    read = staticmethod(read)


FORMAT = _Format()
