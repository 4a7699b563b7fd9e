"""A token trie over label continuations, for scoring every label of a prompt in one forward pass.

Labels that share leading tokens share trie nodes, so a 77-label task costs one pass over (prompt suffix + trie
nodes) instead of 77 passes. Only nodes with children are fed to the model (a leaf's own output is never needed);
each fed node attends to the prompt and to its ancestors, never to its siblings ("tree attention").

Engines that cannot take a tree-attention mask (vLLM, OpenAI-compatible servers) use the same trie differently:
one request per output row (`CandidateTrie.requests`), each asking the log-probabilities of just that row's child
tokens at its last position, and `CandidateTrie.combine` sums the answers into per-candidate scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class CandidateTrie:
    """Trie of candidate token sequences.

    Attributes:
        tokens: token id of each fed node (nodes with children), parents before children.
        depths: depth of each fed node (0 = first candidate token).
        parents: index of each fed node's parent among fed nodes (-1 = the prompt's last token).
        roots: for each fed node, the index of its depth-0 ancestor among fed nodes (itself at depth 0).
        first_tokens: the first token id of each candidate.
        sources / targets / owners: for every token of every candidate, the output row predicting it (0 = the prompt's
            last token, 1 + j = fed node j), the token id, and the candidate index; summing the log-probabilities
            `logp[sources, targets]` per owner gives each candidate's score.
        num_candidates: number of candidates (the length of `combine`'s answer).
    """

    def __init__(self, candidates: list[list[int]]):
        self.num_candidates = len(candidates)
        self._ancestors: list[list[bool]] | None = None
        children: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        node_token: list[int] = []
        node_parent: list[int] = []
        paths: list[list[int]] = []
        for cand in candidates:
            if not cand:
                raise ValueError("a candidate has no tokens")
            parent, path = -1, []
            for tok in cand:
                key = (parent, tok)
                if key not in children:
                    children[key] = len(node_token)
                    node_token.append(tok)
                    node_parent.append(parent)
                parent = children[key]
                path.append(parent)
            paths.append(path)
        has_child = {p for p in node_parent if p >= 0}
        fed = [n for n in range(len(node_token)) if n in has_child]  # creation order: parents first
        fed_index = {n: j for j, n in enumerate(fed)}
        self.tokens = [node_token[n] for n in fed]
        self.parents = [fed_index[node_parent[n]] if node_parent[n] >= 0 else -1 for n in fed]
        self.depths: list[int] = []
        self.roots: list[int] = []  # the depth-0 ancestor (among fed nodes) of each fed node
        for j, parent in enumerate(self.parents):
            self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
            self.roots.append(j if parent < 0 else self.roots[parent])
        #: first token of each candidate
        self.first_tokens = [node_token[path[0]] for path in paths]
        self.sources: list[int] = []
        self.targets: list[int] = []
        self.owners: list[int] = []
        for c, path in enumerate(paths):
            for i, node in enumerate(path):
                self.sources.append(0 if i == 0 else 1 + fed_index[path[i - 1]])
                self.targets.append(node_token[node])
                self.owners.append(c)

    def __len__(self) -> int:
        """Number of fed nodes."""
        return len(self.tokens)

    def paths(self) -> list[list[int]]:
        """Token ids from the root down to each fed node, the node's own token last."""
        out: list[list[int]] = []
        for token, parent in zip(self.tokens, self.parents):
            out.append((out[parent] if parent >= 0 else []) + [token])
        return out

    def requests(self) -> list[tuple[list[int], list[int]]]:
        """One (path, child token ids) pair per output row: the root (path []) first, then fed node j at 1 + j.

        Appending row r's path to the prompt and reading the next-token log-probabilities of its child ids there
        gives every value `combine` needs; child ids are distinct, in first-use order.
        """
        children: list[list[int]] = [[] for _ in range(1 + len(self.tokens))]
        seen: set[tuple[int, int]] = set()
        for source, target in zip(self.sources, self.targets):
            if (source, target) not in seen:
                seen.add((source, target))
                children[source].append(target)
        return list(zip([[]] + self.paths(), children))

    def combine(self, logprobs: Sequence[Mapping[int, float]]) -> list[float]:
        """Per-candidate scores from `logprobs[r]` = {child token id: log-probability} of output row r.

        Row r is the one `requests()` lists at index r; every child id it names must be present (KeyError if not).
        """
        if len(logprobs) != 1 + len(self.tokens):
            raise ValueError(f"combine() needs {1 + len(self.tokens)} rows of logprobs, got {len(logprobs)}")
        scores = [0.0] * self.num_candidates
        for source, target, owner in zip(self.sources, self.targets, self.owners):
            scores[owner] += float(logprobs[source][target])
        return scores

    def ancestors(self) -> list[list[bool]]:
        """Square matrix: row j marks fed node j's ancestors and itself (what node j may attend to in the trie).

        Built once per trie (every batch of a many-label task asks for it)."""
        if self._ancestors is None:
            self._ancestors = self._build_ancestors()
        return self._ancestors

    def _build_ancestors(self) -> list[list[bool]]:
        size = len(self.tokens)
        matrix = [[False] * size for _ in range(size)]
        for j in range(size):
            node = j
            while node >= 0:
                matrix[j][node] = True
                node = self.parents[node]
        return matrix


def tries_for(cand_ids: list[list[list[int]]]) -> dict[int, CandidateTrie]:
    """Prompt index -> the trie of its candidates. Prompts with the same candidate set share one trie object
    (group them by `id(trie)`); prompts without candidates are left out."""
    built: dict[tuple[tuple[int, ...], ...], CandidateTrie] = {}
    out: dict[int, CandidateTrie] = {}
    for i, cands in enumerate(cand_ids):
        if not cands:
            continue
        key = tuple(tuple(t) for t in cands)
        if key not in built:
            built[key] = CandidateTrie([list(t) for t in cands])
        out[i] = built[key]
    return out


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving at least one token in every sequence."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    first = sequences[0]
    n = 0
    while n < shortest - 1 and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


def chunked(ids: list[int], size: int) -> list[list[int]]:
    """`ids` cut into consecutive pieces of at most `size` (engines cap the token ids one request may ask for)."""
    if size < 1:
        raise ValueError(f"chunk size must be positive, got {size}")
    return [ids[i:i + size] for i in range(0, len(ids), size)]
