"""Every dashboard page under Streamlit's AppTest on the fixture run (tests/support/runs.py):
no exception, the fixture's known numbers on the page, clear messages for missing, empty and
half-written runs, and a SQL console that refuses every escape and keeps working afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.support.runs import MATCH_SETTING_TEXT, make_fixture_run

PAGES = ("runs", "pairs", "distributions", "models", "sql", "transfer")
TITLES = {"runs": "Runs", "pairs": "Pairs", "distributions": "Distributions", "models": "Models", "sql": "SQL",
          "transfer": "Transfer"}


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("partial"), complete=False, run_id="live-run")


def assert_clean(at: AppTest, page: str) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == [TITLES[page]]


def texts(elements: object) -> str:
    return "\n".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def frames(at: AppTest) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe]


def find_frame(at: AppTest, *columns: str) -> pd.DataFrame:
    for df in frames(at):
        if set(columns) <= set(df.columns):
            return df
    raise AssertionError(f"no dataframe with columns {columns}: {[list(d.columns) for d in frames(at)]}")


# ------------------------------------------------------------------ each page on a complete run


def test_runs_page(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run)
    assert_clean(at, "runs")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["State"] == "finished"
    assert metrics["Units done"] == "7 / 8"
    assert metrics["Units failed"] == "1"
    assert metrics["Pairs done"] == "24"
    assert metrics["Pairs/s"] == "1.5"
    assert not at.warning and not at.error
    assert "WorkerCrashed" in " ".join(str(df.to_dict()) for df in frames(at))
    errors = find_frame(at, "probe", "model", "error", "rows")
    assert "ImageDecodeError: cannot identify image file 'src/00004'" in set(errors["error"])
    assert "RuntimeError: CUDA out of memory" in set(errors["error"])
    assert "vit_a" in texts(at.code) and "max_steps: 1000" in texts(at.code)  # spec.yaml
    assert "deadbeef" in texts(at.json)  # manifest.json


def test_pairs_page(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="pairs")
    assert_clean(at, "pairs")
    table = at.dataframe[0].value
    assert len(table) == 14  # 5 match pairs × 2 models, errors included, + 4 of vit_a's paper setting
    assert sorted(table["model"].unique()) == ["vit_a", "vit_b"]
    settings = table.groupby("setting")["unit_id"].unique().map(sorted).to_dict()
    assert settings == {MATCH_SETTING_TEXT["default"]: ["vit_a-match-0", "vit_b-match-0"],
                        MATCH_SETTING_TEXT["paper"]: ["vit_a-match-paper-0"]}
    # The default pair is the first with gallery images: vit_a p0 (psnr 40, rel_dist 0.05).
    assert at.selectbox(key="pairs_choice_match").value == 0
    captions = [c for img in at.image for c in img.captions]
    assert len(captions) == 4, captions  # source, matched, target, amplified difference
    metrics = find_frame(at, "metric", "value").set_index("metric")["value"]
    assert metrics["psnr"] == "40" and metrics["rel_dist"] == "0.05" and metrics["success"] == "yes"
    assert metrics["steps"] == "100"
    labels = find_frame(at, "label", "source", "target", "probed").set_index("label")
    assert labels.loc["head top-1", "target"] == "200" and labels.loc["head top-1", "probed"] == "200"
    assert "is the target’s" in texts(at.markdown)
    assert captions[:3] == ["source", "matched", "target"]
    assert "×128, max |Δ| = 2/255" in captions[3]  # adv = src + 2


def test_pairs_filters(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="pairs")
    at.radio(key="pairs_outcome_match").set_value("success").run()
    assert_clean(at, "pairs")
    assert len(at.dataframe[0].value) == 8  # 3 successes per model, + 2 of vit_a's paper setting
    at.multiselect(key="pairs_models_match").set_value(["vit_b"]).run()
    table = at.dataframe[0].value
    assert list(table["model"].unique()) == ["vit_b"] and len(table) == 3
    at.radio(key="pairs_outcome_match").set_value("error").run()
    assert len(at.dataframe[0].value) == 1
    assert "This pair failed: ImageDecodeError" in texts(at.warning)
    at.selectbox(key="pairs_probe").set_value("lipschitz").run()
    assert_clean(at, "pairs")
    assert len(at.dataframe[0].value) == 4  # p0, p1 per model
    at.selectbox(key="pairs_probe").set_value("perturb").run()
    assert_clean(at, "pairs")
    rows = at.dataframe[-1].value  # every eps of the chosen pair
    assert len(rows) == 7 and {"eps", "disp_over_pair", "random_disp_over_pair"} <= set(rows.columns)


def test_distributions_page(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="distributions")
    assert_clean(at, "distributions")
    charts = at.get("vega_lite_chart")
    assert len(charts) == 6  # rel_dist, psnr, ssim, disp vs eps (l2, linf), lipschitz
    rates = find_frame(at, "success rate")["success rate"].to_dict()
    # one series per model and match setting, labelled by model + setting (vit_a ran two)
    assert rates == {f"vit_a · {MATCH_SETTING_TEXT['default']}": 0.75,
                     f"vit_a · {MATCH_SETTING_TEXT['paper']}": 0.5,
                     f"vit_b · {MATCH_SETTING_TEXT['default']}": 0.75}
    medians = find_frame(at, "top", "random", "null", "match")
    # one lipschitz setting: the labels stay the model names
    assert list(medians.index) == ["vit_a", "vit_b"]
    # per model: random l_jvp (1..5)·(i+1) over pairs i = 0, 1 -> median 4; top (100, 50, 25)·(i+1)·(1+m)
    assert list(medians["random"]) == [4.0, 4.0]
    assert list(medians["top"]) == [75.0, 150.0]
    at.radio(key="dist_kind").set_value("ECDF").run()
    assert_clean(at, "distributions")
    at.selectbox(key="lip_estimate").set_value(2).run()  # l_fd at h = 0.1
    assert_clean(at, "distributions")


def test_models_page(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="models")
    assert_clean(at, "models")
    # a first visit runs `claims` only: no table until the details open or a question is picked
    assert not frames(at) and at.radio(key="models_question").value is None
    assert "nothing runs until you do" in texts(at.caption)
    at.session_state["models_every_verdict"] = True  # open "Every verdict, …"
    at.run()
    assert_clean(at, "models")
    verdicts = find_frame(at, "claim", "verdict", "reason")  # every claim's verdict, first
    assert {"equivalence", "invisibility", "normal_space", "lipschitz"} <= set(verdicts["claim"])
    at.radio(key="models_question").set_value("equivalence").run()
    equivalence = find_frame(at, "model", "weights", "setting", "success_rate")
    assert list(equivalence["model"]) == ["vit_a", "vit_a", "vit_b"]
    assert list(equivalence["setting"]) == [MATCH_SETTING_TEXT[s] for s in ("default", "paper", "default")]
    assert list(equivalence["success_rate"]) == [0.75, 0.5, 0.75]
    for name in at.radio(key="models_question").options:  # each headline question, side by side per model
        at.radio(key="models_question").set_value(name.replace(" ", "_")).run()
        assert_clean(at, "models")
        assert len(at.dataframe) >= 2 and texts(at.subheader).count(name.capitalize()) == 1
    for name in at.selectbox(key="models_other").options:
        at.selectbox(key="models_other").set_value(name).run()
        assert_clean(at, "models")


def test_sql_page_default_query(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="sql")
    assert_clean(at, "sql")
    result = at.dataframe[0].value
    assert list(result["model"]) == ["vit_a", "vit_a", "vit_b"] and list(result["pairs"]) == [4, 4, 4]
    assert list(result["success_rate"]) == [0.75, 0.5, 0.75]  # per setting, never pooled


ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd', header = false)",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM match WHERE pair_id IN (SELECT content FROM read_text('/etc/passwd'))",
    "COPY match TO '{out}'",
    "COPY (SELECT * FROM match) TO '{out}' (FORMAT csv)",
    "ATTACH '{db}' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "PRAGMA enable_profiling",
    "CREATE TABLE stolen AS SELECT * FROM match",
    "DROP VIEW match",
    "SELECT 1; SELECT * FROM read_text('/etc/passwd')",
    "SELECT getenv('HOME')",
]


def test_sql_console_refuses_escapes(open_app: Callable[..., AppTest], fixture_run: Path, tmp_path: Path) -> None:
    at = open_app(fixture_run, page="sql")
    out, other_db = tmp_path / "copied.csv", tmp_path / "other.db"
    for template in ESCAPES:
        sql = template.format(out=out, db=other_db)
        at.text_area(key="sql_text").input(sql)
        at.button[0].click().run()
        assert not at.exception, (sql, [e.value for e in at.exception])
        messages = texts(at.warning) + texts(at.error)
        # refused by the guard before it runs (a "Query failed" would mean DuckDB was reached)
        assert "Query refused" in texts(at.warning) and "Query failed" not in messages, (sql, messages)
        assert "root:" not in messages, sql  # nothing of /etc/passwd leaks into a message
        assert not any("root:" in d.value.to_string() for d in at.dataframe), sql
    assert not out.exists() and not other_db.exists()
    # The console (and the connection behind it) still works after all that.
    at.text_area(key="sql_text").input("SELECT count(*) AS n FROM match WHERE status = 'ok'")
    at.button[0].click().run()
    assert_clean(at, "sql")
    assert not at.warning and not at.error
    assert int(at.dataframe[0].value["n"][0]) == 12
    # ... and so do the other pages.
    at.switch_page("views/pairs.py").run()
    assert_clean(at, "pairs")


def test_sql_bad_query_is_a_message(open_app: Callable[..., AppTest], fixture_run: Path) -> None:
    at = open_app(fixture_run, page="sql")
    at.text_area(key="sql_text").input("SELECT no_such_column FROM match")
    at.button[0].click().run()
    assert not at.exception
    assert "Query failed" in texts(at.error) or "Query refused" in texts(at.warning)


# ------------------------------------------------------------------ missing, empty, half-written


@pytest.mark.parametrize("page", PAGES)
def test_missing_run_dir(open_app: Callable[..., AppTest], tmp_path: Path, page: str) -> None:
    at = open_app(tmp_path / "gone", page=page)
    assert_clean(at, page)
    assert "does not exist" in texts(at.warning)
    assert not at.error


@pytest.mark.parametrize("page", PAGES)
def test_empty_run_dir(open_app: Callable[..., AppTest], tmp_path: Path, page: str) -> None:
    empty = tmp_path / "empty-run"
    empty.mkdir()
    at = open_app(empty, page=page)
    assert_clean(at, page)
    assert "no results yet" in texts(at.info)
    assert not at.error


def test_started_run_without_results(open_app: Callable[..., AppTest], tmp_path: Path) -> None:
    run = tmp_path / "just-started"
    (run / "results").mkdir(parents=True)
    (run / "progress.json").write_text('{"state": "running", "units_total": 4, "units_done": 0}')
    for page in PAGES:
        at = open_app(run, page=page)
        assert_clean(at, page)
        assert "no unit has finished yet" in texts(at.info)


@pytest.mark.parametrize("page", PAGES)
def test_half_written_run(open_app: Callable[..., AppTest], partial_run: Path, page: str) -> None:
    at = open_app(partial_run, page=page)
    assert_clean(at, page)
    assert "still being written" in texts(at.info)
    assert "5 of 11 units done" in texts(at.info)
    assert not at.error
    if page == "runs":
        assert {m.label: m.value for m in at.metric}["ETA"] == "2 min 0 s"
    if page == "distributions":
        assert "No lipschitz rows yet." in texts(at.info)
    if page == "pairs":
        assert len(at.dataframe[0].value) == 14


def test_missing_beside_complete_run(open_app: Callable[..., AppTest], fixture_run: Path, tmp_path: Path) -> None:
    """One bad path among good ones: a warning for it, the good run still shown."""
    at = open_app(tmp_path / "gone", fixture_run, page="models")
    assert_clean(at, "models")
    assert "does not exist" in texts(at.warning)
    at.radio(key="models_question").set_value("equivalence").run()
    assert_clean(at, "models")
    assert list(find_frame(at, "model", "success_rate")["success_rate"]) == [0.75, 0.5, 0.75]
