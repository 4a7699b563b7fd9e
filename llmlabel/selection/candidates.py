"""Per-row demonstrations and label shortlists: what each row's prompt shows.

With a selector, each row gets its `k` demonstrations (arranged by an ordering). Many-label tasks may restrict the
labels shown and scored per row (Milios et al. 2023): the labels of the row's demonstrations first, then the most
frequent labels among its nearest pool neighbours, weighted by similarity; that needs an embedding selector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

#: a row's demonstrations (as dicts) and its candidate label indices (None: every label)
Context = tuple[tuple[dict[str, Any], ...], tuple[int, ...] | None]

#: neighbours voted on per shortlisted label
NEIGHBOURS_PER_LABEL = 8


def shortlist(demo_labels: Sequence[int], similarities: np.ndarray, pool_labels: Sequence[int],
              size: int) -> tuple[int, ...]:
    """A row's candidate labels: its demonstrations' labels, then its nearest pool neighbours' most frequent ones
    (similarity-weighted votes among the `NEIGHBOURS_PER_LABEL * size` nearest) until `size` labels."""
    cands = list(dict.fromkeys(demo_labels))
    votes: Counter = Counter()
    reach = NEIGHBOURS_PER_LABEL * size
    top = np.argpartition(-similarities, min(len(similarities), reach) - 1)[:reach]
    for j in top:
        votes[pool_labels[j]] += float(similarities[j])
    for lab, _ in votes.most_common():
        if len(cands) >= max(size, 1):
            break
        if lab not in cands:
            cands.append(lab)
    return tuple(sorted(cands))


def row_contexts(texts: list[str], pairs: list[str | None], fixed: tuple[dict[str, Any], ...], selector: Any = None,
                 k: int = 4, ordering: str = "as_selected", restrict_labels: int | None = None,
                 index: dict[str, int] | None = None) -> list[Context]:
    """Per row: its demonstrations (`fixed` without a selector) and, when restricting labels, its candidates
    (`index`: label name -> label index)."""
    if selector is None or not texts:
        return [(fixed, None)] * len(texts)
    from llmlabel.selection.ordering import order_examples

    selections = selector.select_many(texts, k, pairs)
    demos = [tuple(ex.as_dict() for ex in order_examples(sel.examples, ordering)) for sel in selections]
    if restrict_labels is None or index is None:
        return [(d, None) for d in demos]
    sims = selector.similarities(texts, pairs)
    pool_labels = [index[ex.label] for ex in selector.pool]
    return [(row_demos, shortlist([index[d["label"]] for d in row_demos], row, pool_labels, restrict_labels))
            for row_demos, row in zip(demos, sims)]
