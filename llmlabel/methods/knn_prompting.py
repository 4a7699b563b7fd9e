"""kNN prompting (Xu et al., ICLR 2023): nearest neighbours in the LM's own output space.

Every pool example is run through the prompt once; the LM's next-token distribution at the answer position is its
anchor. A query is represented the same way and labeled by a vote of the k anchors closest in KL divergence,
KL(anchor || query). Labeled data far beyond the context window is used, and the vote needs no calibration.

k is cross-fitted over the whole pool (`llmlabel.tuning`): a pool row's own distribution is its query, so every row
is voted on by the anchors of the other folds with no further LM call; the default k stays unless another k's
macro-F1 gain is beyond the noise (a paired bootstrap over rows).
"""

from __future__ import annotations

import numpy as np

from llmlabel.methods.base import LabelingMethod
from llmlabel.tuning import FOLDS, Z, choose, fold_ids

#: k candidates, and the default that stays unless another k is better beyond the noise
KS = (1, 3, 5, 9, 17, 33)
DEFAULT_K = 9


class KNNPrompting(LabelingMethod):
    """Label by the k nearest pool anchors in the LM's next-token distribution space.

    Args:
        labeler: supplies the backend (needs `next_token_logprobs`: the transformers backend), task and prompt
            (its fixed `examples` are part of every anchor prompt, as in the paper).
        k: neighbours; None cross-fits it over the pool among (1, 3, 5, 9, 17, 33) by macro-F1 (9 unless another k
            is better beyond the noise).
        top_tokens: keep the anchors' distributions on the union of each anchor's most likely tokens (memory and
            noise); None keeps the whole vocabulary.
        batch_size: prompts per backend call (progress is reported per batch).
        folds: cross-fitting folds for choosing k.
        z: the paired z another k's gain over the default needs.
    """

    name = "knn_prompting"

    def __init__(self, labeler, seed: int = 0, k: int | None = None, top_tokens: int | None = 64,
                 batch_size: int = 128, folds: int = FOLDS, z: float = Z):
        super().__init__(labeler, seed)
        self.k, self.top_tokens, self.batch_size = k, top_tokens, batch_size
        self.folds, self.z = folds, z  # cross-fitting of k

    def _log_dists(self, texts: list[str], pairs: list[str | None], desc: str) -> np.ndarray:
        from tqdm.auto import tqdm

        out = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, leave=False,
                          disable=not self.labeler.progress):
            prompting = self.labeler.prompting
            prompts = [prompting.render(*prompting.fit(t, p)[:2])
                       for t, p in zip(texts[start:start + self.batch_size], pairs[start:start + self.batch_size])]
            out.append(self.labeler.backend.next_token_logprobs(prompts))
        return np.concatenate(out).astype(np.float32)

    def _fit(self, pool, dev):
        pool = pool + dev  # cross-fitting uses every labeled row
        logp = self._log_dists([e.text for e in pool], [e.text_pair for e in pool], "knn prompting: anchors")
        if self.top_tokens is not None:
            top = np.argpartition(-logp, self.top_tokens - 1, axis=1)[:, : self.top_tokens]
            self.columns = np.unique(top)
        else:
            self.columns = np.arange(logp.shape[1])
        anchors = np.exp(logp[:, self.columns])
        self.anchors = anchors / anchors.sum(axis=1, keepdims=True)
        self.anchor_negentropy = (self.anchors * np.log(np.maximum(self.anchors, 1e-12))).sum(axis=1)
        self.y = np.asarray([self.task.names.index(e.label) for e in pool])
        self.report = {"anchors": len(pool), "columns": int(len(self.columns))}
        if self.k is None:
            # Each pool row's query distribution is its anchor (same prompt): pool x pool distances, no LM call.
            logq = np.log(np.maximum(self.anchors, 1e-30))
            dist = self.anchor_negentropy[None, :] - logq @ self.anchors.T
            folds = fold_ids(self.y, self.folds, self.seed)
            dist[folds[:, None] == folds[None, :]] = np.inf  # a row is voted on by the other folds' anchors
            held_out = int(np.bincount(folds).max())
            ks = [k for k in KS if k <= len(pool) - held_out]
            candidates = {k: self._vote(dist, k) for k in ks}
            baseline = DEFAULT_K if DEFAULT_K in candidates else ks[-1]
            choice = choose(candidates, self.y, baseline=baseline, metric="macro_f1", z=self.z)
            self.k = int(choice.chosen)
            choice.extra.update(folds=self.folds)
            self.report["selection"] = choice.as_dict()
        self.report["k"] = self.k

    def _distances(self, texts, pairs) -> np.ndarray:
        """(queries, anchors) KL(anchor || query) up to the anchors' renormalization."""
        logq = self._log_dists(texts, pairs, "knn prompting: queries")[:, self.columns]
        logq = logq - np.log(np.exp(logq).sum(axis=1, keepdims=True))  # renormalize on the kept columns
        return self.anchor_negentropy[None, :] - logq @ self.anchors.T

    def _vote(self, dist: np.ndarray, k: int) -> np.ndarray:
        k = min(k, dist.shape[1])
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        votes = np.full((dist.shape[0], len(self.task.names)), 1e-3)
        for row in range(dist.shape[0]):
            # Closer anchors break ties between equal counts.
            np.add.at(votes[row], self.y[nearest[row]], 1.0 - 1e-3 * np.argsort(np.argsort(dist[row, nearest[row]])))
        return votes / votes.sum(axis=1, keepdims=True)

    def _probs(self, texts, pairs):
        return self._vote(self._distances(texts, pairs), self.k)
