"""The `llmlabel` command line. Thin: parse flags, call the Python API, print.

Exit codes: 0 success; 1 unexpected internal error (a bug: please report it); 2 a problem with the input
(recipe, flags, data, model) explained in one line; 130 interrupted (results computed so far are cached).
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Optional

import typer
import typer.core

from llmlabel.errors import ConfigError, LLMLabelError

class _Group(typer.core.TyperGroup):
    """The root command group. Its one change: boolean flags show no `<bool>` type in --help (typer 0.29 prints one,
    which reads as if the flag took a value: `--quiet true` is then a usage error)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            _plain_flags_everywhere(command, ctx)
        return command


def _plain_flags(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""  # shown as nothing (None would fall back to the type name)
    return params


def _plain_flags_everywhere(command: Any, ctx: Any) -> None:
    """`_plain_flags` on a command, its help option and, for a sub-app, every command below it."""
    help_option = command.get_help_option(ctx)
    _plain_flags([*command.params, *([help_option] if help_option is not None else [])])
    for sub in getattr(command, "commands", {}).values():
        _plain_flags_everywhere(sub, ctx)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, cls=_Group,
                  help="Label text datasets with a language model: zero-/few-shot, calibrated, cached, measured.",
                  epilog="Exit codes: 0 success; 2 a problem with the input (recipe, flags, data, model), explained "
                         "in one line; 130 interrupted (finished rows are cached: run again to resume); 1 a bug.")
recipes_app = typer.Typer(no_args_is_help=True, help="List and show the recipes shipped with llmlabel.")
app.add_typer(recipes_app, name="recipes")
from llmlabel.review.cli import report_cmd, review_app  # noqa: E402  (the review loop and the HTML run report)
from llmlabel.review.report_html import write_report_for_run  # noqa: E402

app.add_typer(review_app, name="review")
app.command("report")(report_cmd)
from llmlabel.stats.cli import register as _register_stats  # noqa: E402  (audit, estimate)

_register_stats(app)


QUIET_HELP = "Print only the result lines and errors (no progress bars; library output goes to the log)."
VERBOSE_HELP = "Show everything: llmlabel's info messages and the libraries' own output (otherwise in the log)."


def _log_path(recipe: Any) -> Path:
    """Where library output of a run goes: llmlabel.log in the recipe's output folder."""
    output = getattr(recipe, "output", None)
    return Path(getattr(output, "dir", None) or "runs") / "llmlabel.log"


def _print_summary(recipe: Any, summary: dict[str, Any]) -> None:
    """Every kind's summary lines, then (label kinds) the HTML report beside report.json."""
    for line in recipe.summary_lines(summary):
        typer.echo(line)
    if recipe.html_report:
        typer.echo(write_report_for_run(summary))


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML file, or the name of a shipped recipe (see `recipes list`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set data.limit=50 "
                                   "--set model.options.dtype=float32. Repeatable."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    executor: Optional[str] = typer.Option(None, help="Where to label: local or ray (same as --set executor=...)."),
) -> None:
    """Run a recipe: label its data, write predictions and a report, and print accuracy when gold exists."""
    from llmlabel.kinds.loading import load_recipe
    from llmlabel.recipes_index import find_recipe

    overrides = [*set_, *([f"executor={executor}"] if executor else [])]
    run_and_print(load_recipe(find_recipe(str(recipe)), overrides=overrides), quiet=quiet, verbose=verbose)


def run_and_print(recipe: Any, quiet: bool = False, verbose: bool = False, own_output: bool = True) -> None:
    """Run a loaded recipe of any kind (output folder held; with `own_output`, library output goes to its log) and
    print its summary lines."""
    from llmlabel.kinds.run import run_recipe
    from llmlabel.outputs import hold_output_folder
    from llmlabel.terminal import owned

    # held before the log opens in it: a second run into a busy folder fails without touching the first one's log
    with _interruptible(), hold_output_folder(recipe.output.dir), \
            (owned(_log_path(recipe), quiet=quiet, verbose=verbose) if own_output else nullcontext()):
        summary = run_recipe(recipe, progress=not quiet)
    _print_summary(recipe, summary)


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
    hf_dataset: bool = typer.Option(False, "--hf-dataset", help="Also write the labeled rows as a datasets."
                                    "DatasetDict with a dataset card (OUTPUT/hf_dataset), ready for push_to_hub."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help=QUIET_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
) -> None:
    """Label a dataset without writing a recipe (the flags build one)."""
    from llmlabel.kinds.loading import load_recipe, parse_overrides

    recipe: dict[str, Any] = {
        "name": "label",
        "model": {"backend": backend, "name": model, "options": dict(parse_overrides(option, "--option"))},
        "data": {"path": data, "split": split, "limit": limit, "text_field": text_field,
                 "text_pair_field": text_pair_field, "label_field": label_field},
        "task": {"instruction": instruction, "labels": parse_label_list(labels) if labels is not None else None},
        "labeling": {"mode": mode, "normalize": normalize, "calibration": calibration,
                     "answer_prefix": answer_prefix},
        "output": {"dir": str(output), **({"cache": None} if no_cache else {}),
                   **({"hf_dataset": "hf_dataset"} if hf_dataset else {})},
    }
    run_and_print(load_recipe(data=recipe, source="flags"), quiet=quiet, verbose=verbose)


