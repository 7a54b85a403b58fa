"""The experiment matrix: attack kinds x magnitudes x detectors x attacker shares -> one table.

How a run is built (one row of the matrix per attack spec and share):
  * the clean corpus is loaded once, one row per transmission (`dedup`);
  * attackers are drawn once per share (sorted unique ids, seeded) before anything else;
    the vehicle-disjoint split follows (model seed), stratified on them, so every attack of
    a share is scored on the same test vehicles (shares differ in their splits: compare
    shares over several seeds, not one run);
  * each attack spec runs alone on the clean data, with its own generator derived from
    (attack seed, attack label, share), so adding a spec never changes another's numbers;
  * features are computed with Dask; each detector is trained on the train vehicles and
    scored on the test vehicles (message, conditional-message and vehicle level);
  * `model.repeats` > 1 runs it all again with attack and model seeds +1, +2, ... (new
    attackers, split and models); F1 tables are means over repeats, `f1_sd` their spread.
Everything is seeded: a rerun with the same params writes the same metrics.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import zlib
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from wydot_lab import attacks, config, dedup, evaluation, features, layout, models
from wydot_lab.frames import ID, TIME, by_vehicle, to_frame

Progress = Callable[[str], None] | None
METRICS = ("precision", "recall", "f1", "pr_auc", "tn", "fp", "fn", "tp", "n")
F1_BARS = {"const_offset_100_200": 0.90, "random_offset_50_100": 0.90}
LEVELS = ("message", "message_cond", "vehicle")
ROWS_PER_PARTITION = 200_000  # below this a shuffle costs more than it parallelises
BUCKET_ROWS = 100_000  # records per vehicle bucket of the out-of-core run (a worker holds a few times this)
WORK_BYTES_A_RECORD = 1_000  # disk the buckets take during a run (raw, clean, features, one attack's rows)


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


def load_corpus(params: config.Params) -> pa.Table:
    """Valid records of the params' date range: a local folder is ingested directly,
    anything else is read from the Parquet cache (fill it with `wydot-lab ingest`)."""
    url = config.resolve_path(params.source.url)
    if "://" not in url and Path(url).is_dir():
        from wydot_lab import ingest

        table = ingest.ingest_paths([url], unknown_version="quarantine").valid  # like fetch: records, not errors
    else:
        from wydot_lab import cache

        table = cache.load_table(params.dates.start, params.dates.end, root=config.resolve_path(params.cache.root),
                                 pilot=params.source.pilot, message_type=params.source.message_type,
                                 source_id=layout.source_identity(url))
    t0, t1 = layout.date_range_bounds(params.dates.start, params.dates.end)
    t = table.column(TIME).to_numpy(zero_copy_only=False).astype("datetime64[ms]")
    keep = (t >= np.datetime64(t0.replace(tzinfo=None), "ms")) & (t < np.datetime64(t1.replace(tzinfo=None), "ms"))
    return table.filter(pa.array(keep))


def records_frame(table: pa.Table) -> tuple[pd.DataFrame, dict]:
    """(clean frame, one row per transmission in (id, time sent) order with a fresh index; dedup counts).
    What attacks, features and the experiment start from (`dedup`: copies of one BSM logged by
    several loggers would read as messages 0 s apart)."""
    frame = to_frame(table)
    keep, report = dedup.kept(frame)
    order = by_vehicle(frame).order
    order = order[np.isin(order, keep, assume_unique=True)]  # the kept rows, in (id, time sent) order
    return frame.take(order).reset_index(drop=True), report


@contextlib.contextmanager
def _scheduler(dask_params: config.DaskParams) -> Iterator[Any]:
    """What to pass as `compute(scheduler=...)`; a local cluster lives only inside the block."""
    s = dask_params.scheduler
    if s == "local-cluster":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=dask_params.n_workers, threads_per_worker=dask_params.threads_per_worker,
                          memory_limit=dask_params.memory_limit, processes=True, protocol="tcp", host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
    elif s.startswith("tcp://"):
        from distributed import Client

        with Client(s) as client:
            yield client
    else:
        yield s


def featurize(frame: pd.DataFrame, params: config.Params, scheduler: Any = None) -> pd.DataFrame:
    """Features of an attacked frame through the Dask path, back in input order; computed on
    `scheduler` (from `_scheduler`), else on the params' `dask.scheduler`."""
    import dask.dataframe as dd

    if scheduler is None:
        with _scheduler(params.dask) as sched:
            return featurize(frame, params, sched)
    nparts = params.dask.npartitions or max(1, len(frame) // ROWS_PER_PARTITION)
    ddf = dd.from_pandas(frame, npartitions=nparts, sort=False)
    out = features.featurize(ddf, params.features.window).compute(scheduler=scheduler)
    return out.loc[frame.index]


def attack_rng(seed: int, label: str, share: float) -> np.random.Generator:
    """Per-run generator, independent of the spec's position in the matrix."""
    return np.random.default_rng([seed, zlib.crc32(label.encode()), int(round(share * 1e6))])


def draw_attackers(ids: Any, params: config.Params, share: float) -> np.ndarray:
    """The attacker vehicles of one share: drawn once from the attack seed, before any split."""
    return attacks.choose_attackers(ids, share, np.random.default_rng([params.attacks.seed, int(round(share * 1e6))]))


def split_for_share(frame: pd.DataFrame, params: config.Params, share: float
                    ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """(attackers, clean train rows, clean test rows) of one attacker share.

    Attackers are drawn first, over all vehicles; the vehicle-disjoint split is then
    stratified on them, so even at 5% both sides hold attackers (an unstratified split
    of ~100 vehicles left the test side without any, and every 5% score undefined)."""
    attackers = draw_attackers(frame[ID], params, share)
    marked = frame[[ID, TIME]].assign(is_attacker=frame[ID].isin(attackers).to_numpy())
    m = params.model
    train, test = models.split(marked, m.test_share, m.seed, by_day=m.split == "vehicle_day")
    return attackers, frame.loc[train.index], frame.loc[test.index]


def _specs(params: config.Params) -> list[dict]:
    """The attack matrix (each label once: `config.AttackParams` checks it at load)."""
    return [k.model_dump() for k in params.attacks.kinds] or attacks.default_matrix()


def _shares(params: config.Params) -> list[float]:
    """The attacker share, then the extra ones (distinct: checked at load)."""
    return [params.attacks.attacker_share, *params.attacks.extra_shares]


def _pieces(params: config.Params, table: pa.Table | None, progress: Progress) -> tuple[list, list, int]:
    """(input pieces, the same pieces' id and time columns, both dask-delayed; an estimate of the
    records): slices of a given table, else the partitions of `cache.load` over the params'
    range, which the workers read from the cache themselves (a local source folder is ingested
    into the cache first)."""
    import dask

    if table is not None:
        step = BUCKET_ROWS
        pieces = [dask.delayed(table.slice(i, step)) for i in range(0, max(table.num_rows, 1), step)]
        return pieces, pieces, table.num_rows
    from wydot_lab import cache, fetch

    url = config.resolve_path(params.source.url)
    root = config.resolve_path(params.cache.root)
    if "://" not in url and Path(url).is_dir():
        fetch.fetch_range(params, progress=bool(progress))
    where = {"pilot": params.source.pilot, "message_type": params.source.message_type}
    # hour files grouped to about BUCKET_ROWS records: a day copy (a million records and more at
    # real density) would be one piece, too big for a worker's memory
    ddf = cache.load(params.dates.start, params.dates.end, root, ttl_days=params.cache.ttl_days,
                     source_id=layout.source_identity(url), rows_per_partition=BUCKET_ROWS, day_copies=False, **where)
    keys = cache.load(params.dates.start, params.dates.end, root, ttl_days=params.cache.ttl_days,
                      source_id=layout.source_identity(url), rows_per_partition=BUCKET_ROWS, day_copies=False,
                      columns=[ID, TIME], **where)
    rows = sum(int(r.get("valid", 0)) for r in cache.ls(root, params.dates.start, params.dates.end, **where))
    return list(ddf.to_delayed()), list(keys.to_delayed()), rows


def _compute(tasks: list, sched: Any, what: str, progress: Progress, records: list[int] | None = None) -> list:
    """Run dask tasks on the scheduler; with `progress`, records done, rate and ETA."""
    from wydot_lab import progress as progress_mod

    return progress_mod.compute(tasks, sched, what, progress, records)


def run(params: config.Params, out_dir: str | Path, progress: Progress = None,
        table: pa.Table | None = None) -> pd.DataFrame:
    """Run the whole matrix out of core, write results.{parquet,csv}, importances.parquet,
    metrics.json (with the corpus counts: records, transmissions, copies dropped, vehicles),
    params.json, models/ and scores.parquet/ (one file per run and bucket) into `out_dir`; return
    the results table. `table`: records given in memory instead of the params' cached range.

    Every stage runs per vehicle bucket on the params' Dask scheduler (`wydot_lab.partitions`):
    no process holds the range; the numbers equal `run_in_memory`'s."""
    import dask

    from wydot_lab import partitions as parts

    out = Path(out_dir).resolve()
    shutil.rmtree(out / "models", ignore_errors=True)  # a reused --out keeps no model of an earlier run
    (out / "models").mkdir(parents=True, exist_ok=True)
    for stale in ("scores.parquet",):
        p_ = out / stale
        shutil.rmtree(p_, ignore_errors=True) if p_.is_dir() else p_.unlink(missing_ok=True)
    (out / "scores.parquet").mkdir()
    work = out / "_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    specs, shares, m = _specs(params), _shares(params), params.model
    for d in m.detectors:
        models.make_detector(d, m)  # fail early on an unknown detector
    by_day = m.split == "vehicle_day"
    t0, t1 = layout.date_range_bounds(params.dates.start, params.dates.end)
    t0, t1 = (np.datetime64(t.replace(tzinfo=None), "ms") for t in (t0, t1))
    try:
        with _scheduler(params.dask) as sched:
            pieces, keys, est = _pieces(params, table, progress)
            free = shutil.disk_usage(work).free
            if est * WORK_BYTES_A_RECORD > free:  # said before any work, not by a full disk half-way
                raise ValueError(f"experiment: the buckets of {est:,} records need about "
                                 f"{est * WORK_BYTES_A_RECORD / 1e9:.1f} GB in {work}, {free / 1e9:.1f} GB are free "
                                 "(free some, or write --out elsewhere)")
            per_piece = [est // max(len(pieces), 1)] * len(pieces)
            counts = _compute([dask.delayed(parts.count_piece)(k, t0, t1) for k in keys], sched,
                              "count records per vehicle", progress, per_piece)
            all_counts = pd.concat(counts) if counts else pd.Series(dtype=int)
            buckets = parts.Buckets.pack(all_counts, BUCKET_ROWS, params.dask.npartitions)
            nb, w = buckets.n, str(work)
            _compute([dask.delayed(parts.scatter_piece)(pc, i, w, buckets, t0, t1) for i, pc in enumerate(pieces)],
                     sched, "read + bucket by vehicle", progress, per_piece)
            per_bucket = np.bincount(buckets.of(all_counts.index), weights=all_counts.to_numpy(float),
                                     minlength=nb).astype(int).tolist()  # records per bucket, for the progress
            prep = _compute([dask.delayed(parts.prepare_bucket)(b, w, params.features.window) for b in range(nb)],
                            sched, "dedup + clean features", progress, per_bucket)
            copies = {k: int(sum(r["copies"][k] for r in prep)) for k in prep[0]["copies"]}
            veh = parts.Vehicles.from_summaries([r["vehicles"] for r in prep], buckets)
            if veh.n_rows == 0:
                raise ValueError("experiment: no valid records in the requested range")
            if any(s["name"] == "position_swap" for s in specs):
                np.lib.format.open_memmap(parts.donors_path(w), mode="w+", dtype=float, shape=(veh.n_valid, 2)).flush()
                veh_ = dask.delayed(veh, pure=True)
                _compute([dask.delayed(parts.write_donors)(b, w, veh_) for b in range(nb)], sched, "donor table", progress)
            if copies["copies_dropped"]:
                _say(progress, f"experiment: {copies['copies_dropped']} copies of {copies['logged_more_than_once']} "
                               "BSMs logged more than once dropped (one row per transmission)")
            _say(progress, f"experiment: {veh.n_rows} records, {len(veh.ids)} vehicles in {nb} buckets, {len(specs)} "
                           f"attacks x {len(m.detectors)} detectors x {len(shares)} shares")
            runner = _Runner(params, out, w, nb, veh, sched, progress)
            rows, imps, mixed_rows, attackers_in_test = [], [], [], {}
            for rep in range(m.repeats):
                p = repeat_params(params, rep)
                tag = f"repeat {rep}, " if m.repeats > 1 else ""
                for si, share in enumerate(shares):
                    attackers = draw_attackers(veh.ids, p, share)
                    marked = veh.frame(by_day).assign(is_attacker=lambda f: f[ID].isin(set(attackers.tolist())))
                    train_v, test_v = models.split(marked, m.test_share, p.model.seed, by_day=by_day)
                    attackers_in_test.setdefault(share, _test_attackers(test_v, attackers, share, m))
                    val_ids = hold_out(train_v[ID], attackers, p)
                    sides = _Sides.of(train_v, test_v, by_day, val_ids)
                    _say(progress, f"  {tag}share {share:g}: {len(attackers)} attackers; "
                                   f"{train_v[ID].nunique()} train / {test_v[ID].nunique()} test vehicles")
                    save = si == 0 and rep == 0
                    for spec in specs:
                        lab = attacks.label(spec)
                        base = {"repeat": rep, "share": share, "split": m.split, "attack": lab,
                                "attack_name": spec["name"], "attack_params": json.dumps(attacks.resolve(spec), sort_keys=True)}
                        new_rows, new_imps = runner.one(p, rep, share, lab, [spec], attackers, sides, base,
                                                        {"attack": spec, "share": share} if save else None)
                        rows += new_rows
                        imps += new_imps
                        f1s = {r["detector"]: round(r["f1"], 3) for r in new_rows if r["level"] == "message"}
                        _say(progress, f"  {tag}share {share:g} {lab}: F1 {f1s}")
                    if len(specs) > 1:
                        base = {"repeat": rep, "share": share, "split": m.split}
                        new_rows, _ = runner.one(p, rep, share, MIXED, specs, attackers, sides, base,
                                                 {"attack": MIXED, "attacks": specs, "share": share} if save else None)
                        mixed_rows += new_rows
                        f1s = {r["detector"]: round(r["f1"], 3) for r in new_rows
                               if r["level"] == "message" and r["attack"] == MIXED}
                        _say(progress, f"  {tag}share {share:g} {MIXED} (one model for every attack): F1 {f1s}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = pd.DataFrame(rows)
    if mixed_rows:
        pd.DataFrame(mixed_rows).to_parquet(out / "mixed.parquet", index=False)
    else:  # one attack only: no mixed setting (and no stale file from an earlier run here)
        (out / "mixed.parquet").unlink(missing_ok=True)
    corpus = {**copies, "vehicles": len(veh.ids)}  # what the numbers rest on
    _write(out, params, results, pd.DataFrame(imps, columns=["repeat", "share", "attack", "detector", "feature",
                                                             "importance"]), corpus, pd.DataFrame(mixed_rows),
           runner.evals, attackers_in_test)
    return results


def _test_attackers(test_ids: pd.DataFrame | pd.Series, attackers: np.ndarray, share: float, m: config.ModelParams
                    ) -> int:
    """Attacker vehicles on the test side; a share with fewer than `model.min_test_attackers` is refused."""
    ids = test_ids[ID] if isinstance(test_ids, pd.DataFrame) else test_ids
    n = int(np.isin(pd.unique(ids.astype(str)), np.asarray(attackers).astype(str)).sum())
    evaluation.check_attackers(share, n, m.min_test_attackers)
    return n


def hold_out(train_ids: pd.Series, attackers: np.ndarray, params: config.Params) -> frozenset:
    """The validation vehicles: `model.validation_share` of the train side's genuine vehicles (at
    least one, never all), drawn from the model seed; they are not trained on, and their scores
    choose the thresholds of the operating points (the test side never does)."""
    ids = np.sort(pd.unique(train_ids.astype(str)))
    genuine = ids[~np.isin(ids, np.asarray(attackers).astype(str))]
    if len(genuine) < 2:
        raise evaluation.TooFewAttackers(f"model.validation_share: the train side holds {len(genuine)} genuine "
                                         "vehicle(s); thresholds need genuine validation vehicles and training some")
    n = min(max(int(round(params.model.validation_share * len(genuine))), 1), len(genuine) - 1)
    rng = np.random.default_rng([params.model.seed, 19])
    return frozenset(rng.choice(genuine, size=n, replace=False).tolist())


@dataclass(frozen=True)
class _Sides:
    """Which rows are train, test and validation: by vehicle id (and, for the day split, by day)."""

    train: frozenset
    test: frozenset
    test_days: frozenset | None
    val: frozenset = frozenset()

    @classmethod
    def of(cls, train: pd.DataFrame, test: pd.DataFrame, by_day: bool, val: frozenset = frozenset()) -> "_Sides":
        models.check_disjoint(train, test, by_day)
        days = frozenset(models._days(test).tolist()) if by_day else None
        return cls(frozenset(train[ID].astype(str)) - val, frozenset(test[ID].astype(str)), days, val)

    def label(self, feats: pd.DataFrame) -> np.ndarray:
        """Per row: 0 train, 1 test, 2 validation, -1 neither (the day split drops the other side's days)."""
        ids = feats[ID].astype(str)
        tr, te, va = (ids.isin(x).to_numpy() for x in (self.train, self.test, self.val))
        if self.test_days is not None:
            in_test = np.isin(models._days(feats), list(self.test_days))
            tr, te, va = tr & ~in_test, te & in_test, va & ~in_test
        return np.where(te, 1, np.where(va, 2, np.where(tr, 0, -1)))


def _attack_one_bucket(b: int, work: str, veh: Any, specs: list[dict], attackers: np.ndarray,
                       seed_key: tuple, params: config.Params, sides: _Sides, sample_share: float,
                       run_dir: str) -> dict:
    """Attack one bucket (one spec, or every spec at once for the mixed setting), features (only
    attacker vehicles re-featurized), the split sides; write the rows the models need; return
    the dropped count, the training sample and which attack each attacker ran."""
    from wydot_lab import partitions as parts

    clean = parts.read_clean(work, b)
    if clean.empty:
        return {"dropped": 0, "sample": None, "assigned": {}}
    rng = np.random.default_rng(list(seed_key))
    if len(specs) == 1:
        attacked, assigned = parts.attack_bucket(clean, specs[0], attackers, rng, veh, work), {}
    else:  # attacks.apply_mixed, per bucket: the draw of who runs what is over every attacker
        mine = np.sort(np.asarray(list(attackers), dtype=object))
        which = rng.integers(0, len(specs), size=len(mine))
        children = rng.spawn(len(specs))
        ids = clean[ID].astype(str).to_numpy(object)
        attacked, assigned, first = None, {}, None
        taken = np.zeros(len(clean), bool)
        pieces = []
        for k, spec in enumerate(specs):
            these = mine[which == k]
            a = parts.attack_bucket(clean, spec, these, children[k], veh, work)
            first = a if first is None else first
            rows_ = np.isin(ids, these)
            pieces.append(a[rows_])
            taken |= rows_
            assigned.update(dict.fromkeys(these.tolist(), attacks.label(spec)))
        pieces.append(first[~taken])
        attacked = pd.concat(pieces).sort_index()
        attacked["is_attacker"] = np.isin(attacked[ID].astype(str).to_numpy(object), mine)
    attacked, dropped = _published(attacked, params)
    clean_feats = pd.read_parquet(Path(work) / "feats" / f"b={b:05d}" / "part.parquet")
    feats = parts.featurize_attacked(attacked, clean_feats, params.features.window)
    g = veh.index(feats[ID])
    feats[parts.POS] = veh.row_start[g] + _rank_in_vehicle(clean, feats)
    side = sides.label(feats)
    feats = feats[side >= 0].assign(_side=side[side >= 0])
    feats[feats["_side"] >= 1].to_parquet(Path(run_dir) / f"b={b:05d}.parquet")  # scored after the fit
    train = feats[feats["_side"] == 0]
    return {"dropped": dropped, "sample": _sample(train, sample_share, params.model.seed), "assigned": assigned}


def _rank_in_vehicle(clean: pd.DataFrame, feats: pd.DataFrame) -> np.ndarray:
    """Each feature row's position within its vehicle in the clean bucket (the index is the
    clean bucket's row number; rows the privacy filter dropped keep the others' ranks)."""
    ids = clean[ID].astype(str).to_numpy(object)
    first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(len(ids)), 0)) if len(ids) else np.zeros(0, int)
    idx = feats.index.to_numpy()
    return idx - start[idx]


def _sample(train: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """The training rows a bucket contributes: all of them when the train side fits
    `model.train_sample_rows`, else a seeded share of each vehicle's rows (its generator from the
    model seed and the vehicle id, so the sample does not depend on the bucketing)."""
    if share >= 1 or train.empty:
        return train
    keep = np.zeros(len(train), bool)
    ids = train[ID].astype(str).to_numpy(object)
    for vid in pd.unique(ids):
        where = np.flatnonzero(ids == vid)
        k = int(math.ceil(share * len(where)))
        rng = np.random.default_rng([seed, zlib.crc32(str(vid).encode())])
        keep[rng.choice(where, size=k, replace=False)] = True
    return train[keep]


def _side_rows(run_dir: str, b: int, side: int) -> pd.DataFrame | None:
    """The rows of one side (1 test, 2 validation) a bucket wrote for scoring; None when none."""
    f = Path(run_dir) / f"b={b:05d}.parquet"
    if not f.exists():
        return None
    feats = pd.read_parquet(f)
    rows = feats[feats["_side"] == side]
    return None if rows.empty else rows


def _validation_one_bucket(b: int, run_dir: str, dets: dict) -> dict:
    """Per detector, the histogram (score, w) of the bucket's validation rows (genuine vehicles)."""
    val = _side_rows(run_dir, b, 2)
    if val is None:
        return {}
    return {d: pd.DataFrame(dict(zip(("score", "w"), evaluation.histogram(det.score(val))))) for d, det in dets.items()}


def _alarm_threshold(thresh: dict[float, float]) -> float:
    """The vehicle alarm flags messages above the threshold of the largest FPR target."""
    return thresh[max(thresh)]


def _score_one_bucket(b: int, run_dir: str, dets: dict, assigned: dict, subsets: list[str], key: dict,
                      scores_to: str | None, thresh: dict | None = None, alarm: tuple[int, int] = (3, 5)) -> dict:
    """Score the bucket's test rows with every detector; write them; return per detector and
    subset the exact summaries the metrics are computed from (score histogram, vehicle rows)."""
    test = _side_rows(run_dir, b, 1)
    if test is None:
        return {}
    kind = np.full(len(test), attacks.GENUINE, dtype=object)  # which attack each row's vehicle ran (mixed)
    where = pd.Index(list(assigned), dtype=object).get_indexer(test[ID].astype(str).to_numpy(object))
    kind[where >= 0] = np.asarray(list(assigned.values()), dtype=object)[where[where >= 0]]
    out, frames_ = {}, []
    for det_name, det in dets.items():
        score = det.score(test)
        frames_.append(pd.DataFrame({**key, "detector": det_name, ID: test[ID].to_numpy(), TIME: test[TIME].to_numpy(),
                                     "is_attack": test["is_attack"].to_numpy(bool),
                                     "is_attack_cond": test["is_attack_cond"].to_numpy(bool), "score": score}))
        for lab in subsets:
            keep = np.ones(len(test), bool) if lab in (None, MIXED) else (kind == lab) | (kind == attacks.GENUINE)
            out[(det_name, lab)] = _summary(test[keep], score[keep], det,
                                            None if thresh is None else _alarm_threshold(thresh[det_name]), alarm)
    if scores_to is not None:  # every test message's score (per attack; the mixed setting writes none)
        pd.concat(frames_, ignore_index=True).to_parquet(f"{scores_to}-b={b:05d}.parquet", index=False)
    return out


def _summary(test: pd.DataFrame, score: np.ndarray, det: Any, alarm_at: float | None = None,
             alarm: tuple[int, int] = (3, 5)) -> dict:
    y = test["is_attack"].to_numpy(bool)
    cond = test["is_attack_cond"].to_numpy(bool)
    keep = cond | ~y
    pred = det.decide(score)
    ids = test[ID].astype(str).to_numpy()
    veh = pd.DataFrame({"id": ids, "y": y, "p": np.asarray(pred, float), "s": np.asarray(score, float)}).groupby(
        "id", sort=True).agg(y=("y", "any"), p=("p", "mean"), s=("s", "mean"))

    def hist(yy: np.ndarray, ss: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"score": ss, "y": yy}).groupby(["score", "y"], sort=False).size().rename("w").reset_index()

    out = {"message": hist(y, score), "message_cond": hist(cond[keep], score[keep]), "vehicle": veh.reset_index(),
           "held": np.array([len(test), int(veh["y"].sum()), int(y.sum())])}
    if alarm_at is not None:  # issue 19: per-vehicle rows for intervals, alarm and time to detection
        out["eval"] = evaluation.vehicle_summary(ids, test[TIME].to_numpy(), y, score, pred, alarm_at, *alarm)
    return out


def weighted_metrics(y: np.ndarray, score: np.ndarray, w: np.ndarray, decide: Callable) -> dict[str, float]:
    """`models.binary_metrics` from a histogram: distinct (score, label) pairs with their counts.
    The same numbers bit for bit (scikit-learn with the counts as sample weights; PR-AUC from
    the exact precision-recall curve), memory in distinct scores, not messages."""
    from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

    y, w = np.asarray(y, bool), np.asarray(w, float)
    n = int(w.sum())
    if not n:
        return models.binary_metrics(np.zeros(0, bool), np.zeros(0, bool), np.zeros(0))
    pred = np.asarray(decide(score), bool)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=np.nan, sample_weight=w)
    pos = int(w[y].sum())
    if not pos:
        r = f = np.nan
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True], sample_weight=w).ravel()
    ap = float(average_precision_score(y, score, sample_weight=w)) if 0 < pos < n else float("nan")
    return {"precision": float(p), "recall": float(r), "f1": float(f), "pr_auc": ap,
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp), "n": n}


