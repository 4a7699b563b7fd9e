"""BM25 retrieval: the k pool examples with the highest lexical BM25 score for the query (`bm25s`)."""

from __future__ import annotations

import numpy as np

from llmlabel.errors import MissingDependencyError
from llmlabel.selection.base import Selection, Selector


class BM25Selector(Selector):
    """Lexical nearest neighbours by Okapi BM25 (English stop words removed).

    Args:
        seed: unused (deterministic).
    """

    name = "bm25"

    def _fit(self, scorer) -> None:
        try:
            import bm25s
        except ImportError:
            raise MissingDependencyError("bm25s", "the bm25 selector") from None
        self._bm25s = bm25s
        corpus = [self._joined(e.text, e.text_pair) for e in self.pool]
        self.index = bm25s.BM25()
        self.index.index(bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False)

    def _select_many(self, queries, k, pairs):
        texts = [self._joined(t, p) for t, p in zip(queries, pairs)]
        tokens = self._bm25s.tokenize(texts, stopwords="en", show_progress=False)
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        out = []
        for row_docs, row_scores in zip(np.asarray(docs), np.asarray(scores)):
            out.append(Selection([self.pool[int(i)] for i in row_docs], [float(s) for s in row_scores]))
        return out
