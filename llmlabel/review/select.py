"""Choosing the rows a person reviews: `random`, `uncertain`, `disagree` and `mixed`.

Each policy returns `Pick`s: the row, which policy chose it, the probability that the row was drawn into the sample
(`sampling_prob`), and why. Only the `random` part is a probability sample of the whole run: a uniform draw of n of
N rows without replacement gives every row n/N, which is what unbiased accuracy and estimates need. `uncertain`,
`disagree` and the non-random part of `mixed` are deterministic given the run, so their rows carry 1.0 (and every row
not chosen 0): they find errors fast but say nothing unbiased about accuracy on their own.

`mixed` spends `audit_share` of the budget (default a quarter) on a uniform random audit sample first, then one row
per embedding cluster of the rest, the most uncertain of each (uncertainty plus diversity).
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Any

from llmlabel.errors import ConfigError, DataError, unknown
from llmlabel.registry import Registry
from llmlabel.review.run import Run, entropy, margin

policies = Registry("review selection policy")
UNCERTAINTY = ("margin", "entropy")
#: share of a mixed budget drawn as the uniform random audit sample when none is given
MIXED_AUDIT_SHARE = 0.25


@dataclass(frozen=True)
class Pick:
    """One row chosen for review."""

    row: int
    selected_by: str
    sampling_prob: float
    why: str


def _uncertainty_order(run: Run, rows: list[int], by: str) -> list[int]:
    """`rows`, most uncertain first (ties: lower row index first, so the order is reproducible)."""
    if by == "margin":
        return sorted(rows, key=lambda i: (margin(run.probs(i)), i))
    return sorted(rows, key=lambda i: (-entropy(run.probs(i)), i))


def _why_uncertain(run: Run, index: int, by: str) -> str:
    probs = run.probs(index)
    if not probs:
        return f"no label probabilities (status {run.rows[index].get('status', 'ok')})"
    if by == "margin":
        return f"top-2 margin {margin(probs):.3f}"
    return f"entropy {entropy(probs):.3f}"


def _random_picks(run: Run, budget: int, seed: int, exclude: set[int] = frozenset()) -> list[Pick]:
    population = len(run.rows)
    chosen = _random.Random(seed).sample(range(population), min(budget, population))
    prob = len(chosen) / population
    return [Pick(i, "random", prob, f"uniform random audit sample ({len(chosen)} of {population} rows)")
            for i in sorted(chosen) if i not in exclude]


@policies.register("random")
def select_random(run: Run, budget: int, seed: int = 0, **_: Any) -> list[Pick]:
    """A uniform random sample of `budget` rows without replacement (each row's sampling_prob = budget / rows)."""
    return _random_picks(run, budget, seed)


@policies.register("uncertain")
def select_uncertain(run: Run, budget: int, by: str = "margin", **_: Any) -> list[Pick]:
    """The `budget` rows with the smallest top-2 margin (`by='margin'`) or the highest entropy."""
    order = _uncertainty_order(run, list(range(len(run.rows))), by)[:budget]
    return [Pick(i, "uncertain", 1.0, _why_uncertain(run, i, by)) for i in order]


@policies.register("disagree")
def select_disagree(run: Run, budget: int, others: list[Run] | None = None, by: str = "margin",
                    **_: Any) -> list[Pick]:
    """Rows where this run and `others` (runs of other methods or models over the same rows) predict different
    labels; the most disagreeing first (most distinct labels, then the largest total-variation distance between the
    label distributions, then the least certain)."""
    if not others:
        raise ConfigError("--select disagree needs at least one other run of the same rows: --other RUN_DIR")
    for other in others:
        if len(other.rows) != len(run.rows):
            raise DataError(f"run {other.folder} has {len(other.rows)} rows, {run.folder} has {len(run.rows)}: "
                            f"disagreement needs runs over the same rows")
        differs = next((i for i in range(len(run.rows)) if other.text(i) != run.text(i)), None)
        if differs is not None:
            raise DataError(f"row {differs} differs between {run.folder} and {other.folder}: not the same rows")
    scored = []
    for i in range(len(run.rows)):
        labels = [run.llm_label(i)] + [o.llm_label(i) for o in others]
        distinct = len(set(labels))
        if distinct < 2:
            continue
        mine = run.probs(i)
        tv = max((0.5 * sum(abs(mine.get(k, 0.0) - o.probs(i).get(k, 0.0)) for k in set(mine) | set(o.probs(i)))
                  for o in others), default=0.0)
        scored.append((-distinct, -tv, margin(mine), i, labels))
    scored.sort()
    names = [run.name] + [o.folder.name for o in others]
    return [Pick(i, "disagree", 1.0, "runs disagree: " + ", ".join(f"{n}={lab}" for n, lab in zip(names, labels)))
            for _, _, _, i, labels in scored[:budget]]


@policies.register("mixed")
def select_mixed(run: Run, budget: int, seed: int = 0, by: str = "margin", audit_share: float | None = None,
                 embedder: Any = "minilm", **_: Any) -> list[Pick]:
    """A random audit share of the budget (marked `random`, each row budget*share / rows), then one row per cluster
    of the remaining rows' embeddings (k-means, k = the rest of the budget): the most uncertain row of each cluster."""
    import numpy as np
    from sklearn.cluster import KMeans

    from llmlabel.embeddings import make_embedder

    share = MIXED_AUDIT_SHARE if audit_share is None else audit_share
    audit = _random_picks(run, round(budget * share), seed) if share > 0 else []
    taken = {p.row for p in audit}
    rest = [i for i in range(len(run.rows)) if i not in taken]
    k = min(budget - len(audit), len(rest))
    if k <= 0:
        return audit
    texts = [run.text(i) + (" " + run.text_pair(i) if run.text_pair_field else "") for i in rest]
    vectors = np.asarray(make_embedder(embedder).encode(texts), dtype=np.float64)
    clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(vectors) if k > 1 else np.zeros(len(rest))
    picks = []
    for cluster in sorted(set(int(c) for c in clusters)):
        members = [rest[j] for j in range(len(rest)) if int(clusters[j]) == cluster]
        best = _uncertainty_order(run, members, by)[0]
        picks.append(Pick(best, "mixed", 1.0, f"most uncertain of embedding cluster {cluster} ({len(members)} rows; "
                                              f"{_why_uncertain(run, best, by)})"))
    picks.sort(key=lambda p: (margin(run.probs(p.row)), p.row))
    return audit + picks


def select_rows(run: Run, policy: str, budget: int, seed: int = 0, by: str = "margin",
                others: list[Run] | None = None, audit_share: float | None = None, embedder: Any = "minilm",
                skip_reviewed: bool = False) -> list[Pick]:
    """Validate the options and run `policy`; `skip_reviewed` drops rows that already have a review (the random
    sample is still drawn from every row, so its sampling probabilities stay those of the draw)."""
    if policy not in policies:
        raise ConfigError(unknown("--select policy", policy, policies.names()))
    if by not in UNCERTAINTY:
        raise ConfigError(unknown("--by uncertainty measure", by, UNCERTAINTY))
    if budget < 1:
        raise ConfigError(f"--budget must be a positive number of rows, got {budget}")
    if audit_share is not None and not 0 <= audit_share <= 1:
        raise ConfigError(f"--audit-share must be between 0 and 1, got {audit_share}")
    picks = policies.get(policy)(run, budget, seed=seed, by=by, others=others, audit_share=audit_share,
                                 embedder=embedder)
    if skip_reviewed:
        from llmlabel.review.run import ReviewLog

        done = set(ReviewLog(run.reviews_path).latest())
        picks = [p for p in picks if p.row not in done]
    return picks