class _Runner:
    """One attack setting (one spec, or all of them: mixed) of one share, bucket by bucket."""

    def __init__(self, params: config.Params, out: Path, work: str, nb: int, veh: Any, sched: Any,
                 progress: Progress):
        self.params, self.out, self.work, self.nb, self.veh = params, out, work, nb, veh
        self.sched, self.progress, self.n = sched, progress, 0
        self.evals: list[dict] = []  # issue 19: per (repeat, share, attack, detector) vehicle rows
        self.rows = [int(veh.rows[veh.bucket == b].sum()) for b in range(nb)]  # records per bucket

    def one(self, p: config.Params, rep: int, share: float, lab: str, specs: list[dict], attackers: np.ndarray,
            sides: _Sides, base: dict, save: dict | None) -> tuple[list[dict], list[dict]]:
        import dask

        self.n += 1
        run_dir = Path(self.work) / "runs" / f"{self.n:04d}"
        run_dir.mkdir(parents=True)
        m = p.model
        n_train = int(self.veh.rows[np.isin(self.veh.ids, list(sides.train))].sum())
        share_rows = min(1.0, m.train_sample_rows / max(n_train, 1))
        seed_key = (p.attacks.seed, zlib.crc32(lab.encode()), int(round(share * 1e6)))
        shared = [dask.delayed(x, pure=True) for x in (self.veh, attackers, self.params, sides)]  # once per graph
        res = _compute([dask.delayed(_attack_one_bucket)(b, self.work, shared[0], specs, shared[1], seed_key, shared[2],
                                                         shared[3], share_rows, str(run_dir)) for b in range(self.nb)],
                       self.sched, f"attack {lab} + features", self.progress, self.rows)
        dropped = int(sum(r["dropped"] for r in res))
        assigned = {k: v for r in res for k, v in r["assigned"].items()}
        samples = [r["sample"] for r in res if r["sample"] is not None and len(r["sample"])]
        train = pd.concat(samples).sort_values(_POS_COL, kind="stable") if samples else None
        if train is None:
            raise ValueError(f"experiment: no training rows for {lab} at share {share:g}")
        dets, imps = {}, []
        for det_name in m.detectors:
            det = models.make_detector(det_name, m).fit(train, train["is_attack"].to_numpy(bool))
            dets[det_name] = det
            if len(specs) == 1:
                for feat, v in (det.importances() if hasattr(det, "importances") else {}).items():
                    imps.append({"repeat": rep, "share": share, "attack": lab, "detector": det_name,
                                 "feature": feat, "importance": v})
            if save is not None:
                models.save_model(det, self.out / "models" / f"{lab}__{det_name}.joblib",
                                  {**save, "params": config.to_dict(self.params)})
        subsets = [lab] if len(specs) == 1 else [MIXED] + [attacks.label(s) for s in specs]
        key = {"repeat": rep, "share": share, "attack": lab}
        scores_to = str(self.out / "scores.parquet" / f"run{self.n:04d}") if len(specs) == 1 else None
        dets_ = dask.delayed(dets, pure=True)
        val = _compute([dask.delayed(_validation_one_bucket)(b, str(run_dir), dets_) for b in range(self.nb)],
                       self.sched, f"validation {lab}", self.progress, self.rows)
        thresh = {d: _thresholds([v[d] for v in val if d in v], m.fpr_targets) for d in dets}
        summ = _compute([dask.delayed(_score_one_bucket)(b, str(run_dir), dets_, assigned, subsets, key, scores_to,
                                                         thresh, (m.alarm_k, m.alarm_n))
                         for b in range(self.nb)], self.sched, f"score {lab}", self.progress, self.rows)
        rows = []
        for det_name in m.detectors:
            for sub in subsets:
                got = [s[(det_name, sub)] for s in summ if (det_name, sub) in s]
                rows += _rows_from(base, len(specs) > 1, sub, det_name, dets[det_name], got, dropped, len(train))
                if sub == lab:  # per attack, and the mixed setting's overall row
                    self.evals.append(_eval_entry(rep, share, sub, det_name, [g["eval"] for g in got],
                                                  [g["message"] for g in got], thresh[det_name]))
        shutil.rmtree(run_dir, ignore_errors=True)
        return rows, imps


