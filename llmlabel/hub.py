"""A run's labeled rows as a Hugging Face `datasets.DatasetDict` on disk, with a dataset card, ready to publish.

`output.hf_dataset: hf_dataset` in a recipe (or `llmlabel label ... --hf-dataset`) writes `<output.dir>/hf_dataset/`:
the `save_to_disk` folder of a DatasetDict with one split (the data's split, else `train`) holding every input column
plus llmlabel's output columns, and `README.md`, a dataset card whose YAML header is Hub metadata and whose body
says how the labels were made: the label set, the model, the prompt template and its version, the labeling
settings, the metrics against gold, and token counts. Publish it unchanged with

    from datasets import load_from_disk
    from huggingface_hub import DatasetCard
    DatasetCard.load("runs/x/hf_dataset/README.md").push_to_hub("you/name", repo_type="dataset")
    load_from_disk("runs/x/hf_dataset").push_to_hub("you/name")   # keeps the card's text, adds dataset_info
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml

#: the dataset card's file name inside the saved folder (what the Hub shows)
CARD = "README.md"


def split_name(recipe: Any) -> str:
    """The split the rows go to: `data.split`, else the data file's stem when it names a split, else 'train'."""
    if recipe.data.split:
        return str(recipe.data.split)
    stem = Path(str(recipe.data.path).split(":")[-1]).stem
    return stem if stem in ("train", "validation", "test") else "train"


def token_counts(labeler: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Token counts with the model's tokenizer: each row's text, the prompt around an empty text (instruction, label
    list, chat template), and each label as scored. Empty when the backend cannot count."""
    backend = labeler.backend
    task = labeler.task
    try:
        texts = [backend.count_tokens(str(task.texts(row)[0] or "")) for row in rows]
        prompt = backend.count_tokens(labeler.prompting.render("", None if task.text_pair_field is None else ""))
        labels = {name: backend.count_tokens(shown) for name, shown in zip(task.names, task.texts_shown)}
    except Exception:  # noqa: BLE001 - a backend without a tokenizer: the card says so
        return {}
    return {"text_tokens_total": sum(texts), "text_tokens_mean": round(statistics.fmean(texts), 1) if texts else 0,
            "text_tokens_max": max(texts, default=0), "prompt_tokens_without_text": prompt,
            "label_tokens": labels}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def dataset_card(recipe: Any, labeler: Any, summary: dict[str, Any], split: str, n_rows: int,
                 tokens: dict[str, Any]) -> str:
    """The README.md of the saved dataset: Hub metadata (YAML) and how the labels were made."""
    from llmlabel import __version__

    task = labeler.task
    meta = {"pretty_name": f"{recipe.name} (labels by llmlabel)", "task_categories": ["text-classification"],
            "tags": ["llmlabel", "llm-labels", "synthetic-labels"], "size_categories": [_size_category(n_rows)]}
    metrics = summary.get("metrics")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {recipe.name}: labels by llmlabel", "",
             f"{n_rows} rows (split `{split}`) of `{recipe.data.path}` labeled by a language model with llmlabel "
             f"{__version__}. Gold labels, where the data had them, are in `{labeler.gold_column or 'none'}`; the "
             "model's are in `label`, with `label_probs` (every label's probability), `confidence`, `status` and "
             "`reason`.", "", "## Labels", ""]
    for lab in task.labels:
        lines.append(f"- `{lab.name}`" + (f": {lab.description}" if lab.description else ""))
    model = summary.get("model", "")
    lines += ["", "## How the labels were made", "",
              f"- model: `{Path(model).name if '/' in model else model}` (`{summary.get('backend')}` backend; "
              f"model id `{model}`)",
              f"- prompt: `{labeler.template.id}` (template digest `{labeler.template.digest}`), instruction: "
              f"{json.dumps(task.instruction)}",
              f"- mode: {summary.get('mode')}; normalize: {labeler.normalize}; calibration: "
              f"{labeler.calibration or 'none'}; demonstrations: "
              f"{'selected per row' if labeler.selector is not None else len(labeler.examples)}",
              f"- rows by status: {json.dumps(summary['stats']['statuses'], sort_keys=True)}"]
    lines += ["", "## Metrics against gold", ""]
    if metrics:
        lines += [f"- rows: {metrics['n']}", f"- accuracy: {metrics['accuracy']:.4f}",
                  f"- macro-F1: {metrics['macro_f1']:.4f}"]
        for key, name in (("ece", "ECE"), ("kappa", "Cohen's kappa")):
            if metrics.get(key) is not None:
                lines.append(f"- {name}: {metrics[key]:.4f}")
        for label, scores in (metrics.get("per_class") or {}).items():
            lines.append(f"- `{label}`: precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
                         f"F1 {scores['f1']:.3f}, support {scores['support']}")
    else:
        lines.append("No gold labels were evaluated.")
    lines += ["", "## Token counts (the backend's tokenizer)", ""]
    if tokens:
        lines += [f"- row texts: {tokens['text_tokens_total']} tokens in all, {tokens['text_tokens_mean']} on "
                  f"average, {tokens['text_tokens_max']} at most",
                  f"- prompt around an empty text (instruction, label list, chat template): "
                  f"{tokens['prompt_tokens_without_text']} tokens",
                  "- labels as scored: " + ", ".join(f"`{k}` {v}" for k, v in tokens["label_tokens"].items())]
    else:
        lines.append("Not available for this backend.")
    lines += ["", "## Caveats", "",
              "Labels come from a language model and carry its errors and biases; read the metrics above (on the "
              "rows that had gold labels) before training on them. The source data's own license and terms apply.",
              ""]
    return "\n".join(lines)


def write_hf_dataset(predictions: Path, folder: Path, recipe: Any, labeler: Any, summary: dict[str, Any]) -> Path:
    """Save the predictions file's rows as a DatasetDict at `folder` (replacing an earlier one whole) with its card."""
    from datasets import Dataset as HFDataset
    from datasets import DatasetDict

    from llmlabel.data import Dataset
    from llmlabel.io import atomic_write

    rows = list(Dataset(predictions))
    split = split_name(recipe)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict({split: HFDataset.from_list(rows)}).save_to_disk(str(tmp))
    card = dataset_card(recipe, labeler, summary, split, len(rows), token_counts(labeler, rows))
    atomic_write(tmp / CARD, lambda handle: handle.write(card))
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
