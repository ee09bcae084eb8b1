"""The labels pass: k-NN labels of every `match` / `perturb` row against a bank of the whole run.

Runs after the units have finished (the sweep calls it; `vitsweep labels RUN` redoes it), with
no Ray in it:

    summary = label_run("runs/demo")            # k and bank from RUN/spec.yaml, else 5 and the run
    summary = label_run("runs/demo", k=10, bank="shards/imagenet-train-50")

For each model setting (model, weights, embedding point) the bank is every distinct clean image
(by image key) that a finished unit of that setting embedded, with its dataset label; or, when
a reference shard set is given (`knn_bank:` in the spec), every distinct image of that set,
embedded once with the setting's encoder and kept under
`results/embeddings/probe=_reference/` for the next pass (the banks: sweep/finished/banks.py). Each row's source, target and probed
embedding is labelled by `sweep.probes.labels.knn_vote`, never with its own pair's source or
target image as a voter; `knn_bank_size` says how many labelled bank images were allowed to vote.

Output: `results/labels/probe=<probe>/model=<model>/<setting id>.parquet`, one file per probe
and model setting, each written atomically and replaced by the next pass (files of settings that
no longer have labels are deleted, so a label row exists once); and `labels.json`, the run-level
note of each setting's labellers (head label set, or why there is none; k, bank, bank size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import torch
import yaml

from sweep.data.shardset import ShardSet
from sweep.errors import UserError
from sweep.finished.banks import Bank, Setting, embedding_matrix, reference_bank, run_bank, setting_id
from sweep.probes.labels import knn_vote
from sweep.run.store import RunStore
from sweep.schema import LABEL_TABLES, STATUS_OK, partition_dir, to_table

DEFAULT_K = 5
NOTE_FILE = "labels.json"
_CHUNK_ELEMENTS = 2**25  # queries x bank entries per similarity block (float64: 256 MiB)

@dataclass
class SettingSummary:
    model: str
    weights: str
    embed: str
    bank: str
    bank_images: int
    bank_labelled: int
    rows: int
    head: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None  # why this setting got no labels


@dataclass
class LabelsSummary:
    k: int
    bank: str
    settings: list[SettingSummary]
    files: list[str]

    def describe(self) -> str:
        lines = []
        for s in self.settings:
            head = s.head.get("label_set") or f"none ({s.head.get('note', '')})"
            if s.skipped:
                lines.append(f"{s.model} [{s.weights}, {s.embed}]: no k-NN labels ({s.skipped}); head labels: {head}")
            else:
                lines.append(
                    f"{s.model} [{s.weights}, {s.embed}]: {s.rows} rows labelled by {self.k}-NN over "
                    f"{s.bank_labelled} labelled of {s.bank_images} images ({s.bank}); head labels: {head}"
                )
        return "\n".join(lines)


def label_run(
    root: str | RunStore,
    *,
    k: int | None = None,
    bank: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> LabelsSummary:
    """Compute and write the k-NN labels of every finished unit of the run at `root`.
    `k` and `bank` default to the spec's `knn_k` and `knn_bank`, else 5 and the run's own images."""
    store = root if isinstance(root, RunStore) else RunStore(root)
    spec = _spec_defaults(store)
    k = k if k is not None else int(spec.get("knn_k") or DEFAULT_K)
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    bank = bank if bank is not None else spec.get("knn_bank")
    bank_urls = _expand_bank(bank) if bank else None
    bank_text = "run" if not bank else (bank if isinstance(bank, str) else ",".join(bank))
    units = _finished_units(store)
    if not units:
        raise UserError(f"{store.root}: no finished units to label")
    device = torch.device(device) if device is not None else _default_device()
    names = _LabelNames()
    written: list[str] = []
    summaries: list[SettingSummary] = []
    heads = _spec_heads(spec)
    for setting, setting_units in _by_setting(units).items():
        summary, files = _label_setting(
            store, setting, setting_units, k=k, bank_urls=bank_urls, bank_text=bank_text, device=device, names=names,
            head=heads.get(setting, "auto"),
        )
        summaries.append(summary)
        written += files
    _remove_stale(store, set(written))
    store.write_json(NOTE_FILE, {
        "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "knn": {"k": k, "bank": bank_text,
                "rule": "majority of the k nearest labelled bank images by cosine similarity, the pair's own "
                        "source and target left out; equal similarities ordered by image key; a tied vote goes "
                        "to the nearest voter"},
        "settings": [asdict(s) for s in summaries],
    })
    return LabelsSummary(k=k, bank=bank_text, settings=summaries, files=written)


# ----------------------------------------------------------------------------------- one setting


def _label_setting(
    store: RunStore,
    setting: Setting,
    units: list[dict[str, Any]],
    *,
    k: int,
    bank_urls: list[str] | None,
    bank_text: str,
    device: torch.device,
    names: "_LabelNames",
    head: str = "auto",
) -> tuple[SettingSummary, list[str]]:
    model, weights, embed = setting
    summary = SettingSummary(model, weights, embed, bank_text, 0, 0, 0, _head_or_note(setting, head))
    tables = {u["unit_id"]: t for u in units if (t := _read_unit_embeddings(store, u)) is not None}
    if not tables:
        summary.skipped = "its units stored no embeddings (written by an older vitsweep): rerun them to get k-NN labels"
        return summary, []
    for unit in units:
        names.add_shard(unit.get("shard"))
    if bank_urls is not None:
        bank = reference_bank(store, setting, bank_urls, device)
        for url in bank_urls:
            names.add_shard(url)
    else:
        bank = run_bank(tables[u] for u in sorted(tables))
    summary.bank_images, summary.bank_labelled = len(bank.keys), int((bank.labels >= 0).sum())
    position = bank.position()
    files: list[str] = []
    for probe in LABEL_TABLES:
        rows = []
        for unit in (u for u in units if u["probe"] == probe and u["unit_id"] in tables):
            rows += _label_unit(unit, tables[unit["unit_id"]], bank, position, k, device, names)
        if not rows:
            continue
        for row in rows:
            row.update(knn_k=k, knn_bank=bank_text)
        relative = f"{partition_dir('labels', probe, model)}/{setting_id(setting)}.parquet"
        store.write_parquet(relative, to_table("labels", rows))
        files.append(relative)
        summary.rows += len(rows)
    return summary, files


def _label_unit(
    unit: dict[str, Any],
    table: pa.Table,
    bank: Bank,
    position: dict[str, int],
    k: int,
    device: torch.device,
    names: "_LabelNames",
) -> list[dict[str, Any]]:
    """The labels rows of one unit: one per probed embedding (pair, eps)."""
    cols = table.drop_columns(["embedding"]).to_pydict() if table.num_rows else {}
    vectors = embedding_matrix(table)  # (M, D)
    clean: dict[tuple[str, str], int] = {}  # (pair_id, role) -> row in `table`
    keys: dict[str, list[str]] = {}  # pair_id -> its own src and tgt keys
    probed: list[tuple[str, float | None, int]] = []  # (pair_id, eps, row in `table`)
    for i in range(table.num_rows):
        pair_id, role = cols["pair_id"][i], cols["role"][i]
        if role == "adv":
            probed.append((pair_id, cols["eps"][i], i))
        else:
            clean[(pair_id, role)] = i
            keys.setdefault(pair_id, []).append(cols["key"][i])
    if not probed:
        return []
    # queries: every pair's src and tgt once, then every probed row
    pair_ids = list(dict.fromkeys(p for p, _, _ in probed))
    slots: list[tuple[str, str]] = [(p, r) for p in pair_ids for r in ("src", "tgt") if (p, r) in clean]
    query_rows = [clean[s] for s in slots] + [i for _, _, i in probed]
    owners = [p for p, _ in slots] + [p for p, _, _ in probed]
    exclude = torch.full((len(query_rows), 2), -1, dtype=torch.long)
    for q, pair_id in enumerate(owners):
        for j, key in enumerate(keys.get(pair_id, [])[:2]):
            exclude[q, j] = position.get(key, -1)
    labels, sizes = _vote(vectors[query_rows], bank, exclude, k, device)
    by_slot = {slot: (labels[q], sizes[q]) for q, slot in enumerate(slots)}
    offset = len(slots)
    rows = []
    for j, (pair_id, eps, _) in enumerate(probed):
        src, _ = by_slot.get((pair_id, "src"), (None, None))
        tgt, _ = by_slot.get((pair_id, "tgt"), (None, None))
        adv, size = labels[offset + j], sizes[offset + j]
        rows.append({
            "run_id": cols["run_id"][0], "unit_id": unit["unit_id"], "pair_id": pair_id, "eps": eps,
            "model": unit["model"], "weights": unit["weights"], "embed": unit["embed"], "probe": unit["probe"],
            "config_hash": unit["config_hash"],
            "knn_src": src, "knn_tgt": tgt, "knn_adv": adv,
            "knn_src_name": names.name(src), "knn_tgt_name": names.name(tgt), "knn_adv_name": names.name(adv),
            "knn_bank_size": size,
        })
    return rows


def _vote(
    queries: torch.Tensor, bank: Bank, exclude: torch.Tensor, k: int, device: torch.device
) -> tuple[list[int | None], list[int]]:
    """knn_vote in blocks small enough for memory."""
    labels: list[int | None] = []
    sizes: list[int] = []
    bank_vectors, bank_labels = bank.vectors.to(device), bank.labels.to(device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(bank.keys)))
    for start in range(0, len(queries), chunk):
        votes = knn_vote(queries[start:start + chunk].to(device), bank_vectors, bank_labels,
                         exclude[start:start + chunk], k=k)
        labels += votes.labels
        sizes += votes.bank_sizes
    return labels, sizes


# ----------------------------------------------------------------------------------- banks


# ----------------------------------------------------------------------------------- reading


def _finished_units(store: RunStore) -> list[dict[str, Any]]:
    columns = ["unit_id", "model", "weights", "embed", "probe", "config_hash", "shard", "status"]
    rows = store.read("units", columns=columns).to_pylist()
    return sorted((u for u in rows if u["status"] == STATUS_OK), key=lambda u: u["unit_id"])


def _by_setting(units: list[dict[str, Any]]) -> dict[Setting, list[dict[str, Any]]]:
    out: dict[Setting, list[dict[str, Any]]] = {}
    for unit in units:
        out.setdefault((unit["model"], unit["weights"], unit["embed"] or "pre_logits"), []).append(unit)
    return out


def _read_unit_embeddings(store: RunStore, unit: dict[str, Any]) -> pa.Table | None:
    """The unit's `embeddings` file, None when it has none (written by an older vitsweep)."""
    key = (unit["probe"], unit["model"], unit["unit_id"])
    if not store.exists(store.unit_file("embeddings", *key)):
        return None
    return store.read("embeddings", unit=key)


