"""`llmlabel audit` and `llmlabel estimate`: the flags build an `audit` / `estimate` recipe (or `--recipe` loads one)
and the kind's summary lines are printed. Registered on the main app by `register(app)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def _split(value: Optional[str]) -> list[str] | None:
    return [x.strip() for x in value.split(",") if x.strip()] if value else None


def _run(recipe: dict[str, Any] | None, recipe_path: Optional[Path], overrides: list[str], quiet: bool) -> None:
    from llmlabel.cli import run_and_print
    from llmlabel.kinds.loading import load_recipe

    if recipe_path is not None:
        from llmlabel.recipes_index import find_recipe

        loaded = load_recipe(find_recipe(str(recipe_path)), overrides=overrides)
    else:
        loaded = load_recipe(data=recipe, overrides=overrides, source="flags")
    run_and_print(loaded, quiet=quiet, own_output=False)  # as before: library output stays on the terminal


def _model_section(backend: str, model: str, option: list[str]) -> dict[str, Any]:
    from llmlabel.kinds.loading import parse_overrides

    return {"backend": backend, "name": model, "options": dict(parse_overrides(option))}


def audit(
    data: Optional[str] = typer.Argument(None, help="Labeled JSONL/CSV/Parquet file or folder to audit (omit with "
                                         "--recipe)."),
    recipe: Optional[Path] = typer.Option(None, help="An audit recipe (file or shipped name) instead of the flags."),
    output: Path = typer.Option(Path("runs/audit"), "--output", "-o", help="Output folder."),
    split: Optional[str] = typer.Option(None, help="Split to read (folders)."),
    limit: Optional[int] = typer.Option(None, help="Audit at most this many rows."),
    text_field: str = typer.Option("text", help="Column holding the text."),
    label_field: str = typer.Option("label", help="Column holding the labels to check."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names (default: labels.json beside the "
                                         "data)."),
    instruction: str = typer.Option("Classify the text into one of the labels.", help="Task instruction."),
    classifiers: str = typer.Option("logreg_tfidf,logreg_embeddings",
                                    help="Cross-fitted cheap classifiers (comma-separated; '' for none)."),
    no_llm: bool = typer.Option(False, "--no-llm", help="Classifiers only (confident learning as usually done)."),
    shots: str = typer.Option("0", help="LLM demonstrations per prompt variant, comma-separated, e.g. 0,4 "
                              "(drawn from the other fold: never the row itself)."),
    folds: int = typer.Option(5, help="Cross-fitting folds of the classifiers."),
    top: Optional[int] = typer.Option(None, help="Write only the most suspicious rows."),
    backend: str = typer.Option("transformers", help="transformers, vllm, openai or fake."),
    model: str = typer.Option("smollm2", help="Model: smollm2 (embedded default), HF folder, .gguf file, Hub id."),
    option: list[str] = typer.Option([], help="Backend option key=value, e.g. quantize=int8. Repeatable."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set audit.plant.rate=0.1."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Rank a labeled dataset's rows by how likely their label is wrong (cleanlab on cross-fitted classifiers, the
    LLM, and their ensemble); writes suspects.jsonl and report.json."""
    if recipe is None and data is None:
        from llmlabel.errors import ConfigError

        raise ConfigError("give the data to audit (llmlabel audit DATA) or --recipe")
    built = None
    if recipe is None:
        try:
            shot_counts = [int(x) for x in _split(shots) or ["0"]]
        except ValueError:
            from llmlabel.errors import ConfigError

            raise ConfigError(f"--shots expects comma-separated numbers, e.g. 0,4 (got '{shots}')") from None
        built = {"name": "audit", "kind": "audit", "model": _model_section(backend, model, option),
                 "data": {"path": data, "split": split, "limit": limit, "text_field": text_field,
                          "label_field": label_field},
                 "task": {"instruction": instruction, "labels": _split(labels)},
                 "audit": {"classifiers": _split(classifiers) or [], "llm": not no_llm, "shots": shot_counts,
                           "folds": folds, "top": top},
                 "output": {"dir": str(output)}}
    _run(built, recipe, set_, quiet)


