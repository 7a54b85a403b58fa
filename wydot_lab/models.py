"""Detectors, the vehicle-disjoint split and honest metrics (docs/DOMAIN.md sections 4-5).

Every detector has the scikit-learn shape (`fit`, `predict_proba`-like `score`) and a
feature list; the rule baseline needs no training. Splits are by vehicle (optionally
also by day) and `check_disjoint` raises if train and test ever share a vehicle id.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from wydot_lab.errors import WydotLabError
from wydot_lab.features import FEATURES, REFERENCE
from wydot_lab.frames import ID, TIME, vehicle_codes

HISTORY = list(FEATURES)  # every feature of features.FEATURES (per-vehicle history + map + flags)
VEHICLE_SHARE = 0.2  # a vehicle is called an attacker when this share of its messages is flagged


class LeakError(WydotLabError, AssertionError):
    """Train and test share a vehicle (or a day, for the day split): the split is not honest."""


class RulesDetector:
    """F2MD legacy checks: a message is flagged when any check fails (`flag_count` > 0)."""

    features = ["flag_count"]

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "RulesDetector":
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return X["flag_count"].to_numpy(float)

    def decide(self, score: np.ndarray) -> np.ndarray:
        return score > 0

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.decide(self.score(X))


def _one_omp_thread() -> threadpool_limits:
    """OpenMP (HistGradientBoosting) on one thread: on a busy 2-core box its spinning
    threads made fits 5-10x slower; RandomForest parallelises with joblib instead."""
    return threadpool_limits(limits=1, user_api="openmp")


class SklearnDetector:
    """A scikit-learn classifier on a fixed feature list; score = P(attack)."""

    def __init__(self, estimator: Any, features: list[str]):
        self.estimator, self.features = estimator, list(features)
        self.empty: np.ndarray = np.zeros(0, int)  # feature columns with no value at all in training

    def _matrix(self, X: pd.DataFrame, fitting: bool = False) -> np.ndarray:
        """Features as floats; columns empty in training are a constant 0, which no tree can
        split on (HistGradientBoosting crashes on an all-NaN column, e.g. a window std when
        every run is two messages long)."""
        m = X[self.features].to_numpy(float)
        if not m.flags.writeable:  # one float column comes back as a read-only view of the frame
            m = m.copy()
        if fitting:
            self.empty = np.flatnonzero(np.isnan(m).all(axis=0))
        m[:, self.empty] = 0.0
        return m

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "SklearnDetector":
        with _one_omp_thread():
            self.estimator.fit(self._matrix(X, fitting=True), np.asarray(y, bool))
        # score on one thread: a forest summed by parallel threads adds its trees in a racy
        # order, so the last bits of a score (and PR-AUC ties) would change from run to run
        if "n_jobs" in self.estimator.get_params():
            self.estimator.set_params(n_jobs=1)
        return self

    def score(self, X: pd.DataFrame) -> np.ndarray:
        with _one_omp_thread():
            proba = self.estimator.predict_proba(self._matrix(X))
        classes = list(self.estimator.classes_)
        return proba[:, classes.index(True)] if True in classes else np.zeros(len(X))

    def decide(self, score: np.ndarray) -> np.ndarray:
        return score >= 0.5

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.decide(self.score(X))

    def importances(self) -> dict[str, float]:
        imp = getattr(self.estimator, "feature_importances_", None)
        return {} if imp is None else {f: float(v) for f, v in zip(self.features, imp)}


class NoveltyDetector(SklearnDetector):
    """Trained on genuine traffic only (novelty detection): an IsolationForest fitted on the train
    side's genuine messages, never told what an attack looks like; score = how anomalous (the
    negated `score_samples`), flagged above the cut that flags `CONTAMINATION` of the genuine
    training messages. Missing feature values take the training medians."""

    CONTAMINATION = 0.01

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "NoveltyDetector":
        genuine = X[~np.asarray(y, bool)]
        m = self._matrix(genuine, fitting=True)
        self.fill = np.nan_to_num(np.nanmedian(np.where(np.isnan(m).all(axis=0), 0.0, m), axis=0)) if len(m) else 0.0
        self.estimator.fit(self._filled(m))
        self.cutoff = float(np.quantile(-self.estimator.score_samples(self._filled(m)), 1 - self.CONTAMINATION))
        return self

    def _filled(self, m: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(m), self.fill, m)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return -self.estimator.score_samples(self._filled(self._matrix(X)))

    def decide(self, score: np.ndarray) -> np.ndarray:
        return score > self.cutoff


def _iforest(p: Any, features: list[str]) -> NoveltyDetector:
    from sklearn.ensemble import IsolationForest

    return NoveltyDetector(IsolationForest(n_estimators=p.n_estimators, random_state=p.seed), features)


# scikit-learn and joblib are imported where used: params validation reads DETECTORS, and
# importing sklearn would add ~0.7 s to every params load (CLI, notebooks' first cell)
def _rf(p: Any, features: list[str]) -> SklearnDetector:
    from sklearn.ensemble import RandomForestClassifier

    return SklearnDetector(RandomForestClassifier(
        n_estimators=p.n_estimators, min_samples_leaf=2, n_jobs=-1, random_state=p.seed), features)


def _hgb(p: Any, features: list[str]) -> SklearnDetector:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return SklearnDetector(HistGradientBoostingClassifier(
        max_iter=p.n_estimators, early_stopping=False, random_state=p.seed), features)


@dataclass(frozen=True)
class DetectorSpec:
    make: Callable[[Any], Any]  # ModelParams -> unfitted detector
    doc: str


DETECTORS: dict[str, DetectorSpec] = {
    "rules": DetectorSpec(lambda p: RulesDetector(), "F2MD legacy plausibility checks, any failed check flags"),
    "random_forest": DetectorSpec(lambda p: _rf(p, HISTORY), "RandomForest on the per-vehicle history features"),
    "hist_gradient_boosting": DetectorSpec(lambda p: _hgb(p, HISTORY),
                                           "HistGradientBoosting on the per-vehicle history features"),
    "position_only": DetectorSpec(lambda p: _rf(p, REFERENCE),
                                  "reference: RandomForest on x, y, elevation only (earlier work)"),
    "isolation_forest": DetectorSpec(lambda p: _iforest(p, HISTORY),
                                     "novelty: IsolationForest on the genuine train messages only (no attack seen)"),
}


def make_detector(name: str, model_params: Any) -> Any:
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
    return DETECTORS[name].make(model_params)


# ---------------------------------------------------------------- split


def check_disjoint(train: pd.DataFrame, test: pd.DataFrame, by_day: bool = False) -> None:
    """Raise LeakError when train and test share a vehicle id (or a UTC day with `by_day`)."""
    shared = set(train[ID].astype(str)) & set(test[ID].astype(str))
    if shared:
        raise LeakError(f"train and test share {len(shared)} vehicle ids, e.g. {sorted(shared)[:3]}")
    if by_day:
        days = set(_days(train)) & set(_days(test))
        if days:
            raise LeakError(f"train and test share {len(days)} days, e.g. {sorted(days)[:3]}")


def _days(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_datetime(frame[TIME], utc=True).dt.strftime("%Y-%m-%d").to_numpy()


def split(frame: pd.DataFrame, test_share: float, seed: int, by_day: bool = False
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Vehicle-disjoint train/test on coreData_id, stratified by `is_attacker` when the frame
    has it (so a 5% attacker share still puts attackers on both sides); with `by_day`, the
    test days are also drawn apart and each side keeps only its own days."""
    inverse, vehicles = vehicle_codes(frame)
    if len(vehicles) < 2:
        raise ValueError("a vehicle-disjoint split needs at least two vehicles")
    strata = np.zeros(len(vehicles), dtype=bool)
    if "is_attacker" in frame.columns:
        np.logical_or.at(strata, inverse, frame["is_attacker"].to_numpy(bool))
    rng = np.random.default_rng(seed)
    test_vehicle = np.zeros(len(vehicles), dtype=bool)
    for value in (False, True):
        members = np.flatnonzero(strata == value)
        if len(members) == 0:
            continue
        n_test = int(round(test_share * len(members)))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)  # both sides see this stratum
        test_vehicle[rng.choice(members, size=n_test, replace=False)] = True
    if test_vehicle.all() or not test_vehicle.any():
        raise ValueError("the split left one side without vehicles; use more vehicles or another test_share")
    rows_test = test_vehicle[inverse]
    tr, te = np.flatnonzero(~rows_test), np.flatnonzero(rows_test)
    train, test = frame.iloc[tr], frame.iloc[te]
    if by_day:
        days = _days(frame)
        uniq = np.unique(days)
        if len(uniq) < 2:
            raise ValueError(f"model.split vehicle_day needs records on at least two UTC days; these are all "
                             f"on {uniq[0] if len(uniq) else 'no day'} (use split: vehicle, or a range with data on "
                             "more days)")
        rng = np.random.default_rng(seed)
        n_test = min(len(uniq) - 1, max(1, int(round(test_share * len(uniq)))))
        test_days = set(rng.choice(uniq, size=n_test, replace=False).tolist())
        in_test = np.isin(days, list(test_days))
        train, test = train[~in_test[tr]], test[in_test[te]]
    check_disjoint(train, test, by_day)
    return train, test


