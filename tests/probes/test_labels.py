"""Edges of the k-NN labels (sweep/probes/labels.py) against numpy: cosine similarities with zero
vectors, boolean exclusion masks of any shape, k = 0 and an empty bank."""

from __future__ import annotations

import numpy as np
import torch

from sweep.probes.labels import cosine_matrix, knn_predict, knn_vote, majority
from tests.probes.test_labels_knn import brute_force


def test_cosine_matrix_against_numpy_with_zero_vectors() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 5))
    b = rng.normal(size=(6, 5)) * 1e-3
    q[1] = 0.0
    b[2] = 0.0
    got = cosine_matrix(torch.from_numpy(q).float(), torch.from_numpy(b).float())
    assert got.dtype == torch.float64 and got.shape == (4, 6)
    qf, bf = q.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    for i in range(4):
        for j in range(6):
            norm = np.linalg.norm(qf[i]) * np.linalg.norm(bf[j])
            want = 0.0 if norm == 0 else qf[i] @ bf[j] / norm
            assert abs(float(got[i, j]) - want) < 1e-12, (i, j)


def test_knn_predict_with_random_masks_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    bank = rng.integers(-2, 3, (9, 4)).astype(np.float64)
    bank[~bank.any(axis=1), 0] = 1.0
    labels = rng.integers(0, 3, 9)
    labels[[1, 6]] = -1
    queries = rng.integers(-2, 3, (7, 4)).astype(np.float64)
    queries[~queries.any(axis=1), 1] = 1.0
    mask = rng.random((7, 9)) < 0.35
    mask[0] = False  # a row with nothing excluded
    mask[1] = True  # a row with everything excluded
    for k in (1, 2, 3, 5):
        got = knn_predict(torch.from_numpy(queries), torch.from_numpy(bank), torch.from_numpy(labels),
                          torch.from_numpy(mask), k=k)
        want = [brute_force(queries[q], bank, labels, set(np.flatnonzero(mask[q]).tolist()), k)[0] for q in range(7)]
        assert got == want, k
    none_masked = knn_predict(torch.from_numpy(queries), torch.from_numpy(bank), torch.from_numpy(labels),
                              torch.zeros(7, 9, dtype=torch.bool), k=3)
    assert none_masked == [brute_force(queries[q], bank, labels, set(), 3)[0] for q in range(7)]


def test_k_zero_and_an_empty_bank_vote_for_nobody() -> None:
    bank, labels = torch.eye(3), torch.tensor([0, 1, -1])
    got = knn_vote(torch.ones(2, 3), bank, labels, torch.tensor([[0], [-1]]), k=0)
    assert got.labels == [None, None] and got.bank_sizes == [1, 2]
    got = knn_vote(torch.ones(2, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), k=3)
    assert got.labels == [None, None] and got.bank_sizes == [0, 0]


def test_majority() -> None:
    assert majority([]) is None
    assert majority([4]) == 4
    assert majority([3, 1, 1]) == 1
    assert majority([3, 1, 1, 3]) == 3  # a tie goes to the nearest voter
    assert majority([2, 3, 1, 3, 1]) == 3


def _fan(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A query at angle 0 and a bank at angles 0.1, 0.2, ...: bank entry i is the (i+1)-th nearest."""
    angles = torch.tensor([0.1 * (i + 1) for i in range(len(labels))], dtype=torch.float64)
    bank = torch.stack([angles.cos(), angles.sin()], dim=1)
    return torch.tensor([[1.0, 0.0]], dtype=torch.float64), bank, torch.tensor(labels)


def test_knn_defaults_to_five_voters_and_works_without_exclusions() -> None:
    query, bank, labels = _fan([0, 0, 1, 1, 1, 0, 0])
    # five nearest: 0, 0, 1, 1, 1 -> 1; six would tie 3-3 and go to the nearest voter's 0
    assert knn_vote(query, bank, labels).labels == [1] and knn_vote(query, bank, labels, k=6).labels == [0]
    assert knn_predict(query, bank, labels) == [1] and knn_predict(query, bank, labels, k=6) == [0]


def test_knn_with_a_bank_of_one_and_with_no_queries() -> None:
    query, bank, labels = _fan([7])
    assert knn_vote(query, bank, labels).labels == [7] and knn_vote(query, bank, labels).bank_sizes == [1]
    none = knn_vote(torch.zeros(0, 2), bank, labels)
    assert none.labels == [] and none.bank_sizes == []
