"""Argilla 2.x: a dataset folder in the layout of the SDK's `Dataset.to_disk` / `Dataset.from_disk`.

Export writes `argilla/.argilla/settings.json` (a `TextField` per text, one `LabelQuestion` named `label` over the
task's labels, metadata properties for the provenance), `argilla/.argilla/dataset.json` and `argilla/records.json`
(records with the LLM's label as a `Suggestion` carrying its score and agent). Load it into a server with
`rg.Dataset.from_disk("argilla", client=client)`; after labeling, `dataset.records.to_json("answers.json")` (or the
same folder written again by `dataset.to_disk`) is what `llmlabel review import` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError
from llmlabel.io import write_json
from llmlabel.review.base import Answer
from llmlabel.review.run import Run

QUESTION = "label"
#: metadata properties: name -> Argilla type (terms, float, integer)
METADATA = {"row": "integer", "selected_by": "terms", "sampling_prob": "float", "llm_label": "terms",
            "confidence": "float", "why": "terms", "run": "terms", "model": "terms", "prompt": "terms"}


def _stamp() -> dict[str, Any]:
    return {"id": None, "inserted_at": None, "updated_at": None}


def settings(run: Run) -> dict[str, Any]:
    """The dataset settings as `rg.Settings.serialize()` writes them."""
    fields = [{**_stamp(), "name": name, "settings": {"type": "text", "use_markdown": False}, "title": name,
               "required": True, "description": None, "dataset_id": None, "type": "text"}
              for name in (["text", "text_pair"] if run.text_pair_field else ["text"])]
    question = {**_stamp(), "name": QUESTION,
                "settings": {"type": "label_selection", "options": [{"text": lab, "value": lab} for lab in run.labels],
                             "visible_options": None},
                "title": "Which label is right?", "description": "The LLM's label is pre-selected as a suggestion.",
                "required": True, "dataset_id": None, "type": "label_selection"}
    metadata = []
    for name, kind in METADATA.items():
        extra = {"values": None} if kind == "terms" else {"min": None, "max": None}
        metadata.append({**_stamp(), "name": name, "settings": {"visible_for_annotators": True, "type": kind, **extra},
                         "title": name, "visible_for_annotators": True, "dataset_id": None})
    return {"guidelines": f"Review the labels of run {run.name} ({run.model}, prompt {run.prompt}).",
            "questions": [question], "fields": fields, "vectors": [], "metadata": metadata,
            "allow_extra_metadata": False, "distribution": {"strategy": "overlap", "min_submitted": 1},
            "mapping": None}


def records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as `rg.Record.to_dict()` writes them, the LLM's label as the suggestion."""
    out = []
    for item in items:
        fields = {"text": item["text"]} | ({"text_pair": item["text_pair"]} if item["text_pair"] is not None else {})
        suggestions = {} if item["llm_label"] is None else {
            QUESTION: {"value": item["llm_label"], "score": item["confidence"],
                       "agent": f"{item['model']} {item['prompt']}"}}
        out.append({"id": f"row-{item['row']}", "fields": fields,
                    "metadata": {name: item[name] for name in METADATA},
                    "suggestions": suggestions, "responses": {}, "vectors": {}, "status": "pending",
                    "_server_id": None})
    return out


def export(items: list[dict[str, Any]], run: Run, folder: Path) -> list[Path]:
    """Write the dataset folder `argilla/` (settings, dataset model, records)."""
    base = folder / "argilla"
    written = [base / ".argilla" / "settings.json", base / ".argilla" / "dataset.json", base / "records.json"]
    write_json(settings(run), written[0])
    write_json({**_stamp(), "name": f"llmlabel-{run.name}", "status": "draft", "guidelines": None,
                "allow_extra_metadata": False, "distribution": None, "workspace_id": None, "last_activity_at": None},
               written[1])
    write_json(records(items), written[2])
    return written


def read(path: Path, run: Run) -> list[Answer]:
    """Submitted responses from a records JSON (`dataset.records.to_json`) or a `to_disk` folder."""
    path = path / "records.json" if path.is_dir() else path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    answers = []
    for number, record in enumerate(data if isinstance(data, list) else []):
        metadata = record.get("metadata") or {}
        if "row" not in metadata:
            raise DataError(f"{path} record {number} has no 'row' metadata: not a record exported by "
                            f"`llmlabel review export --format argilla`")
        for response in (record.get("responses") or {}).get(QUESTION, []):
            if response.get("status", "submitted") != "submitted" or response.get("value") in (None, ""):
                continue
            prob = metadata.get("sampling_prob")
            answers.append(Answer(row=int(metadata["row"]), label=str(response["value"]),
                                  reviewer=f"argilla_user_{response.get('user_id')}",
                                  time=record.get("updated_at"), selected_by=metadata.get("selected_by"),
                                  sampling_prob=float(prob) if prob is not None else None,
                                  text=(record.get("fields") or {}).get("text")))
    return answers


class _Format:
    export = staticmethod(export)
    read = staticmethod(read)


FORMAT = _Format()
