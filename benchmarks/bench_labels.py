"""The k-NN vote of the labels pass: exact order (float64, ties by bank position) against a plain
fp32 cosine top-k vote, on the same random bank and queries, in this process.

    .venv/bin/python -m benchmarks.bench_labels [--bank 20000] [--queries 4096] [--dim 384] [--k 5] [--device cpu]

Figures: queries/s of each, the ratio (what the exact, reproducible order costs), and how many
labels differ (random Gaussian vectors have no exact ties, so any difference is a near-tie
resolved differently by fp32 rounding).
"""

from __future__ import annotations

import argparse
import time

import torch

from sweep.probes.labels import knn_vote, majority

CHUNK_ELEMENTS = 2**25  # as the labels pass blocks its queries


def plain_vote(queries: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, exclude: torch.Tensor, k: int) -> list:
    """Baseline: fp32 cosine, torch.topk, the same exclusion and vote rule."""
    q = torch.nn.functional.normalize(queries, dim=-1)
    b = torch.nn.functional.normalize(bank, dim=-1)
    sim = q @ b.T
    rows = torch.arange(len(q), device=q.device)
    for column in exclude.T:
        sim[rows[column >= 0], column[column >= 0]] = float("-inf")
    idx = sim.topk(k, dim=1).indices
    return [majority(v) for v in labels[idx].tolist()]


def timed(fn, *args) -> tuple[list, float]:
    start = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=g).half().float().to(device)
    queries = torch.randn(args.queries, args.dim, generator=g).half().float().to(device)
    labels = torch.randint(0, 1000, (args.bank,), generator=g).to(device)
    exclude = torch.randint(0, args.bank, (args.queries, 2), generator=g).to(device)
    chunk = max(1, CHUNK_ELEMENTS // args.bank)

    def exact() -> list:
        out = []
        for s in range(0, args.queries, chunk):
            out += knn_vote(queries[s:s + chunk], bank, labels, exclude[s:s + chunk], k=args.k).labels
        return out

    def plain() -> list:
        out = []
        for s in range(0, args.queries, chunk):
            out += plain_vote(queries[s:s + chunk], bank, labels, exclude[s:s + chunk], args.k)
        return out

    plain()  # warm-up
    base, t_plain = timed(plain)
    got, t_exact = timed(exact)
    differ = sum(a != b for a, b in zip(base, got))
    print(f"bank {args.bank} x {args.dim}, {args.queries} queries, k={args.k}, {device}, torch {torch.__version__}")
    print(f"plain fp32 top-k vote : {args.queries / t_plain:10.0f} queries/s")
    print(f"exact vote (float64)  : {args.queries / t_exact:10.0f} queries/s  ({t_exact / t_plain:.2f}x the time)")
    print(f"labels that differ    : {differ} of {args.queries}")


if __name__ == "__main__":
    main()
