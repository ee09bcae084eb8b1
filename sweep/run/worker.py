"""Run one work unit: shard -> decoded pairs -> probe (continuous batching) -> rows -> Parquet.

A plain function with no Ray in it, so it runs the same inside a Ray actor, in a test, or in a
loop in a benchmark:

    cache = EncoderCache()                       # keeps loaded models across units
    summary = run_unit(unit, cache, "runs/demo", run_id="demo-…")

Pairs whose images do not decode, and pairs the probe failed on, become `status="error"` rows in
the probe's table(s) and in `pairs`; the unit still finishes. The unit stores the fp16 embeddings
it computed (clean source and target images, and each probed image) in the `embeddings` table;
k-NN labels are not computed here but by the labels pass (`sweep.finished.labels`) once the
units have finished, against a bank of every clean image the run embedded. Everything the unit
produced is written by one `RunStore.write_unit` call, one file per table, the `units` row last.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from sweep.data.images import to_png_bytes
from sweep.probes.base import PairInput, PairResult
from sweep.schema import KNN_COLUMNS, SCHEMAS, STATUS_ERROR, STATUS_OK
from sweep.run.spec import WorkUnit
from sweep.run.store import RunStore

_PRED_NAMES = (("pred_src", "pred_src_name"), ("pred_tgt", "pred_tgt_name"), ("pred_adv", "pred_adv_name"))
_ZS_NAMES = (("zs_src", "zs_src_name"), ("zs_tgt", "zs_tgt_name"), ("zs_adv", "zs_adv_name"))
_IMAGE_IDENTITY = ("run_id", "unit_id", "model", "probe")  # the identity columns of the `images` table


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
    input_dim: int | None = None  # d = 3 H W pixels the encoder takes
    embed_dim: int | None = None  # D, its embedding size (None when no pair was embedded)


class EncoderCache:
    """Loaded encoders by (model, weights, embed), least recently used dropped beyond `size`."""

    def __init__(self, device: str | torch.device | None = None, size: int = 2) -> None:
        from sweep.encoders import default_device

        self.device = torch.device(device) if device is not None else default_device()
        self.size = size
        self._cache: OrderedDict[tuple[str, str, str, bool, str], Any] = OrderedDict()

    def get(self, model: str, weights: str, embed: str, compile: bool = False, head: str = "auto",
            text: tuple[str | None, str, str] | None = None, store: RunStore | None = None) -> Any:
        """text: (text weights, classes, templates) of zero-shot labels; the classifier is read
        from (or built into) the run `store` and attached as `encoder.zero_shot`."""
        from sweep.encoders import load_encoder

        key: tuple[Any, ...] = (model, weights, embed, compile, head)
        if text is not None and text[0] is not None:
            key = (*key, *text)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        while len(self._cache) >= self.size:
            self._cache.popitem(last=False)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        encoder = load_encoder(model, weights=weights, embed=embed, device=self.device, head=head)
        if text is not None and text[0] is not None:
            from sweep.run.zeroshot import zero_shot_for

            encoder.zero_shot = zero_shot_for(store, encoder, *text)
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
    encoder = encoder_cache.get(unit.model, unit.weights, unit.embed, unit.compile, unit.head,
                                text=_text_of(unit), store=store)
    probe = build_probe(unit.probe, unit.params)
    state = _Unit()
    keep_matched = bool(getattr(unit, "transfer", False) and getattr(probe, "matched_images", False))
    matched: dict[str, bytes] = {}  # pair_id -> the 8-bit matched image (PNG) for the transfer pass

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
        if keep_matched and result.error is None and "adv" in result.images:
            matched[result.pair_id] = to_png_bytes(result.images["adv"])  # = quantize_8bit(adv)
        if result.pair_id not in state.gallery_ids:
            result.images = {}  # keep pixels only for the gallery
        # extras can be large (lipschitz directions: (n, 3, H, W) each); keep only what rows need
        result.extra = {k: v for k, v in result.extra.items() if k in _KEPT_EXTRAS}
        pair.result = result

    pairs = sorted(state.pairs.values(), key=lambda p: p.index)
    probe_tables = _probe_tables(probe)
    zs_names = encoder.zero_shot.names if getattr(encoder, "zero_shot", None) is not None else None
    tables: dict[str, Any] = {name: _probe_rows(unit, run_id, pairs, name, encoder.class_names, zs_names)
                              for name in probe_tables}
    tables["pairs"] = [_pairs_row(unit, run_id, p) for p in pairs]
    tables["embeddings"] = _embeddings_table(unit, run_id, pairs, wants_probed=any(map(_wants_knn, probe_tables)))
    spectrum = _spectrum_rows(unit, run_id, pairs)
    if spectrum:  # only where the probe built the Jacobian
        tables["spectrum"] = spectrum
    images = _image_rows(unit, run_id, state)
    if images:  # a probe without images (lipschitz) or gallery 0: no file
        tables["images"] = images
    if keep_matched:
        tables["matched"] = _matched_rows(unit, run_id, tables[unit.probe], matched)
    n_error = sum(1 for p in pairs if _pair_error(p) is not None)
    summary = UnitSummary(
        unit_id=unit.unit_id, status=STATUS_OK, n_pairs=len(pairs), n_ok=len(pairs) - n_error, n_error=n_error,
        attempts=attempt, worker=worker, device=encoder_cache.describe(),
        input_dim=math.prod(encoder.input_size),
        embed_dim=next((int(p.result.embeddings["src"].numel()) for p in pairs
                        if p.result is not None and "src" in p.result.embeddings), None),
    )

    def done() -> dict[str, Any]:  # the done-marker row, once every other table is written
        summary.seconds = time.perf_counter() - t0
        return units_row(unit, run_id, summary, started_at, datetime.now(timezone.utc))

    summary.staged = store.write_unit(unit.probe, unit.model, unit.unit_id, tables, done,
                                      stage=None if commit else attempt)
    return summary


def _text_of(unit: WorkUnit) -> tuple[str | None, str, str] | None:
    text = getattr(unit, "text", None)
    return None if text is None else (text, unit.classes, unit.templates)


def units_row(
    unit: WorkUnit, run_id: str, summary: UnitSummary, started_at: datetime | None, finished_at: datetime
) -> dict[str, Any]:
    """The unit's done-marker row (also written by the driver for a unit that failed for good)."""
    return {
        **unit_columns(unit, run_id),
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
        "seed": unit.seed,
        "head": unit.head,
        "input_dim": summary.input_dim,
        "embed_dim": summary.embed_dim,
    }


