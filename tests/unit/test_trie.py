"""The candidate trie used for one-pass label scoring."""

from __future__ import annotations

import pytest

from llmlabel.backends.trie import CandidateTrie, chunked, common_prefix_length


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


def test_requests_list_each_rows_path_and_children():
    # a=[5], b=[5,6], c=[5,6,7], d=[8,9], e=[5,6,4]: rows = root, node 5, node 5-6, node 8
    trie = CandidateTrie([[5], [5, 6], [5, 6, 7], [8, 9], [5, 6, 4]])
    assert trie.paths() == [[5], [5, 6], [8]]
    assert trie.requests() == [([], [5, 8]), ([5], [6]), ([5, 6], [7, 4]), ([8], [9])]
    # Row r's logprobs, as an engine answers them for prompt + path: {child id: logprob}.
    rows = [{5: -1.0, 8: -2.0}, {6: -0.5}, {7: -0.25, 4: -3.0}, {9: -0.125}]
    assert trie.combine(rows) == [-1.0, -1.5, -1.75, -2.125, -4.5]
    # Extra ids in an answer (the sampled token) are ignored; a missing asked id is an error.
    rows[0][99] = -0.01
    assert trie.combine(rows) == [-1.0, -1.5, -1.75, -2.125, -4.5]
    del rows[3][9]
    with pytest.raises(KeyError):
        trie.combine(rows)
    with pytest.raises(ValueError):
        trie.combine(rows[:2])


def test_single_token_candidates_make_one_request_and_duplicates_share_it():
    trie = CandidateTrie([[1], [2], [1], [3]])
    assert trie.requests() == [([], [1, 2, 3])]
    assert trie.combine([{1: -0.5, 2: -1.0, 3: -2.0}]) == [-0.5, -1.0, -0.5, -2.0]


def test_chunked_splits_asked_ids():
    assert chunked(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert chunked([1, 2], 128) == [[1, 2]]
    assert chunked([], 3) == []
    with pytest.raises(ValueError):
        chunked([1], 0)


def test_tries_for_shares_one_trie_per_candidate_set():
    from llmlabel.backends.trie import tries_for

    tries = tries_for([[[1], [2, 3]], [], [[1], [2, 3]], [[4]]])
    assert sorted(tries) == [0, 2, 3]  # the prompt without candidates is left out
    assert tries[0] is tries[2] and tries[3] is not tries[0]
    assert tries[3].targets == [4]
