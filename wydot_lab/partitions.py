"""Out of core: the experiment's records as vehicle buckets on disk, worked one bucket per task.

The data flow (docs/SCALE.md):
  1. `scatter`: the records per vehicle are counted (id and time columns only), vehicles packed
     into buckets of about `target_rows` (`Buckets`: largest first, a vehicle never split); each
     input piece (a partition of `cache.load`, read by the worker that runs the task, or a slice
     of a given table) is split by bucket into `raw/b=<bucket>/p=<piece>.parquet`: a disk
     shuffle, so every vehicle's whole range lands in one bucket and no process holds the range;
  2. `prepare`: per bucket, the date filter, `dedup` (copies share their sender id, so per bucket
     is exact), the (id, time sent) order, the clean features once, and a small summary per
     vehicle (rows, runs, valid positions, days) that the driver concatenates into a `Vehicles`
     table: ids are small, records are big;
  3. per attack, per bucket: the attack runs on the bucket with `SlicedGenerator`, which hands the
     attack exactly the draws it would get on the whole corpus (each draw over all vehicles or
     all messages is made over the whole corpus' count and sliced to the bucket's vehicles, in
     chunks), so the result does not depend on the bucketing and equals the in-memory path bit
     for bit. Cross-vehicle attacks: data_replay reads its victims' clean rows from their buckets
     (one vehicle each), position_swap looks its donors up in a memory-mapped table of every valid
     position (16 bytes per record, written per bucket). Only attacker vehicles are re-featurized;
     every other row keeps the clean features of step 2.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from wydot_lab import attacks, dedup, features, geo
from wydot_lab.frames import ID, LAT, LON, TIME, by_vehicle, floats, runs_start, time_ns, to_frame, to_table
from wydot_lab.schema import BSM_SCHEMA

CHUNK = 1 << 20  # draws per chunk when slicing a whole-corpus draw (memory: 8 MB)
SCATTER_ROWS = 50_000  # an input piece is split by bucket this many records at a time
FEATURE_ROWS = 50_000  # featurize a bucket in runs of whole vehicles of about this many rows
POS = "_gpos"  # a row's position in the whole corpus' (vehicle, time sent) order

# Per attack, what each draw of its generator spans, in call order: "veh" every vehicle (sorted
# ids), "msg" every message in (vehicle, time sent) order, "run" every run. The bucket's entries
# are sliced out; tests/test_partitions.py checks every attack against the whole-corpus result.
DRAWS: dict[str, tuple[str, ...]] = {
    "const_position": ("veh", "veh", "veh"),
    "const_offset": ("veh", "veh"),
    "random_offset": ("msg", "msg"),
    "random_position": ("msg", "msg", "msg"),
    "position_swap": ("msg",),
    "eventual_stop": ("msg",),
    "const_speed": ("veh",),
    "speed_offset": ("veh", "veh"),
    "random_speed": ("msg",),
    "heading_reversal": (),
    "data_replay": ("veh", "run"),
}


def count_piece(piece: pd.DataFrame | pa.Table, t0: np.datetime64, t1: np.datetime64) -> pd.Series:
    """Records per vehicle id of one input piece within [t0, t1) (only the id and time are read)."""
    if isinstance(piece, pa.Table):
        piece = piece.select([ID, TIME]).to_pandas()
    t = time_ns(piece[TIME])
    lo, hi = (np.datetime64(x, "ns").astype(np.int64) for x in (t0, t1))
    return pd.Series(np.asarray(piece[ID].astype(str), dtype=object)[(t >= lo) & (t < hi)]).value_counts()


@dataclass(frozen=True)
class Buckets:
    """Which bucket each vehicle's records go to: vehicles packed largest first into the least
    full of `n` buckets (a vehicle is never split; ids are small, so this is one list on the driver)."""

    ids: np.ndarray  # sorted vehicle ids
    bucket: np.ndarray
    n: int

    @classmethod
    def pack(cls, counts: pd.Series, target_rows: int, n: int | None = None) -> "Buckets":
        counts = counts.groupby(level=0).sum()
        n = n or max(1, -(-int(counts.sum()) // target_rows))
        ids = np.asarray(counts.index.astype(str), dtype=object)
        order = np.lexsort((ids, -counts.to_numpy()))  # largest first, ties by id: deterministic
        load = [(0, b) for b in range(n)]
        heapq.heapify(load)
        bucket = np.zeros(len(ids), np.int64)
        for i in order:
            rows, b = heapq.heappop(load)
            bucket[i] = b
            heapq.heappush(load, (rows + int(counts.iloc[i]), b))
        srt = np.argsort(ids, kind="stable")
        return cls(ids[srt], bucket[srt], n)

    def of(self, ids: Any) -> np.ndarray:
        where = pd.Index(self.ids).get_indexer(np.asarray(pd.Series(ids).astype(str), dtype=object))
        if (where < 0).any():
            raise AssertionError("a vehicle that was not counted")
        return self.bucket[where]


def _bucket_dir(work: Path, kind: str, b: int) -> Path:
    return work / kind / f"b={b:05d}"


# ---------------------------------------------------------------- 1. scatter


def scatter_piece(piece: pd.DataFrame | pa.Table, i: int, work: str, buckets: Buckets,
                  t0: np.datetime64, t1: np.datetime64) -> int:
    """Split one input piece by bucket into raw/b=<b>/p=<i>-<slice>.parquet (rows outside [t0, t1)
    dropped), `SCATTER_ROWS` rows at a time (an hour of a busy day is 400k records: converted
    whole, it took a worker's memory three times over); returns its row count."""
    n = piece.num_rows if isinstance(piece, pa.Table) else len(piece)
    done = 0
    for j, start in enumerate(range(0, n, SCATTER_ROWS)):
        part = piece.slice(start, SCATTER_ROWS) if isinstance(piece, pa.Table) else piece.iloc[start:start + SCATTER_ROWS]
        done += _scatter_slice(part if isinstance(part, pa.Table) else to_table(part), f"p={i:06d}-{j:04d}", work,
                               buckets, t0, t1)
    return done


def _scatter_slice(table: pa.Table, name: str, work: str, buckets: Buckets, t0: np.datetime64,
                   t1: np.datetime64) -> int:
    t = table.column(TIME).to_numpy(zero_copy_only=False).astype("datetime64[ms]")
    table = table.filter(pa.array((t >= t0) & (t < t1)))
    if not table.num_rows:
        return 0
    b = buckets.of(table.column(ID).to_pandas())
    order = np.argsort(b, kind="stable")
    bs = b[order]
    cuts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
    for lo, hi in zip(cuts, np.r_[cuts[1:], len(bs)]):
        d = _bucket_dir(Path(work), "raw", int(bs[lo]))
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(np.sort(order[lo:hi]))), d / f"{name}.parquet")
    return table.num_rows