@app.command("eval")
def eval_(
    predictions: Path = typer.Argument(..., help="Predictions file written by `run` or `label`."),
    gold_field: Optional[str] = typer.Option(None, help="Gold column (default: gold_label, the column `run` and "
                                             "`label` write the input's gold labels to)."),
    pred_field: str = typer.Option("label", help="Predicted label column."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated label names (default: those seen)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the report as JSON here."),
) -> None:
    """Score predictions against gold: accuracy, macro-F1, per-class P/R/F1, confusion, ECE, kappa."""
    from llmlabel.data import Dataset
    from llmlabel.errors import DataError, suggest, unknown
    from llmlabel.metrics import evaluate, format_report
    from llmlabel.io import write_json

    all_rows = list(Dataset(predictions))
    if not all_rows:
        raise DataError(f"{predictions} has no rows")
    columns = list(all_rows[0])
    gold_col = gold_field or "gold_label"
    if gold_col not in columns:
        # Never fall back to the predicted column (nor suggest it): that scores the predictions against themselves.
        from llmlabel.core.results import OUTPUT_COLUMNS

        hint = suggest(gold_col, [c for c in columns if c not in OUTPUT_COLUMNS])
        raise DataError(f"{predictions} has no gold column '{gold_col}'{hint}; its columns: "
                        f"{', '.join(columns)}; name the gold column with --gold-field")
    if pred_field not in columns:
        raise DataError(unknown(f"column in {predictions}", pred_field, columns))
    if pred_field == gold_col:
        raise DataError(f"--gold-field and --pred-field are both '{gold_col}': that scores a column against itself")

    def empty(value: Any) -> bool:
        return value is None or value == "" or (isinstance(value, float) and value != value)

    rows = [r for r in all_rows if not empty(r.get(gold_col))]
    if not rows:
        raise DataError(f"no row of {predictions} has a gold label in column '{gold_col}'")
    gold = [str(r[gold_col]) for r in rows]
    pred = [None if empty(r.get(pred_field)) else str(r[pred_field]) for r in rows]
    names = parse_label_list(labels) if labels is not None else sorted(set(gold) | {p for p in pred if p})
    outside = sorted(set(gold) - set(names))
    if outside:
        raise DataError(unknown(f"gold label in column '{gold_col}' (not in --labels)", outside[0], names))
    confidences = None
    if "confidence" in columns:
        try:
            confidences = [float(r["confidence"]) if not empty(r.get("confidence")) else 0.0 for r in rows]
        except (TypeError, ValueError):
            raise DataError(f"{predictions}: column 'confidence' holds a value that is not a number") from None
    report = evaluate(gold, pred, names, confidences)
    report["rows_without_gold"] = len(all_rows) - len(rows)
    typer.echo(format_report(report))
    if report["rows_without_gold"]:
        typer.echo(f"{report['rows_without_gold']} rows have no gold label in '{gold_col}': not evaluated")
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
    from llmlabel.kinds.loading import read_recipe_text
    from llmlabel.recipes_index import find_recipe

    typer.echo(read_recipe_text(Path(find_recipe(name))))


@app.command()
def models() -> None:
    """Show the default model's source and the converted models in the cache."""
    from llmlabel.models import cache_dir, list_models

    typer.echo(f"cache: {cache_dir()}")
    for row in list_models():
        typer.echo(f"{row['name']:<32} {row['kind']:<20} {row['path']}")


#: printed when a run is interrupted before it could say more
INTERRUPTED = "interrupted; results computed so far are cached, run again to resume"


class _InterruptSeen(Exception):
    """A KeyboardInterrupt carried past typer, which turns it into a bare exit code and drops its message."""


@contextmanager
def _interruptible() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt as exc:
        raise _InterruptSeen(str(exc) or INTERRUPTED) from None


def parse_label_list(text: str, flag: str = "--labels") -> list[str]:
    """Comma-separated label names; an empty list or an empty name (`a,,b`, a trailing comma) is an error, not
    silently dropped."""
    names = [x.strip() for x in text.split(",")]
    if not any(names):
        raise ConfigError(f"{flag} is empty; give comma-separated label names, e.g. {flag} negative,positive")
    for number, name in enumerate(names, 1):
        if not name:
            raise ConfigError(f"{flag} '{text}': label {number} of {len(names)} is empty (two commas in a row or a "
                              "comma at an end?)")
    return names


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's usage-error class: typer >= 0.29 raises its bundled copy's (typer._click), older ones click's."""
    classes: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            classes.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(classes)


def _aborts() -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = [typer.Abort]
    try:
        import click

        classes.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover - typer >= 0.29 does not need click
        pass
    return tuple(classes)


def _usage_line(exc: Any) -> str:
    """One line for a click usage error: the message and where help is (click prints a usage block and a hint)."""
    message = " ".join(str(exc.format_message()).split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {message}{hint}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not the stream of the first call: `main` may run
    many times in one process, e.g. in tests, each with its own stderr)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors for user mistakes (exit 2), 130 for an interrupt."""
    logging.basicConfig(level=logging.WARNING, format="llmlabel: %(message)s", handlers=[_StderrHandler()])
    try:
        code = app(args=argv, standalone_mode=False)
    except LLMLabelError as exc:
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
    except _InterruptSeen as exc:
        typer.echo(str(exc), err=True)
        sys.exit(130)
    except KeyboardInterrupt as exc:
        typer.echo(str(exc) or INTERRUPTED, err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _usage_errors() as exc:
        if str(exc.format_message()).strip():  # empty: `llmlabel` alone, which has printed the help already
            typer.echo(_usage_line(exc), err=True)
        sys.exit(2)
    except _aborts():
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
    except OSError as exc:  # an I/O fault outside the paths that name their file (e.g. stdout on a full disk)
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
        sys.exit(2)
    # typer returns the exit code instead of raising under standalone_mode=False (Ctrl-C becomes 130 there)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        if code == 130:
            typer.echo(INTERRUPTED, err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