_POS_COL = "_gpos"


def _thresholds(hists: list[pd.DataFrame], fprs: list[float]) -> dict[float, float]:
    """{fpr: threshold} from the buckets' histograms of genuine validation scores."""
    h = (pd.concat(hists).groupby("score", sort=True)["w"].sum() if hists else pd.Series(dtype=float))
    return evaluation.thresholds(h.index.to_numpy(float), fprs, h.to_numpy(float))


def _eval_entry(rep: int, share: float, attack: str, det_name: str, vehicles: list[pd.DataFrame],
                hists: list[pd.DataFrame], thresh: dict[float, float]) -> dict:
    """What `evaluation.operating_summary` needs of one run, merged over buckets: per test vehicle
    rows (sorted by id) and the message histogram (score, y, w)."""
    v = pd.concat(vehicles).sort_index() if vehicles else pd.DataFrame()
    h = (pd.concat(hists).groupby(["score", "y"], sort=True)["w"].sum().reset_index() if hists
         else pd.DataFrame({"score": [], "y": [], "w": []}))
    return {"repeat": rep, "share": share, "attack": attack, "detector": det_name, "vehicles": v, "hist": h,
            "thresholds": thresh}


def _rows_from(base: dict, mixed: bool, sub: str, det_name: str, det: Any, got: list[dict], dropped: int,
               n_train: int) -> list[dict]:
    """Results rows (one per level) from the buckets' summaries, in `run_in_memory`'s column order."""
    held = np.sum([g["held"] for g in got], axis=0) if got else np.zeros(3, int)
    res = {}
    for level in ("message", "message_cond"):
        h = (pd.concat([g[level] for g in got]).groupby(["score", "y"], sort=False)["w"].sum().reset_index()
             if got else pd.DataFrame({"score": [], "y": [], "w": []}))
        res[level] = weighted_metrics(h["y"].to_numpy(bool), h["score"].to_numpy(float), h["w"].to_numpy(float),
                                      det.decide)
    v = pd.concat([g["vehicle"] for g in got]).sort_values("id") if got else pd.DataFrame({"y": [], "p": [], "s": []})
    res["vehicle"] = models.binary_metrics(v["y"].to_numpy(bool), (v["p"] >= models.VEHICLE_SHARE).to_numpy(),
                                           v["s"].to_numpy(float))
    head = ({**base, "attack": sub, "detector": det_name, "dropped_by_privacy_filter": dropped, "n_train": n_train}
            if mixed else {**base, "dropped_by_privacy_filter": dropped, "n_train": n_train, "detector": det_name})
    row = {**head, "n_test": int(held[0]), "test_attackers": int(held[1]), "test_attacked_messages": int(held[2])}
    return [{**row, "level": level, **{k: res[level][k] for k in METRICS}} for level in LEVELS]


