"""Class-balanced demonstrations: a stratified random draw, as even across labels as k allows."""

from __future__ import annotations

from collections import defaultdict

from llmlabel.selection.base import Selection, Selector


class BalancedSelector(Selector):
    """k examples with labels as evenly spread as possible (random labels when k < number of labels), in
    label-interleaved order, the same for every query.

    Args:
        seed: which draw.
    """

    name = "balanced"
    per_query = False

    def _select_many(self, queries, k, pairs):
        rng = self._rng()
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, ex in enumerate(self.pool):
            by_label[ex.label].append(i)
        labels = sorted(by_label)
        for lab in labels:
            rng.shuffle(by_label[lab])
        order = [labels[i] for i in rng.permutation(len(labels))]
        chosen: list[int] = []
        depth = 0
        while len(chosen) < k:
            for lab in order:
                if depth < len(by_label[lab]) and len(chosen) < k:
                    chosen.append(by_label[lab][depth])
            depth += 1
        examples = [self.pool[i] for i in chosen]
        return [Selection(list(examples)) for _ in queries]
