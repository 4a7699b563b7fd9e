"""The clustering baseline of TnT-LLM: embed the texts (MiniLM), cluster them with k-means (k chosen by silhouette
unless given), let the LLM only name and describe each cluster from its most central members (schema-constrained
JSON), then merge clusters whose names are near duplicates.

The LLM never decides the grouping, so even a very small model yields a usable taxonomy: a cluster whose naming
fails, or whose name collides where merging is not allowed, is named from its most distinctive words (c-TF-IDF),
and that fix is recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmlabel.core.prompts import load_prompt
from llmlabel.taxonomy.base import (
    Induced,
    InductionContext,
    LabelOut,
    TaxonomyMethod,
    clean_labels,
    label_schema,
)
from llmlabel.taxonomy.model import Change, Step, Taxonomy, TaxonomyLabel, norm_name


def choose_k(vectors: np.ndarray, k_min: int, k_max: int, seed: int) -> tuple[int, dict[int, float], Any]:
    """k in [k_min, k_max] with the best cosine silhouette; returns (k, {k: silhouette}, the fitted KMeans)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    k_max = max(min(k_max, len(vectors) - 1), 2)
    k_min = max(min(k_min, k_max), 2)
    scores: dict[int, float] = {}
    best: tuple[float, int, Any] | None = None
    for k in range(k_min, k_max + 1):
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vectors)
        if len(set(km.labels_)) < 2:
            continue
        score = float(silhouette_score(vectors, km.labels_, metric="cosine"))
        scores[k] = round(score, 4)
        if best is None or score > best[0]:
            best = (score, k, km)
    if best is None:
        km = KMeans(n_clusters=k_min, n_init=4, random_state=seed).fit(vectors)
        return k_min, scores, km
    return best[1], scores, best[2]