# ---------------------------------------------------------------- 2. prepare


def _read_dir(d: Path) -> pa.Table | None:
    files = sorted(d.glob("*.parquet")) if d.is_dir() else []
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def prepare_bucket(b: int, work: str, window: int) -> dict:
    """Dedup, order and clean features of one bucket; written to clean/ and feats/. Returns the
    dedup counts and one summary row per vehicle."""
    w = Path(work)
    table = _read_dir(_bucket_dir(w, "raw", b))
    empty = {"records": 0, "transmissions": 0, "copies_dropped": 0, "logged_more_than_once": 0}
    if table is None:
        return {"copies": empty, "vehicles": pd.DataFrame(columns=[ID, "rows", "runs", "valid", "days"])}
    frame = to_frame(table)
    keep, report = dedup.kept(frame)
    order = by_vehicle(frame).order
    order = order[np.isin(order, keep, assume_unique=True)]
    clean = frame.take(order).reset_index(drop=True)
    del frame, table  # a worker holds a few copies of one bucket at most
    d = _bucket_dir(w, "clean", b)
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(clean), d / "part.parquet")
    feats = featurize_by_vehicles(clean, window)
    d = _bucket_dir(w, "feats", b)
    d.mkdir(parents=True, exist_ok=True)
    feats.to_parquet(d / "part.parquet")
    vo = by_vehicle(clean)
    ids = clean[ID].astype(str).to_numpy(object)
    x, y = _local_xy(clean)
    summary = pd.DataFrame({ID: ids, "runs": runs_start(vo.dt_s).astype(int),
                            "valid": (np.isfinite(x) & np.isfinite(y)).astype(int),
                            "day": pd.to_datetime(clean[TIME], utc=True).dt.strftime("%Y-%m-%d").to_numpy()})
    per = summary.groupby(ID, sort=True).agg(rows=("runs", "size"), runs=("runs", "sum"), valid=("valid", "sum"),
                                             days=("day", lambda s: tuple(sorted(set(s)))))
    return {"copies": report, "vehicles": per.reset_index()}


