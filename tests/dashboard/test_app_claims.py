"""The dashboard's Models page shows each claim's verdicts beside its numbers (Streamlit AppTest
on a run built with known verdicts: tests/support/claim_runs.py, the demo-like mode)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.support.claim_runs import make_claims_run


def test_models_page_shows_a_verdict_beside_each_claim(tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    run, _ = make_claims_run(tmp_path, "demo")
    at = open_app(run, page="models")
    assert not at.exception, [e.value for e in at.exception]
    expected = {"equivalence": (["✔ supported"], [40], "success_rate"),
                "invisibility": (["✘ not supported"], [40], "median_psnr"),
                "overgeneralisation": (["✔ supported"], [34], "n_success"),
                # the run's Gaussian control first (not supported, as a random matrix must be)
                "normal_space": (["✘ not supported", "✔ supported"], [40, 40], "median_disp_over_pair"),
                "lipschitz": (["✘ not supported", "✔ supported"], [40, 40], "median_sigma1_over_random")}
    headline = {"large_equivalence": ("✔ supported", 40), "piecewise_linear": ("✔ supported", 40)}
    # first, every claim's verdict in one table (one setting here: one row per claim), once opened
    assert not at.dataframe
    at.session_state["models_every_verdict"] = True
    at.run()
    summary = [d.value for d in at.dataframe if {"claim", "verdict", "reason"} <= set(d.value.columns)]
    assert len(summary) == 1
    assert {c: (v, n) for c, v, n in zip(summary[0]["claim"], summary[0]["verdict"], summary[0]["n"])} == {
        **{claim: (verdicts[-1], ns[-1]) for claim, (verdicts, ns, _) in expected.items()}, **headline}
    # + 2: the run's Gaussian control (control:gaussian:vit_v) has normal_space and lipschitz rows
    assert len(summary[0]) == len(expected) + len(headline) + 2
    assert sorted(summary[0]["model"].unique()) == ["control:gaussian:vit_v", "vit_v"]
    # then each claim, once picked: its verdict rows right before its numbers
    for claim, (verdicts, ns, column) in expected.items():
        at.radio(key="models_question").set_value(claim).run()
        assert not at.exception, [e.value for e in at.exception]
        frames = [d.value for d in at.dataframe]
        at_verdicts = [i for i, f in enumerate(frames)
                       if {"verdict", "reason"} <= set(f.columns) and "claim" not in f.columns]
        assert len(at_verdicts) == 1, claim
        shown = frames[at_verdicts[0]]
        assert (list(shown["verdict"]), shown["n"].tolist()) == (verdicts, ns), claim
        assert column in frames[at_verdicts[0] + 1].columns, claim  # the claim's numbers follow
        markdown = "\n".join(str(m.value) for m in at.markdown)
        assert f"**Verdict on {claim}**" in markdown
    # the headline's question: both of its claims' verdicts (a `claim` column), then its numbers
    at.radio(key="models_question").set_value("geometry").run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [d.value for d in at.dataframe]
    at_verdicts = [i for i, f in enumerate(frames) if {"claim", "verdict", "reason"} <= set(f.columns)
                   and "estimate" in f.columns and len(f) == len(headline)]
    shown = frames[at_verdicts[-1]]
    assert {c: (v, n) for c, v, n in zip(shown["claim"], shown["verdict"], shown["n"])} == headline
    assert "median_walk_ratio" in frames[at_verdicts[-1] + 1].columns
    assert "**Verdict on large_equivalence and piecewise_linear**" in "\n".join(str(m.value) for m in at.markdown)


def _chart_frames(chart: object) -> list[object]:
    """The data of a vega_lite_chart element as DataFrames: its data and data sets (Arrow IPC
    bytes; Streamlit moves a spec's inline values there) and any inline values left."""
    import json

    import pandas as pd
    import pyarrow as pa

    proto = chart.proto  # type: ignore[attr-defined]
    frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in proto.datasets]
    if proto.data.data:
        frames.append(pa.ipc.open_stream(proto.data.data).read_all().to_pandas())
    inline = json.loads(proto.spec).get("data", {}).get("values")
    return frames + ([pd.DataFrame(inline)] if inline else [])


