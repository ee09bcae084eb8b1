"""Downstream labels: top-1 of the model's classifier head, and k-NN over clean embeddings.

k-NN works for any encoder (heads-less CLIP towers included): the label of a query embedding is
the majority dataset label of its k nearest clean embeddings (cosine), leaving out the images the
query came from (its own source and target), so a matched image is not labelled by itself.
"""

from __future__ import annotations

import torch


def head_top1(logits: torch.Tensor | None) -> tuple[list[int | None], list[float | None]]:
    """(B, C) logits -> top-1 class and its softmax probability per row (None without a head)."""
    if logits is None:
        return [], []
    probs = logits.float().softmax(dim=-1)
    top_prob, top_class = probs.max(dim=-1)
    return top_class.tolist(), top_prob.tolist()


def knn_predict(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    exclude: torch.Tensor | None = None,
    k: int = 5,
) -> list[int | None]:
    """Majority label of the k nearest bank entries by cosine similarity.

    queries: (Q, D); bank: (N, D); bank_labels: (N,) int64, negative = unlabelled (ignored);
    exclude: (Q, N) bool, True where a bank entry must not vote for that query.
    Ties go to the label of the nearest voter. None where no labelled entry is left.
    """
    if queries.numel() == 0:
        return []
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    b = torch.nn.functional.normalize(bank.float(), dim=-1)
    sim = q @ b.T  # (Q, N)
    invalid = (bank_labels < 0).unsqueeze(0).expand_as(sim)
    if exclude is not None:
        invalid = invalid | exclude
    sim = sim.masked_fill(invalid, float("-inf"))
    k_eff = min(k, bank.shape[0])
    top_sim, top_idx = sim.topk(k_eff, dim=-1)  # (Q, k), nearest first
    predictions: list[int | None] = []
    for sims, idx in zip(top_sim.tolist(), top_idx.tolist()):
        voters = [int(bank_labels[i]) for s, i in zip(sims, idx) if s != float("-inf")]
        if not voters:
            predictions.append(None)
            continue
        counts: dict[int, int] = {}
        for label in voters:
            counts[label] = counts.get(label, 0) + 1
        best = max(counts.values())
        predictions.append(next(label for label in voters if counts[label] == best))
    return predictions
