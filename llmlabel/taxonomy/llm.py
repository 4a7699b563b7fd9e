"""TnT-LLM phase 1 (Wan et al. 2024): summarize the texts, generate a taxonomy from the first minibatch, update it
minibatch by minibatch, then review it. Each step's answer is schema-constrained JSON where the backend can; a step
whose answer never validates keeps the previous taxonomy and is recorded as failed."""

from __future__ import annotations

from typing import Any

from llmlabel.core.prompts import load_prompt
from llmlabel.taxonomy.base import (
    Induced,
    InductionContext,
    TaxonomyError,
    TaxonomyMethod,
    TaxonomyOut,
    clean_labels,
    diff_changes,
    taxonomy_schema,
)
from llmlabel.taxonomy.model import Step, Taxonomy, TaxonomyLabel


def summarize(texts: list[str], ctx: InductionContext) -> list[str]:
    """Texts longer than `summarize_min_words` words replaced by an LLM summary (empty summaries keep the text)."""
    config = ctx.config
    if config.summarize_min_words is None:
        return list(texts)
    todo = [i for i, t in enumerate(texts) if len(t.split()) > config.summarize_min_words]
    if not todo:
        return list(texts)
    template = load_prompt(config.prompts.get("summarize", "tnt_summarize.v1"))
    backend = ctx.backend
    prompts = [backend.chat_prompt([{"role": "user", "content": template.render(
        use_case=config.use_case, text_name=config.text_name, text=backend.truncate(texts[i], 400))}]) for i in todo]
    answers = backend.generate(prompts, max_tokens=config.summary_max_tokens)
    out = list(texts)
    for i, answer in zip(todo, answers):
        summary = " ".join(str(answer).split())
        ctx.log.append({"step": "summarize", "request": i, "status": "ok" if summary else "failed",
                        "reason": None if summary else "empty summary: kept the text", "value": summary})
        if summary:
            out[i] = summary
    return out


def _too_few(value: TaxonomyOut, config: Any, max_labels: int, min_labels: int) -> str | None:
    """A problem when the answer has fewer than `min_labels` usable, distinct labels (small models repeat one name);
    such an answer is asked again with this message."""
    labels, _ = clean_labels(value.labels, config, max_labels)
    if len(labels) >= min_labels:
        return None
    names = [lab.name for lab in value.labels]
    repeated = sorted({n for n in names if names.count(n) > 1})
    detail = f"; repeated: {', '.join(repeated[:3])}" if repeated else ""
    return f"only {len(labels)} distinct usable label name(s), need {min_labels} to {max_labels}{detail}"


class LLMMethod(TaxonomyMethod):
    """Summarize -> generate (first minibatch) -> update (each further minibatch) -> review."""

    def induce(self, texts: list[str], ctx: InductionContext, max_labels: int, step_prefix: str = "") -> Induced:
        """Run the steps over minibatches of `texts`; see the module docstring."""
        from tqdm.auto import tqdm

        config = ctx.config
        min_labels = min(config.min_labels, max_labels)
        items = [" ".join(t.split())[: config.item_max_chars] for t in summarize(texts, ctx)]
        size = config.minibatch_size
        batches = [items[i:i + size] for i in range(0, len(items), size)][: config.minibatches]
        schema = taxonomy_schema(config, min_labels, max_labels)
        history: list[Step] = []
        labels: list[TaxonomyLabel] = []
        steps = [("generate" if b == 0 else f"update {b}", batch) for b, batch in enumerate(batches)]
        if config.review:
            steps.append(("review", batches[-1] if batches else []))
        bar = tqdm(steps, desc=f"{step_prefix}taxonomy (llm)", disable=not ctx.progress, unit="step")
        for name, batch in bar:
            if name == "review" and not labels:
                history.append(Step(step=f"{step_prefix}{name}", status="failed", reason="no taxonomy to review"))
                continue
            # Until some step succeeds there is no taxonomy to update: the next minibatch generates one afresh.
            kind = "review" if name == "review" else ("update" if labels else "generate")
            template = load_prompt(config.prompts.get(kind, f"tnt_{kind}.v1"))
            request = template.render(use_case=config.use_case, items=batch,
                                      labels=[lab.model_dump() for lab in labels],
                                      min_labels=min_labels, max_labels=max_labels)
            result = ctx.ask(f"{step_prefix}{name}", [request], TaxonomyOut, schema, config.max_tokens,
                             check=lambda value: _too_few(value, config, max_labels, min_labels))[0]
            step, new = self._apply(result, labels, config, max_labels, min_labels, f"{step_prefix}{name}")
            history.append(step)
            labels = new
        bar.close()
        if not labels:
            failed = sum(step.status == "failed" for step in history)
            raise TaxonomyError(f"no valid taxonomy: all {failed} {step_prefix}step(s) failed (last: "
                                f"{history[-1].reason if history else 'no texts'})")
        return Induced(Taxonomy(use_case=config.use_case, method="llm", labels=labels, history=history))

    @staticmethod
    def _apply(result: Any, labels: list[TaxonomyLabel], config: Any, max_labels: int, min_labels: int,
               name: str) -> tuple[Step, list[TaxonomyLabel]]:
        """The history entry of one step and the labels after it (the previous ones when the step failed)."""
        if not result.ok:
            return Step(step=name, status="failed", reason=f"{result.reason}; kept the previous taxonomy",
                        labels=[lab.name for lab in labels]), labels
        new, fixes = clean_labels(result.value.labels, config, max_labels)
        if len(new) < min_labels:
            return Step(step=name, status="failed", labels=[lab.name for lab in labels],
                        reason=f"{len(new)} usable label(s) after clean-up ({'; '.join(fixes) or 'none'}); kept the "
                               "previous taxonomy"), labels
        reasons = [r for r in [result.reason, *fixes] if r]
        status = "repaired" if result.status == "repaired" or fixes else "ok"
        return Step(step=name, status=status, reason="; ".join(reasons) or None, labels=[lab.name for lab in new],
                    changes=diff_changes(labels, new, result.value.changes)), new
