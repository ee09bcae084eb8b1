"""Downstream labels: top-1 of the model's classifier head, and k-NN over clean embeddings.

k-NN works for any encoder (heads-less CLIP towers included): the label of a query embedding is
the majority dataset label of its k nearest labelled bank embeddings by cosine similarity,
leaving out the images the query came from (its own source and target), so a matched image is
not labelled by itself. The order is exact and reproducible: similarities are computed in
float64 (on fp16-stored embeddings the dot products are then exact, so two copies of one image
tie exactly wherever they sit in the bank), equal similarities are ordered by bank position,
and a tied vote goes to the label of the nearest voter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def head_top1(logits: torch.Tensor | None) -> tuple[list[int | None], list[float | None]]:
    """(B, C) logits -> top-1 class and its softmax probability per row (None without a head)."""
    if logits is None:
        return [], []
    probs = logits.float().softmax(dim=-1)
    top_prob, top_class = probs.max(dim=-1)
    return top_class.tolist(), top_prob.tolist()


@dataclass
class KnnVotes:
    """k-NN result per query: the label (None where no labelled bank entry may vote) and the
    number of labelled bank entries that were allowed to vote (the bank size for that query)."""

    labels: list[int | None]
    bank_sizes: list[int]


def cosine_matrix(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(Q, D), (N, D) -> (Q, N) cosine similarities in float64 (a zero vector gives 0)."""
    q, b = queries.double(), bank.double()
    tiny = torch.finfo(torch.float64).tiny
    sim = q @ b.T  # exact for fp16-valued inputs of moderate range: order-independent sums
    sim.div_(q.norm(dim=1, keepdim=True).clamp_min(tiny)).div_(b.norm(dim=1).clamp_min(tiny).unsqueeze(0))
    return sim


def knn_vote(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    exclude_index: torch.Tensor | None = None,
    k: int = 5,
) -> KnnVotes:
    """Majority label of the k nearest labelled bank entries per query.

    queries: (Q, D); bank: (N, D); bank_labels: (N,) int64, negative = unlabelled (never votes);
    exclude_index: (Q, E) int64 bank positions that must not vote for that query (-1 = none).
    """
    n_queries, n_bank = queries.shape[0], bank.shape[0]
    if n_queries == 0:
        return KnnVotes([], [])
    labels = bank_labels.to(queries.device)
    invalid = (labels < 0).unsqueeze(0).expand(n_queries, n_bank).clone()  # (Q, N)
    if exclude_index is not None:
        rows = torch.arange(n_queries, device=queries.device)
        for column in exclude_index.to(queries.device).T:
            keep = column >= 0
            invalid[rows[keep], column[keep]] = True
    bank_sizes = (~invalid).sum(dim=1).tolist()
    if n_bank == 0 or k < 1:
        return KnnVotes([None] * n_queries, bank_sizes)
    sim = cosine_matrix(queries, bank).masked_fill_(invalid, float("-inf"))  # (Q, N)
    k_eff = min(k, n_bank)
    index = sim.topk(k_eff, dim=1).indices  # (Q, k); which of equal values topk keeps is unspecified
    kth = sim.gather(1, index[:, -1:])  # (Q, 1): the k-th largest similarity
    crowded = ((sim >= kth).sum(dim=1) > k_eff).nonzero().squeeze(1)  # rows with a tie across the k-th place
    if len(crowded):
        part = sim[crowded]
        above, level = part > kth[crowded], part == kth[crowded]
        need = k_eff - above.sum(dim=1, keepdim=True)  # entries to take from the k-th level
        chosen = above | (level & (level.cumsum(dim=1) <= need))  # the lowest positions of that level
        index[crowded] = chosen.nonzero()[:, 1].view(len(crowded), k_eff)
    index = index.sort(dim=1).values  # by bank position, then (stable) nearest first
    order = sim.gather(1, index).sort(dim=1, descending=True, stable=True).indices
    index = index.gather(1, order)  # nearest first; equal similarity: lower bank position first
    voted = sim.gather(1, index) > float("-inf")
    votes = labels[index].tolist()
    predictions: list[int | None] = []
    for row_labels, row_voted in zip(votes, voted.tolist()):
        voters = [label for label, ok in zip(row_labels, row_voted) if ok]
        predictions.append(majority(voters))
    return KnnVotes(predictions, bank_sizes)


def majority(voters: list[int]) -> int | None:
    """Most frequent label of `voters` (nearest first); a tie goes to the nearest voter's label."""
    if not voters:
        return None
    counts: dict[int, int] = {}
    for label in voters:
        counts[label] = counts.get(label, 0) + 1
    best = max(counts.values())
    return next(label for label in voters if counts[label] == best)


def knn_predict(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    exclude: torch.Tensor | None = None,
    k: int = 5,
) -> list[int | None]:
    """As `knn_vote`, with the excluded entries given as a (Q, N) bool mask; labels only."""
    exclude_index = None
    if exclude is not None and exclude.any():
        width = int(exclude.sum(dim=1).max())
        exclude_index = torch.full((exclude.shape[0], width), -1, dtype=torch.long)
        for row, positions in enumerate(exclude.nonzero()[:, 1].split(exclude.sum(dim=1).tolist())):
            exclude_index[row, : len(positions)] = positions
    return knn_vote(queries, bank, bank_labels, exclude_index, k).labels
