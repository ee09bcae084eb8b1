"""Run one work unit: shard -> decoded pairs -> probe (continuous batching) -> rows -> Parquet.

A plain function with no Ray in it, so it runs the same inside a Ray actor, in a test, or in a
loop in a benchmark:

    cache = EncoderCache()                       # keeps loaded models across units
    summary = run_unit(unit, cache, "runs/demo", run_id="demo-…")

Pairs whose images do not decode, and pairs the probe failed on, become `status="error"` rows in
the probe's table(s) and in `pairs`; the unit still finishes. k-NN labels are computed at unit end
over the clean embeddings of the unit's own images. Everything the unit produced is written by
`RunStore.write_unit_tables`, one file per table, the `units` row last.
"""

from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from sweep.data.images import to_png_bytes
from sweep.probes.base import PairInput, PairResult
from sweep.probes.labels import knn_predict
from sweep.schema import SCHEMAS, STATUS_ERROR, STATUS_OK, to_table
from sweep.run.spec import WorkUnit
from sweep.run.store import RunStore

KNN_K = 5
_KNN_COLUMNS = {"knn_src", "knn_tgt", "knn_adv"}


@dataclass
class UnitSummary:
    """What the driver learns about a unit (the rows themselves stay in the files)."""

    unit_id: str
    status: str  # "ok" | "error"
    n_pairs: int = 0
    n_ok: int = 0
    n_error: int = 0
    seconds: float = 0.0
    error: str | None = None
    attempts: int = 1
    worker: str = ""
    device: str = ""
    staged: list[tuple[str, str]] = field(default_factory=list)  # (staged, final) files, commit=False


class EncoderCache:
    """Loaded encoders by (model, weights, embed), least recently used dropped beyond `size`."""

    def __init__(self, device: str | torch.device | None = None, size: int = 2) -> None:
        from sweep.encoders import default_device

        self.device = torch.device(device) if device is not None else default_device()
        self.size = size
        self._cache: OrderedDict[tuple[str, str, str, bool], Any] = OrderedDict()

    def get(self, model: str, weights: str, embed: str, compile: bool = False) -> Any:
        from sweep.encoders import load_encoder

        key = (model, weights, embed, compile)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        while len(self._cache) >= self.size:
            self._cache.popitem(last=False)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        encoder = load_encoder(model, weights=weights, embed=embed, device=self.device)
        if compile:
            encoder.compile()
        self._cache[key] = encoder
        return encoder

    def describe(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)


@dataclass
class _Pair:
    """What the unit remembers of a pair (no pixels)."""

    index: int  # read order
    pair_id: str
    src_key: str | None
    tgt_key: str | None
    src_label: int | None
    tgt_label: int | None
    error: str | None = None
    result: PairResult | None = None


@dataclass
class _Unit:
    pairs: dict[str, _Pair] = field(default_factory=dict)
    gallery_ids: list[str] = field(default_factory=list)  # first `gallery` ok pairs, read order


