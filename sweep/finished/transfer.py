"""The transfer pass (issue 23): every matched image of model A evaluated on every model B of the run.

A pass over stored images, after the units and the labels pass, not inside the match unit: a unit
holds one model (the run's others would multiply an actor's memory and make a unit's rows depend
on which models the spec lists), and a model added later only adds transfer files. With
`transfer: true` a match unit stores the 8-bit matched image of every ok pair (`matched`, PNG:
exactly the pixels A's quantised re-check scored, `quant_*`). This pass decodes them and
re-decodes each pair's source and target from its shard with A's preprocessing (deterministic),
so B scores all three images in one geometry; where B's input size differs from A's all three are
resized to B's with the same antialiased bicubic resize (`resized`). The row with B = A
(`same_setting`) reproduces A's `quant_rel_dist` and `quant_cos`: a built-in check.

Per (pair, B): rel_dist and cos of B's embedding of the matched image to B's embeddings of the
target and of the source, `target_closer` (nearer the target than the source in B's space), and
B's labels of source, target and matched image: head (pred_*) and zero-shot (zs_*, where B's
model entry has `text:`). Embedding points follow B's spec entry (same rules as B's units). Cost:
one forward per (pair, B) for the matched image plus two for the clean images.

    summary = transfer_run(store, loaded)          # in the driver, after the labels pass
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from PIL import Image

from sweep.probes import metrics
from sweep.probes.common import embed_fp32, head_labels, zeroshot_labels
from sweep.run.spec import LoadedSpec, ModelSpec
from sweep.run.store import RunStore
from sweep.schema import to_table


@dataclass
class TransferSummary:
    n_units: int = 0  # A's match units with stored matched images
    n_images: int = 0
    n_models: int = 0
    n_rows: int = 0
    seconds: float = 0.0
    forwards: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.n_units:
            return "transfer: no stored matched images (" + "; ".join(self.notes or ["no match unit"]) + ")"
        return (f"transfer: {self.n_images} matched images x {self.n_models} models -> {self.n_rows} rows, "
                f"{self.forwards} forwards in {self.seconds:.1f} s")


def setting_of(model: ModelSpec) -> str:
    """A short hash of a model entry's setting (what the transfer rows of B are keyed by)."""
    data = model.model_dump(mode="json")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def transfer_stage(store: RunStore, loaded: LoadedSpec) -> str:
    """The driver's stage: the pass when the spec asks for it (one line for the run's summary)."""
    if not loaded.spec.transfer:
        return ""
    return "\n  " + transfer_run(store, loaded).describe()