def featurize_by_vehicles(frame: pd.DataFrame, window: int) -> pd.DataFrame:
    """`features.featurize_frame` of a frame in (id, time) order, a few whole vehicles at a time
    (features read one vehicle's rows only, so the result is the same; the temporaries are not)."""
    ids = frame[ID].astype(str).to_numpy(object)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, int)
    cuts = [0]
    for s in starts[1:]:
        if s - cuts[-1] >= FEATURE_ROWS:
            cuts.append(int(s))
    cuts.append(len(frame))
    if len(cuts) == 2:
        return features.featurize_frame(frame, window)
    return pd.concat([features.featurize_frame(frame.iloc[a:z], window) for a, z in zip(cuts[:-1], cuts[1:])])


def _local_xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    x, y = geo.to_local(floats(frame, LAT), floats(frame, LON))
    return np.asarray(x, float), np.asarray(y, float)


@dataclass(frozen=True)
class Vehicles:
    """Every vehicle of the corpus, in sorted id order (what `frames.vehicle_codes` sorts by), with
    its bucket and where its messages, runs and valid positions start in the whole corpus."""

    ids: np.ndarray
    bucket: np.ndarray
    rows: np.ndarray
    row_start: np.ndarray
    run_start: np.ndarray
    valid_start: np.ndarray
    days: list[tuple]
    n_rows: int
    n_runs: int
    n_valid: int

    @classmethod
    def from_summaries(cls, per: list[pd.DataFrame], buckets: Buckets) -> "Vehicles":
        v = pd.concat([p for p in per if len(p)], ignore_index=True) if any(len(p) for p in per) else \
            pd.DataFrame(columns=[ID, "rows", "runs", "valid", "days"])
        codes, uniq = pd.factorize(v[ID].astype(str), sort=True)
        v = v.iloc[np.argsort(codes, kind="stable")]
        if len(uniq) != len(v):
            raise AssertionError("a vehicle sits in two buckets")
        ids = v[ID].to_numpy(object)
        rows, runs, valid = (v[c].to_numpy(np.int64) for c in ("rows", "runs", "valid"))

        def starts(a: np.ndarray) -> np.ndarray:
            return np.r_[0, np.cumsum(a)[:-1]].astype(np.int64) if len(a) else a

        return cls(ids, buckets.of(ids), rows, starts(rows), starts(runs), starts(valid),
                   list(v["days"]), int(rows.sum()), int(runs.sum()), int(valid.sum()))

    def index(self, ids: Any) -> np.ndarray:
        return pd.Index(self.ids).get_indexer(np.asarray(pd.Series(ids).astype(str), dtype=object))

    def frame(self, by_day: bool = False) -> pd.DataFrame:
        """One row per vehicle (or per vehicle and day) with a timestamp: what `models.split` needs."""
        if not by_day:
            return pd.DataFrame({ID: self.ids, TIME: pd.Timestamp("2000-01-01", tz="UTC")})
        pairs = [(i, d) for i, ds in zip(self.ids, self.days) for d in ds]
        return pd.DataFrame({ID: [p[0] for p in pairs], TIME: pd.to_datetime([p[1] for p in pairs], utc=True)})


# ---------------------------------------------------------------- exact draws per bucket


