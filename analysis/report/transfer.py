"""The report's transfer section (issue 23), kept apart from the rest of the report: the A x B
matrix of target-closer rates (named query `transfer`, exact intervals) as a heat map and a table,
and the "matched images are model-specific" check per off-diagonal cell (analysis/transfer.py).

build.py calls `transfer_section(con)`; the templates include `transfer.html.j2` /
`transfer.md.j2`; render.py writes `section.figure` beside the report. None when no run of the
report has `transfer` rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.named import run_named
from analysis.report.model import Figure, Table
from analysis.transfer import model_specific


@dataclass
class TransferSection:
    sentences: list[str]
    table: Table
    figure: Figure
    checks: list[dict[str, Any]] = field(default_factory=list)


def _label(model: str, weights: str, embed: str | None) -> str:
    return f"{model.rsplit(':', 1)[-1].rsplit('.', 1)[-1] if ':' in model else model} ({weights}{'' if embed in (None, 'pre_logits') else ', ' + embed})"


def heat_map(rows: list[dict[str, Any]]) -> Figure:
    """The matrix as a heat map: rows A (the model that made the images), columns B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from analysis.report.figures import _png

    a_keys = list(dict.fromkeys((r["model_a"], r["weights_a"], r["embed_a"], r["config_hash"]) for r in rows))
    b_keys = list(dict.fromkeys((r["model_b"], r["weights_b"], r["embed_b"], r["setting_b"]) for r in rows))
    grid = np.full((len(a_keys), len(b_keys)), np.nan)
    for r in rows:
        i = a_keys.index((r["model_a"], r["weights_a"], r["embed_a"], r["config_hash"]))
        j = b_keys.index((r["model_b"], r["weights_b"], r["embed_b"], r["setting_b"]))
        grid[i, j] = r["target_closer_rate"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(b_keys), 1.2 + 0.9 * len(a_keys)))
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(len(b_keys)), [_label(*k[:3]) for k in b_keys], rotation=20, ha="right", fontsize=7)
    ax.set_yticks(range(len(a_keys)), [_label(*k[:3]) for k in a_keys], fontsize=7)
    ax.set_xlabel("B: model evaluating the matched image")
    ax.set_ylabel("A: model the image was matched on")
    fig.colorbar(image, ax=ax, label="target-closer rate")
    return Figure("Transfer: target-closer rate of A's matched images in B's space", _png(fig), "transfer_matrix.png")


def transfer_section(con: Any, condition: str = "success") -> TransferSection | None:
    rows = run_named(con, "transfer", {"condition": condition}).to_dict("records")
    if not rows:
        return None
    checks = model_specific(rows)
    table = Table(
        ["A (matched on)", "B (evaluated on)", "diagonal", "n", "target-closer rate", "exact 95% interval",
         "median rel_dist to target", "zero-shot target rate"],
        [[_label(r["model_a"], r["weights_a"], r["embed_a"]), _label(r["model_b"], r["weights_b"], r["embed_b"]),
          "yes" if r["same_setting"] else "", str(r["n"]), f"{r['target_closer_rate']:.3f}",
          f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", f"{r['median_rel_dist_tgt']:.3g}",
          "" if r["zeroshot_target_rate"] is None or r["zeroshot_target_rate"] != r["zeroshot_target_rate"]
          else f"{r['zeroshot_target_rate']:.3f}"] for r in rows])
    verdicts = ", ".join(f"{c['verdict']} for {_label(c['model_a'], c['weights_a'], c['embed_a'])} → "
                         f"{_label(c['model_b'], c['weights_b'], c['embed_b'])}" for c in checks)
    sentences = [
        f"Each matched image of model A ({condition} matches, as the 8-bit image A's re-check scored) was embedded "
        "by every model B of the run; a cell is the share B embeds nearer the target than the source, "
        "with its exact (Clopper-Pearson) interval. The diagonal is A re-checking its own images.",
    ]
    if checks:
        sentences.append(f"Matched images are model-specific (every off-diagonal upper bound ≤ "
                         f"{checks[0]['threshold']:g}): {verdicts}.")
    return TransferSection(sentences, table, heat_map(rows), checks)
