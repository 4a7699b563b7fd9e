"""The HTML run report: one self-contained file beside report.json (plots are PNGs drawn by matplotlib and embedded
as data URIs; no script, no external asset).

It shows the metrics table, a confusion matrix, a reliability diagram (calibration curve), a confidence histogram,
the agreement with reviewers when the run has reviews, and the most uncertain rows. Rows are judged against the
data's gold labels when the run had them, else against the reviewers' labels (reviews.jsonl) when there are any.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any

from llmlabel.errors import MissingDependencyError
from llmlabel.review.run import ReviewLog, Run, margin

log = logging.getLogger("llmlabel")
REPORT_FILE = "report.html"
UNCERTAIN_ROWS = 20
BINS = 10

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em} h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777}
.plots{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0} figcaption{color:#555;font-size:.9em}
img.plot{max-width:100%;border:1px solid #eee} td.text{max-width:520px}
"""


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("matplotlib", "the HTML run report") from None
    return Figure


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(name: str, caption: str, data: str) -> str:
    return (f'<figure><img class="plot" id="plot-{name}" alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def confusion_plot(matrix: list[list[int]], labels: list[str], title: str) -> str:
    """PNG (base64) of a confusion matrix, rows = reference, columns = predicted."""
    import numpy as np

    figure = _figure()
    n = len(labels)
    size = min(4 + 0.22 * n, 16)
    fig = figure(figsize=(size, size))
    ax = fig.add_subplot()
    data = np.asarray(matrix, dtype=float)
    image = ax.imshow(data, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = 9 if n <= 12 else max(3, int(160 / n))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(data[i, j]), ha="center", va="center",
                        color="white" if data[i, j] > 0.6 * data.max() else "black", fontsize=9)
    ax.set_xlabel("LLM label")
    ax.set_ylabel(title)
    ax.set_title(f"Confusion matrix ({title.lower()} vs LLM)")
    return _png(fig)


def reliability_plot(confidences: list[float], correct: list[bool]) -> str:
    """PNG (base64) of a reliability diagram: accuracy per confidence bin against the diagonal, with bin counts."""
    figure = _figure()
    fig = figure(figsize=(5, 5))
    ax = fig.add_subplot()
    centres, accuracy, counts = [], [], []
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        idx = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (b == 0 and c == 0)]
        if idx:
            centres.append(sum(confidences[i] for i in idx) / len(idx))
            accuracy.append(sum(correct[i] for i in idx) / len(idx))
            counts.append(len(idx))
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect calibration")
    ax.plot(centres, accuracy, "o-", color="#1f77b4", label="LLM")
    for x, y, n in zip(centres, accuracy, counts):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="#555")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def confidence_plot(confidences: list[float], correct: list[bool] | None) -> str:
    """PNG (base64) of the confidence histogram (split into right / wrong rows when there is a reference)."""
    figure = _figure()
    fig = figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    bins = [i / 20 for i in range(21)]
    if correct is None:
        ax.hist(confidences, bins=bins, color="#1f77b4")
    else:
        right = [c for c, ok in zip(confidences, correct) if ok]
        wrong = [c for c, ok in zip(confidences, correct) if not ok]
        ax.hist([right, wrong],
                bins=bins, stacked=True, color=["#2ca02c", "#d62728"], label=["right", "wrong"])
        ax.legend(fontsize=8)
    ax.set_xlabel("confidence")
    ax.set_ylabel("rows")
    ax.set_title("Confidence histogram")
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="num">{value:.4f}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value}</td>'
        return f"<td>{value}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def build_report(run: Run) -> str:
    """The report's HTML text."""
    from llmlabel.metrics import evaluate

    esc = html.escape
    report = run.report
    confidences = [float(r.get("confidence") or 0.0) for r in run.rows]
    preds = [run.llm_label(i) for i in range(len(run.rows))]
    reviews = ReviewLog(run.reviews_path).latest()
    golds = [run.gold(i) for i in range(len(run.rows))]
    if all(g is not None for g in golds):
        reference, ref_rows = "Gold", list(range(len(run.rows)))
        ref = golds
    elif reviews:
        reference, ref_rows = "Reviewer", sorted(reviews)
        ref = [reviews[i]["label"] if i in reviews else None for i in range(len(run.rows))]
    else:
        reference, ref_rows, ref = None, [], golds
    parts = [f"<h1>llmlabel run report: {esc(run.name)}</h1>",
             f'<p class="muted">{esc(str(run.folder))} &middot; model {esc(run.model)} &middot; prompt '
             f"{esc(run.prompt)} &middot; {len(run.rows)} rows &middot; labels: {len(run.labels)}</p>"]
    stats = report.get("stats") or {}
    if stats:
        statuses = ", ".join(f"{k} {v}" for k, v in (stats.get("statuses") or {}).items())
        parts.append(f"<p>{stats.get('rows', len(run.rows))} rows in {stats.get('seconds', 0):.1f} s "
                     f"({stats.get('items_per_second', 0):.1f} items/s; {stats.get('cached', 0)} from cache); "
                     f"statuses: {esc(statuses)}</p>")
    plots = []
    if reference:
        gold = [ref[i] for i in ref_rows]
        metrics = evaluate(gold, [preds[i] for i in ref_rows], run.labels, [confidences[i] for i in ref_rows])
        note = "" if reference == "Gold" else f" (against the reviewers' labels on the {len(ref_rows)} reviewed rows)"
        parts.append(f"<h2>Metrics{esc(note)}</h2>")
        parts.append(_table(["rows", "accuracy", "macro-F1", "kappa", "ECE", "majority baseline"],
                            [[metrics["n"], metrics["accuracy"], metrics["macro_f1"], metrics["kappa"],
                              metrics["ece"], metrics["majority_accuracy"]]]))
        per_class = [[esc(lab), m["precision"], m["recall"], m["f1"], m["support"]]
                     for lab, m in metrics["per_class"].items() if m["support"] or m["precision"]]
        parts.append(_table(["label", "precision", "recall", "F1", "support"], per_class))
        correct = [ref[i] == preds[i] for i in ref_rows]
        plots.append(_img("confusion", f"Confusion matrix: {reference.lower()} (rows) vs LLM (columns)",
                          confusion_plot(metrics["confusion"], run.labels, reference)))
        plots.append(_img("reliability", "Reliability diagram: accuracy per confidence bin (counts beside points)",
                          reliability_plot([confidences[i] for i in ref_rows], correct)))
        plots.append(_img("confidence", "Confidence histogram (right / wrong rows)",
                          confidence_plot([confidences[i] for i in ref_rows], correct)))
    else:
        parts.append("<h2>Metrics</h2><p>No gold labels and no reviews yet: accuracy needs a reference. Review a "
                     "random sample with <code>llmlabel review serve</code> or <code>llmlabel review export</code>."
                     "</p>")
        plots.append(_img("confidence", "Confidence histogram", confidence_plot(confidences, None)))
    parts.append('<h2>Plots</h2><div class="plots">' + "".join(plots) + "</div>")
    if reviews:
        from llmlabel.review.agreement import agreement

        agree = agreement(run)
        audit = agree["audit"]
        parts.append(f"<h2>Agreement with reviewers</h2><p>{agree['reviewed']} reviewed rows ("
                     + esc(", ".join(f"{k} {v}" for k, v in agree["by_policy"].items())) + ").</p>")
        if audit:
            parts.append(_table(["random audit rows", "LLM agrees", "accuracy", "95% CI low", "95% CI high", "kappa"],
                                [[audit["n"], audit["agree"], audit["accuracy"], audit["ci95"][0], audit["ci95"][1],
                                  audit["kappa"]]]))
    order = sorted(range(len(run.rows)), key=lambda i: (margin(run.probs(i)), i))[:UNCERTAIN_ROWS]
    rows = []
    for i in order:
        top = sorted(run.probs(i).items(), key=lambda kv: -kv[1])[:2]
        rows.append([i, f'<span class="text">{esc(run.text(i)[:300])}</span>', esc(str(preds[i])),
                     esc(", ".join(f"{k} {v:.3f}" for k, v in top)), margin(run.probs(i)),
                     esc(str(ref[i])) if reference and ref[i] is not None else ""])
    parts.append(f"<h2>The {len(order)} most uncertain rows (smallest top-2 margin)</h2>")
    parts.append(_table(["row", "text", "LLM label", "top-2 probabilities", "margin", reference or "reference"],
                        rows))
    body = "\n".join(parts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>llmlabel report: {esc(run.name)}'
            f"</title><style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Build the HTML report of the run in `run_dir` and write it (default `run_dir/report.html`) atomically."""
    from llmlabel.io import atomic_write

    run = Run.load(run_dir)
    text = build_report(run)
    return atomic_write(Path(output) if output else run.folder / REPORT_FILE, lambda h: h.write(text))


def write_report_for_run(summary: dict[str, Any]) -> str:
    """`llmlabel run`'s hook: write report.html beside report.json; returns the line to print. A missing matplotlib
    or any failure to draw is a one-line note, never a crash (the predictions and report.json are already written)."""
    folder = Path(summary["report"]).parent
    try:
        return f"html report: {write_report(folder)}"
    except MissingDependencyError:
        return "html report: skipped (needs matplotlib: pip install matplotlib)"
    except Exception as exc:  # the run's results are safe; the HTML view is a convenience
        log.debug("html report failed", exc_info=True)
        return f"html report: skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