# what a result keeps of its extras: the gallery variant, and J's spectrum for the `spectrum` table
_KEPT_EXTRAS = ("image_variant", "singular_values", "rank", "jacobian")


def _spectrum_rows(unit: WorkUnit, run_id: str, pairs: list[_Pair]) -> list[dict[str, Any]]:
    """One `spectrum` row per ok pair whose probe built the Jacobian (its singular values)."""
    rows = []
    for pair in pairs:
        result = pair.result
        if _pair_error(pair) is not None or result is None or "singular_values" not in result.extra:
            continue
        values = [float(v) for v in torch.as_tensor(result.extra["singular_values"]).double().tolist()]
        rows.append({**_identity(unit, run_id, pair, None), "jacobian": result.extra.get("jacobian"),
                     "rank": result.extra.get("rank"), "n_values": len(values), "singular_values": values})
    return rows


def _probe_tables(probe: Any) -> tuple[str, ...]:
    """The result tables a probe writes: one, named after the probe."""
    return (probe.name,)


def _pair_error(pair: _Pair) -> str | None:
    if pair.error is not None:
        return pair.error
    if pair.result is None:
        return "the probe returned no result for this pair"
    return pair.result.error


def unit_columns(unit: WorkUnit, run_id: str) -> dict[str, Any]:
    """The columns that say which run, unit and model setting a row belongs to (every table's)."""
    return {"run_id": run_id, "unit_id": unit.unit_id, "model": unit.model, "weights": unit.weights,
            "embed": unit.embed, "probe": unit.probe, "config_hash": unit.config_hash}


def _identity(unit: WorkUnit, run_id: str, pair: _Pair, error: str | None) -> dict[str, Any]:
    """The identity columns of a pair's rows (DESIGN.md's contract), its status and error."""
    return {
        **unit_columns(unit, run_id),
        "pair_id": pair.pair_id,
        "src_key": pair.src_key,
        "tgt_key": pair.tgt_key,
        "src_label": pair.src_label,
        "tgt_label": pair.tgt_label,
        "params": unit.params_json,
        "status": STATUS_OK if error is None else STATUS_ERROR,
        "error": error,
    }


def _wants_knn(table: str) -> bool:
    return set(KNN_COLUMNS) <= set(SCHEMAS[table].names)


