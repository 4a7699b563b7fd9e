"""The `llmlabel` command line. Thin: parse flags, call the Python API, print.

Exit codes: 0 success; 1 unexpected internal error (a bug: please report it); 2 a problem with the input
(recipe, flags, data, model) explained in one line; 130 interrupted (results computed so far are cached).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from llmlabel.errors import LLMLabelError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label text datasets with a language model: zero-/few-shot, calibrated, cached, measured.",
                  epilog="Exit codes: 0 success; 2 a problem with the input (recipe, flags, data, model), explained "
                         "in one line; 130 interrupted (finished rows are cached: run again to resume); 1 a bug.")
recipes_app = typer.Typer(no_args_is_help=True, help="List and show the recipes shipped with llmlabel.")
app.add_typer(recipes_app, name="recipes")


def _print_summary(summary: dict[str, Any]) -> None:
    from llmlabel.metrics import format_report

    stats = summary["stats"]
    typer.echo(f"labeled {summary['rows']} rows with {summary['backend']} ({summary['mode']} mode) in "
               f"{stats['seconds']:.1f} s ({stats['items_per_second']:.1f} items/s; {stats['cached']} from cache)")
    problems = {k: v for k, v in stats["statuses"].items() if k != "ok"}
    invalid = stats.get("invalid_text", 0) + summary.get("invalid_utf8_rows", 0)
    notes = [f"{k} {v}" for k, v in problems.items()]
    notes += [f"truncated {stats['truncated']}"] if stats["truncated"] else []
    notes += [f"invalid text (shown as U+FFFD) {invalid}"] if invalid else []
    if notes:
        typer.echo("rows not ok: " + ", ".join(notes))
    if problems.get("failed"):
        typer.echo("failed rows are not cached: run the same command again to retry only them")
    if "executor" in summary:
        ex = summary["executor"]
        typer.echo(f"executor {ex['name']}: {ex['workers']} workers, {ex['shards']} shards of {ex['shard_size']} rows "
                   f"({ex['shards_reused']} reused from an earlier run)")
    if "api" in summary:
        from llmlabel.backends.api import summary_line

        typer.echo(summary_line(summary["api"]))
    if "metrics" in summary:
        typer.echo(format_report(summary["metrics"]))
    typer.echo(f"predictions: {summary['predictions']}\nreport: {summary['report']}")


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file, or the name of a shipped recipe (see `recipes list`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set data.limit=50 "
                                   "--set model.options.dtype=float32. Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    executor: Optional[str] = typer.Option(None, help="Where to label: local or ray (same as --set executor=...)."),
) -> None:
    """Run a recipe: label its data, write predictions and a report, and print accuracy when gold exists."""
    from llmlabel.config import Recipe, load_recipe
    from llmlabel.recipes_index import find_recipe

    overrides = [*set_, *([f"executor={executor}"] if executor else [])]
    loaded = load_recipe(find_recipe(str(recipe)), overrides=overrides)
    summary = loaded.run(progress=not quiet)
    if isinstance(loaded, Recipe):
        _print_summary(summary)
    else:
        for line in loaded.summary_lines(summary):
            typer.echo(line)


@app.command()
def label(
    data: str = typer.Argument(..., help="JSONL/CSV/Parquet file, folder of split files, or HF dataset name."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names (default: labels.json "
                                         "beside the data)."),
    output: Path = typer.Option(Path("runs/label"), "--output", "-o", help="Output folder."),
    split: Optional[str] = typer.Option(None, help="Split to read (folders and HF datasets)."),
    limit: Optional[int] = typer.Option(None, help="Label at most this many rows."),
    text_field: str = typer.Option("text", help="Column holding the text."),
    text_pair_field: Optional[str] = typer.Option(None, help="Column holding the second text of a pair."),
    label_field: Optional[str] = typer.Option("label", help="Gold label column, used for evaluation if present."),
    instruction: str = typer.Option("Classify the text into one of the labels.", help="Task instruction."),
    backend: str = typer.Option("transformers", help="transformers, vllm, openai, chat, decisions, systemone or "
                               "fake."),
    model: str = typer.Option("smollm2", help="Model: smollm2 (embedded default), HF folder, .gguf file, Hub id."),
    option: list[str] = typer.Option([], help="Backend option key=value, e.g. dtype=float32 or "
                                     "base_url=http://127.0.0.1:8000/v1. Repeatable."),
    mode: str = typer.Option("score", help="score (label likelihoods) or generate (parse the model's answer)."),
    normalize: str = typer.Option("sum", help="score mode: sum, mean (per token) or first (first token only) of "
                                  "label log-probs."),
    answer_prefix: str = typer.Option("", help="Text that starts the model's answer, e.g. 'Label:'."),
    calibration: str = typer.Option("auto", help="auto (batch: divide out the labeled rows' mean distribution), "
                                     "none, contextual, domain, incontext or batch."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the result cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label a dataset without writing a recipe (the flags build one)."""
    from llmlabel.config import load_recipe, parse_overrides
    from llmlabel.pipeline import run_recipe

    recipe: dict[str, Any] = {
        "name": "label",
        "model": {"backend": backend, "name": model, "options": dict(parse_overrides(option))},
        "data": {"path": data, "split": split, "limit": limit, "text_field": text_field,
                 "text_pair_field": text_pair_field, "label_field": label_field},
        "task": {"instruction": instruction,
                 "labels": [x.strip() for x in labels.split(",") if x.strip()] if labels else None},
        "labeling": {"mode": mode, "normalize": normalize, "calibration": calibration,
                     "answer_prefix": answer_prefix},
        "output": {"dir": str(output), **({"cache": None} if no_cache else {})},
    }
    _print_summary(run_recipe(load_recipe(data=recipe, source="flags"), progress=not quiet))