def estimate(
    data: Optional[str] = typer.Argument(None, help="A predictions file of an llmlabel run (label_probs column; its "
                                         "reviews.jsonl beside it is the gold sample), or data to label first."),
    recipe: Optional[Path] = typer.Option(None, help="An estimate recipe (file or shipped name) instead of the "
                                          "flags."),
    output: Path = typer.Option(Path("runs/estimate"), "--output", "-o", help="Output folder."),
    reviews: Optional[str] = typer.Option(None, help="reviews.jsonl of the review loop (default: beside the "
                                          "predictions)."),
    weighted: bool = typer.Option(False, "--weighted", help="Use every reviewed row weighted by 1 / sampling_prob "
                                  "(default: only the rows drawn at random)."),
    gold_column: Optional[str] = typer.Option(None, help="Simulate a review budget: draw --gold-size rows of this "
                                              "gold column instead of reading reviews."),
    gold_size: int = typer.Option(200, help="Gold rows drawn with --gold-column."),
    active: bool = typer.Option(False, "--active", help="With --gold-column: draw gold rows with probabilities "
                                "tilted toward rows the LLM is unsure about (weighted back)."),
    methods: str = typer.Option("naive,classical,ppi,ppi++,dsl", help="Comma-separated estimate methods."),
    regress: Optional[str] = typer.Option(None, help="Also regress 'the label is L' on covariates: "
                                          "L:cov1,cov2 (covariates: numeric columns, log_words or chars)."),
    split: Optional[str] = typer.Option(None, help="Split to read (folders)."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many rows."),
    text_field: str = typer.Option("text", help="Column holding the text."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names (default: labels.json beside "
                                         "the data, or the predictions' label_probs)."),
    instruction: str = typer.Option("Classify the text into one of the labels.", help="Task instruction."),
    backend: str = typer.Option("transformers", help="transformers, vllm, openai or fake."),
    model: str = typer.Option("smollm2", help="Model: smollm2 (embedded default), HF folder, .gguf file, Hub id."),
    option: list[str] = typer.Option([], help="Backend option key=value, e.g. quantize=int8. Repeatable."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set estimate.population="
                                   "superpopulation."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Label shares (and a regression coefficient) with 95% intervals from LLM labels plus a gold sample: naive,
    classical, PPI, PPI++, DSL; writes estimates.jsonl and report.json."""
    from llmlabel.errors import ConfigError

    if recipe is None and data is None:
        raise ConfigError("give the predictions or data (llmlabel estimate FILE) or --recipe")
    built = None
    if recipe is None:
        gold: dict[str, Any] = ({"source": "column", "size": gold_size, "design": "active" if active else "random"}
                                if gold_column else {"source": "reviews", "reviews": reviews,
                                                     "use": "weighted" if weighted else "random"})
        if active and not gold_column:
            raise ConfigError("--active draws a gold sample from --gold-column; for reviews use --weighted")
        est: dict[str, Any] = {"methods": _split(methods) or [], "gold": gold}
        if regress:
            label, sep, covs = regress.partition(":")
            if not sep or not label.strip() or not _split(covs):
                raise ConfigError(f"--regress expects LABEL:covariate[,covariate...], got '{regress}'")
            est["regression"] = {"outcome_label": label.strip(), "covariates": _split(covs)}
        built = {"name": "estimate", "kind": "estimate", "model": _model_section(backend, model, option),
                 "data": {"path": data, "split": split, "limit": limit, "text_field": text_field,
                          "label_field": gold_column or "label"},
                 "task": {"instruction": instruction, "labels": _split(labels)},
                 "estimate": est, "output": {"dir": str(output)}}
    _run(built, recipe, set_, quiet)


def register(app: typer.Typer) -> None:
    """Add the `audit` and `estimate` commands to the main app."""
    app.command()(audit)
    app.command()(estimate)
