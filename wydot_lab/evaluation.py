"""Results a reviewer would accept (issue 19): intervals, operating points, time to detection,
paired tests. Pure, vectorized functions on per-vehicle summaries, so the out-of-core experiment
can compute each bucket's part (a vehicle never spans buckets) and merge them by concatenation.

* **Bootstrap over test vehicles** (`vehicle_confusion`, `bootstrap_interval`): resampling
  vehicles with replacement = weighting each vehicle's (tp, fp, fn, tn) by multinomial counts,
  so B resamples are one (B x V) @ (V x 4) product. Attacker and genuine vehicles are resampled
  apart (stratified), so every resample keeps the test side's attacker count.
* **Operating points** (`threshold_at_fpr`, `recall_at`): a threshold chosen on the scores of
  genuine *validation* vehicles (held out of the train side) for a target false-positive rate;
  a message is flagged when its score is strictly above the threshold.
* **Vehicle-level alarm** (`k_of_n_alarm`): raised at a message when at least k of the vehicle's
  last n messages (time order, this one included) are flagged. `time_to_detection`: per
  attacker vehicle, seconds and messages from its first attacked message to its first alarm at
  or after it. `false_alarms_per_vehicle_hour`: alarm onsets (off -> on) on genuine vehicles
  over their active hours (gaps between consecutive messages up to `MAX_GAP_S` count).
* **Paired test** (`paired_test`): detector vs rules over repeats, Wilcoxon signed-rank with 6
  or more pairs, else an exact two-sided sign test; the result names which.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from wydot_lab.errors import TooFewAttackers

COUNTS = ("tp", "fp", "fn", "tn")
MAX_GAP_S = 300.0  # a longer silence between two messages is the vehicle being off, not driving
WILCOXON_MIN_PAIRS = 6


# ---------------------------------------------------------------- bootstrap over vehicles


def vehicle_confusion(ids: np.ndarray, y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """Per vehicle (sorted ids): message counts tp, fp, fn, tn and `attacker` (any attacked message)."""
    codes, uniq = pd.factorize(pd.Series(np.asarray(ids)).astype(str), sort=True)
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    n = len(uniq)
    out = {
        "tp": np.bincount(codes, weights=y & pred, minlength=n),
        "fp": np.bincount(codes, weights=~y & pred, minlength=n),
        "fn": np.bincount(codes, weights=y & ~pred, minlength=n),
        "tn": np.bincount(codes, weights=~y & ~pred, minlength=n),
    }
    frame = pd.DataFrame({k: v.astype(np.int64) for k, v in out.items()}, index=pd.Index(uniq, name="id"))
    frame["attacker"] = (frame["tp"] + frame["fn"]) > 0
    return frame


def f1_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 and recall from (..., 4) totals (tp, fp, fn, tn); NaN where undefined (nothing to catch
    for either; nothing flagged and nothing to catch for F1)."""
    c = np.asarray(counts, float)
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(tp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return f1, recall


def resample_weights(strata: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples x V) counts: how often each vehicle is drawn when every stratum's vehicles are
    drawn with replacement as many times as the stratum holds vehicles."""
    strata = np.asarray(strata)
    w = np.zeros((resamples, len(strata)), dtype=np.int64)
    for s in np.unique(strata):  # a loop over strata (two), never over vehicles or messages
        members = np.flatnonzero(strata == s)
        w[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=resamples)
    return w


def bootstrap_interval(
    confusion: pd.DataFrame, resamples: int, rng: np.random.Generator, level: float = 0.95
) -> dict[str, list[float]]:
    """{"f1": [low, high], "recall": [low, high]}: percentile interval of message-level F1 and
    recall when the test vehicles (rows of `vehicle_confusion`) are resampled, attackers and
    genuine vehicles apart. NaN bounds when no vehicle is an attacker."""
    if confusion.empty or not confusion["attacker"].any():
        return {"f1": [float("nan")] * 2, "recall": [float("nan")] * 2}
    counts = confusion[list(COUNTS)].to_numpy(np.int64)
    w = resample_weights(confusion["attacker"].to_numpy(bool), resamples, rng)
    f1, recall = f1_recall(w @ counts)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {"f1": [float(v) for v in np.percentile(f1, q)], "recall": [float(v) for v in np.percentile(recall, q)]}


# ---------------------------------------------------------------- operating points


def histogram(score: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores (ascending) and their total weight: what buckets send instead of scores."""
    values, inverse = np.unique(np.asarray(score, float), return_inverse=True)
    w = np.ones(len(inverse)) if weight is None else np.asarray(weight, float)
    return values, np.bincount(inverse.ravel(), weights=w, minlength=len(values))


def threshold_at_fpr(score: np.ndarray, fpr: float, weight: np.ndarray | None = None) -> float:
    """The smallest threshold t among the genuine scores such that the (weighted) share of genuine
    scores strictly above t is at most `fpr`. NaN without genuine scores."""
    if not 0 < fpr < 1:
        raise ValueError(f"fpr {fpr} is not in (0, 1)")
    values, w = histogram(score, weight)
    if not len(values) or w.sum() <= 0:
        return float("nan")
    above = (w.sum() - np.cumsum(w)) / w.sum()  # share strictly above each distinct value
    return float(values[np.argmax(above <= fpr)])  # the last value always qualifies (share 0)


def recall_at(threshold: float, score: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Share of (weighted) attacked messages scored strictly above `threshold`; NaN with none."""
    y = np.asarray(y, bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, float)
    pos = w[y].sum()
    if pos <= 0 or np.isnan(threshold):
        return float("nan")
    return float(w[y & (np.asarray(score, float) > threshold)].sum() / pos)


# ---------------------------------------------------------------- vehicle-level alarm


def _ns(times: Any) -> np.ndarray:
    """Nanoseconds since the epoch of naive (UTC) or tz-aware times, as int64."""
    return (
        pd.to_datetime(pd.Series(np.asarray(times) if not isinstance(times, pd.Series) else times), utc=True)
        .dt.as_unit("ns")
        .astype(np.int64)
        .to_numpy()
    )


def _order(ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sort order by (vehicle, time), the vehicle codes in that order, each sorted row's vehicle's
    first sorted row, and the vehicle ids (sorted; code = position)."""
    codes, uniq = pd.factorize(pd.Series(np.asarray(ids)).astype(str), sort=True)
    t = _ns(times)
    order = np.lexsort((t, codes))
    c = codes[order]
    new = np.r_[True, c[1:] != c[:-1]] if len(c) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(new, np.arange(len(c)), 0)) if len(c) else np.zeros(0, np.int64)
    return order, c, start, np.asarray(uniq)


def k_of_n_alarm(ids: np.ndarray, times: np.ndarray, flagged: np.ndarray, k: int, n: int) -> np.ndarray:
    """Per message (input order): at least `k` of its vehicle's last `n` messages in time order
    (this one included; fewer at the vehicle's start) are flagged. A rolling sum per vehicle from
    one cumulative sum."""
    if not 1 <= k <= n:
        raise ValueError(f"alarm needs 1 <= k <= n, got k={k}, n={n}")
    order, _, start, _ = _order(ids, times)
    f = np.asarray(flagged, bool)[order].astype(np.int64)
    c = np.r_[0, np.cumsum(f)]  # c[i] = flags before sorted row i
    i = np.arange(len(f))
    lo = np.maximum(i - n + 1, start)  # the window never reaches into the previous vehicle
    alarm_sorted = (c[i + 1] - c[lo]) >= k
    out = np.empty(len(f), bool)
    out[order] = alarm_sorted
    return out


def time_to_detection(ids: np.ndarray, times: np.ndarray, attacked: np.ndarray, alarm: np.ndarray) -> pd.DataFrame:
    """Per attacker vehicle (one with an attacked message): `caught` (an alarm at or after its
    first attacked message), `delay_s` and `delay_messages` from that message to the first such
    alarm (NaN when not caught)."""
    order, c, _, uniq = _order(ids, times)
    t = _ns(times)[order]
    a = np.asarray(attacked, bool)[order]
    al = np.asarray(alarm, bool)[order]
    n_veh, big = len(uniq), np.iinfo(np.int64).max
    i = np.arange(len(a))
    first_attack = np.full(n_veh, big)
    np.minimum.at(first_attack, c[a], i[a])
    att = first_attack < big
    after = al & (i >= first_attack[c])  # an alarm before the attack began is a false alarm, not a catch
    first_alarm = np.full(n_veh, big)
    np.minimum.at(first_alarm, c[after], i[after])
    caught = first_alarm < big
    fa, fl = first_attack[att], first_alarm[att]
    ok = caught[att]
    delay_s = np.full(att.sum(), np.nan)
    delay_m = np.full(att.sum(), np.nan)
    delay_s[ok] = (t[fl[ok]] - t[fa[ok]]) / 1e9
    delay_m[ok] = fl[ok] - fa[ok]
    return pd.DataFrame(
        {"caught": ok, "delay_s": delay_s, "delay_messages": delay_m}, index=pd.Index(uniq[att], name="id")
    )


def detection_summary(ttd: pd.DataFrame) -> dict[str, float]:
    """{"median", "p90"} seconds over caught attacker vehicles, `caught_share` of all of them,
    and the same in messages (`median_messages`, `p90_messages`); NaN where nothing to say."""
    nan = float("nan")
    if ttd.empty:
        return {"median": nan, "p90": nan, "caught_share": nan, "median_messages": nan, "p90_messages": nan}
    got = ttd[ttd["caught"]]
    s, m = got["delay_s"].to_numpy(float), got["delay_messages"].to_numpy(float)
    q = lambda v, p: float(np.percentile(v, p)) if len(v) else nan  # noqa: E731
    return {
        "median": q(s, 50),
        "p90": q(s, 90),
        "caught_share": float(ttd["caught"].mean()),
        "median_messages": q(m, 50),
        "p90_messages": q(m, 90),
    }


def vehicle_alarm_hours(
    ids: np.ndarray, times: np.ndarray, alarm: np.ndarray, max_gap_s: float = MAX_GAP_S
) -> pd.DataFrame:
    """Per vehicle: `onsets` (alarm off -> on in time order; on at a vehicle's first message
    counts) and `hours` active (gaps between consecutive messages up to `max_gap_s`)."""
    order, c, start, uniq = _order(ids, times)
    t = _ns(times)[order] / 1e9
    al = np.asarray(alarm, bool)[order]
    i = np.arange(len(al))
    first = i == start
    prev = np.r_[False, al[:-1]] & ~first
    onset = al & ~prev
    gap = np.where(first, 0.0, t - np.r_[t[:1], t[:-1]])
    gap = np.where(gap <= max_gap_s, gap, 0.0)
    return pd.DataFrame(
        {
            "onsets": np.bincount(c, weights=onset, minlength=len(uniq)).astype(np.int64),
            "hours": np.bincount(c, weights=gap, minlength=len(uniq)) / 3600.0,
        },
        index=pd.Index(uniq, name="id"),
    )


def false_alarms_per_vehicle_hour(per_vehicle: pd.DataFrame) -> float:
    """Alarm onsets over active hours, summed over the (genuine) vehicles given; NaN without hours."""
    hours = float(per_vehicle["hours"].sum())
    return float(per_vehicle["onsets"].sum() / hours) if hours > 0 else float("nan")


# ---------------------------------------------------------------- paired test over repeats


def paired_test(detector: np.ndarray, rules: np.ndarray) -> dict[str, Any]:
    """Two-sided paired test of a detector's per-repeat score against the rules' (NaN pairs
    dropped): Wilcoxon signed-rank with >= 6 pairs, else the exact sign test (ties dropped).
    {"test", "n", "p", "median_diff"}."""
    from scipy import stats

    d, r = np.asarray(detector, float), np.asarray(rules, float)
    keep = ~(np.isnan(d) | np.isnan(r))
    diff = d[keep] - r[keep]
    n = int(len(diff))
    med = float(np.median(diff)) if n else float("nan")
    if n >= WILCOXON_MIN_PAIRS and np.any(diff != 0):
        return {"test": "wilcoxon", "n": n, "p": float(stats.wilcoxon(diff).pvalue), "median_diff": med}
    nz = diff[diff != 0]
    if not len(nz):
        return {"test": "sign", "n": n, "p": 1.0 if n else float("nan"), "median_diff": med}
    p = float(stats.binomtest(int((nz > 0).sum()), len(nz), 0.5).pvalue)
    return {"test": "sign", "n": n, "p": p, "median_diff": med}


# ---------------------------------------------------------------- quality bar on the interval


def quality_bar_on_interval(
    f1_ci: dict[str, dict[str, list[float]]],
    f1: dict[str, dict[str, float]],
    bars: dict[str, float],
    detector: str = "random_forest",
) -> dict[str, Any]:
    """The quality bars judged on the interval's lower end: `detector`'s F1 lower bound >= each
    attack's bar, and >= the rules' point F1 on every attack. `f1_ci`: {detector: {attack: [low,
    high]}}; `f1`: point estimates, same keys. Met: True / False / None (not evaluated)."""
    ci, rules = f1_ci.get(detector), f1.get("rules")
    out: dict[str, Any] = {}
    if ci is None or rules is None:
        out[f"{detector}_low_ge_rules_every_attack"] = {"met": None, "note": f"needs detectors {detector} and rules"}
    else:
        worse = {
            a: {f"{detector}_low": ci[a][0], "rules": rules[a]}
            for a in ci
            if a in rules and not (ci[a][0] >= rules[a] or np.isnan(rules[a]))
        }
        out[f"{detector}_low_ge_rules_every_attack"] = {"met": not worse, "worse_on": worse}
    for attack, bar in bars.items():
        key = f"{detector}_f1_low_ge_{bar:.2f}_{attack}"
        lo = None if ci is None or attack not in ci else ci[attack][0]
        out[key] = (
            {"met": None, "note": f"{attack} not in the matrix"}
            if lo is None or np.isnan(lo)
            else {"met": bool(lo >= bar), "f1_low": lo}
        )
    return out


# ---------------------------------------------------------------- per bucket, merged


def fpr_key(fpr: float) -> str:
    """The metrics.json key of a false-positive rate: recall_at_fpr_0.001."""
    return f"recall_at_fpr_{fpr:g}"


def thresholds(genuine_score: np.ndarray, fprs: list[float], weight: np.ndarray | None = None) -> dict[float, float]:
    """{fpr: threshold} on genuine validation scores (or their histogram with `weight`)."""
    return {f: threshold_at_fpr(genuine_score, f, weight) for f in fprs}


def vehicle_summary(
    ids: np.ndarray,
    times: np.ndarray,
    y: np.ndarray,
    score: np.ndarray,
    pred: np.ndarray,
    threshold: float,
    k: int,
    n: int,
) -> pd.DataFrame:
    """One row per vehicle of a bucket (a vehicle never spans buckets, so bucket summaries
    concatenate): tp, fp, fn, tn at the detector's own decision (`pred`), `attacker`, and for the
    k-of-n alarm on messages scored above `threshold`: `onsets`, active `hours`, `caught`,
    `delay_s`, `delay_messages` (NaN for genuine vehicles)."""
    conf = vehicle_confusion(ids, y, pred)
    score = np.asarray(score, float)
    flagged = score > threshold if not np.isnan(threshold) else np.zeros(len(score), bool)
    alarm = k_of_n_alarm(ids, times, flagged, k, n)
    return conf.join(vehicle_alarm_hours(ids, times, alarm)).join(time_to_detection(ids, times, y, alarm))


def operating_summary(
    per_vehicle: pd.DataFrame,
    hist: pd.DataFrame,
    thresh: dict[float, float],
    resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """metrics.json's evaluation of one (share, detector, attack) from the merged per-vehicle rows
    (`vehicle_summary`) and message histogram (columns score, y, w): `f1_ci`, `recall_ci`,
    `operating_points` (recall at each FPR's threshold; false alarms per genuine vehicle-hour of
    the alarm) and `time_to_detection_s`."""
    ci = bootstrap_interval(per_vehicle, resamples, rng)
    s, yy, w = (hist[c].to_numpy() for c in ("score", "y", "w"))
    ops = {fpr_key(f): recall_at(t, s, yy.astype(bool), w) for f, t in thresh.items()}
    ops["false_alarms_per_vehicle_hour"] = false_alarms_per_vehicle_hour(per_vehicle[~per_vehicle["attacker"]])
    ttd = per_vehicle.loc[per_vehicle["attacker"], ["caught", "delay_s", "delay_messages"]]
    return {
        "f1_ci": ci["f1"],
        "recall_ci": ci["recall"],
        "operating_points": ops,
        "time_to_detection_s": detection_summary(ttd.astype({"caught": bool})),
    }


def check_attackers(share: float, count: int, minimum: int) -> None:
    """Refuse a share whose test side holds fewer than `minimum` attacker vehicles."""
    if count < minimum:
        raise TooFewAttackers(
            f"share {share:g}: the test side holds {count} attacker vehicle{'s' * (count != 1)}, fewer than "
            f"model.min_test_attackers {minimum} (use more vehicles or a larger share, or lower the param)"
        )