def test_models_page_opens_with_the_grid_and_a_forest_plot_per_claim(
        tmp_path: Path, open_app: Callable[..., AppTest]) -> None:
    """First on the page: the verdict grid (one badge per claims row), then one forest plot per
    claim whose dots are the claims rows' checks."""
    from analysis.claims import claims_records, load_criteria
    from analysis.db import open_runs

    run, _ = make_claims_run(tmp_path, "demo")
    at = open_app(run, page="models")
    assert not at.exception, [e.value for e in at.exception]
    types = [e.type for e in at.main]
    html = [e for e in at.main if e.type == "html"]
    charts = [e for e in at.main if e.type == "vega_lite_chart"]
    assert len(html) == 1 and types.index("html") < types.index("vega_lite_chart") < types.index("radio")
    # a random-init run: the caveat above the grid
    from analysis.claims import random_weights_caveat

    caveat = random_weights_caveat(sorted({c["weights"] for c in claims_of(run)}))
    assert caveat and [w.value for w in at.warning] == [caveat]
    assert list(at.main).index(at.warning[0]) < types.index("html")
    body = html[0].proto.body
    con = open_runs([run], snapshot=True)
    claims = claims_records(con, load_criteria())
    con.close()
    assert 'data-testid="verdict-grid"' in body and body.count('class="vg-badge') == len(claims)  # one per claims row
    assert len(charts) == len({c["claim"] for c in claims}) == 7
    def plain(x):  # a missing number is None in `claims` and NaN in a chart's frame
        return None if x is None or x != x else x

    drawn = set()
    for chart in charts:
        for frame in _chart_frames(chart):
            if "desc" in frame.columns:
                drawn |= {(r.claim, r.config_hash, r.statistic, r.estimate, plain(r.ci_low), plain(r.ci_high),
                           plain(r.threshold)) for r in frame.itertuples() if r.estimate == r.estimate}  # drawn dots
    assert drawn == {(c["claim"], c["config_hash"], ch["statistic"], ch["estimate"], ch["ci_low"],
                      ch["ci_high"], ch["threshold"]) for c in claims for ch in c["checks"]
                     if ch["estimate"] is not None}  # a check with no estimate has no dot


def test_forest_spec_is_valid_vega_lite(tmp_path: Path) -> None:
    """dashboard.charts.forest writes its spec by hand (for speed): Altair validates it, a ratio
    claim gets a log axis, and a control marker layer appears once the rows carry one."""
    import altair as alt
    import pandas as pd

    from analysis import glance
    from dashboard import charts

    rows = [{"model": "m", "weights": "w", "embed": None, "probe": "lipschitz", "claim": "lipschitz",
             "config_hash": "c1", "params": '{"seed": 0}', "verdict": "supported",
             "statistic": "median_top_over_null_fd", "n": 40, "estimate": 50.0, "ci_low": 40.0,
             "ci_high": float("inf"), "threshold": 10.0, "control_estimate": 1.5},
            {"model": "m", "weights": "w", "embed": None, "probe": "match", "claim": "equivalence",
             "config_hash": "c2", "params": '{"lr": 1}', "verdict": "inconclusive",
             "statistic": "success_rate", "n": 0, "estimate": None, "ci_low": None,
             "ci_high": None, "threshold": 0.9}]
    points = pd.DataFrame(glance.forest_points(rows))
    for claim, log, control in (("lipschitz", True, True), ("equivalence", False, False)):
        spec = charts.forest(points, claim)
        alt.FacetChart.from_dict(spec, validate=True)
        layers = spec["spec"]["layer"]
        assert {layer["encoding"]["x"]["scale"]["type"] for layer in layers} == {"log" if log else "linear"}
        assert (len(layers) == 4) is control
    assert charts.forest(points, "invisibility") is None
    values = charts.forest(points, "lipschitz")["data"]["values"]
    assert values[0]["ci_high"] is None and values[0]["control"] == 1.5  # inf is not drawn


def claims_of(run: Path) -> list[dict]:
    from analysis.claims import claims_records, load_criteria
    from analysis.db import open_runs

    con = open_runs([run], snapshot=True)
    try:
        return claims_records(con, load_criteria())
    finally:
        con.close()