def run_unit(
    unit: WorkUnit,
    encoder_cache: EncoderCache,
    run_root: str | RunStore,
    *,
    run_id: str,
    attempt: int = 1,
    worker: str = "",
    read_workers: int = 0,
    commit: bool = True,
) -> UnitSummary:
    """Run `unit` end to end and write its files; raises on a unit-level failure (the caller retries).

    commit=False (inside a sweep): stage the files under this attempt's temporary names and list
    them in `summary.staged`; the driver commits them if this attempt is still the current one.

    read_workers: decoding processes for the shard (0: decode in this process, right for a CPU
    actor that owns one core; a GPU actor overlaps decoding with the probe by using a few)."""
    from sweep.probes import build_probe
    from sweep.data.shards import read_pairs

    store = run_root if isinstance(run_root, RunStore) else RunStore(run_root)
    worker = worker or f"{socket.gethostname()}:{os.getpid()}"
    started_at, t0 = datetime.now(timezone.utc), time.perf_counter()
    encoder = encoder_cache.get(unit.model, unit.weights, unit.embed, unit.compile)
    probe = build_probe(unit.probe, unit.params)
    state = _Unit()

    def ok_inputs() -> Iterator[PairInput]:
        for rec in read_pairs(unit.shard, encoder.preprocess, workers=read_workers):
            pair = _Pair(len(state.pairs), rec.pair_id, rec.src_key, rec.tgt_key, rec.src_label, rec.tgt_label, rec.error)
            state.pairs[rec.pair_id] = pair
            if rec.error is None:
                if len(state.gallery_ids) < unit.gallery:
                    state.gallery_ids.append(rec.pair_id)
                yield PairInput(rec.pair_id, rec.src, rec.tgt, rec.src_label, rec.tgt_label)

    for result in probe.run(encoder, ok_inputs(), batch_size=unit.batch_size, seed=unit.seed):
        pair = state.pairs[result.pair_id]
        if result.pair_id not in state.gallery_ids:
            result.images = {}  # keep pixels only for the gallery
        # extras can be large (lipschitz directions: (n, 3, H, W) each); keep only what rows need
        result.extra = {k: v for k, v in result.extra.items() if k == "image_variant"}
        pair.result = result

    pairs = sorted(state.pairs.values(), key=lambda p: p.index)
    tables = _probe_tables(probe)
    rows = {name: _probe_rows(unit, run_id, pairs, name) for name in tables}
    n_error = sum(1 for p in pairs if _pair_error(p) is not None)
    out = {name: to_table(name, table_rows) for name, table_rows in rows.items()}
    out["pairs"] = to_table("pairs", [_pairs_row(unit, run_id, p) for p in pairs])
    images = _image_rows(unit, run_id, state)
    if images:  # a probe without images (lipschitz) or gallery 0: no file
        out["images"] = to_table("images", images)
    stage = None if commit else attempt
    staged = store.write_unit_tables(unit.probe, unit.model, unit.unit_id, out, stage=stage)
    summary = UnitSummary(
        unit_id=unit.unit_id,
        status=STATUS_OK,
        n_pairs=len(pairs),
        n_ok=len(pairs) - n_error,
        n_error=n_error,
        seconds=time.perf_counter() - t0,
        attempts=attempt,
        worker=worker,
        device=encoder_cache.describe(),
    )
    finished_at = datetime.now(timezone.utc)
    units = to_table("units", [units_row(unit, run_id, summary, started_at, finished_at)])
    staged += store.write_unit_tables(unit.probe, unit.model, unit.unit_id, {"units": units}, stage=stage)  # done-marker, last
    summary.staged = staged
    return summary


def units_row(
    unit: WorkUnit, run_id: str, summary: UnitSummary, started_at: datetime | None, finished_at: datetime
) -> dict[str, Any]:
    """The unit's done-marker row (also written by the driver for a unit that failed for good)."""
    return {
        "run_id": run_id,
        "unit_id": unit.unit_id,
        "model": unit.model,
        "weights": unit.weights,
        "embed": unit.embed,
        "probe": unit.probe,
        "config_hash": unit.config_hash,
        "params": unit.params_json,
        "shard": unit.shard,
        "status": summary.status,
        "error": summary.error,
        "attempts": summary.attempts,
        "n_pairs": summary.n_pairs,
        "n_ok": summary.n_ok,
        "n_error": summary.n_error,
        "started_at": started_at,
        "finished_at": finished_at,
        "seconds": summary.seconds,
        "worker": summary.worker,
        "host": summary.worker.split(":")[0] if summary.worker else None,
        "device": summary.device,
        "batch_size": unit.batch_size,
    }


def _probe_tables(probe: Any) -> tuple[str, ...]:
    """The result tables a probe writes: one, named after the probe."""
    return (probe.name,)


def _pair_error(pair: _Pair) -> str | None:
    if pair.error is not None:
        return pair.error
    if pair.result is None:
        return "the probe returned no result for this pair"
    return pair.result.error


def _identity(unit: WorkUnit, run_id: str, pair: _Pair, error: str | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "unit_id": unit.unit_id,
        "pair_id": pair.pair_id,
        "src_key": pair.src_key,
        "tgt_key": pair.tgt_key,
        "src_label": pair.src_label,
        "tgt_label": pair.tgt_label,
        "model": unit.model,
        "weights": unit.weights,
        "embed": unit.embed,
        "probe": unit.probe,
        "config_hash": unit.config_hash,
        "params": unit.params_json,
        "status": STATUS_OK if error is None else STATUS_ERROR,
        "error": error,
    }


