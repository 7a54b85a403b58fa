"""The notebooks' figures, drawn from small frames: what they show and that text stays readable."""
from __future__ import annotations

import numpy as np
import pandas as pd

from wydot_lab import maps, plots


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_quarantine_reasons_bars_each_rule(tmp_path):
    fig = plots.quarantine_reasons({"truncated": 3, "speed_range": 1}, 4, 100, "2021-04-01")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["speed_range", "truncated"]
    assert [p.get_width() for p in ax.patches] == [1, 3]
    assert "4 of 100 records" in ax.get_title(loc="left")
    assert maps.save(fig, tmp_path / "q.png").stat().st_size > 1000
    empty = plots.quarantine_reasons({}, 0, 10, "x").axes[0]
    assert [t.get_text() for t in empty.get_yticklabels()] == ["(none)"]


def test_feature_distributions_titles_readable_and_within_runs():
    rng = np.random.default_rng(0)
    feats = pd.DataFrame({"speed": rng.normal(30, 2, 200), "dt": np.r_[np.full(199, 1.0), 3600.0]})
    run = np.r_[np.ones(199, bool), False]
    fig = plots.feature_distributions(feats, ["speed", "dt"], run, since_previous={"dt"}, period="p")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["speed", "dt"]
    assert all(ax.title.get_fontsize() >= 10 for ax in fig.axes)
    assert "n=199\nwithin runs" in _texts(fig) and "n=200" in _texts(fig)
    dt_counts = sum(p.get_height() for p in fig.axes[1].patches)
    assert dt_counts == 199  # the gap between trips is left out


def test_flag_rates_sorted():
    fig = plots.flag_rates(pd.Series({"flag_a": 0.02, "flag_b": 0.001}))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["flag_b", "flag_a"]


def test_confusion_matrices_sum_attacks_per_detector():
    msg = pd.DataFrame({"detector": ["rules", "rules", "rf"], "attack": ["a", "b", "a"],
                        "tn": [10, 20, 5], "fp": [1, 2, 0], "fn": [3, 0, 1], "tp": [4, 5, 6]})
    fig = plots.confusion_matrices(msg, ["rules", "rf"], 0.3)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["rules", "rf"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["30", "3", "3", "9"]
    assert "2 attacks" in fig._suptitle.get_text()


def test_pr_curves_legend_beside_the_axes():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.random(n) < 0.3
    rows = []
    for det, sep in [("rules", 0.5), ("rf", 2.0)]:
        rows.append(pd.DataFrame({"attack": "const_offset_100_200", "detector": det, "is_attack": y,
                                  "score": rng.normal(sep * y, 1.0), "coreData_id": rng.integers(0, 9, n)}))
    fig = plots.pr_curves(pd.concat(rows), "const_offset_100_200", ["rules", "rf"], 0.3, "coreData_id")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()][:2] == ["rules", "rf"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # never over a curve


def test_feature_importance_prefers_the_random_forest():
    imp = pd.DataFrame({"detector": ["random_forest"] * 3 + ["hgb"], "feature": ["a", "b", "a", "z"],
                        "importance": [0.2, 0.5, 0.4, 0.9]})
    ax = plots.feature_importance(imp).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]  # a's mean 0.3 < b's 0.5
    assert "random_forest" in ax.get_title(loc="left")


def test_time_to_detection_one_row_per_attack_and_a_marker_per_detector():
    ttd = {"rules": {"a": {"median": 10.0, "p90": 40.0, "caught_share": 1.0},
                     "b": {"median": None, "p90": None, "caught_share": 0.0}},
           "random_forest": {"a": {"median": 5.0, "p90": 20.0, "caught_share": 1.0}}}
    fig = plots.time_to_detection(ttd, 0.3, 3, 5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rules", "random_forest"]
    assert "3 of the last 5" in ax.get_title(loc="left")
    xs = [line.get_xdata() for line in ax.lines if len(line.get_xdata()) == 2 and line.get_marker() == "o"]
    assert np.allclose(xs[0][0], 10.0) and np.isnan(xs[0][1])
