"""Class names beside label indices: the Pairs page's label table and the report's gallery captions."""

from __future__ import annotations

import pandas as pd

from analysis.report.sentences import _named
from dashboard.pairview import labels_frame


def test_pairs_page_labels_carry_class_names() -> None:
    row = pd.Series({"src_label": 3, "tgt_label": 9, "pred_src": 277, "pred_tgt": 938, "pred_adv": 938,
                     "pred_src_name": "red fox, Vulpes vulpes", "pred_tgt_name": "cauliflower",
                     "pred_adv_name": "cauliflower", "knn_src": 3, "knn_tgt": 9, "knn_adv": None,
                     "knn_src_name": "fox", "knn_tgt_name": None})
    table = labels_frame(row).set_index("label")
    assert table.loc["head top-1"].tolist() == ["277 (red fox, Vulpes vulpes)", "938 (cauliflower)",
                                                "938 (cauliflower)"]
    assert table.loc["k-NN label"].tolist() == ["3 (fox)", "9", "—"]  # no name, no value: as they are
    assert table.loc["dataset label"].tolist() == ["3", "9", "—"]


def test_report_captions_name_the_class_when_known() -> None:
    assert _named({"pred_adv": 938, "pred_adv_name": "cauliflower"}, "pred_adv") == "938 (cauliflower)"
    assert _named({"pred_adv": 938, "pred_adv_name": None}, "pred_adv") == "938"
    assert _named({"pred_adv": 938}, "pred_adv") == "938"