def run_in_memory(params: config.Params, out_dir: str | Path, progress: Progress = None,
                  table: pa.Table | None = None) -> pd.DataFrame:
    """The reference path: the whole range in one pandas frame (small corpora only; `run` is the
    out-of-core path and must give the same numbers, tests/test_partitions.py checks it)."""
    out = Path(out_dir)
    shutil.rmtree(out / "models", ignore_errors=True)  # a reused --out keeps no model of an earlier run
    (out / "models").mkdir(parents=True, exist_ok=True)
    table = load_corpus(params) if table is None else table
    frame, copies = records_frame(table)
    if frame.empty:
        raise ValueError("experiment: no valid records in the requested range")
    if copies["copies_dropped"]:
        _say(progress, f"experiment: {copies['copies_dropped']} copies of {copies['logged_more_than_once']} "
                       "BSMs logged more than once dropped (one row per transmission)")
    specs, shares, m = _specs(params), _shares(params), params.model
    for d in m.detectors:
        models.make_detector(d, m)  # fail early on an unknown detector
    by_day = m.split == "vehicle_day"
    _say(progress, f"experiment: {len(frame)} records, {frame[ID].nunique()} vehicles, {len(specs)} attacks x "
                   f"{len(m.detectors)} detectors x {len(shares)} shares")
    rows, imps, scores, mixed_rows, evals, attackers_in_test = [], [], [], [], [], {}
    with _scheduler(params.dask) as sched:
        for rep in range(m.repeats):
            p = repeat_params(params, rep)
            tag = f"repeat {rep}, " if m.repeats > 1 else ""
            for si, share in enumerate(shares):
                attackers, train_clean, test_clean = split_for_share(frame, p, share)
                attackers_in_test.setdefault(share, _test_attackers(test_clean, attackers, share, m))
                val_ids = hold_out(train_clean[ID], attackers, p)
                in_val = train_clean[ID].astype(str).isin(val_ids).to_numpy()
                train_rows, val_rows, test_rows = train_clean.index[~in_val], train_clean.index[in_val], test_clean.index
                _say(progress, f"  {tag}share {share:g}: {len(attackers)} attackers; "
                               f"{train_clean[ID].nunique()} train / {test_clean[ID].nunique()} test vehicles")
                for spec in specs:
                    lab = attacks.label(spec)
                    attacked, dropped = _published(
                        attacks.apply(frame, spec, attackers, attack_rng(p.attacks.seed, lab, share)), params)
                    feats = featurize(attacked, params, sched)
                    train, test = _sides(feats, train_rows, test_rows)
                    val = feats.loc[val_rows[val_rows.isin(feats.index)]]
                    models.check_disjoint(train, test, by_day)
                    base = {"repeat": rep, "share": share, "split": m.split, "attack": lab, "attack_name": spec["name"],
                            "attack_params": json.dumps(attacks.resolve(spec), sort_keys=True),
                            "dropped_by_privacy_filter": dropped, "n_train": len(train)}
                    for det_name in m.detectors:
                        det, score = _fit_score(det_name, p, train, test)
                        res = models.evaluate(det, test, score)
                        scores.append(pd.DataFrame({
                            "repeat": rep, "share": share, "attack": lab, "detector": det_name,
                            ID: test[ID].to_numpy(), TIME: test[TIME].to_numpy(),
                            "is_attack": test["is_attack"].to_numpy(bool),
                            "is_attack_cond": test["is_attack_cond"].to_numpy(bool),
                            "score": score}))
                        rows += _rows({**base, "detector": det_name}, test, res)
                        evals.append(_eval_in_memory(rep, share, lab, det_name, det, val, test, score, m))
                        for feat, v in (det.importances() if hasattr(det, "importances") else {}).items():
                            imps.append({"repeat": rep, "share": share, "attack": lab, "detector": det_name,
                                         "feature": feat, "importance": v})
                        if si == 0 and rep == 0:
                            models.save_model(det, out / "models" / f"{lab}__{det_name}.joblib",
                                              {"attack": spec, "share": share, "params": config.to_dict(params)})
                    f1s = {r["detector"]: round(r["f1"], 3) for r in rows[-len(LEVELS) * len(m.detectors):]
                           if r["level"] == "message"}
                    _say(progress, f"  {tag}share {share:g} {lab}: F1 {f1s}")
                if len(specs) > 1:
                    mixed_rows += _mixed(frame, specs, attackers, train_rows, test_rows, params, p, share, rep,
                                         sched, out if si == 0 and rep == 0 else None, val_rows, evals)
                    f1s = {r["detector"]: round(r["f1"], 3) for r in mixed_rows
                           if r["level"] == "message" and r["attack"] == MIXED and r["share"] == share
                           and r["repeat"] == rep}
                    _say(progress, f"  {tag}share {share:g} {MIXED} (one model for every attack): F1 {f1s}")
    results = pd.DataFrame(rows)
    if mixed_rows:
        pd.DataFrame(mixed_rows).to_parquet(out / "mixed.parquet", index=False)
    else:  # one attack only: no mixed setting (and no stale file from an earlier run here)
        (out / "mixed.parquet").unlink(missing_ok=True)
    corpus = {**copies, "vehicles": int(frame[ID].nunique())}  # what the numbers rest on
    _write(out, params, results, pd.DataFrame(imps, columns=["repeat", "share", "attack", "detector", "feature",
                                                             "importance"]), corpus, pd.DataFrame(mixed_rows),
           evals, attackers_in_test)
    # every test message's score, so PR curves and thresholds can be drawn without re-running
    pd.concat(scores, ignore_index=True).to_parquet(out / "scores.parquet", index=False)
    return results


