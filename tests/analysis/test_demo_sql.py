"""The demo summary's SQL (analysis/queries/demo/*.sql) on hand-made rows."""

from __future__ import annotations

import duckdb

from analysis.named import statement


def _match(rows: list[tuple[str, int, int, int]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE match (status VARCHAR, success BOOLEAN, rel_dist_start DOUBLE, rel_dist DOUBLE, "
                "psnr DOUBLE, knn_src INTEGER, knn_tgt INTEGER, knn_adv INTEGER)")
    con.executemany("INSERT INTO match VALUES (?, true, 1.0, 0.1, 30.0, ?, ?, ?)", rows)
    return con


def test_knn_adv_is_tgt_leaves_out_pairs_whose_source_and_target_share_a_label() -> None:
    """Issue 24 item 4 (failed before: random weights give every image one k-NN label, and the
    summary said knn_adv_is_tgt = 1.0; here the old SQL gives 0.667)."""
    con = _match([("ok", 5, 5, 5), ("ok", 5, 5, 5), ("ok", 1, 2, 3)])
    result = con.execute(statement("demo/match")).fetchone()
    names = [d[0] for d in con.description]
    assert dict(zip(names, result))["knn_adv_is_tgt"] == 0.0
    con = _match([("ok", 5, 5, 5), ("ok", 1, 2, 2), ("ok", 1, 2, 1)])
    assert con.execute(statement("demo/match")).fetchone()[names.index("knn_adv_is_tgt")] == 0.5
    con = _match([("ok", 5, 5, 5)])  # every pair one label: nothing to say
    assert con.execute(statement("demo/match")).fetchone()[names.index("knn_adv_is_tgt")] is None
