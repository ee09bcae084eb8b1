"""knn_vote against a brute-force k-NN written here in numpy, on banks built for exact ties:
integer vectors, duplicates and power-of-two multiples (the same cosine to anything), unlabelled
entries and excluded entries, for every k from 1 to past the bank size."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from sweep.probes.labels import knn_predict, knn_vote


def brute_force(query: np.ndarray, bank: np.ndarray, labels: np.ndarray, leave_out: set[int], k: int) -> tuple[int | None, int]:
    """Nearest first by cosine, equal cosine by bank position; unlabelled and left-out entries never
    vote; a tied vote goes to the nearest voter. Returns (label, number of entries that could vote)."""
    candidates = [
        (-float(query @ bank[i]) / (np.linalg.norm(query) * np.linalg.norm(bank[i])), i)
        for i in range(len(bank)) if labels[i] >= 0 and i not in leave_out
    ]
    candidates.sort()
    voters = [int(labels[i]) for _, i in candidates[:k]]
    if not voters:
        return None, len(candidates)
    counts = Counter(voters)
    return next(v for v in voters if counts[v] == max(counts.values())), len(candidates)


def test_a_tie_at_the_kth_place_takes_the_lower_bank_positions() -> None:
    # positions 0, 1, 2 hold one direction (labels 5, 5, 7), position 3 the query's own direction (7)
    bank = torch.tensor([[1.0, 1.0], [2.0, 2.0], [1.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([5, 5, 7, 7])
    query = torch.tensor([[1.0, 0.2]])
    assert knn_vote(query, bank, labels, k=3).labels == [5]  # 7 (nearest), then 5, 5 of the three tied
    assert knn_vote(query, bank, labels, k=2).labels == [7]  # 7 and 5 tie 1-1: the nearest voter's label
    assert knn_vote(query, bank, labels, torch.tensor([[0, -1]]), k=3).labels == [7]  # 7, then 5 (pos 1), 7 (pos 2)


@pytest.mark.parametrize("seed", range(4))
def test_knn_vote_equals_brute_force_with_ties_unlabelled_and_excluded_entries(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, (12, 6)).astype(np.float64)
    base[base.any(axis=1) == 0, 0] = 1.0  # no zero vector
    bank = np.concatenate([base, base[:4], 2 * base[4:7], 4 * base[7:9]])  # duplicates and multiples
    labels = rng.integers(0, 3, len(bank))
    labels[rng.choice(len(bank), 5, replace=False)] = -1  # unlabelled
    queries = np.concatenate([rng.integers(-3, 4, (10, 6)).astype(np.float64), bank[:6]])
    queries[queries.any(axis=1) == 0, 1] = 1.0
    exclude = np.full((len(queries), 2), -1)
    for q in range(len(queries)):
        exclude[q, : q % 3] = rng.choice(len(bank), q % 3, replace=False)
    ties = 0
    for k in range(1, len(bank) + 2):
        got = knn_vote(torch.from_numpy(queries).float(), torch.from_numpy(bank).float(), torch.from_numpy(labels),
                       torch.from_numpy(exclude), k=k)
        for q in range(len(queries)):
            leave_out = {int(i) for i in exclude[q] if i >= 0}
            want = brute_force(queries[q], bank, labels, leave_out, k)
            assert (got.labels[q], got.bank_sizes[q]) == want, (seed, k, q)
            sims = sorted({round(float(queries[q] @ b) / np.linalg.norm(queries[q]) / np.linalg.norm(b), 9)
                           for i, b in enumerate(bank) if labels[i] >= 0 and i not in leave_out}, reverse=True)
            ties += len(sims) < int(((labels >= 0).sum())) - len(leave_out)
    assert ties > 0


def test_knn_predict_takes_a_boolean_mask_and_handles_an_empty_vote() -> None:
    bank = torch.eye(3)
    labels = torch.tensor([0, 1, -1])
    mask = torch.tensor([[True, False, False], [True, True, False]])
    assert knn_predict(torch.tensor([[1.0, 0, 0], [1.0, 0, 0]]), bank, labels, mask, k=1) == [1, None]
    assert knn_vote(torch.zeros(0, 3), bank, labels).labels == []
