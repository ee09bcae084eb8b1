"""Banks of the labels pass: the labelled images a row's k-NN label is voted over.

A run bank is every distinct clean image (by image key) that the finished units of one model
setting embedded, with its dataset label (`run_bank`); a reference bank is every distinct image
of a reference shard set, embedded once with the setting's encoder and kept in the run under
`results/embeddings/probe=_reference/` for the next pass (`reference_bank`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from sweep.errors import UserError
from sweep.run.store import RunStore
from sweep.run.worker import embeddings_table

REFERENCE_PROBE = "_reference"  # partition of the cached reference-bank embeddings

Setting = tuple[str, str, str]  # (model, weights, embed)


@dataclass
class Bank:
    keys: list[str]  # sorted; a key's position is its bank position
    labels: torch.Tensor  # (N,) int64, -1 = unlabelled
    vectors: torch.Tensor  # (N, D) float16 values (kept as float32)

    def position(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}


def run_bank(tables: Iterable[pa.Table]) -> Bank:
    """Every distinct clean image (by key) in `tables`; the first vector and label seen win."""
    first: dict[str, tuple[int | None, np.ndarray]] = {}
    for table in tables:
        clean = table.filter(pc.field("role") != "adv")
        if clean.num_rows == 0:
            continue
        vectors = embedding_matrix(clean).numpy()
        for i, (key, label) in enumerate(zip(clean.column("key").to_pylist(), clean.column("label").to_pylist())):
            if key not in first:
                first[key] = (label, vectors[i])
            elif first[key][0] is None and label is not None:
                first[key] = (label, first[key][1])
    return _bank_of(first)


def _bank_of(entries: dict[str, tuple[int | None, np.ndarray]]) -> Bank:
    keys = sorted(entries)
    if not keys:
        return Bank([], torch.zeros(0, dtype=torch.long), torch.zeros(0, 0))
    labels = torch.tensor([-1 if entries[k][0] is None else int(entries[k][0]) for k in keys], dtype=torch.long)
    vectors = torch.from_numpy(np.stack([entries[k][1] for k in keys]).astype(np.float32))
    return Bank(keys, labels, vectors)


def reference_bank(store: RunStore, setting: Setting, urls: list[str], device: torch.device) -> Bank:
    """The reference shard set's images embedded with this setting's encoder (cached in the run)."""
    model, weights, embed = setting
    cache_id = hashlib.sha256(json.dumps([model, weights, embed, urls]).encode()).hexdigest()[:16]
    cached = (REFERENCE_PROBE, model, f"{setting_id(setting)}-{cache_id}")  # a unit file's (probe, model, name)
    relative = store.unit_file("embeddings", *cached)
    if store.exists(relative):
        return run_bank([store.read("embeddings", unit=cached)])
    table = _embed_reference(setting, urls, device)
    store.write_parquet(relative, table)
    return run_bank([table])


@torch.no_grad()
def _embed_reference(setting: Setting, urls: list[str], device: torch.device, batch: int = 64) -> pa.Table:
    from sweep.data.shards import read_pairs
    from sweep.encoders import load_encoder

    model, weights, embed = setting
    encoder = load_encoder(model, weights, embed, device=device)
    seen: set[str] = set()
    meta: list[dict[str, Any]] = []
    vectors: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            vectors.extend(encoder.embed(torch.stack(pending).to(device)).float().cpu())
            pending.clear()

    for rec in read_pairs(urls, encoder.preprocess, workers=0):
        if rec.error is not None:
            continue
        for role, image, key, label in (("src", rec.src, rec.src_key, rec.src_label), ("tgt", rec.tgt, rec.tgt_key, rec.tgt_label)):
            key = key or f"{rec.shard}#{rec.pair_id}.{role}"
            if key in seen:
                continue
            seen.add(key)
            meta.append({"pair_id": rec.pair_id, "role": role, "key": key, "label": label})
            pending.append(image)
            if len(pending) == batch:
                flush()
    flush()
    if not meta:
        raise UserError(f"knn_bank: no readable image in {urls[0]}{' …' if len(urls) > 1 else ''}")
    setting_columns = {"run_id": "reference", "unit_id": REFERENCE_PROBE, "model": model, "weights": weights,
                       "embed": embed, "probe": REFERENCE_PROBE, "config_hash": ""}
    return embeddings_table([{**setting_columns, **m} for m in meta], vectors)


def embedding_matrix(table: pa.Table) -> torch.Tensor:
    """The `embedding` column as an (M, D) float32 tensor of the stored fp16 values."""
    if table.num_rows == 0:
        return torch.zeros(0, 0)
    column = table.column("embedding").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return torch.from_numpy(values.reshape(table.num_rows, -1))


def setting_id(setting: Setting) -> str:
    return hashlib.sha256(json.dumps(list(setting)).encode()).hexdigest()[:16]