def _probe_rows(
    unit: WorkUnit,
    run_id: str,
    pairs: list[_Pair],
    table: str,
    class_names: Callable[[list[int | None]], list[str | None]] | None = None,
    zs_names: Callable[[list[int | None]], list[str | None]] | None = None,
) -> list[dict[str, Any]]:
    """Rows of one probe table in read order: the probe's rows with identity columns, an error
    row for a pair that failed, and the names of the head's classes beside their indices."""
    names = [(index, name) for index, name in _PRED_NAMES if name in SCHEMAS[table].names]
    zs = [(index, name) for index, name in _ZS_NAMES if name in SCHEMAS[table].names]
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        error = _pair_error(pair)
        if error is not None:
            rows.append(_identity(unit, run_id, pair, error))
            continue
        assert pair.result is not None
        identity = _identity(unit, run_id, pair, None)
        for row in pair.result.rows:
            row = dict(row)
            if class_names is not None:
                for index, name in names:
                    if row.get(index) is not None:
                        row[name] = class_names([row[index]])[0]
            if zs_names is not None:
                for index, name in zs:
                    if row.get(index) is not None:
                        row[name] = zs_names([row[index]])[0]
            rows.append({**row, **identity})
    return rows


def _image_key(unit: WorkUnit, pair: _Pair, role: str) -> str:
    """The bank key of a pair's clean image: its dataset key, else one made from shard and pair."""
    key = pair.src_key if role == "src" else pair.tgt_key
    return key if key else f"{unit.shard}#{pair.pair_id}.{role}"


def _embeddings_table(unit: WorkUnit, run_id: str, pairs: list[_Pair], *, wants_probed: bool) -> pa.Table:
    """The unit's `embeddings` rows: each ok pair's clean source and target (keyed by image key,
    with its dataset label) and, for probes with k-NN label columns, each probed row's image."""
    meta: list[dict[str, Any]] = []
    vectors: list[torch.Tensor] = []  # (D,) each
    for pair in pairs:
        if _pair_error(pair) is not None or pair.result is None:
            continue
        result = pair.result
        for role, label in (("src", pair.src_label), ("tgt", pair.tgt_label)):
            if role in result.embeddings:
                meta.append({"pair_id": pair.pair_id, "role": role, "key": _image_key(unit, pair, role), "label": label})
                vectors.append(result.embeddings[role])
        if wants_probed:
            for row, emb in zip(result.rows, result.row_embeddings):
                if emb is not None:
                    meta.append({"pair_id": pair.pair_id, "role": "adv", "eps": row.get("eps")})
                    vectors.append(emb)
    setting = unit_columns(unit, run_id)
    return embeddings_table([{**setting, **m} for m in meta], vectors)


def embeddings_table(rows: list[dict[str, Any]], vectors: list[torch.Tensor]) -> pa.Table:
    """An `embeddings` table from row dicts (every column but `embedding`) and one (D,) vector
    per row, stored as fp16."""
    schema = SCHEMAS["embeddings"]
    columns: dict[str, Any] = {
        name: pa.array([r.get(name) for r in rows], type=schema.field(name).type)
        for name in schema.names if name != "embedding"
    }
    if vectors:
        matrix = torch.stack([v.detach().float().cpu().reshape(-1) for v in vectors]).numpy().astype(np.float16)
        offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
        columns["embedding"] = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=pa.float16()))
    else:
        columns["embedding"] = pa.array([], type=schema.field("embedding").type)
    return pa.Table.from_pydict(columns, schema=schema)


def _pairs_row(unit: WorkUnit, run_id: str, pair: _Pair) -> dict[str, Any]:
    row = {**_identity(unit, run_id, pair, _pair_error(pair)), "shard": unit.shard}
    return {name: row[name] for name in SCHEMAS["pairs"].names}


def _matched_rows(unit: WorkUnit, run_id: str, rows: list[dict[str, Any]], matched: dict[str, bytes]) -> list[dict[str, Any]]:
    """The `matched` table: each ok pair's 8-bit matched image with A's success flags."""
    setting = unit_columns(unit, run_id)
    return [{**{k: setting[k] for k in SCHEMAS["matched"].names if k in setting}, "pair_id": r["pair_id"],
             "success": r.get("success"), "quant_success": r.get("quant_success"), "adv_png": matched[r["pair_id"]]}
            for r in rows if r["status"] == STATUS_OK and r["pair_id"] in matched]


def _image_rows(unit: WorkUnit, run_id: str, state: _Unit) -> list[dict[str, Any]]:
    rows = []
    for pair_id in state.gallery_ids:
        result = state.pairs[pair_id].result
        if result is None or result.error is not None or not result.images:
            continue
        png = {role: to_png_bytes(img) for role, img in result.images.items() if role in ("src", "adv", "tgt")}
        rows.append({
            **{k: v for k, v in unit_columns(unit, run_id).items() if k in _IMAGE_IDENTITY},
            "pair_id": pair_id,
            "variant": str(result.extra.get("image_variant", "")),
            "src_png": png.get("src"),
            "adv_png": png.get("adv"),
            "tgt_png": png.get("tgt"),
        })
    return rows
