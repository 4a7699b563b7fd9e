"""A token trie over label continuations, for scoring every label of a prompt in one forward pass.

Labels that share leading tokens share trie nodes, so a 77-label task costs one pass over (prompt suffix + trie
nodes) instead of 77 passes. Only nodes with children are fed to the model (a leaf's own output is never needed);
each fed node attends to the prompt and to its ancestors, never to its siblings ("tree attention").
"""

from __future__ import annotations


class CandidateTrie:
    """Trie of candidate token sequences.

    Attributes:
        tokens: token id of each fed node (nodes with children), parents before children.
        depths: depth of each fed node (0 = first candidate token).
        parents: index of each fed node's parent among fed nodes (-1 = the prompt's last token).
        sources / targets / owners: for every token of every candidate, the output row predicting it (0 = the prompt's
            last token, 1 + j = fed node j), the token id, and the candidate index; summing the log-probabilities
            `logp[sources, targets]` per owner gives each candidate's score.
    """

    def __init__(self, candidates: list[list[int]]):
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
        for parent in self.parents:
            self.depths.append(0 if parent < 0 else self.depths[parent] + 1)
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

    def ancestors(self) -> list[list[bool]]:
        """Square matrix: row j marks fed node j's ancestors and itself (what node j may attend to in the trie)."""
        size = len(self.tokens)
        matrix = [[False] * size for _ in range(size)]
        for j in range(size):
            node = j
            while node >= 0:
                matrix[j][node] = True
                node = self.parents[node]
        return matrix


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
