"""The notebooks' sentences: numbers come from the objects shown, so the text follows the data."""

from __future__ import annotations

import pandas as pd

from wydot_lab import report


def test_range_summary_counts_and_versions():
    s = {
        "records": 7200,
        "vehicles": 99,
        "hours": 72,
        "schema_versions": {6: 7200, 9: 3},
        "ingest": {"records": 7229, "quarantined": 24, "non_bsm": 4},
    }
    text = report.range_summary(s)
    assert "**7,200 valid records**" in text and "**99 vehicles**" in text and "72 hours" in text
    assert "v6, v9" in text and "24 were set aside" in text and "7,229 lines" in text
    assert "1 vehicle**" in report.range_summary({**s, "vehicles": 1})


def test_validation_names_the_commonest_reason():
    text = report.validation(
        {"records": 100, "valid": 90, "quarantined": 8, "non_bsm": 2}, {"truncated": 5, "speed_range": 3}
    )
    assert "90 of 100 records (90.0 %)" in text and "`truncated` (5 records)" in text


def test_flag_rates_sentence_follows_the_data():
    assert "never fire" in report.flag_rates(pd.Series({"flag_a": 0.02, "flag_b": 0.0}))
    assert "`flag_a` fires most, on 2.00%" in report.flag_rates(pd.Series({"flag_a": 0.02, "flag_b": 0.001}))
    assert "no false alarm" in report.flag_rates(pd.Series({"flag_a": 0.0}))


def test_attacks_and_offsets():
    summary = pd.DataFrame({"attacked": [740, 372]}, index=["a", "b"])
    text = report.attacks(summary, vehicles=99, attackers=21, share=0.3)
    assert "21 of 99 vehicles (21.2 %" in text and "372 to 740 messages per attack" in text
    true = pd.DataFrame({"lat": [41.0, 41.0], "lon": [-107.0, -107.0]}, index=[3, 4])
    fake = pd.DataFrame({"lat": [41.001, 41.002], "lon": [-107.0, -107.0]}, index=[3, 4])
    assert "111 m apart in the median" not in report.offsets(true, fake, "lat", "lon")  # median of 111 and 222
    assert "167 m apart in the median (from 111 to 222 m)" in report.offsets(true, fake, "lat", "lon")
    assert "all 111 m apart" in report.offsets(true, fake.assign(lat=41.001), "lat", "lon")


def test_f1_quality_bars_and_caveats():
    f1 = pd.DataFrame({"random_forest": [1.0, 0.8], "rules": [0.9, 0.7]}, index=["x", "y"])
    assert "random_forest 0.90, rules 0.80" in report.f1_summary(f1) and "`y` (F1 0.80)" in report.f1_summary(f1)
    bars = {
        "random_forest_gt_rules_on_average": {"met": True, "random_forest": 0.99, "rules": 0.98},
        "random_forest_f1_ge_0.90_random_offset_50_100": {"met": None, "note": "z not in"},
        "random_forest_ge_rules_every_attack": {"met": False},
        "summary": "x",
    }
    text = report.quality_bars(bars)
    assert "- Met: random_forest beats rules on mean F1 (0.990 against 0.980)." in text
    assert "- Not evaluated: random_forest reaches F1 0.90 or more on `random_offset_50_100` (z not in)." in text
    assert "- **Missed**: random_forest does at least as well as rules on every attack." in text
    assert report.caveats([]).startswith("No caveat") and "- a" in report.caveats(["a"])


def test_issue_19_sentences_fill_their_numbers():
    f1 = {"rf": {"a": 0.9, "b": 0.5}}
    text = report.intervals(f1, {"rf": {"a": [0.85, 0.95], "b": [0.2, 0.8]}})
    assert "median width is 0.60" in text and "rf on `b`, F1 0.50 in [0.20, 0.80]" in text
    ops = {"rf": {"a": {"recall_at_fpr_0.001": 0.5, "recall_at_fpr_0.01": 0.8, "false_alarms_per_vehicle_hour": 0.2},
                  "b": {"recall_at_fpr_0.001": 0.3, "recall_at_fpr_0.01": None, "false_alarms_per_vehicle_hour": 0.4}}}
    text = report.operating_points(ops, [0.001, 0.01])
    assert "rf 0.40 at 0.1%, 0.80 at 1.0% (0.30 false alarms per genuine vehicle-hour)" in text
    ttd = {"rf": {"a": {"median": 10.0, "p90": 30.0, "caught_share": 1.0},
                  "b": {"median": None, "p90": None, "caught_share": 0.5}}}
    text = report.time_to_detection(ttd, 3, 5)
    assert "3 of a vehicle's last 5" in text and "rf catches 75% of attacker vehicles, median 10 s" in text
    bars = {"random_forest_f1_low_ge_0.90_x": {"met": False, "f1_low": 0.8},
            "random_forest_low_ge_rules_every_attack": {"met": True, "worse_on": {}}}
    text = report.quality_bars(bars)
    assert "**Missed**: the lower end of random_forest's 95 % interval reaches F1 0.90 or more on `x`" in text
    assert "Met: the lower end of random_forest's 95 % interval is at least rules's F1 on every attack" in text