def _span_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges [start, start + count), in order."""
    if not len(counts):
        return np.zeros(0, np.int64)
    total = int(counts.sum())
    offs = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return (np.arange(total) + offs).astype(np.int64)


def sliced_draw(fn: Callable[[int], np.ndarray], total: int, pos: np.ndarray) -> np.ndarray:
    """`fn(total)[pos]` (pos ascending) without holding `total` values: the draw is made in
    chunks, which a numpy Generator makes bit for bit the same as one call."""
    out, parts, start = None, [], 0
    while start < total:
        n = min(CHUNK, total - start)
        chunk = fn(n)
        lo, hi = np.searchsorted(pos, [start, start + n])
        parts.append(chunk[pos[lo:hi] - start])
        start += n
    if not parts:
        out = fn(0)
        return out[:0]
    return np.concatenate(parts)


class SlicedGenerator:
    """Stands in for the run's `numpy.random.Generator` while an attack runs on one bucket: each
    call, per `plan` ("veh" | "msg" | "run" | "all"), is drawn over the whole corpus' vehicles,
    messages or runs and returns the bucket's entries, so the attack sees the same numbers it
    would see on the whole corpus."""

    def __init__(self, rng: np.random.Generator, plan: tuple[str, ...], pos: dict[str, tuple[int, np.ndarray]],
                 child_plans: list[tuple[str, ...]] | None = None):
        self.rng, self.plan, self.pos, self.child_plans, self.calls = rng, plan, pos, child_plans, 0

    def _draw(self, method: str, *args: Any, size: Any = None, **kw: Any) -> np.ndarray:
        if self.calls >= len(self.plan):
            raise AssertionError(f"attack drew more than its plan {self.plan}")
        kind = self.plan[self.calls]
        self.calls += 1
        f = getattr(self.rng, method)
        if kind == "all":
            return f(*args, size=size, **kw)
        total, pos = self.pos[kind]
        if size != len(pos):
            raise AssertionError(f"draw {self.calls} of plan {self.plan}: size {size}, bucket holds {len(pos)} {kind}")
        if kind == "veh":  # vehicles are few: draw them all
            return f(*args, size=total, **kw)[pos]
        return sliced_draw(lambda n: f(*args, size=n, **kw), total, pos)

    def uniform(self, *a: Any, **k: Any) -> np.ndarray:
        return self._draw("uniform", *a, **k)

    def random(self, *a: Any, **k: Any) -> np.ndarray:
        return self._draw("random", *a, **k)

    def integers(self, *a: Any, **k: Any) -> np.ndarray:
        return self._draw("integers", *a, **k)

    def choice(self, *a: Any, **k: Any) -> np.ndarray:
        return self._draw("choice", *a, **k)

    def spawn(self, n: int) -> list["SlicedGenerator"]:
        plans = self.child_plans or []
        return [SlicedGenerator(c, plans[k], self.pos) for k, c in enumerate(self.rng.spawn(n))]


def positions(veh: Vehicles, local_ids: np.ndarray) -> dict[str, tuple[int, np.ndarray]]:
    """Whole-corpus positions of a bucket's vehicles (sorted local ids), messages and runs."""
    g = veh.index(local_ids)
    return {"veh": (len(veh.ids), g.astype(np.int64)),
            "msg": (veh.n_rows, _span_positions(veh.row_start[g], veh.rows[g])),
            "run": (veh.n_runs, _span_positions(veh.run_start[g], np.diff(np.r_[veh.run_start, veh.n_runs])[g]))}


def read_clean(work: str, b: int, ids: Any = None) -> pd.DataFrame:
    """A bucket's clean rows (optionally only these vehicles), in (id, time sent) order."""
    f = _bucket_dir(Path(work), "clean", b) / "part.parquet"
    if not f.exists():
        return to_frame(BSM_SCHEMA.empty_table())
    filt = None if ids is None else [(ID, "in", list(map(str, ids)))]
    return to_frame(pq.read_table(f, filters=filt))


def donors_path(work: str) -> Path:
    return Path(work) / "donors.npy"


def write_donors(b: int, work: str, veh: Vehicles) -> None:
    """Write the bucket's valid positions (lat, lon) at their whole-corpus valid index."""
    clean = read_clean(work, b)
    if clean.empty:
        return
    x, y = _local_xy(clean)
    ok = np.isfinite(x) & np.isfinite(y)
    g = veh.index(np.unique(clean[ID].astype(str).to_numpy(object)))
    counts = pd.Series(ok).groupby(clean[ID].astype(str).to_numpy(object), sort=True).sum().to_numpy(np.int64)
    where = _span_positions(veh.valid_start[g], counts)
    mm = np.load(donors_path(work), mmap_mode="r+")
    mm[where, 0], mm[where, 1] = floats(clean, LAT)[ok], floats(clean, LON)[ok]
    mm.flush()


def attack_bucket(clean: pd.DataFrame, spec: dict, attackers: np.ndarray, rng: np.random.Generator,
                  veh: Vehicles, work: str) -> pd.DataFrame:
    """One attack on one bucket, as on the whole corpus (see module doc)."""
    ids = np.unique(clean[ID].astype(str).to_numpy(object))
    pos = positions(veh, ids)
    name = spec["name"]
    if name == "position_swap":
        return _swap_bucket(clean, spec, attackers, rng, veh, work, pos)
    if name == "data_replay":
        return _replay_bucket(clean, spec, attackers, rng, veh, work, pos)
    return attacks.apply(clean, spec, attackers, SlicedGenerator(rng, DRAWS[name], pos))


