"""Turn one pair's result row into the tables the Pairs page shows (pandas only, no Streamlit)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard import formatting

# Identity and bulky columns that the metric table leaves out (shown elsewhere on the page).
_NOT_METRICS = {"loss_trajectory", "params", "run_id", "unit_id", "pair_id", "model", "probe"}
_LABEL_COLUMNS = {
    "dataset label": ("src_label", "tgt_label", None),
    "head top-1": ("pred_src", "pred_tgt", "pred_adv"),
    "head probability": ("prob_src", "prob_tgt", "prob_adv"),
    "k-NN label": ("knn_src", "knn_tgt", "knn_adv"),
}


def metrics_frame(row: pd.Series) -> pd.DataFrame:
    """Every column of a result row as (metric, value) text rows, in schema order."""
    items = [(k, formatting.number(_plain(v))) for k, v in row.items() if k not in _NOT_METRICS]
    return pd.DataFrame(items, columns=["metric", "value"])


def labels_frame(row: pd.Series) -> pd.DataFrame:
    """Labels of source, target and probed image side by side (rows: label kind)."""
    out = []
    for kind, cols in _LABEL_COLUMNS.items():
        values = [_with_name(row, c) if c else "—" for c in cols]
        if any(v != "—" for v in values):
            out.append({"label": kind, "source": values[0], "target": values[1], "probed": values[2]})
    return pd.DataFrame(out, columns=["label", "source", "target", "probed"])


def _with_name(row: pd.Series, column: str) -> str:
    """A label with its class name when the row carries one (`pred_src_name`, `knn_src_name`,
    or the dataset's `src_label_name`): `277 (red fox, Vulpes vulpes)`."""
    value = formatting.number(_plain(row.get(column)))
    name = _plain(row.get(f"{column}_name"))
    return f"{value} ({name})" if name and value != "—" else value


def follows_target(row: pd.Series) -> dict[str, bool]:
    """Whether the probed image's head / k-NN label is the target's (the overgeneralisation test)."""
    out = {}
    for name, adv, tgt in (("head", "pred_adv", "pred_tgt"), ("k-NN", "knn_adv", "knn_tgt")):
        a, t = _plain(row.get(adv)), _plain(row.get(tgt))
        if a is not None and t is not None:
            out[name] = a == t
    return out


def pair_label(rec: dict[str, Any], multi_run: bool) -> str:
    """The text a pair is picked by: 'model · pair_id · unit_id' (and the run when several)."""
    label = f"{rec['model']} · {rec['pair_id']} · {rec['unit_id']}"
    return f"{label} · {rec['run_id']}" if multi_run else label


def _plain(value: Any) -> Any:
    """numpy/pandas scalars to Python; NaN/NA to None."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):  # arrays and lists
        return value
    return value.item() if hasattr(value, "item") else value


def replay_command(runs: Sequence[str], run_id: str, pair_id: str, probe: str, config_hash: str | None) -> str:
    """The `vitsweep replay` command line that re-runs this pair and checks its stored rows.

    The run directory is the one whose manifest.json names `run_id` (the only one if a single
    run is shown; a placeholder if none matches)."""
    run_dir = next((r for r in runs if _manifest_run_id(r) == run_id), runs[0] if len(runs) == 1 else "RUN_DIR")
    parts = ["vitsweep", "replay", run_dir, "--pair", pair_id, "--probe", probe]
    if config_hash:
        parts += ["--config", config_hash]
    return shlex.join(parts)


def _manifest_run_id(run_dir: str) -> str | None:
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
