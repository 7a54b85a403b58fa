"""Every non-map figure the stage notebooks draw: a notebook cell is a call and a display.

matplotlib `Figure` objects (no pyplot state, no GUI), saved with `maps.save`. Text is sized
for a notebook column (about 900 px): titles stay readable and legends never cover data.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

CLEAN = "#2b6cb0"
ATTACK = "#e53e3e"
NEUTRAL = "#718096"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _below_suptitle(fig) -> None:
    """tight_layout ignores the suptitle: keep the panels half an inch below it."""
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))


def quarantine_reasons(reasons: Mapping[str, int], quarantined: int, records: int, period: str):
    """Bars of quarantined records per named rule (a record failing several counts under each)."""
    items = sorted(reasons.items(), key=lambda kv: kv[1]) or [("(none)", 0)]
    fig = _figure(8, 0.45 * len(items) + 1.3)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=ATTACK)
    ax.set_xlabel("quarantined records (a record can fail several rules)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Quarantine reasons, {period}: {quarantined:,} of {records:,} records",
                 loc="left", fontsize=11)
    fig.tight_layout()
    return fig


def feature_distributions(feats: pd.DataFrame, names: list[str], within_run: np.ndarray,
                          since_previous: Iterable[str], period: str, cols: int = 4):
    """One histogram per feature, clipped to its 1st-99th percentile; pairwise features within runs."""
    since_previous = set(since_previous)
    rows = int(np.ceil(len(names) / cols))
    fig = _figure(3.6 * cols, 2.6 * rows + 0.6)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        v = feats[name].to_numpy(float)
        if name in since_previous:
            v = v[within_run]
        v = v[np.isfinite(v)]
        if len(v):
            lo, hi = np.percentile(v, [1, 99])
            ax.hist(np.clip(v, lo, hi), bins=40, color=CLEAN)
        ax.set_title(name, fontsize=10)
        ax.text(0.98, 0.95, f"n={len(v):,}" + ("\nwithin runs" if name in since_previous else ""),
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="#4a5568")
        ax.tick_params(labelsize=8)
    fig.suptitle(f"Feature distributions, clean records {period} (each clipped to its 1st-99th "
                 "percentile)", x=0.01, ha="left", fontsize=13)
    _below_suptitle(fig)
    return fig


def flag_rates(rates: pd.Series):
    """Share of clean messages each plausibility flag raises: the rules' false-alarm rates."""
    rates = rates.sort_values()
    fig = _figure(8, 0.38 * len(rates) + 1.3)
    ax = fig.add_subplot()
    ax.barh(rates.index, rates.to_numpy(), color=NEUTRAL)
    ax.set_xlabel("share of clean messages flagged")
    ax.set_title("F2MD plausibility flags on clean records", loc="left", fontsize=11)
    fig.tight_layout()
    return fig


def confusion_matrices(msg: pd.DataFrame, detectors: list[str], share: float):
    """Message-level confusion counts per detector, summed over the attacks of `msg`."""
    fig = _figure(3.4 * len(detectors), 4.2)
    for i, det in enumerate(detectors):
        r = msg[msg["detector"] == det][["tn", "fp", "fn", "tp"]].sum()
        cm = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]])
        total = max(cm.sum(), 1)
        ax = fig.add_subplot(1, len(detectors), i + 1)
        ax.imshow(cm / total, cmap="Blues", vmin=0, vmax=1)
        for (a, b), v in np.ndenumerate(cm):
            ax.text(b, a, f"{int(v):,}", ha="center", va="center", fontsize=10,
                    color="white" if v / total > 0.5 else "black")
        ax.set_xticks([0, 1], ["genuine", "attack"])
        ax.set_yticks([0, 1], ["genuine", "attack"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true" if i == 0 else "")
        ax.set_title(det, fontsize=10)
    fig.suptitle(f"Confusion matrices, per-attack models summed over {msg['attack'].nunique()} "
                 f"attacks, share {share}", fontsize=11)
    _below_suptitle(fig)
    return fig


def pr_curves(scores: pd.DataFrame, attack: str, detectors: list[str], share: float, id_col: str):
    """Precision-recall curve of every detector on one attack; the legend sits beside the axes."""
    from sklearn.metrics import precision_recall_curve

    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    y = np.zeros(0, bool)
    vehicles = 0
    for det in detectors:
        s = scores[(scores["attack"] == attack) & (scores["detector"] == det)]
        y = s["is_attack"].to_numpy(bool)
        vehicles = s[id_col].nunique()
        if y.any():
            p, r, _ = precision_recall_curve(y, s["score"].to_numpy())
            ax.plot(r, p, label=det, drawstyle="steps-post")
    if len(y):
        ax.axhline(y.mean(), color="grey", ls=":", label=f"chance ({y.mean():.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_title(f"PR curves, {attack}, share {share}, {vehicles} test vehicles", loc="left", fontsize=11)
    fig.tight_layout()
    return fig


def feature_importance(imp: pd.DataFrame, top: int = 20):
    """Top features by mean impurity importance over attacks (the random forest where present)."""
    mean = imp.groupby(["detector", "feature"])["importance"].mean().reset_index()
    dets = list(dict.fromkeys(mean["detector"]))
    det = "random_forest" if "random_forest" in dets else (dets[0] if dets else None)
    fig = _figure(8, 0.3 * top + 1.2)
    ax = fig.add_subplot()
    if det is not None:
        t = mean[mean["detector"] == det].nlargest(top, "importance").iloc[::-1]
        ax.barh(t["feature"], t["importance"], color=CLEAN)
    ax.set_xlabel("mean impurity importance")
    ax.set_title(f"Top features, {det}, mean over attacks", loc="left", fontsize=11)
    fig.tight_layout()
    return fig


def time_to_detection(ttd: Mapping[str, Mapping[str, Mapping[str, float]]], share: float, k: int, n: int):
    """Per attack (rows) and detector (markers): median time to detection with a bar to its 90th
    percentile, and the share of attacker vehicles caught in the label. `ttd`: metrics.json's
    `time_to_detection_s` of one share ({detector: {attack: {median, p90, caught_share}}})."""
    dets = list(ttd)
    attacks = sorted({a for per in ttd.values() for a in per})
    fig = _figure(9, 0.42 * max(len(attacks), 1) * max(len(dets), 1) ** 0.5 + 1.6)
    ax = fig.add_subplot()
    step = 0.8 / max(len(dets), 1)
    for j, det in enumerate(dets):
        y = np.arange(len(attacks)) - 0.4 + step * (j + 0.5)
        v = [ttd[det].get(a, {}) for a in attacks]
        med = np.array([np.nan if x.get("median") is None else x["median"] for x in v], float)
        p90 = np.array([np.nan if x.get("p90") is None else x["p90"] for x in v], float)
        ax.errorbar(med, y, xerr=[np.zeros_like(med), np.nan_to_num(p90 - med)], fmt="o", capsize=2,
                    label=det)
    ax.set_yticks(np.arange(len(attacks)), attacks, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the first attacked message to the alarm (median, bar to p90)")
    ax.set_title(f"Time to detection, share {share:g}: alarm at {k} of the last {n} messages flagged",
                 loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