def _spec_defaults(store: RunStore) -> dict[str, Any]:
    text = store.read_text("spec.yaml")
    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        data = None
    return data if isinstance(data, dict) else {}


def _expand_bank(bank: str | Sequence[str]) -> list[str]:
    from sweep.data.shardset import expand_shard_urls

    try:
        return expand_shard_urls(bank)
    except UserError as err:
        raise UserError(f"knn_bank: {err}") from None


def _spec_heads(spec: dict[str, Any]) -> dict[Setting, str]:
    """(model, weights, embed) -> the head label set the spec names for it."""
    heads: dict[Setting, str] = {}
    for model in spec.get("models") or []:
        if isinstance(model, dict) and model.get("name"):
            key = (model["name"], model.get("weights", "random:0"), model.get("embed", "pre_logits"))
            heads.setdefault(key, str(model.get("head", "auto")))
    return heads


def _head_or_note(setting: Setting, head: str) -> dict[str, Any]:
    from sweep.encoders import describe_head

    try:
        return describe_head(*setting, head=head)
    except Exception as err:  # the note is informative only: never fail the labels for it
        return {"label_set": None, "note": f"head not described ({' '.join(str(err).split())[:200]})"}


class _LabelNames:
    """Dataset label index -> name, from the `label_names` of the shard sets' manifests."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.sets: dict[str, ShardSet] = {}  # one ShardSet (one manifest read) per folder

    def add_shard(self, url: str | None) -> None:
        if not url or url.startswith("pipe:"):
            return
        for index, name in ShardSet.of(url, self.sets).label_names.items():
            self.names.setdefault(index, name)  # no manifest (or not one of ours): labels stay unnamed

    def name(self, label: int | None) -> str | None:
        return None if label is None else self.names.get(label)


def _remove_stale(store: RunStore, keep: set[str]) -> None:
    for path in store.parquet_files("results/labels"):
        if path[len(store.base) + 1:] not in keep:
            store.fs.delete_file(path)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
