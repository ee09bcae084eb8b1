"""Arrow schemas of every result table: the one place they are defined.

A run directory holds `results/<table>/probe=<probe>/model=<model>/<unit_id>.parquet`
(hive-style partition folders; the partition values are also stored as columns, so a
single file read on its own is complete). Tables:

- `match`, `perturb`, `lipschitz`: one row per pair (per eps for `perturb`, per direction and
  step size for `lipschitz`), with the common identity columns first;
- `equivalence`: one row per pair: path linearity after a match, the equivalence walk against a
  random walk (sweep/probes/equivalence.py);
- `spectrum`: every singular value of the Jacobian J = df/dx at the source (D floats, descending),
  one row per pair, whenever a probe built J (the `lipschitz` family `null`);
- `pairs`: one row per pair a unit read, with its dataset labels and decode status;
- `units`: one row per finished or failed work unit;
- `images`: PNG bytes of source, probed and target image for a few pairs per unit (the gallery);
- `embeddings`: fp16 embeddings a unit computed: every clean source and target image (keyed by
  image key) and every probed image (keyed by pair and row), the input of the k-NN labels pass;
- `labels`: k-NN labels of every `match` / `perturb` row, written by the labels pass
  (`sweep/finished/labels.py`) after the units finish, one file per probe and model setting at
  `results/labels/probe=<p>/model=<m>/<setting>.parquet`, replaced whenever the pass runs again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import pyarrow as pa

RESULT_TABLES = ("match", "perturb", "lipschitz", "equivalence")
# `spectrum`: the singular values of J, one row per pair, whenever a probe built the Jacobian
UNIT_TABLES = (*RESULT_TABLES, "spectrum", "pairs", "units", "images")  # the tables the analysis views read
ALL_TABLES = (*UNIT_TABLES, "embeddings", "matched")  # every table a unit writes (one file each)
LABEL_TABLES = ("match", "perturb")  # result tables whose rows get k-NN labels from `labels`
KNN_COLUMNS = ("knn_src", "knn_tgt", "knn_adv")
STATUS_OK = "ok"
STATUS_ERROR = "error"

# Columns every result row carries (the contract in docs/results.md), plus the dataset labels and settings.
COMMON = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("unit_id", pa.string(), nullable=False),
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("src_key", pa.string()),
    pa.field("tgt_key", pa.string()),
    pa.field("src_label", pa.int64()),
    pa.field("tgt_label", pa.int64()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("weights", pa.string(), nullable=False),
    pa.field("embed", pa.string()),
    pa.field("probe", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("params", pa.string()),  # the probe's validated parameters as JSON
    pa.field("status", pa.string(), nullable=False),  # "ok" | "error"
    pa.field("error", pa.string()),
]

_F64 = pa.float64()
_I64 = pa.int64()

LABELS_SRC_TGT_ADV = [
    pa.field("pred_src", _I64),
    pa.field("pred_tgt", _I64),
    pa.field("pred_adv", _I64),
    pa.field("prob_src", _F64),
    pa.field("prob_tgt", _F64),
    pa.field("prob_adv", _F64),
    # Filled from the `labels` table by the analysis views (the worker leaves them null; runs
    # written before the labels pass carry per-unit values here).
    pa.field("knn_src", _I64),
    pa.field("knn_tgt", _I64),
    pa.field("knn_adv", _I64),
    # The head's class names (its label set: ImageNet-1k, -21k, or one the user named).
    pa.field("pred_src_name", pa.string()),
    pa.field("pred_tgt_name", pa.string()),
    pa.field("pred_adv_name", pa.string()),
]

# Zero-shot CLIP labels (models with `text:` in the spec; null otherwise): top-1 class of the
# setting's zero-shot classifier on the projected embedding, its softmax probability, its name.
ZEROSHOT_SRC_TGT_ADV = [
    pa.field("zs_src", _I64),
    pa.field("zs_tgt", _I64),
    pa.field("zs_adv", _I64),
    pa.field("zs_prob_src", _F64),
    pa.field("zs_prob_tgt", _F64),
    pa.field("zs_prob_adv", _F64),
    pa.field("zs_src_name", pa.string()),
    pa.field("zs_tgt_name", pa.string()),
    pa.field("zs_adv_name", pa.string()),
]
ZS_COLUMNS = ("zs_src", "zs_tgt", "zs_adv")

PIXEL_CHANGE = [
    pa.field("pix_l2", _F64),
    pa.field("pix_linf", _F64),
    pa.field("psnr", _F64),
    pa.field("ssim", _F64),
]

MATCH = pa.schema(
    COMMON
    + [
        pa.field("success", pa.bool_()),
        pa.field("steps", pa.int32()),
        pa.field("sq_l2", _F64),
        pa.field("cos", _F64),
        pa.field("rel_dist", _F64),
        pa.field("rel_dist_start", _F64),
        pa.field("cos_start", _F64),
        *PIXEL_CHANGE,
        pa.field("quant_success", pa.bool_()),
        pa.field("quant_cos", _F64),
        pa.field("quant_rel_dist", _F64),
        *LABELS_SRC_TGT_ADV,
        *ZEROSHOT_SRC_TGT_ADV,
        pa.field("log_every", pa.int32()),
        pa.field("loss_trajectory", pa.list_(pa.float32())),
    ]
)

PERTURB = pa.schema(
    COMMON
    + [
        pa.field("norm", pa.string()),
        pa.field("eps", _F64),
        pa.field("steps", pa.int32()),
        pa.field("emb_disp", _F64),
        pa.field("rel_disp", _F64),
        pa.field("disp_over_pair", _F64),
        pa.field("random_disp", _F64),
        pa.field("random_rel_disp", _F64),
        pa.field("random_disp_over_pair", _F64),
        pa.field("random_disp_max", _F64),  # random_disp is the median draw; this the best of the draws
        pa.field("random_disp_over_pair_max", _F64),
        pa.field("cos_after", _F64),
        pa.field("delta_norm", _F64),  # ||delta||_p of the reported (best) perturbation
        pa.field("random_norm", _F64),  # ||delta||_p of the median random draw(s), after the [0, 1] clamp
        *PIXEL_CHANGE,
        *LABELS_SRC_TGT_ADV,
        *ZEROSHOT_SRC_TGT_ADV,
    ]
)

LIPSCHITZ = pa.schema(
    COMMON
    + [
        pa.field("family", pa.string()),  # random | top | grad | null | off_top | match
        pa.field("direction", pa.int32()),
        pa.field("h", _F64),
        pa.field("l_fd", _F64),  # float64 finite difference
        pa.field("l_jvp", _F64),
        pa.field("sigma", _F64),  # singular value, for family "top"
        pa.field("nonlinearity", _F64),  # |l_fd - l_jvp| / l_jvp; null when within fd_floor
        pa.field("fd_floor", _F64),  # round-off floor of l_fd at this h
        pa.field("jv_residual", _F64),  # family "null": ||J v|| / sigma_1 from the explicit Jacobian
        pa.field("rank", pa.int32()),  # numerical rank of J at x0 (when the Jacobian was built)
        pa.field("match_success", pa.bool_()),  # family "match" asked for: did the pair's match succeed
        pa.field("jvp_floor", _F64),  # round-off floor of l_jvp (2^-26 sigma_1): nonlinearity is null at or below it
        pa.field("note", pa.string()),  # why a family has no directions (e.g. "no null space: ..."), or what a row is
        # family "match" at h = ||x_matched - x0||: ||f(x_m) - f(x0) - J (x_m - x0)|| / ||f(x_m) - f(x0)||
        pa.field("fd_residual", _F64),
    ]
)

_CURVE = pa.list_(pa.float32())

EQUIVALENCE = pa.schema(
    COMMON
    + [
        pa.field("pair_dist", _F64),  # ||f(x0) - f(tgt)||, fp32: the unit of every deviation below
        pa.field("delta", _F64),  # the walk's set: ||f(x) - f(x0)|| < delta * pair_dist
        pa.field("match_success", pa.bool_()),  # path linearity asked: the pair's match
        pa.field("match_steps", pa.int32()),
        pa.field("match_rel_dist", _F64),
        # path linearity (successful matches only): maxima over K points, relative to pair_dist
        pa.field("path_points", pa.int32()),
        pa.field("path_target_max", _F64),  # max ||f(y) - f(tgt)|| on tgt -> x_matched
        pa.field("path_target_end", _F64),  # its value at x_matched: the match tolerance
        pa.field("path_chord_max", _F64),  # max ||f(x) - chord|| on x0 -> x_matched
        pa.field("path_linear_max", _F64),  # max ||f(x) - (f(x0) + t J (x_matched - x0))||
        pa.field("path_target_curve", _CURVE),
        pa.field("path_chord_curve", _CURVE),
        pa.field("path_linear_curve", _CURVE),
        pa.field("seg_src_l2", _F64),  # x0 -> x_matched
        pa.field("seg_src_linf", _F64),
        pa.field("seg_src_psnr", _F64),
        pa.field("seg_tgt_l2", _F64),  # tgt -> x_matched
        pa.field("seg_tgt_linf", _F64),
        pa.field("seg_tgt_psnr", _F64),
        # the equivalence walk (predictor with J's top subspace removed) and the random walk
        pa.field("walk_kept", pa.int32()),  # steps kept in the set
        pa.field("walk_radius", _F64),  # L2 from x0 of the last kept image: the reachable radius
        pa.field("walk_linf", _F64),
        pa.field("walk_psnr", _F64),
        pa.field("walk_ssim", _F64),
        pa.field("walk_curve", _CURVE),  # ||f(x) - f(x0)|| / pair_dist per step taken
        pa.field("random_walk_kept", pa.int32()),
        pa.field("random_walk_radius", _F64),
        pa.field("random_walk_linf", _F64),
        pa.field("random_walk_psnr", _F64),
        pa.field("random_walk_ssim", _F64),
        pa.field("random_walk_curve", _CURVE),
        pa.field("walk_ratio", _F64),  # walk_radius / random_walk_radius (null: random radius 0)
    ]
)

SPECTRUM = pa.schema(
    COMMON
    + [
        pa.field("jacobian", pa.string()),  # how J was built: "fp32" (Gram J J^T in float64) | "float64" (SVD)
        pa.field("rank", pa.int32()),  # numerical rank (singular values above rank_rtol * sigma_1)
        pa.field("n_values", pa.int32()),  # min(D, d) singular values
        pa.field("singular_values", pa.list_(_F64)),  # sigma_1 >= ... >= sigma_min(D, d)
    ]
)

PAIRS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("src_key", pa.string()),
        pa.field("tgt_key", pa.string()),
        pa.field("src_label", _I64),
        pa.field("tgt_label", _I64),
        pa.field("shard", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)

UNITS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("params", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "error" (failed after retries)
        pa.field("error", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("n_pairs", _I64),
        pa.field("n_ok", _I64),
        pa.field("n_error", _I64),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("seconds", _F64),
        pa.field("worker", pa.string()),
        pa.field("host", pa.string()),
        pa.field("device", pa.string()),
        pa.field("batch_size", pa.int32()),  # pairs per probe batch (what a bitwise replay needs)
        pa.field("seed", _I64),  # the run seed the unit's random draws used (replay needs it; null in older runs)
        pa.field("head", pa.string()),  # the model's head label set (auto | none | a label set | file:<path>)
        # the encoder's shapes: d = 3 H W input pixels, D the embedding size (the closed-form
        # Gaussian reference of the verdicts, analysis/intervals.gaussian_reference); null in
        # runs written before they were recorded
        pa.field("input_dim", _I64),
        pa.field("embed_dim", _I64),
    ]
)

IMAGES = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("variant", pa.string()),  # e.g. "eps=0.0313" for perturb; "" for match
        pa.field("src_png", pa.binary()),
        pa.field("adv_png", pa.binary()),
        pa.field("tgt_png", pa.binary()),
    ]
)

EMBEDDINGS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # "src" | "tgt" (clean images) | "adv" (probed)
        pa.field("key", pa.string()),  # image key of a clean image; null for "adv"
        pa.field("label", _I64),  # dataset label of a clean image (null: unlabelled)
        pa.field("eps", _F64),  # the probed row's eps (perturb); null otherwise
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float16())),  # (D,)
    ]
)

LABELS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("eps", _F64),  # joins perturb rows (one per eps); null for match
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("knn_src", _I64),
        pa.field("knn_tgt", _I64),
        pa.field("knn_adv", _I64),
        pa.field("knn_src_name", pa.string()),
        pa.field("knn_tgt_name", pa.string()),
        pa.field("knn_adv_name", pa.string()),
        pa.field("knn_k", pa.int32()),
        pa.field("knn_bank", pa.string()),  # "run" or the reference shard location
        pa.field("knn_bank_size", _I64),  # labelled bank images that could vote for this row
    ]
)

# Transfer (issue 23), written only for specs with `transfer: true`:
# - `matched`: per match unit, the 8-bit matched image of every ok pair (PNG, lossless: exactly
#   what the quantised re-check `quant_*` scored), the input of the transfer pass;
# - `transfer`: per (matched pair of model A, model setting B of the run) B's view of it, written
#   by the transfer pass (sweep/finished/transfer.py) after the labels pass, one file per (A's
#   unit, B) at results/transfer/probe=match/model=<B>/<A unit>-<B setting>.parquet.
MATCHED = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("success", pa.bool_()),
        pa.field("quant_success", pa.bool_()),
        pa.field("adv_png", pa.binary()),
    ]
)

TRANSFER = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("unit_id", pa.string(), nullable=False),  # A's match unit
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("src_key", pa.string()),
        pa.field("tgt_key", pa.string()),
        pa.field("src_label", _I64),
        pa.field("tgt_label", _I64),
        pa.field("model_a", pa.string(), nullable=False),
        pa.field("weights_a", pa.string(), nullable=False),
        pa.field("embed_a", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),  # A's match setting
        pa.field("model", pa.string(), nullable=False),  # B, the model the image is evaluated on
        pa.field("weights", pa.string(), nullable=False),
        pa.field("embed", pa.string()),
        pa.field("probe", pa.string(), nullable=False),  # "match" (the probe that made the image)
        pa.field("setting_b", pa.string(), nullable=False),  # B's model setting (hash)
        pa.field("same_setting", pa.bool_()),  # B is A: the check row (reproduces quant_*)
        pa.field("a_success", pa.bool_()),
        pa.field("a_quant_success", pa.bool_()),
        pa.field("resized", pa.bool_()),  # B's input size differs from A's: all three images resized
        pa.field("rel_dist_tgt", _F64),  # ||f_B(adv) - f_B(tgt)|| / ||f_B(tgt)||
        pa.field("cos_tgt", _F64),
        pa.field("rel_dist_src", _F64),  # ||f_B(adv) - f_B(src)|| / ||f_B(src)||
        pa.field("cos_src", _F64),
        pa.field("rel_dist_start", _F64),  # ||f_B(src) - f_B(tgt)|| / ||f_B(tgt)||
        pa.field("target_closer", pa.bool_()),  # ||f_B(adv) - f_B(tgt)|| < ||f_B(adv) - f_B(src)||
        *LABELS_SRC_TGT_ADV,  # knn_*: B's k-NN vote over B's run bank (its clean images), pair's own left out
        *ZEROSHOT_SRC_TGT_ADV,
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "match": MATCH,
    "perturb": PERTURB,
    "lipschitz": LIPSCHITZ,
    "equivalence": EQUIVALENCE,
    "spectrum": SPECTRUM,
    "pairs": PAIRS,
    "units": UNITS,
    "images": IMAGES,
    "embeddings": EMBEDDINGS,
    "labels": LABELS,
    "matched": MATCHED,
    "transfer": TRANSFER,
}


def to_table(table: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build an Arrow table of `table`'s schema from row dicts; missing keys become null,
    unknown keys are an error (a typo in a probe must not silently drop a metric)."""
    schema = SCHEMAS[table]
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        unknown = set(row) - names
        if unknown:
            raise KeyError(f"columns not in the {table!r} schema: {sorted(unknown)}")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def partition_dir(table: str, probe: str, model: str) -> str:
    """Relative folder of a unit's file: `results/<table>/probe=<p>/model=<m>` (values URL-quoted,
    which DuckDB and pyarrow decode back)."""
    return f"results/{table}/probe={quote(probe, safe='')}/model={quote(model, safe='')}"
