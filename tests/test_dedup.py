"""One row per transmission: copies of a BSM logged by several loggers collapse, distinct
messages never do."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

import bsm_frames as B
from wydot_lab import dedup, experiment, features
from wydot_lab.frames import ID, TIME, to_frame


def _received_copies(table: pa.Table, rows: list[int], delay_ms: int) -> pa.Table:
    """What a receiver logs of some of the vehicle's messages: the same payload, its own
    generatedAt (`delay_ms` later), bsmSource RV, record type rxMsg."""
    copy = table.take(rows)
    t = copy.column(TIME).to_numpy() + np.timedelta64(delay_ms, "ms")
    return B.replaced(copy, metadata_generatedAt=t, metadata_bsmSource=["RV"] * len(rows),
                      metadata_recordType=["rxMsg"] * len(rows))


def test_received_copies_collapse_to_the_senders_own_message():
    own = B.replaced(B.corridor(vehicles=1, msgs=30), metadata_bsmSource=["EV"] * 30)
    logged = pa.concat_tables([_received_copies(own, [3, 4, 10, 20], 40),
                               _received_copies(own, [10], -300),  # a receiver whose clock runs behind
                               own])
    frame = to_frame(logged)
    assert features.featurize_frame(frame)["flag_beacon"].sum() > 0  # the copies read as messages 40 ms apart

    out, report = dedup.collapse(frame)
    assert report == {"records": 35, "transmissions": 30, "copies_dropped": 5, "logged_more_than_once": 4}
    assert (out["metadata_bsmSource"] == "EV").all()  # the sender's copy wins, even over an earlier one
    assert list(out.index) == list(range(5, 35))  # input order and index kept
    clean = features.featurize_frame(to_frame(own))
    pd.testing.assert_frame_equal(features.featurize_frame(out).reset_index(drop=True), clean)
    assert clean["flag_count"].sum() == 0


def test_only_received_copies_keep_the_earliest():
    own = B.straight_line(n=5)
    frame = to_frame(pa.concat_tables([_received_copies(own, [2], 900), _received_copies(own, [2], 200)]))
    out, report = dedup.collapse(frame)
    assert report["transmissions"] == 1
    assert out[TIME].iloc[0] == frame[TIME].iloc[1]


def test_distinct_messages_never_collapse():
    line = B.straight_line(n=6)
    frame = to_frame(pa.concat_tables([
        line,
        B.replaced(line, coreData_id=["0000000B"] * 6),  # another sender with the same payload (a replay)
        B.later(line, dedup.COPY_WINDOW_S + 1),  # same msgCnt, secMark and position, later than any copy
        B.replaced(_received_copies(line, [0, 1], 40), coreData_msgCnt=[None, None]),  # unknown msgCnt
        B.replaced(_received_copies(line, [2], 40), coreData_position_lat=[line.column("coreData_position_lat")[2].as_py() + 1e-7]),
    ]))
    out, report = dedup.collapse(frame)
    assert report["copies_dropped"] == 0 and len(out) == len(frame)
    assert len(np.unique(dedup.transmission_ids(frame))) == len(frame)


def test_copies_up_to_the_window_collapse():
    line = B.straight_line(n=4)
    inside = _received_copies(line, [1], int(dedup.COPY_WINDOW_S * 1000))
    outside = _received_copies(line, [2], int(dedup.COPY_WINDOW_S * 1000) + 1)
    ids = dedup.transmission_ids(to_frame(pa.concat_tables([line, inside, outside])))
    assert ids[4] == ids[1] and ids[5] != ids[2]
    assert len(np.unique(ids)) == 5


def test_experiment_starts_from_one_row_per_transmission():
    corpus = B.corridor(vehicles=4, msgs=10)
    frame, report = experiment.records_frame(pa.concat_tables([corpus, _received_copies(corpus, [0, 15, 39], 25)]))
    assert report["copies_dropped"] == 3
    clean, none = experiment.records_frame(corpus)
    assert none["copies_dropped"] == 0
    pd.testing.assert_frame_equal(frame, clean)
    assert list(frame.index) == list(range(len(frame)))
    assert frame[[ID, TIME]].equals(frame[[ID, TIME]].sort_values([ID, TIME]))


def test_empty_frame():
    out, report = dedup.collapse(to_frame(B.straight_line(n=3).slice(0, 0)))
    assert len(out) == 0 and report["transmissions"] == 0
