"""Defect lines: a planned share of truncated, TIM, wrong-type, ... lines written right after
the valid record each is made from, so ingest's quarantine has something real to catch.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from wydot_lab.synth.fleet import HOUR_MS

# Real objects are not clean. With defect_share > 0 an object also holds defect lines, each
# written right after a valid record and made from that record's own text (a garbled
# retransmission of it), so it carries that record's ids and times. The plan (how many,
# after which rows, which kind) comes from its own generator, seeded (seed, 2, hour, block):
# the valid records, their generator and the bytes of a defect_share 0 corpus do not change.
# Defects are few, so each line is built in Python.
NOT_QUARANTINED = ("non_bsm", "blank")


@dataclass(frozen=True)
class Defects:
    """The defect lines of one block, ascending by `row`: each is written right after valid
    row `row` (block row index) and made from that row's text."""

    row: np.ndarray
    kind: np.ndarray  # index into KINDS
    u: np.ndarray  # uniform in [0, 1): where a truncated line is cut, a TIM's packet id

    def counts(self) -> dict[str, int]:
        return {KINDS[k]: int(n) for k, n in zip(*np.unique(self.kind, return_counts=True))}

    def between(self, a: int, z: int) -> Defects:
        """The defect lines after rows a..z-1 (one object's)."""
        i, j = np.searchsorted(self.row, [a, z])
        return Defects(self.row[i:j], self.kind[i:j], self.u[i:j])


