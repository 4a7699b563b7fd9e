"""`llmlabel review export|import|serve|gold` and `llmlabel report`: thin wrappers over llmlabel.review."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

review_app = typer.Typer(no_args_is_help=True, help="Show a person where the model is unsure, take their answers "
                         "back (reviews.jsonl beside the run), and measure the LLM against them.")

_SELECT_HELP = ("random (uniform audit sample: unbiased accuracy), uncertain (smallest top-2 margin / highest "
                "entropy), disagree (rows where --other runs differ), mixed (a random audit share plus the most "
                "uncertain row of each embedding cluster).")


def _picks(run_dir: Path, select: str, budget: int, seed: int, by: str, other: list[Path],
           audit_share: Optional[float], embedder: str, text_field: Optional[str], skip_reviewed: bool):
    from llmlabel.review.run import Run
    from llmlabel.review.select import select_rows

    run = Run.load(run_dir, text_field=text_field)
    others = [Run.load(o, text_field=text_field) for o in other]
    picks = select_rows(run, select, budget, seed=seed, by=by, others=others, audit_share=audit_share,
                        embedder=embedder, skip_reviewed=skip_reviewed)
    return run, picks


@review_app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `llmlabel run` (holds predictions.jsonl)."),
    budget: int = typer.Option(100, help="How many rows a person will review."),
    select: str = typer.Option("mixed", help=_SELECT_HELP),
    format: str = typer.Option("label_studio", "--format", "-f", help="label_studio, argilla, jsonl or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the files (default "
                                          "RUN_DIR/review)."),
    seed: int = typer.Option(0, help="Seed of the random draws (random sample, clustering)."),
    by: str = typer.Option("margin", help="Uncertainty measure: margin (top-2) or entropy."),
    other: list[Path] = typer.Option([], help="Another run of the same rows (for --select disagree). Repeatable."),
    audit_share: Optional[float] = typer.Option(None, help="Share of a mixed budget drawn as the random audit "
                                                "sample (default 0.25)."),
    embedder: str = typer.Option("minilm", help="Embeddings for --select mixed: minilm (bundled) or hashing."),
    text_field: Optional[str] = typer.Option(None, help="Text column (default: the run's)."),
    skip_reviewed: bool = typer.Option(False, help="Leave out rows that already have a review."),
) -> None:
    """Choose rows for a person and write them for a labeling tool, with the LLM's label and their provenance."""
    from collections import Counter

    from llmlabel.review.base import export_review

    run, picks = _picks(run_dir, select, budget, seed, by, other, audit_share, embedder, text_field, skip_reviewed)
    files = export_review(run, picks, format, output or run.folder / "review")
    counts = Counter(p.selected_by for p in picks)
    typer.echo(f"exported {len(picks)} of {len(run.rows)} rows (" + ", ".join(f"{k} {v}" for k, v in counts.items())
               + f") as {format}:")
    for path in files:
        typer.echo(f"  {path}")


@review_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="The answers: a Label Studio JSON / JSON_MIN export, an Argilla records "
                                "JSON or to_disk folder, or the filled-in review.jsonl / review.csv."),
    run: Path = typer.Option(..., "--run", help="The run folder the rows came from."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="label_studio, argilla, jsonl or csv "
                                         "(default: from the file)."),
    reviewer: Optional[str] = typer.Option(None, help="Reviewer name for every answer (default: from the file)."),
    latest: bool = typer.Option(False, "--latest", help="When a row has conflicting answers, keep the latest "
                                "instead of stopping."),
    text_field: Optional[str] = typer.Option(None, help="Text column (default: the run's)."),
) -> None:
    """Read a person's labels into RUN/reviews.jsonl and report the LLM's agreement with them."""
    from llmlabel.review.agreement import format_agreement, write_agreement
    from llmlabel.review.base import import_review
    from llmlabel.review.run import Run

    loaded = Run.load(run, text_field=text_field)
    records = import_review(file, loaded, fmt=format, reviewer=reviewer, latest=latest)
    typer.echo(f"imported {len(records)} answers into {loaded.reviews_path}")
    report, path = write_agreement(loaded)
    typer.echo(format_agreement(report))
    typer.echo(f"agreement: {path}")


@review_app.command("serve")
def serve_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `llmlabel run`."),
    budget: int = typer.Option(100, help="How many rows to review."),
    select: str = typer.Option("mixed", help=_SELECT_HELP),
    port: int = typer.Option(0, help="Port on 127.0.0.1 (0: a free one)."),
    reviewer: Optional[str] = typer.Option(None, help="Your name in reviews.jsonl (default: the login name)."),
    seed: int = typer.Option(0, help="Seed of the random draws."),
    by: str = typer.Option("margin", help="Uncertainty measure: margin or entropy."),
    other: list[Path] = typer.Option([], help="Another run of the same rows (for --select disagree)."),
    audit_share: Optional[float] = typer.Option(None, help="Random audit share of a mixed budget (default 0.25)."),
    embedder: str = typer.Option("minilm", help="Embeddings for --select mixed: minilm or hashing."),
    text_field: Optional[str] = typer.Option(None, help="Text column (default: the run's)."),
) -> None:
    """Serve a local review page (127.0.0.1, works offline): one row at a time, keyboard shortcuts; every answer
    is written to RUN_DIR/reviews.jsonl as it is given."""
    import getpass

    from llmlabel.review.server import serve

    run, picks = _picks(run_dir, select, budget, seed, by, other, audit_share, embedder, text_field, False)
    serve(run, picks, port=port, reviewer=reviewer or getpass.getuser(),
          announce=lambda url: typer.echo(f"review page: {url}  ({len(picks)} rows; Ctrl-C to stop)"))


@review_app.command("gold")
def gold_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder with reviews.jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (.jsonl, .csv, .parquet)."),
    only: Optional[str] = typer.Option(None, help="Only rows selected by this policy (e.g. random)."),
) -> None:
    """Write the reviewed rows with the reviewer's label as `label` (and the LLM's as `llm_label`): a gold file for
    `llmlabel eval --pred-field llm_label`, a method or calibration dev slice, or an exemplar pool."""
    from llmlabel.io import write_rows
    from llmlabel.review.run import Run
    from llmlabel.review.use import reviewed_rows

    rows = reviewed_rows(Run.load(run_dir), only=only)
    typer.echo(f"{len(rows)} reviewed rows: {write_rows(rows, output)}")


def report_cmd(
    run_dir: Path = typer.Argument(..., help="Output folder of `llmlabel run`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default RUN_DIR/report.html)."),
) -> None:
    """Rebuild the run's HTML report: metrics, confusion matrix, reliability diagram, confidence histogram, the most
    uncertain rows, and the agreement with reviewers when there are reviews."""
    from llmlabel.review.report_html import write_report

    typer.echo(f"report: {write_report(run_dir, output)}")