def _swap_bucket(clean: pd.DataFrame, spec: dict, attackers: np.ndarray, rng: np.random.Generator,
                 veh: Vehicles, work: str, pos: dict) -> pd.DataFrame:
    f = clean.assign(is_attacker=clean[ID].isin(set(np.asarray(attackers).tolist())).to_numpy(bool))
    params = attacks.resolve(spec)
    ctx = attacks._ctx(f)
    if veh.n_valid < 2:
        return attacks._labelled(f.copy(deep=False), np.zeros(ctx.n, bool), np.zeros(ctx.n, bool), params)
    g = sliced_draw(lambda n: rng.integers(0, veh.n_valid, size=n), veh.n_rows, pos["msg"][1])
    g = attacks._per_message(ctx, g)
    mm = np.load(donors_path(work), mmap_mode="r")
    dlat, dlon = mm[g, 0], mm[g, 1]
    dx, dy = geo.to_local(dlat, dlon)
    return attacks.swap_to(f, ctx, np.asarray(dx, float), np.asarray(dy, float), params, _local_xy(f))


def _replay_bucket(clean: pd.DataFrame, spec: dict, attackers: np.ndarray, rng: np.random.Generator,
                   veh: Vehicles, work: str, pos: dict) -> pd.DataFrame:
    """The bucket plus its attackers' victims' clean rows (one vehicle each, from their buckets)."""
    params = attacks.resolve(spec)
    n_veh = len(veh.ids)
    mine = set(np.asarray(attackers).tolist())
    if n_veh < 2:
        f = clean.assign(is_attacker=clean[ID].isin(mine).to_numpy(bool))
        return attacks._labelled(f.copy(deep=False), np.zeros(len(f), bool), np.zeros(len(f), bool), params)
    victim = rng.integers(0, n_veh - 1, size=n_veh)
    victim = victim + (victim >= np.arange(n_veh))  # the whole corpus' draw, as data_replay makes it
    local = veh.index(np.unique(clean[ID].astype(str).to_numpy(object)))
    wanted = np.unique(victim[local[np.isin(veh.ids[local], list(mine))]])
    extra = [v for v in wanted if v not in set(local.tolist())]
    pieces = [clean]
    for b in np.unique(veh.bucket[extra]) if extra else []:
        pieces.append(read_clean(work, int(b), veh.ids[[v for v in extra if veh.bucket[v] == b]]))
    ext = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else clean
    ext_ids = ext[ID].astype(str).to_numpy(object)
    f = ext.assign(is_attacker=pd.Series(ext_ids).isin(mine).to_numpy(bool) & (np.arange(len(ext)) < len(clean)))
    ctx = attacks._ctx(f)
    codes = veh.index(np.unique(ext_ids))  # whole-corpus index of each local vehicle code
    to_local = pd.Series(np.arange(len(codes)), index=codes)
    vict = to_local.reindex(victim[codes]).fillna(-1).to_numpy(np.int64)
    runs = np.diff(np.r_[veh.run_start, veh.n_runs])
    run_pos = _span_positions(veh.run_start[codes], runs[codes])
    order = np.argsort(run_pos, kind="stable")  # local runs in whole-corpus order for the chunked draw

    def switch_draw(n_runs: int) -> np.ndarray:
        if n_runs != len(run_pos):
            raise AssertionError(f"data_replay: {n_runs} runs, the vehicle table says {len(run_pos)}")
        u = np.empty(n_runs)
        u[order] = sliced_draw(lambda n: rng.random(n), veh.n_runs, run_pos[order])
        return u

    out = attacks.replay(f, ctx, vict, switch_draw, params)
    return out.iloc[:len(clean)]


def featurize_attacked(attacked: pd.DataFrame, clean_feats: pd.DataFrame, window: int) -> pd.DataFrame:
    """Features of an attacked bucket: attacker vehicles re-featurized, every other row keeps its
    clean features (genuine labels added). Rows in the attacked frame's (id, time) order."""
    att = attacked["is_attacker"].to_numpy(bool)
    genuine = clean_feats.loc[attacked.index[~att]]
    genuine = genuine.assign(is_attacker=False, is_attack=False, is_attack_cond=False,
                             attack_type=attacks.GENUINE)
    redone = featurize_by_vehicles(attacked[att], window)
    cols = list(redone.columns)
    out = pd.concat([genuine[cols], redone]) if len(redone) else genuine[cols]
    return out.sort_index()  # the clean bucket's index is its (id, time sent) order