_NO_DEFECTS = Defects(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def plan_defects(seed: int, hour_ms: int, block: int, objects: list, share: float) -> Defects:
    """Per object, n * share / (1 - share) defect lines for its n valid records (rounded up or
    down at random, so `share` of all lines written are defects on average), after uniformly
    drawn rows, of uniformly drawn kinds."""
    if share <= 0:
        return _NO_DEFECTS
    rng = np.random.default_rng([seed, 2, hour_ms // HOUR_MS, block])
    rows, kinds, us = [], [], []
    for _, a, z in objects:
        mean = (z - a) * share / (1.0 - share)
        n = int(mean) + int(rng.random() < mean - int(mean))
        rows.append(np.sort(rng.integers(a, z, n)))
        kinds.append(rng.integers(0, len(KINDS), n))
        us.append(rng.random(n))
    return Defects(np.concatenate(rows), np.concatenate(kinds), np.concatenate(us))


def _sub1(pattern: bytes, repl: bytes, rec: bytes) -> bytes:
    out, n = re.subn(pattern, repl, rec, count=1)
    if n != 1:
        raise AssertionError(f"defect: {pattern!r} not in the record")
    return out


def _generated_at(rec: bytes):
    """(match of the recordGeneratedAt text, that time)"""
    m = re.search(rb'"recordGeneratedAt":"([^"]+)"', rec)
    return m, dt.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def _tim(rec: bytes, u: float) -> bytes:
    """A TIM-shaped record (dnMsg, OdeTimPayload, a J2735 TravelerInformation advisory) with the
    metadata of `rec`: ingest files it under non-BSM type `TravelerInformation`."""
    md = rec[: rec.index(b',"payload":')]
    v9 = _is_v9(rec)  # v9 has no bsmSource (its `source` stays) and one payloadType for every frame
    for old, new in (
        (rb'"bsmSource":"[ER]V",', b""),
        (rb'"logFileName":"(?:bsmTx|rxMsg)_', b'"logFileName":"dnMsg_'),
        (rb'"recordType":"(?:bsmTx|rxMsg)"', b'"recordType":"dnMsg"'),
        (rb"OdeBsmPayload", b"OdeTimPayload"),
    ):
        if not (v9 and old in (rb'"bsmSource":"[ER]V",', rb"OdeBsmPayload")):
            md = _sub1(old, new, md)
    _, t = _generated_at(rec)
    minute = int((t - dt.datetime(t.year, 1, 1)).total_seconds() // 60)  # J2735 MinuteOfTheYear
    frame = (
        f'{{"frameType":"advisory",'
        f'"msgId":{{"roadSignID":{{"viewAngle":"1111111111111111","mutcdCode":"warning"}}}},'
        f'"startYear":{t.year},"startTime":{minute},"durationTime":120,"priority":5,'
        f'"content":{{"advisory":{{"SEQUENCE":[{{"item":{{"itis":5378}}}}]}}}}}}'
    )
    cnt = int(re.search(rb'"msgCnt":(\d+)', rec).group(1))
    tim = (
        f'{{"msgCnt":{cnt},"timeStamp":{minute},"packetID":"{int(u * 2**72):018X}","urlB":"null",'
        f'"dataFrames":{{"TravelerDataFrame":{frame}}}}}'
    )
    return (
        md
        + (
            f',"payload":{{"dataType":"TravelerInformation","data":{{"MessageFrame":{{"messageId":31,'
            f'"value":{{"TravelerInformation":{tim}}}}}}}}}}}'
        ).encode()
    )


def _bad_time(rec: bytes) -> bytes:
    m, t = _generated_at(rec)
    text = t.strftime("%m/%d/%Y %I:%M:%S") + (" AM" if t.hour < 12 else " PM")  # %p follows the locale
    return rec[: m.start(1)] + text.encode() + rec[m.end(1) :]


def _is_v9(rec: bytes) -> bool:
    return b'"schemaVersion":9,' in rec


class DefectKind(NamedTuple):
    outcome: str  # what ingest makes of it: its quarantine reason (validate.rule_name), non_bsm or blank
    make: Callable[[bytes, float], bytes]  # (valid record as written, u) -> the defect line's text


DEFECTS = {
    "truncated": DefectKind("not_json", lambda rec, u: rec[: int(len(rec) * (0.1 + 0.8 * u))]),  # cut mid-record
    "tim": DefectKind("non_bsm", _tim),  # a TIM (dnMsg, OdeTimPayload) among the BSMs
    "wrong_type": DefectKind(
        "wrong_type",
        lambda rec, u: _sub1(  # coreData.speed "unavailable" (a string)
            rb'("transmission":"(?:NEUTRAL|neutral)","speed":)[0-9.]+', rb'\1"unavailable"', rec
        ),
    ),
    "missing_coreData": DefectKind(
        "missing_coreData", lambda rec, u: rec[: rec.index(b'"coreData":')] + rec[rec.index(b'"partII":') :]
    ),
    "unknown_schema_version": DefectKind(
        "unknown_schema_version",
        lambda rec, u: _sub1(  # the first unknown: 10
            rb'"schemaVersion":[6-9],', b'"schemaVersion":10,', rec
        ),
    ),
    "out_of_range": DefectKind(
        "heading_range",
        lambda rec, u: (
            _sub1(  # coreData.heading 400 deg
                rb'("heading":)[0-9]+(,"accelSet")', rb"\g<1>32000\2", rec
            )
            if _is_v9(rec)
            else _sub1(rb'("heading":)[0-9.]+(,"brakes")', rb"\g<1>400.0000\2", rec)
        ),
    ),
    "bad_timestamp": DefectKind("bad_timestamp", lambda rec, u: _bad_time(rec)),  # CSV export's "%m/%d/%Y %I:%M:%S %p"
    "blank": DefectKind("blank", lambda rec, u: b""),
}
KINDS = tuple(DEFECTS)


def defect_line(kind: str, rec: bytes, u: float = 0.5) -> bytes:
    """One defect line (with its newline) made from `rec`, a valid record as written (no newline)."""
    return DEFECTS[kind].make(rec, u) + b"\n"


def _with_defects(chunks, start: int, bad: Defects):
    """An object's chunks (whole lines, rows from block row `start`) with the defect lines of
    `bad` (this object's) each after its row. Only chunks holding one are cut (their line ends
    found in one vectorised pass); the others are only counted."""
    rows, kinds, us = bad.row.tolist(), bad.kind.tolist(), bad.u.tolist()
    i, first = 0, start
    for blob in chunks:
        n = blob.count(b"\n")
        k = bisect.bisect_left(rows, first + n, i)
        if k == i:
            yield blob
            first += n
            continue
        view = memoryview(blob)
        ends = np.flatnonzero(np.frombuffer(blob, np.uint8) == 10)  # line ends, one vectorised pass
        done = 0  # bytes before `done` are out
        for d in range(i, k):
            r = rows[d] - first
            pos, end = (int(ends[r - 1]) + 1 if r else 0), int(ends[r])
            yield view[done : end + 1]
            yield defect_line(KINDS[kinds[d]], bytes(view[pos:end]), us[d])
            done = end + 1
        yield view[done:]
        i, first = k, first + n