@app.command("eval")
def eval_(
    predictions: Path = typer.Argument(..., help="Predictions file written by `run` or `label`."),
    gold_field: Optional[str] = typer.Option(None, help="Gold column (default: gold_label, else label)."),
    pred_field: str = typer.Option("label", help="Predicted label column."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names (default: those seen)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report as JSON here."),
) -> None:
    """Score predictions against gold: accuracy, macro-F1, per-class P/R/F1, confusion, ECE, kappa."""
    from llmlabel.data import Dataset
    from llmlabel.errors import DataError, unknown
    from llmlabel.metrics import evaluate, format_report
    from llmlabel.pipeline import write_json

    rows = list(Dataset(predictions))
    if not rows:
        raise DataError(f"{predictions} has no rows")
    gold_col = gold_field or ("gold_label" if "gold_label" in rows[0] else "label")
    for col in (gold_col, pred_field):
        if col not in rows[0]:
            raise DataError(unknown(f"column in {predictions}", col, rows[0].keys()))
    gold = [str(r[gold_col]) for r in rows]
    pred = [None if r[pred_field] in (None, "") else str(r[pred_field]) for r in rows]
    names = [x.strip() for x in labels.split(",")] if labels else sorted(set(gold) | {p for p in pred if p})
    confidences = [float(r["confidence"]) for r in rows] if "confidence" in rows[0] else None
    report = evaluate(gold, pred, names, confidences)
    typer.echo(format_report(report))
    if output:
        write_json(report, output)
        typer.echo(f"report: {output}")


@recipes_app.command("list")
def recipes_list() -> None:
    """List shipped recipes with their descriptions."""
    from llmlabel.recipes_index import shipped_recipes

    for name, path, description in shipped_recipes():
        typer.echo(f"{name:<20} {description}  ({path})")


@recipes_app.command("show")
def recipes_show(name: str = typer.Argument(..., help="Recipe name or path.")) -> None:
    """Print a recipe's YAML."""
    from llmlabel.recipes_index import find_recipe

    typer.echo(Path(find_recipe(name)).read_text(encoding="utf-8"))


@app.command()
def models() -> None:
    """Show the default model's source and the converted models in the cache."""
    from llmlabel.models import cache_dir, list_models

    typer.echo(f"cache: {cache_dir()}")
    for row in list_models():
        typer.echo(f"{row['name']:<32} {row['kind']:<20} {row['path']}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors for user mistakes, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="llmlabel: %(message)s")
    try:
        app(args=argv, standalone_mode=False)
    except LLMLabelError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; results computed so far are cached, run again to resume", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