# ---------------------------------------------------------------- metrics


def binary_metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """precision, recall, F1, PR-AUC (average precision) and the confusion matrix."""
    from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    if not len(y):
        nan = float("nan")
        return {"precision": nan, "recall": nan, "f1": nan, "pr_auc": nan, "tn": 0, "fp": 0, "fn": 0, "tp": 0, "n": 0}
    # undefined (no attacks in the test set, or none flagged) is NaN, not a fake 0 or 1
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=np.nan)
    if not y.any():  # nothing to catch: F1 is undefined whether or not something was flagged
        r = f = np.nan  # (sklearn gives F1 0 after a false alarm and NaN without one)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()
    both = 0 < y.sum() < len(y)
    ap = float(average_precision_score(y, score)) if both else float("nan")
    return {"precision": float(p), "recall": float(r), "f1": float(f), "pr_auc": ap,
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp), "n": int(len(y))}


def vehicle_level(ids: np.ndarray, y: np.ndarray, pred: np.ndarray, score: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per vehicle: truth = any attacked message, score = mean message score,
    prediction = flagged share >= VEHICLE_SHARE."""
    df = pd.DataFrame({"id": ids, "y": np.asarray(y, bool), "p": np.asarray(pred, float),
                       "s": np.asarray(score, float)})
    g = df.groupby("id", sort=True).agg(y=("y", "any"), p=("p", "mean"), s=("s", "mean"))
    return g["y"].to_numpy(bool), (g["p"] >= VEHICLE_SHARE).to_numpy(), g["s"].to_numpy(float)


def evaluate(detector: Any, test: pd.DataFrame, score: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Message-, conditional-message- and vehicle-level metrics of a fitted detector
    (pass `score` when already computed: scoring a forest is the costly part)."""
    score = detector.score(test) if score is None else score
    pred = detector.decide(score)
    y = test["is_attack"].to_numpy(bool)
    out = {"message": binary_metrics(y, pred, score)}
    # conditional: attacked messages below tolerance are neither hits nor misses
    cond = test["is_attack_cond"].to_numpy(bool)
    keep = cond | ~y
    out["message_cond"] = binary_metrics(cond[keep], pred[keep], score[keep])
    out["vehicle"] = binary_metrics(*vehicle_level(test[ID].astype(str).to_numpy(), y, pred, score))
    return out


def save_model(detector: Any, path: str | Path, meta: dict | None = None) -> Path:
    """joblib file holding the fitted detector, its feature list and the params that made it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import joblib

    joblib.dump({"detector": detector, "features": list(detector.features), "meta": meta or {}},
                path, compress=3)
    return path


def load_model(path: str | Path) -> dict:
    import joblib

    return joblib.load(path)