def _eval_in_memory(rep: int, share: float, lab: str, det_name: str, det: Any, val: pd.DataFrame, test: pd.DataFrame,
                    score: np.ndarray, m: config.ModelParams) -> dict:
    """`_eval_entry` of the in-memory path: the whole test side as one bucket."""
    vs, vw = evaluation.histogram(det.score(val)) if len(val) else (np.zeros(0), np.zeros(0))
    thresh = evaluation.thresholds(vs, m.fpr_targets, vw)
    summ = _summary(test, score, det, _alarm_threshold(thresh), (m.alarm_k, m.alarm_n))
    return _eval_entry(rep, share, lab, det_name, [summ["eval"]], [summ["message"]], thresh)


def _fit_score(det_name: str, p: config.Params, train: pd.DataFrame, test: pd.DataFrame) -> tuple[Any, np.ndarray]:
    det = models.make_detector(det_name, p.model).fit(train, train["is_attack"].to_numpy(bool))
    return det, det.score(test)


def _rows(base: dict, test: pd.DataFrame, res: dict) -> list[dict]:
    """One results row per level: `base`, what the test side holds, the metrics."""
    held = {"n_test": len(test), "test_attackers": int(test.groupby(ID)["is_attack"].any().sum()),
            "test_attacked_messages": int(test["is_attack"].sum())}
    return [{**base, **held, "level": level, **{k: res[level][k] for k in METRICS}} for level in LEVELS]