def top_terms(texts: list[str], assignments: np.ndarray, k: int, n: int = 3) -> list[list[str]]:
    """The `n` most distinctive words of each cluster (class-based TF-IDF: each cluster's texts as one document)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [" ".join(t for t, a in zip(texts, assignments) if a == c) or "empty" for c in range(k)]
    vec = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[A-Za-z][A-Za-z]+\b")
    try:
        matrix = vec.fit_transform(docs).toarray()
    except ValueError:  # only stop words
        return [["cluster", str(c + 1)] for c in range(k)]
    vocab = np.array(vec.get_feature_names_out())
    return [list(vocab[np.argsort(-row)[:n]]) for row in matrix]


class ClusterMethod(TaxonomyMethod):
    """Embed -> k-means (silhouette k) -> LLM names each cluster from its central members -> merge near-duplicates."""

    def induce(self, texts: list[str], ctx: InductionContext, max_labels: int, step_prefix: str = "") -> Induced:
        """Cluster `texts` into at most `max_labels` groups and name them; see the module docstring."""
        config = ctx.config
        vectors = ctx.embedder.encode(texts)
        min_labels = min(config.min_labels, max_labels)
        if config.k:
            from sklearn.cluster import KMeans

            k = max(2, min(config.k, max_labels, len(texts) - 1))
            km = KMeans(n_clusters=k, n_init=4, random_state=ctx.seed).fit(vectors)
            silhouettes: dict[int, float] = {}
        else:
            k, silhouettes, km = choose_k(vectors, min_labels, max_labels, ctx.seed)
        assignments = np.asarray(km.labels_)
        centers = km.cluster_centers_ / np.maximum(np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True), 1e-9)
        sizes = [int((assignments == c).sum()) for c in range(k)]
        history = [Step(step=f"{step_prefix}cluster", labels=[f"cluster {c + 1} ({sizes[c]} texts)" for c in range(k)],
                        reason=f"k={k}" + (f" by silhouette {silhouettes}" if silhouettes else " (given)"))]
        # The most central members of each cluster are what the LLM sees.
        central = []
        for c in range(k):
            members = np.flatnonzero(assignments == c)
            order = members[np.argsort(-(vectors[members] @ centers[c]))]
            central.append([" ".join(texts[i].split())[: config.item_max_chars]
                            for i in order[: config.central_members]])
        template = load_prompt(config.prompts.get("name_cluster", "tnt_name_cluster.v1"))
        requests = [template.render(use_case=config.use_case, items=items) for items in central]
        results = ctx.ask(f"{step_prefix}name clusters", requests, LabelOut, label_schema(config),
                          config.name_max_tokens)
        terms = top_terms(texts, assignments, k)
        labels: list[TaxonomyLabel] = []
        changes: list[Change] = []
        fixes: list[str] = []
        for c, result in enumerate(results):
            fallback = TaxonomyLabel(name=" / ".join(terms[c])[: config.name_max_chars],
                                     description="Texts about " + ", ".join(terms[c]) + ".")
            if result.ok:
                cleaned, notes = clean_labels([result.value], config, 1)
                fixes += notes
                label = cleaned[0] if cleaned else fallback
                if not cleaned:
                    fixes.append(f"cluster {c + 1}: unusable name, named from its top words '{fallback.name}'")
            else:
                label = fallback
                fixes.append(f"cluster {c + 1}: naming failed ({result.reason}); named from its top words "
                             f"'{fallback.name}'")
            labels.append(label)
            changes.append(Change(action="add", label=label.name,
                                  rationale=f"names cluster {c + 1} ({sizes[c]} texts; top words: "
                                            f"{', '.join(terms[c])})"))
        status = "repaired" if fixes or any(r.status == "repaired" for r in results) else "ok"
        history.append(Step(step=f"{step_prefix}name clusters", status=status, reason="; ".join(fixes) or None,
                            labels=[lab.name for lab in labels], changes=changes))
        labels, assignments, merge_step = self._merge(labels, assignments, terms, sizes, ctx, min_labels, step_prefix)
        history.append(merge_step)
        taxonomy = Taxonomy(use_case=config.use_case, method="cluster", labels=labels, history=history)
        return Induced(taxonomy, [int(a) for a in assignments])

    @staticmethod
    def _merge(labels: list[TaxonomyLabel], assignments: np.ndarray, terms: list[list[str]], sizes: list[int],
               ctx: InductionContext, min_labels: int, step_prefix: str
               ) -> tuple[list[TaxonomyLabel], np.ndarray, Step]:
        """Merge clusters whose names are near duplicates (same words, or name-embedding cosine >= merge_threshold),
        the larger cluster's label kept; never below `min_labels`: past that, a duplicate name gets its cluster's top
        words appended instead."""
        config = ctx.config
        vectors = ctx.embedder.encode([lab.name for lab in labels])
        sim = vectors @ vectors.T
        parent = list(range(len(labels)))

        def root(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        pairs = sorted(((float(sim[i, j]) if norm_name(labels[i].name) != norm_name(labels[j].name) else 2.0, i, j)
                        for i in range(len(labels)) for j in range(i + 1, len(labels))), reverse=True)
        changes: list[Change] = []
        groups = len(labels)
        for score, i, j in pairs:
            if score < config.merge_threshold:
                break
            a, b = root(i), root(j)
            if a == b:
                continue
            if groups <= min_labels:
                break
            keep, drop = (a, b) if sizes[a] >= sizes[b] else (b, a)
            parent[drop] = keep
            sizes[keep] += sizes[drop]
            groups -= 1
            why = "same name" if score == 2.0 else f"name similarity {score:.2f}"
            changes.append(Change(action="merge", label=labels[drop].name,
                                  rationale=f"merged into '{labels[keep].name}' ({why})"))
        roots = sorted({root(i) for i in range(len(labels))})
        index = {r: n for n, r in enumerate(roots)}
        merged = [labels[r] for r in roots]
        # Names still equal after merging stopped at min_labels: make them distinct with their clusters' top words.
        seen: set[str] = set()
        for n, r in enumerate(roots):
            key = norm_name(merged[n].name)
            if key in seen:
                name = f"{merged[n].name} ({' '.join(terms[r][:2])})"[: config.name_max_chars]
                changes.append(Change(action="rename", label=name,
                                      rationale=f"'{merged[n].name}' was taken; cluster kept apart to keep "
                                                f"{min_labels} labels"))
                merged[n] = merged[n].model_copy(update={"name": name})
                key = norm_name(name)
            seen.add(key)
        new_assign = np.array([index[root(int(a))] for a in assignments])
        status = "ok" if not any(c.action == "rename" for c in changes) else "repaired"
        return merged, new_assign, Step(step=f"{step_prefix}merge", status=status, labels=[x.name for x in merged],
                                        changes=changes)
