"""The candidate trie used for one-pass label scoring."""

from __future__ import annotations

from llmlabel.backends.trie import CandidateTrie, common_prefix_length


def test_trie_shares_prefixes_and_feeds_only_inner_nodes():
    # a=[5], b=[5,6], c=[5,6,7], d=[8,9]
    trie = CandidateTrie([[5], [5, 6], [5, 6, 7], [8, 9]])
    assert trie.tokens == [5, 6, 8]  # nodes with children; leaves 7 and 9 are never fed
    assert trie.parents == [-1, 0, -1]
    assert trie.depths == [0, 1, 0]
    assert trie.ancestors() == [[True, False, False], [True, True, False], [False, False, True]]
    # Every candidate token is predicted by its parent's output (0 = the prompt's last token).
    assert list(zip(trie.owners, trie.sources, trie.targets)) == [
        (0, 0, 5), (1, 0, 5), (1, 1, 6), (2, 0, 5), (2, 1, 6), (2, 2, 7), (3, 0, 8), (3, 3, 9)]


def test_single_token_candidates_need_no_nodes():
    trie = CandidateTrie([[1], [2], [3]])
    assert len(trie) == 0 and trie.sources == [0, 0, 0]


def test_common_prefix_leaves_a_suffix():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts keep one token each
    assert common_prefix_length([[7]]) == 0