def _published(attacked: pd.DataFrame, params: config.Params) -> tuple[pd.DataFrame, int]:
    """With `attacks.privacy_filter`: what publishing would keep of the attacked frame, and how
    many attacked records it dropped."""
    if not params.attacks.privacy_filter:
        return attacked, 0
    kept = attacks.privacy_filtered(attacked)
    return kept, len(attacked) - len(kept)


def _sides(feats: pd.DataFrame, train_rows: pd.Index, test_rows: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows of the split that are still there (the privacy filter may drop some)."""
    return feats.loc[train_rows[train_rows.isin(feats.index)]], feats.loc[test_rows[test_rows.isin(feats.index)]]


MIXED = "mixed"  # the all-attacks setting's overall row; its per-attack rows carry the attack's label


def _mixed(frame: pd.DataFrame, specs: list[dict], attackers: np.ndarray, train_rows: pd.Index, test_rows: pd.Index,
           params: config.Params, p: config.Params, share: float, rep: int, sched: Any, save_to: Path | None,
           val_rows: pd.Index | None = None, evals: list | None = None) -> list[dict]:
    """One model per detector for every attack at once (each attacker runs one drawn attack, same
    split): rows for all test vehicles (`attack` = "mixed") and, per attack, for the genuine test
    vehicles plus that attack's attackers: what one deployed detector catches of each."""
    attacked, assigned = attacks.apply_mixed(frame, specs, attackers, attack_rng(p.attacks.seed, MIXED, share))
    attacked, dropped = _published(attacked, params)
    feats = featurize(attacked, params, sched)
    train, test = _sides(feats, train_rows, test_rows)
    models.check_disjoint(train, test, p.model.split == "vehicle_day")
    kind = test[ID].map(assigned).fillna(attacks.GENUINE).to_numpy(object)
    subsets = [(MIXED, np.ones(len(test), bool))] + [
        (lab, (kind == lab) | (kind == attacks.GENUINE)) for lab in [attacks.label(s) for s in specs]]
    rows = []
    for det_name in p.model.detectors:
        det, score = _fit_score(det_name, p, train, test)
        if evals is not None and val_rows is not None:
            val = feats.loc[val_rows[val_rows.isin(feats.index)]]
            evals.append(_eval_in_memory(rep, share, MIXED, det_name, det, val, test, score, p.model))
        for lab, keep in subsets:
            sub = test[keep]
            rows += _rows({"repeat": rep, "share": share, "split": p.model.split, "attack": lab, "detector": det_name,
                           "dropped_by_privacy_filter": dropped, "n_train": len(train)},
                          sub, models.evaluate(det, sub, score[keep]))
        if save_to is not None:
            models.save_model(det, save_to / "models" / f"{MIXED}__{det_name}.joblib",
                              {"attack": MIXED, "attacks": specs, "share": share, "params": config.to_dict(params)})
    return rows


def _clean(x: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def f1_table(results: pd.DataFrame, share: float, level: str = "message", stat: str = "mean"
             ) -> dict[str, dict[str, float]]:
    """{detector: {attack: F1}} for one share and level: the mean over repeats (`stat="std"`: their
    spread, NaN for one repeat); undefined F1s (no attacker in a test side) are skipped."""
    r = results[(results["share"] == share) & (results["level"] == level)]
    agg = r.groupby(["detector", "attack"], sort=False)["f1"].agg(stat)
    out: dict[str, dict[str, float]] = {}
    for (d, a), v in agg.items():
        out.setdefault(d, {})[a] = float(v)
    return out


def mean_f1(results: pd.DataFrame, share: float, level: str = "message") -> dict[str, dict[str, float]]:
    """{detector: {"mean": mean F1 over attacks, "sd": spread of that mean over repeats}}: the one
    number per detector a paper cites, with how much it moves when attackers, split and models
    are drawn again (sd NaN for one repeat)."""
    r = results[(results["share"] == share) & (results["level"] == level)]
    per_repeat = r.groupby(["detector", "repeat"] if "repeat" in r else ["detector"], sort=False)["f1"].mean()
    by_det = per_repeat.groupby(level="detector", sort=False)
    return {d: {"mean": float(m), "sd": float(sd)} for (d, m), sd in zip(by_det.mean().items(), by_det.std())}


def repeat_params(params: config.Params, rep: int) -> config.Params:
    """The params of repeat `rep`: attack and model seeds + rep (repeat 0 is `params` itself)."""
    if rep == 0:
        return params
    return params.model_copy(update={"attacks": params.attacks.model_copy(update={"seed": params.attacks.seed + rep}),
                                     "model": params.model.model_copy(update={"seed": params.model.seed + rep})})


def quality_bar(results: pd.DataFrame, share: float, f1_ci: dict | None = None) -> dict[str, Any]:
    """The issue's bars, each stated plainly as met / not met with the numbers behind it; with
    `f1_ci` ({detector: {attack: [low, high]}}), the F1 bars are judged on the interval's lower end."""
    f1 = f1_table(results, share)
    rf, rules = f1.get("random_forest"), f1.get("rules")
    bars: dict[str, Any] = {}
    if rf is None or rules is None:
        bars["random_forest_vs_rules"] = {"met": None, "note": "needs detectors random_forest and rules"}
    else:
        worse = {a: {"random_forest": rf[a], "rules": rules[a]} for a in rf if rf[a] < rules[a]}
        bars["random_forest_ge_rules_every_attack"] = {"met": not worse, "worse_on": worse}
        mean_rf, mean_rules = float(np.nanmean(list(rf.values()))), float(np.nanmean(list(rules.values())))
        bars["random_forest_gt_rules_on_average"] = {"met": mean_rf > mean_rules, "random_forest": mean_rf,
                                                     "rules": mean_rules}
    if f1_ci is not None:  # issue 19: judged on the interval's lower end, not the point
        bars.pop("random_forest_ge_rules_every_attack", None)
        bars.update(evaluation.quality_bar_on_interval(f1_ci, f1, F1_BARS))
    for attack, bar in F1_BARS.items() if f1_ci is None else ():
        key = f"random_forest_f1_ge_{bar:.2f}_{attack}"
        value = None if rf is None else rf.get(attack)
        bars[key] = ({"met": None, "note": f"{attack} not in the matrix"} if value is None
                     else {"met": value >= bar, "f1": value})
    failed = [k for k, v in bars.items() if v.get("met") is False]
    unknown = [k for k, v in bars.items() if v.get("met") is None]
    bars["summary"] = ("all bars met" if not failed and not unknown else
                       "; ".join([f"NOT met: {', '.join(failed)}"] * bool(failed)
                                 + [f"not evaluated: {', '.join(unknown)}"] * bool(unknown)))
    return bars


MIN_TEST_ATTACKERS = 5  # below this a share's F1 rests on a handful of vehicles


def caveats(results: pd.DataFrame, mixed: pd.DataFrame | None = None) -> list[str]:
    """Plain warnings about what the numbers rest on: shares whose test side holds few attackers
    (none: that F1 is undefined and left out), and in the all-attacks setting how few attackers
    each attack's recall rests on."""
    out = []
    repeats = int(results["repeat"].nunique()) if "repeat" in results else 1
    over = f"min over attacks{' and repeats' if repeats > 1 else ''}"
    advice = (f"the F1 tables average {repeats} repeats, see f1_sd" if repeats > 1 else
              "set model.repeats (e.g. 5) or compare seeds before citing it")
    for share, grp in results.groupby("share", sort=True):
        few = int(grp["test_attackers"].min())
        if few == 0:
            empty = sorted(set(grp.loc[grp["test_attackers"] == 0, "attack"]))
            out.append(f"share {share:g}: no test attacker vehicle left for {', '.join(empty)} (e.g. the privacy "
                       "filter dropped every attacked record): that F1 is undefined and left out of the means")
        elif few < MIN_TEST_ATTACKERS:
            out.append(f"share {share:g}: F1 rests on {few} test attacker vehicle{'s' * (few != 1)} ({over}); {advice}")
    if mixed is not None and len(mixed):
        msg = mixed[mixed["level"] == "message"]
        for share, grp in msg.groupby("share", sort=True):
            attacks = grp[grp["attack"] != MIXED]
            per = attacks.groupby("attack")["test_attackers"].min()
            if per.min() >= MIN_TEST_ATTACKERS:
                continue
            if repeats == 1:
                whole = int(grp.loc[grp["attack"] == MIXED, "test_attackers"].min())
                none = int((per == 0).sum())
                out.append(f"mixed, share {share:g}: {whole} test attacker vehicles share {len(per)} attacks, so each "
                           f"attack's recall rests on {int(per.max())} attacker vehicle{'s' * int(per.max() != 1)} "
                           "at most"
                           + (f" and {none} attack{'s have' if none != 1 else ' has'} no test attacker at all "
                              "(no recall)" if none else "")
                           + "; set model.repeats before comparing attacks")
                continue
            wholes = grp[grp["attack"] == MIXED].groupby("repeat")["test_attackers"].min()
            per_repeat = attacks.groupby(["attack", "repeat"])["test_attackers"].min()
            seen = (per_repeat > 0).groupby(level="attack").sum()
            had, never = seen[seen > 0], int((seen == 0).sum())
            out.append(f"mixed, share {share:g}: {_span(wholes)} test attacker vehicles per repeat over {len(per)} "
                       f"attacks; in a repeat an attack's recall rests on {_span(per_repeat)} attackers"
                       + (f", and each attack's mean over {repeats} repeats on the {_span(had)} repeats that had one"
                          if len(had) else "")
                       + (f" ({never} attack{'s' * (never != 1)} had none in any repeat: no mean)" if never else ""))
    return out


def _span(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return f"{lo}" if lo == hi else f"{lo} to {hi}"


EVALUATION = ("Raw is_attack label, message level (f1_vehicle: vehicle level), means over repeats. "
              "f1, f1_by_share, f1_vehicle, mean_f1_by_share and the quality bars: one detector trained per "
              "attack (it knows the attack it meets: an upper bound). mixed: one detector per share trained "
              "on every attack at once, each attacker running one drawn attack (what a deployed detector "
              "catches): precision, recall and F1 over all test vehicles, and the recall of each attack's "
              "messages (an F1 per attack would pit a few attackers against every genuine vehicle's false "
              "alarms). An F1 with nothing to catch (no attacked record in a test set) is undefined: null.")


def mixed_table(mixed: pd.DataFrame, share: float, level: str = "message") -> dict[str, dict[str, Any]]:
    """{detector: {precision, recall, f1 (all test vehicles), recall_by_attack}}, means over repeats."""
    r = mixed[(mixed["share"] == share) & (mixed["level"] == level)]
    whole = r[r["attack"] == MIXED].groupby("detector", sort=False)[["precision", "recall", "f1"]].mean()
    caught = r[r["attack"] != MIXED].groupby(["detector", "attack"], sort=False)["recall"].mean()
    return {d: {**{k: float(v) for k, v in row.items()},
                "recall_by_attack": {a: float(v) for (dd, a), v in caught.items() if dd == d}}
            for d, row in whole.iterrows()}


def operating(params: config.Params, evals: list[dict]) -> dict[str, Any]:
    """Issue 19, keyed share -> detector -> attack label (the mixed setting's one model: "mixed"):
    `f1_ci`, `recall_ci` (95 % bootstrap over test vehicles), `operating_points` and
    `time_to_detection_s`; with repeats, each number is the mean over repeats. The bootstrap draws
    come from one generator seeded by `model.seed`, in the order of the runs."""
    rng = np.random.default_rng([params.model.seed, 19])
    per: dict[tuple, list[dict]] = {}
    for e in evals:
        got = evaluation.operating_summary(e["vehicles"], e["hist"], e["thresholds"], params.model.bootstrap, rng)
        per.setdefault((str(e["share"]), e["detector"], e["attack"]), []).append(got)
    out: dict[str, Any] = {k: {} for k in ("f1_ci", "recall_ci", "operating_points", "time_to_detection_s")}
    for (share, det, lab), runs in per.items():
        for key in out:
            first = runs[0][key]
            mean = ([float(np.nanmean([r[key][i] for r in runs])) if not all(np.isnan(r[key][i]) for r in runs)
                     else float("nan") for i in range(len(first))] if isinstance(first, list) else
                    {k: (float(np.nanmean(v)) if not np.isnan(v).all() else float("nan"))
                     for k, v in ((k, np.array([r[key][k] for r in runs], float)) for k in first)})
            out[key].setdefault(share, {}).setdefault(det, {})[lab] = mean
    return out


def paired_vs_rules(results: pd.DataFrame, share: float) -> dict[str, dict[str, Any]]:
    """{detector: {attack: paired test of its F1 against the rules' over repeats}} (needs repeats)."""
    r = results[(results["share"] == share) & (results["level"] == "message")]
    if "rules" not in set(r["detector"]) or r["repeat"].nunique() < 2:
        return {}
    f1 = r.pivot_table(index=["attack", "repeat"], columns="detector", values="f1", aggfunc="first", dropna=False)
    out: dict[str, dict[str, Any]] = {}
    for det in [d for d in f1.columns if d != "rules"]:
        for attack, grp in f1.groupby(level="attack", sort=False):
            out.setdefault(det, {})[attack] = evaluation.paired_test(grp[det].to_numpy(), grp["rules"].to_numpy())
    return out


def summary(params: config.Params, results: pd.DataFrame, mixed: pd.DataFrame | None = None,
            evals: list[dict] | None = None, attackers_in_test: dict | None = None) -> dict[str, Any]:
    """F1 tables (primary share, every share, vehicle level; means over repeats, with their spread
    `f1_sd` when there are several), the all-attacks setting (`mixed`, when run), the quality
    bars and caveats."""
    shares = _shares(params)
    primary = shares[0]
    ops = operating(params, evals) if evals else {}
    mixed_f1 = ({"mixed": {str(s): mixed_table(mixed, s) for s in shares}}
                if mixed is not None and len(mixed) else {})
    spread = {"f1_sd": f1_table(results, primary, stat="std"),
              "f1_sd_by_share": {str(s): f1_table(results, s, stat="std") for s in shares}
              } if params.model.repeats > 1 else {}
    return {
        "caveats": caveats(results, mixed),
        "evaluation": EVALUATION,
        "split": params.model.split,
        "share": primary,
        "repeats": params.model.repeats,
        "f1": f1_table(results, primary),
        **spread,
        "f1_by_share": {str(s): f1_table(results, s) for s in shares},
        "mean_f1_by_share": {str(s): mean_f1(results, s) for s in shares},
        "f1_vehicle": f1_table(results, primary, "vehicle"),
        **mixed_f1,
        "quality_bar": quality_bar(results, primary, ops["f1_ci"].get(str(primary)) if ops else None),
        **ops,
        **({"attackers_in_test": {str(s): n for s, n in attackers_in_test.items()}} if attackers_in_test else {}),
        **({"paired_vs_rules": {str(s): paired_vs_rules(results, s) for s in shares}} if params.model.repeats > 1
           else {}),
    }


def _write(out: Path, params: config.Params, results: pd.DataFrame, imps: pd.DataFrame, corpus: dict,
           mixed: pd.DataFrame, evals: list[dict] | None = None, attackers_in_test: dict | None = None) -> None:
    results.to_parquet(out / "results.parquet", index=False)
    results.to_csv(out / "results.csv", index=False)
    imps.to_parquet(out / "importances.parquet", index=False)
    metrics = {"params": config.to_dict(params), "corpus": corpus, **summary(params, results, mixed, evals, attackers_in_test),
               "results": results.to_dict(orient="records")}
    (out / "metrics.json").write_text(json.dumps(_clean(metrics), indent=1, sort_keys=False) + "\n")
    (out / "params.json").write_text(json.dumps(config.to_dict(params), indent=1) + "\n")


def run_cli(params: config.Params, out_dir: str | Path, progress: Progress = None) -> dict:
    """`wydot-lab experiment`: run the matrix; the summary is the JSON line the CLI prints."""
    run(params, out_dir, progress)
    summ = json.loads((Path(out_dir) / "metrics.json").read_text())  # the summary run just wrote
    for c in summ["caveats"]:
        _say(progress, f"caveat: {c}")
    keys = ("f1", "f1_sd", "mean_f1_by_share", "mixed", "repeats", "split", "share", "f1_by_share", "quality_bar", "caveats")
    return _clean({**{k: summ[k] for k in keys if k in summ},
                   "out": str(out_dir), "files": sorted(p.name for p in Path(out_dir).iterdir())})