def _probe_rows(unit: WorkUnit, run_id: str, pairs: list[_Pair], table: str) -> list[dict[str, Any]]:
    """Rows of one probe table in read order: the probe's rows with identity columns, an error
    row for a pair that failed, and k-NN labels where the table has them."""
    wants_knn = _KNN_COLUMNS <= set(SCHEMAS[table].names)
    knn = _knn_labels(pairs) if wants_knn else {}
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        error = _pair_error(pair)
        if error is not None:
            rows.append(_identity(unit, run_id, pair, error))
            continue
        assert pair.result is not None
        identity = _identity(unit, run_id, pair, None)
        for j, row in enumerate(pair.result.rows):
            row = dict(row)
            if wants_knn:
                labels = knn.get(pair.pair_id, {})
                row.update(knn_src=labels.get("src"), knn_tgt=labels.get("tgt"), knn_adv=labels.get(j))
            rows.append({**row, **identity})
    return rows


def _knn_labels(pairs: list[_Pair]) -> dict[str, dict[Any, int | None]]:
    """k-NN label of each pair's src, tgt and per-row probed embedding over the unit's clean images.

    The bank holds each distinct image (by key) once with its dataset label; a query never gets
    votes from its own pair's src or tgt image (a matched image must not be labelled by its source
    or target). Returns pair_id -> {"src": label, "tgt": label, row_index: label}.
    """
    bank_index: dict[str, int] = {}
    bank_vectors: list[torch.Tensor] = []
    bank_labels: list[int] = []
    done = [p for p in pairs if _pair_error(p) is None and p.result is not None and p.result.embeddings]
    keys: dict[str, tuple[str, str]] = {}
    for pair in done:
        assert pair.result is not None
        src_key = pair.src_key or f"{pair.pair_id}/src"
        tgt_key = pair.tgt_key or f"{pair.pair_id}/tgt"
        keys[pair.pair_id] = (src_key, tgt_key)
        for key, role, label in ((src_key, "src", pair.src_label), (tgt_key, "tgt", pair.tgt_label)):
            if key not in bank_index and role in pair.result.embeddings:
                bank_index[key] = len(bank_vectors)
                bank_vectors.append(pair.result.embeddings[role].detach().float().cpu().reshape(-1))
                bank_labels.append(-1 if label is None else int(label))
    if not bank_vectors:
        return {}
    bank = torch.stack(bank_vectors)  # (N, D)
    labels = torch.tensor(bank_labels, dtype=torch.long)

    queries: list[torch.Tensor] = []
    owners: list[tuple[str, Any]] = []  # (pair_id, "src" | "tgt" | row index)
    for pair in done:
        assert pair.result is not None
        named = [("src", pair.result.embeddings.get("src")), ("tgt", pair.result.embeddings.get("tgt"))]
        named += list(enumerate(pair.result.row_embeddings))
        for slot, emb in named:
            if emb is not None:
                queries.append(emb.detach().float().cpu().reshape(-1))
                owners.append((pair.pair_id, slot))
    out: dict[str, dict[Any, int | None]] = {}
    chunk = 2048
    for start in range(0, len(queries), chunk):
        q = torch.stack(queries[start : start + chunk])  # (Q, D)
        part = owners[start : start + chunk]
        exclude = torch.zeros(len(part), len(bank_vectors), dtype=torch.bool)
        for i, (pair_id, _) in enumerate(part):
            for key in keys[pair_id]:
                exclude[i, bank_index[key]] = True
        for (pair_id, slot), label in zip(part, knn_predict(q, bank, labels, exclude=exclude, k=KNN_K)):
            out.setdefault(pair_id, {})[slot] = label
    return out


def _pairs_row(unit: WorkUnit, run_id: str, pair: _Pair) -> dict[str, Any]:
    row = {**_identity(unit, run_id, pair, _pair_error(pair)), "shard": unit.shard}
    return {name: row[name] for name in SCHEMAS["pairs"].names}


def _image_rows(unit: WorkUnit, run_id: str, state: _Unit) -> list[dict[str, Any]]:
    rows = []
    for pair_id in state.gallery_ids:
        result = state.pairs[pair_id].result
        if result is None or result.error is not None or not result.images:
            continue
        png = {role: to_png_bytes(img) for role, img in result.images.items() if role in ("src", "adv", "tgt")}
        rows.append(
            {
                "run_id": run_id,
                "unit_id": unit.unit_id,
                "pair_id": pair_id,
                "model": unit.model,
                "probe": unit.probe,
                "variant": str(result.extra.get("image_variant", "")),
                "src_png": png.get("src"),
                "adv_png": png.get("adv"),
                "tgt_png": png.get("tgt"),
            }
        )
    return rows
