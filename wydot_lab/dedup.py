"""One row per transmission: collapse the copies of a BSM that several logs recorded.

In the WYDOT data one broadcast can be logged more than once: by its sender (`bsmTx`,
bsmSource EV), again in `bsmLogDuringEvent`, and by every connected vehicle that
received it (`rxMsg`, bsmSource RV), each copy with its own logger's `generatedAt`.
Per-vehicle features would read two copies as two messages a few milliseconds apart:
no movement at full speed, a beacon interval under 0.09 s, i.e. false alarms. A
detector judges what a vehicle *sent*, so attacks and features work on one row per
transmission; the cache keeps every copy (nothing is lost).

A copy has the same sender id, `msgCnt`, `secMark` and position, within `COPY_WINDOW_S`
of the first copy. Two distinct messages of one vehicle cannot share msgCnt (period 128
messages) and secMark (period 60 s) less than 60 s apart, so the window only has to cover
logging delay and clock skew between loggers (RV copies in the real samples lag by
0.15-0.5 s). Rows with any of these fields or the time missing are kept as they are. The
sender's own copy is kept (not bsmSource RV, not recordType rxMsg), else the earliest.
Limits: schemaVersion 1 `generatedAt` is ODE's processing time, so v1 copies processed
apart are not matched; a v3 bsmLogDuringEvent record (no bsmSource) counts as own.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from wydot_lab.frames import ID, LAT, LON, SEC_MARK, TIME, received, time_ns

COPY_WINDOW_S = 10.0
KEY = (ID, "coreData_msgCnt", SEC_MARK, LAT, LON)


def transmission_ids(frame: pd.DataFrame, window_s: float = COPY_WINDOW_S, t: np.ndarray | None = None) -> np.ndarray:
    """A transmission number per row (copies of one BSM share it), in row order. Every copy
    lies within `window_s` of the first copy of its transmission. `t`: the rows' generatedAt
    as `time_ns`, if the caller has it already."""
    n = len(frame)
    if n == 0:
        return np.zeros(0, np.int64)
    codes = [pd.factorize(frame[c], use_na_sentinel=True)[0] for c in KEY]
    t = time_ns(frame[TIME]) if t is None else t
    known = np.logical_and.reduce([c >= 0 for c in codes]) & (t != np.iinfo(np.int64).min)  # NaT
    order = np.lexsort((t, *reversed(codes)))
    same = np.ones(n, bool)
    for c in codes:
        s = c[order]
        same[1:] &= s[1:] == s[:-1]
    ts = t[order]
    window = int(window_s * 1e9)
    same[1:] &= (ts[1:] - ts[:-1]) <= window
    same[1:] &= known[order][1:] & known[order][:-1]
    same[0] = False
    starts = np.flatnonzero(~same)
    ends = np.r_[starts[1:], n]
    long = ts[ends - 1] - ts[starts] > window
    for a, z in zip(starts[long], ends[long]):
        first = ts[a]  # a chain of copies longer than the window (rare): a new one after it
        for i in range(a + 1, z):
            if ts[i] - first > window:
                same[i], first = False, ts[i]
    ids = np.empty(n, np.int64)
    ids[order] = np.cumsum(~same) - 1
    return ids


def kept(frame: pd.DataFrame, window_s: float = COPY_WINDOW_S) -> tuple[np.ndarray, dict]:
    """(positions of one row per transmission, ascending; counts): the sender's own copy where
    logged, else the earliest."""
    n = len(frame)
    t = time_ns(frame[TIME])
    ids = transmission_ids(frame, window_s, t)
    pick = np.lexsort((np.arange(n), t, received(frame), ids))  # per transmission: own copy, then earliest
    first = np.ones(n, bool)
    first[1:] = ids[pick][1:] != ids[pick][:-1]
    keep = np.sort(pick[first])
    copies = np.bincount(ids, minlength=int(ids.max()) + 1 if n else 0)
    return keep, {"records": n, "transmissions": len(keep), "copies_dropped": n - len(keep),
                  "logged_more_than_once": int((copies > 1).sum())}


def collapse(frame: pd.DataFrame, window_s: float = COPY_WINDOW_S) -> tuple[pd.DataFrame, dict]:
    """(one row per transmission, in input order; counts). The index is kept, so a row can be
    traced back to its record; with no copies the frame itself comes back."""
    keep, report = kept(frame, window_s)
    return (frame if len(keep) == len(frame) else frame.iloc[keep]), report