def _decode(png: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(png)) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def transfer_run(store: RunStore, loaded: LoadedSpec, *, device: str | None = None,
                 batch: int = 32) -> TransferSummary:
    """Evaluate every stored matched image on every model setting of `loaded` and write `transfer`."""
    from sweep.data.shards import read_pairs
    from sweep.run.worker import EncoderCache

    t0 = time.perf_counter()
    summary = TransferSummary()
    matched = store.read("matched")
    if len(matched) == 0:
        summary.notes.append("the spec's match units stored none: `transfer: true` before they ran")
        return summary
    by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in matched.to_pylist():
        by_unit[row["unit_id"]].append(row)
    units = {u.unit_id: u for u in loaded.units}
    models = list({setting_of(m): m for m in loaded.spec.models}.items())
    summary.n_models = len(models)
    cache = EncoderCache(device, size=max(2, len(models) + 1))
    banks: dict[str, Any] = {}  # B's run bank (clean images of B's units), read once per B
    for unit_id, rows in sorted(by_unit.items()):
        unit = units.get(unit_id)
        if unit is None:
            summary.notes.append(f"unit {unit_id} is not in the spec")
            continue
        summary.n_units += 1
        summary.n_images += len(rows)
        enc_a = cache.get(unit.model, unit.weights, unit.embed, False, unit.head)
        wanted = {r["pair_id"] for r in rows}
        pairs = {rec.pair_id: rec for rec in read_pairs(unit.shard, enc_a.preprocess, workers=0)
                 if rec.pair_id in wanted and rec.error is None}
        rows = [r for r in rows if r["pair_id"] in pairs]
        if not rows:
            continue
        src = torch.stack([pairs[r["pair_id"]].src for r in rows])
        tgt = torch.stack([pairs[r["pair_id"]].tgt for r in rows])
        adv = torch.stack([_decode(r["adv_png"]) for r in rows])
        a_setting = next((s for s, m in models if (m.name, m.weights, m.embed, m.head) ==
                          (unit.model, unit.weights, unit.embed, unit.head)), None)
        keys = [[pairs[r["pair_id"]].src_key or f"{unit.shard}#{r['pair_id']}.src",
                 pairs[r["pair_id"]].tgt_key or f"{unit.shard}#{r['pair_id']}.tgt"] for r in rows]
        for b_setting, b in models:
            text = None if b.text is None else (b.text, b.classes, b.templates)
            enc_b = cache.get(b.name, b.weights, b.embed, False, b.head, text=text, store=store)
            size = tuple(enc_b.preprocess.size)
            resized = size != tuple(src.shape[-2:])
            out = _evaluate(enc_b, *(_resize(x, size) for x in (src, tgt, adv)), batch)
            out.update(_knn(store, b, banks, out.pop("_embeddings"), keys, loaded.spec.knn_k))
            summary.forwards += 3 * len(rows)
            table = _rows(store, unit, rows, pairs, b, b_setting, b_setting == a_setting, resized, out, enc_b)
            store.write_parquet(RunStore.unit_file("transfer", "match", b.name, f"{unit_id}-{b_setting}"), table)
            summary.n_rows += len(table)
    summary.seconds = time.perf_counter() - t0
    return summary


@torch.no_grad()
def _evaluate(enc: Any, src: torch.Tensor, tgt: torch.Tensor, adv: torch.Tensor, batch: int) -> dict[str, Any]:
    dev = enc.device
    e = {role: embed_fp32(enc, x.to(dev), batch) for role, x in (("src", src), ("tgt", tgt), ("adv", adv))}
    d_tgt, d_src = (e["adv"] - e["tgt"]).norm(dim=-1), (e["adv"] - e["src"]).norm(dim=-1)
    out: dict[str, Any] = {
        "rel_dist_tgt": metrics.rel_dist(e["adv"], e["tgt"]), "cos_tgt": metrics.cosine(e["adv"], e["tgt"]),
        "rel_dist_src": metrics.rel_dist(e["adv"], e["src"]), "cos_src": metrics.cosine(e["adv"], e["src"]),
        "rel_dist_start": metrics.rel_dist(e["src"], e["tgt"]), "target_closer": (d_tgt < d_src),
    }
    out = {k: v.detach().cpu().tolist() for k, v in out.items()}
    out["_embeddings"] = {role: v.cpu() for role, v in e.items()}
    for role, emb in e.items():
        out[f"pred_{role}"], out[f"prob_{role}"] = head_labels(enc, emb)
        out[f"zs_{role}"], out[f"zs_prob_{role}"] = zeroshot_labels(enc, emb)
    return out


def _knn(store: RunStore, b: ModelSpec, banks: dict[str, Any], e: dict[str, torch.Tensor],
         keys: list[list[str]], k: int) -> dict[str, list[int | None]]:
    """B's k-NN labels (as the labels pass votes: cosine, k voters, the pair's own source and
    target never vote) of source, target and matched image, over B's run bank; the queries are
    rounded to fp16 as the bank's stored embeddings are. Nulls where B has no bank."""
    import pyarrow.compute as pc

    from sweep.finished.banks import run_bank
    from sweep.probes.labels import knn_predict

    if b.name not in banks or banks[b.name][0] != (b.weights, b.embed):
        table = store.read("embeddings", filter=(pc.field("model") == b.name) & (pc.field("weights") == b.weights)
                           & (pc.field("embed") == b.embed))
        banks[b.name] = ((b.weights, b.embed), run_bank([table]))
    bank = banks[b.name][1]
    n = len(keys)
    if not bank.keys:
        return {f"knn_{role}": [None] * n for role in ("src", "tgt", "adv")}
    position = bank.position()
    exclude = torch.zeros(n, len(bank.keys), dtype=torch.bool)
    for i, own in enumerate(keys):
        for key in own:
            if key in position:
                exclude[i, position[key]] = True
    return {f"knn_{role}": knn_predict(e[role].half().float(), bank.vectors, bank.labels, exclude, k)
            for role in ("src", "tgt", "adv")}


