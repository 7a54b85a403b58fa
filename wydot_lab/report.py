"""Sentences that say what a notebook's table or figure shows, with the numbers filled in.

Built from the same objects the notebook displays, so the text stays true when the data or
the params change. Each returns Markdown (a string); a notebook shows it with
`IPython.display.Markdown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "0 %"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def range_summary(summary: Mapping[str, Any]) -> str:
    """01: what the range holds (`widgets.summarize` plus the ingest counts)."""
    ingest = summary.get("ingest", {})
    versions = ", ".join(f"v{k}" for k in summary.get("schema_versions", {})) or "none"
    text = (
        f"The range holds **{summary['records']:,} valid records** from "
        f"**{_plural(summary['vehicles'], 'vehicle')}** over {_plural(summary['hours'], 'hour')} "
        f"(ODE schema {versions})."
    )
    if ingest:
        other = "is another message type" if ingest["non_bsm"] == 1 else "are other message types"
        text += (
            f" Of the {ingest['records']:,} lines read, {ingest['quarantined']:,} were set aside by "
            f"validation (their reasons are in 02) and {ingest['non_bsm']:,} {other}."
        )
    return text


def validation(counts: Mapping[str, int], reasons: Mapping[str, int]) -> str:
    """02: what validation kept and the most common reason for setting records aside."""
    text = (
        f"{counts['valid']:,} of {counts['records']:,} records ({_pct(counts['valid'], counts['records'])}) "
        f"passed every rule; {counts['quarantined']:,} were quarantined and {counts['non_bsm']:,} "
        f"{'is not a BSM' if counts['non_bsm'] == 1 else 'are not BSMs'}."
    )
    if reasons:
        top, n = max(reasons.items(), key=lambda kv: (kv[1], kv[0]))
        text += f" The most common reason is `{top}` ({_plural(n, 'record')})."
    return text


def flag_rates(rates: pd.Series) -> str:
    """03: on clean data every flag is a false alarm: which fires most."""
    fired = rates[rates > 0].sort_values(ascending=False)
    if fired.empty:
        return "No plausibility flag fires on these clean records: the rules raise no false alarm here."
    top = fired.index[0]
    return (
        f"On clean records `{top}` fires most, on {fired.iloc[0]:.2%} of messages: that is the rule "
        f"baseline's false-alarm rate for it. {_plural(int((rates == 0).sum()), 'flag')} never fire."
    )


def attacks(summary: pd.DataFrame, vehicles: int, attackers: int, share: float) -> str:
    """04: how many vehicles attack and how many messages each attack falsified."""
    text = (
        f"{attackers:,} of {vehicles:,} vehicles ({_pct(attackers, vehicles)}, share {share}) are attackers; "
        f"each of the {len(summary)} attacks falsifies only their messages"
    )
    if len(summary):
        lo, hi = int(summary["attacked"].min()), int(summary["attacked"].max())
        text += f", {lo:,} to {hi:,} messages per attack" if lo != hi else f", {lo:,} messages per attack"
    return text + "."


def offsets(true: pd.DataFrame, fake: pd.DataFrame, lat: str, lon: str) -> str:
    """04: how far the reported positions lie from where the attacker drove (same messages)."""
    import numpy as np

    t = true.loc[fake.index] if fake.index.isin(true.index).all() else true.iloc[: len(fake)]
    if fake.empty:
        return "This vehicle's first trip carries no attacked message."
    p1, p2 = np.radians(t[lat].to_numpy(float)), np.radians(fake[lat].to_numpy(float))
    dl = np.radians(fake[lon].to_numpy(float) - t[lon].to_numpy(float))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    d = 2 * 6371008.8 * np.arcsin(np.sqrt(a))
    spread = (
        f"all {d.min():,.0f} m apart"
        if round(d.min()) == round(d.max())
        else f"{np.median(d):,.0f} m apart in the median (from {d.min():,.0f} to {d.max():,.0f} m)"
    )
    return f"Red is what the attacker reported, blue where it drove: {len(fake)} attacked messages, {spread}."


def f1_summary(f1: pd.DataFrame) -> str:
    """05: mean F1 per detector and the weakest attack of the best one."""
    means = f1.mean().sort_values(ascending=False)
    best = means.index[0]
    parts = ", ".join(f"{d} {v:.2f}" for d, v in means.items())
    weakest = f1[best].idxmin()
    return (
        f"Mean F1 over the {len(f1)} attacks: {parts}. The best detector, {best}, is weakest on "
        f"`{weakest}` (F1 {f1.loc[weakest, best]:.2f})."
    )


def _bar_words(name: str, bar: Mapping[str, Any]) -> str:
    import re

    if m := re.fullmatch(r"(\w+?)_f1_low_ge_([\d.]+)_(.+)", name):
        return f"the lower end of {m[1]}'s 95 % interval reaches F1 {m[2]} or more on `{m[3]}`"
    if m := re.fullmatch(r"(\w+?)_low_ge_(\w+?)_every_attack", name):
        return f"the lower end of {m[1]}'s 95 % interval is at least {m[2]}'s F1 on every attack"
    if m := re.fullmatch(r"(\w+?)_f1_ge_([\d.]+)_(.+)", name):
        return f"{m[1]} reaches F1 {m[2]} or more on `{m[3]}`"
    if m := re.fullmatch(r"(\w+?)_ge_(\w+?)_every_attack", name):
        return f"{m[1]} does at least as well as {m[2]} on every attack"
    if m := re.fullmatch(r"(\w+?)_gt_(\w+?)_on_average", name):
        nums = f" ({bar[m[1]]:.3f} against {bar[m[2]]:.3f})" if m[1] in bar and m[2] in bar else ""
        return f"{m[1]} beats {m[2]} on mean F1{nums}"
    return name.replace("_", " ")


def quality_bars(bars: Mapping[str, Any]) -> str:
    """05: each quality bar as a sentence (met, missed, or why it was not evaluated)."""
    lines = []
    for name, bar in bars.items():
        if name == "summary" or not isinstance(bar, Mapping):
            continue
        if bar.get("met") is None:
            lines.append(f"- Not evaluated: {_bar_words(name, bar)} ({bar.get('note', 'nothing to measure')}).")
        else:
            lines.append(f"- {'Met' if bar['met'] else '**Missed**'}: {_bar_words(name, bar)}.")
    return "Quality bars:\n\n" + "\n".join(lines) if lines else "No quality bar applies to this matrix."


def caveats(items: list[str]) -> str:
    """05: what the numbers rest on, one bullet each."""
    if not items:
        return "No caveat: every share's test side holds enough attacker vehicles."
    return "What these numbers rest on:\n\n" + "\n".join(f"- {c}" for c in items)


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def intervals(f1: Mapping[str, Mapping[str, float]], f1_ci: Mapping[str, Mapping[str, list]]) -> str:
    """05: how wide the 95 % intervals over test vehicles are, and the widest one."""
    rows = [(d, a, f1[d][a], lo, hi) for d, per in f1_ci.items() for a, (lo, hi) in per.items()
            if d in f1 and a in f1[d] and lo is not None and hi is not None]
    if not rows:
        return "No interval: no attack has test attackers."
    widths = [hi - lo for *_, lo, hi in rows]
    d, a, point, lo, hi = rows[max(range(len(rows)), key=widths.__getitem__)]
    return (
        f"Each F1 carries a 95 % bootstrap interval over test vehicles (vehicles resampled, not messages): "
        f"the median width is {sorted(widths)[len(widths) // 2]:.2f}; the widest is {d} on `{a}`, F1 "
        f"{_fmt(point)} in [{_fmt(lo)}, {_fmt(hi)}]. A difference smaller than the intervals is not a finding."
    )


def operating_points(ops: Mapping[str, Mapping[str, Mapping[str, float]]], fprs: list[float]) -> str:
    """05: mean recall over attacks at each false-positive rate (thresholds chosen on validation
    vehicles), and false alarms per genuine vehicle-hour, per detector."""
    if not ops:
        return "No operating point was computed."
    parts = []
    for det, per in ops.items():
        rec = [
            f"{_fmt(_mean([v.get(f'recall_at_fpr_{f:g}') for v in per.values()]))} at {f:.1%}" for f in fprs
        ]
        fa = _mean([v.get("false_alarms_per_vehicle_hour") for v in per.values()])
        parts.append(f"{det} {', '.join(rec)} ({_fmt(fa)} false alarms per genuine vehicle-hour)")
    return (
        "Mean recall over attacks at a fixed message-level false-positive rate, the threshold chosen on genuine "
        "validation vehicles (never the test side): " + "; ".join(parts) + "."
    )


def time_to_detection(ttd: Mapping[str, Mapping[str, Mapping[str, float]]], k: int, n: int) -> str:
    """05: how fast the vehicle-level alarm (k of the last n messages flagged) catches attackers."""
    if not ttd:
        return "No time to detection was computed."
    parts = []
    for det, per in ttd.items():
        caught = _mean([v.get("caught_share") for v in per.values()])
        median = _mean([v.get("median") for v in per.values()])
        parts.append(f"{det} catches {_fmt(caught, '.0%')} of attacker vehicles, median {_fmt(median, '.0f')} s")
    return (
        f"With an alarm when {k} of a vehicle's last {n} messages are flagged: " + "; ".join(parts)
        + " (means over attacks of each attack's median over its caught attackers)."
    )


def _mean(values: list) -> float:
    got = [v for v in values if v is not None and v == v]
    return sum(got) / len(got) if got else float("nan")
