"""EPR (Rubin et al. 2022): learn to retrieve demonstrations from the LM's own judgement of them.

For a sample of pool items used as training queries, the nearest pool candidates are scored by the LM as one-shot
demonstrations (log-probability of the query's gold label). The best-scoring candidate is a positive, the worst ones
hard negatives, and a small dense retriever is trained contrastively: a linear map on top of frozen sentence
embeddings (initialised to the identity, so it starts as kNN), small enough to train on a CPU in seconds.
"""

from __future__ import annotations

import numpy as np

from llmlabel.selection.base import DemoScorer, Selection
from llmlabel.selection.knn import KNNSelector


class EPRSelector(KNNSelector):
    """A dense retriever trained from LM scores of candidate demonstrations.

    Args:
        train_queries: pool items used as training queries.
        candidates: nearest candidates scored per training query.
        negatives: lowest-scoring candidates used as hard negatives.
        epochs, lr, temperature: contrastive training.
        embedder: as for `knn`.
    """

    name = "epr"
    needs_scorer = True

    def __init__(self, seed: int = 0, embedder: object = "minilm", train_queries: int = 100, candidates: int = 8,
                 negatives: int = 3, epochs: int = 30, lr: float = 1e-3, temperature: float = 0.05):
        super().__init__(seed, embedder)
        self.train_queries, self.candidates, self.negatives = train_queries, candidates, negatives
        self.epochs, self.lr, self.temperature = epochs, lr, temperature  # contrastive training
        self.projection: np.ndarray | None = None
        self.train_log: dict[str, float] = {}

    def _fit(self, scorer: DemoScorer | None) -> None:
        import torch

        super()._fit(scorer)
        rng = self._rng()
        n = len(self.pool)
        queries = rng.choice(n, size=min(self.train_queries, n), replace=False)
        sims = self.vectors[queries] @ self.vectors.T
        sims[np.arange(len(queries)), queries] = -np.inf  # a query is not its own demonstration
        m = min(self.candidates, n - 1)
        cands = [np.argsort(-row, kind="stable")[:m] for row in sims]
        # One batched call: the backend packs all one-shot prompts into full batches.
        flat = scorer([(self.pool[qi], [self.pool[c]]) for qi, cand in zip(queries, cands) for c in cand])
        triples = []  # (query, positive, negatives)
        for i, (qi, cand) in enumerate(zip(queries, cands)):
            scores = np.asarray(flat[i * m:(i + 1) * m], dtype=np.float64)
            order = np.argsort(-scores, kind="stable")
            if scores[order[0]] - scores[order[-1]] < 1e-6:
                continue  # the LM cannot tell the candidates apart: no signal
            triples.append((qi, cand[order[0]], cand[order[::-1][:self.negatives]]))
        dim = self.vectors.shape[1]
        self.projection = np.eye(dim, dtype=np.float32)
        self.train_log = {"queries": float(len(queries)), "triples": float(len(triples))}
        if not triples:
            return
        torch.manual_seed(self.seed)
        vec = torch.from_numpy(self.vectors)
        q_idx = torch.tensor([t[0] for t in triples])
        pos_idx = torch.tensor([t[1] for t in triples])
        neg_idx = torch.tensor(np.stack([t[2] for t in triples]))
        weight = torch.nn.Parameter(torch.eye(dim))
        opt = torch.optim.Adam([weight], lr=self.lr)
        for _ in range(self.epochs):
            q = torch.nn.functional.normalize(vec[q_idx] @ weight, dim=-1)
            pos, neg = vec[pos_idx], vec[neg_idx]
            # In-batch positives of other queries are extra negatives; hard negatives come from the LM's scores.
            logits = torch.cat([q @ pos.T, torch.einsum("bd,bnd->bn", q, neg)], dim=1) / self.temperature
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(triples)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.train_log["final_loss"] = float(loss.detach())
        self.projection = weight.detach().numpy().astype(np.float32)

    def similarities(self, queries, pairs):
        """(queries x pool) scores of the trained retriever."""
        q = self._get_embedder().encode([self._joined(t, p) for t, p in zip(queries, pairs)]) @ self.projection
        q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
        return q @ self.vectors.T