def _rows(store: RunStore, unit: Any, rows: list[dict[str, Any]], pairs: dict[str, Any], b: ModelSpec,
          b_setting: str, same: bool, resized: bool, out: dict[str, Any], enc_b: Any) -> pa.Table:
    zs_names = enc_b.zero_shot.names if enc_b.zero_shot is not None else None
    records = []
    for i, r in enumerate(rows):
        rec = pairs[r["pair_id"]]
        row = {
            "run_id": r["run_id"], "unit_id": r["unit_id"], "pair_id": r["pair_id"], "src_key": rec.src_key,
            "tgt_key": rec.tgt_key, "src_label": rec.src_label, "tgt_label": rec.tgt_label,
            "model_a": unit.model, "weights_a": unit.weights, "embed_a": unit.embed, "config_hash": unit.config_hash,
            "model": b.name, "weights": b.weights, "embed": b.embed, "probe": "match", "setting_b": b_setting,
            "same_setting": same, "a_success": r["success"], "a_quant_success": r["quant_success"],
            "resized": resized, **{k: v[i] for k, v in out.items()},
        }
        for role in ("src", "tgt", "adv"):
            if row[f"pred_{role}"] is not None:
                row[f"pred_{role}_name"] = enc_b.class_names([row[f"pred_{role}"]])[0]
            if zs_names is not None and row[f"zs_{role}"] is not None:
                row[f"zs_{role}_name"] = zs_names([row[f"zs_{role}"]])[0]
        records.append(row)
    return to_table("transfer", records)


def replay_transfer(store: RunStore, loaded: LoadedSpec, pair_id: str, *, device: str | None = None,
                    rtol: float = 1e-4, atol: float = 1e-6) -> list[tuple[str, str, Any, Any]]:
    """Re-evaluate the stored matched images of `pair_id` on every model setting and compare with
    the stored `transfer` rows: (row key, column, stored, replayed) for every value that differs
    beyond `|a - b| <= atol + rtol |b|` (floats) or at all (the rest). The stored PNGs make the
    inputs exact; the clean images come from the shard as in the pass."""
    import pyarrow.compute as pc

    from sweep.finished.replay import compare_values

    stored = store.read("transfer", filter=pc.field("pair_id") == pair_id).to_pylist()
    if not stored:
        from sweep.errors import UserError

        raise UserError(f"{store.root}: no transfer rows of pair {pair_id!r}")
    scratch = _ScratchStore(store)
    matched = store.read("matched", filter=pc.field("pair_id") == pair_id)
    scratch.tables["matched"] = matched
    transfer_run(scratch, loaded, device=device)  # type: ignore[arg-type]
    replayed = {(r["unit_id"], r["setting_b"]): r for r in scratch.written}
    out = []
    for row in stored:
        key = (row["unit_id"], row["setting_b"])
        again = replayed.get(key)
        if again is None:
            out.append((f"{key}", "(row)", "stored", None))
            continue
        for column, value in row.items():
            if compare_values(value, again.get(column), rtol, atol) is not None:
                out.append((f"{key}", column, value, again.get(column)))
    return out


class _ScratchStore:
    """The run's store for reading (classifier cache included), keeping what the pass writes."""

    def __init__(self, store: RunStore) -> None:
        self._store = store
        self.tables: dict[str, pa.Table] = {}
        self.written: list[dict[str, Any]] = []

    def read(self, table: str, *args: Any, **kwargs: Any) -> pa.Table:
        return self.tables[table] if table in self.tables else self._store.read(table, *args, **kwargs)

    def write_parquet(self, relative: str, table: pa.Table) -> None:
        if relative.startswith("results/transfer/"):
            self.written += table.to_pylist()
        else:
            self._store.write_parquet(relative, table)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


__all__ = ["TransferSummary", "replay_transfer", "setting_of", "transfer_run", "transfer_stage"]
