"""One row per transmission: copies of a BSM logged by several loggers collapse, distinct
messages never do."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from wydot_lab import dedup, experiment, features, ingest
from wydot_lab.frames import ID, TIME, to_frame

import bsm_frames as B
from conftest import REAL_DIR


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


def _pair(**copy_changes) -> pd.DataFrame:
    """A message and a receiver's copy of it 40 ms later, the copy changed as given."""
    line = B.straight_line(n=3).take([2])
    return to_frame(pa.concat_tables([line, B.replaced(_received_copies(line, [0], 40), **copy_changes)]))


@pytest.mark.parametrize("field, value", [("coreData_id", "0000000B"),  # another sender: a replay, not a copy
                                          ("coreData_msgCnt", 3), ("coreData_secMark", 2001),
                                          ("coreData_position_lat", 1e-7), ("coreData_position_long", 1e-7)])
def test_a_copy_differing_in_one_key_field_is_another_message(field, value):
    assert len(set(dedup.transmission_ids(_pair()))) == 1
    pair = _pair()
    changed = pair[field].iloc[0] + value if isinstance(value, float) else value
    pair.loc[1, field] = changed
    assert pair[field].iloc[0] != pair[field].iloc[1]
    assert len(set(dedup.transmission_ids(pair))) == 2
    assert dedup.collapse(pair)[1]["copies_dropped"] == 0


@pytest.mark.parametrize("field", ["coreData_id", "coreData_msgCnt", "coreData_secMark", "coreData_position_lat",
                                   TIME])
def test_rows_missing_a_key_field_or_their_time_are_kept(field):
    pair = _pair()
    pair[field] = pd.NaT if field == TIME else None
    assert pair[field].isna().all()
    assert len(set(dedup.transmission_ids(pair))) == 2


def test_the_window_counts_from_the_first_copy():
    line = B.straight_line(n=1)
    w = int(dedup.COPY_WINDOW_S * 1000)
    chain = pa.concat_tables([line, _received_copies(line, [0], w - 1000), _received_copies(line, [0], 2 * w - 2000)])
    ids = dedup.transmission_ids(to_frame(chain))
    assert ids[0] == ids[1] != ids[2]  # each step is inside the window, the last copy is not


@pytest.mark.parametrize("marks", [{"metadata_bsmSource": ["RV"]},  # a bsmLogDuringEvent log of received BSMs
                                   {"metadata_recordType": ["rxMsg"], "metadata_bsmSource": [None]}])  # v3
def test_either_received_mark_loses_to_the_own_copy(marks):
    own = B.replaced(B.straight_line(n=1), metadata_bsmSource=["EV"], metadata_recordType=["bsmTx"])
    copy = B.replaced(own, metadata_generatedAt=own.column(TIME).to_numpy() - np.timedelta64(200, "ms"),
                      **{"metadata_recordType": ["bsmLogDuringEvent"], **marks})
    out, report = dedup.collapse(to_frame(pa.concat_tables([copy, own])))
    assert report["copies_dropped"] == 1
    assert out.index.tolist() == [1]


def test_real_records_hold_two_copies():
    """The samples hold one BSM in both schema versions 5 and 6, one in both 7 and 8, and one BSM
    that two rxMsg logs recorded 0.3 s apart."""
    frame = to_frame(ingest.ingest_paths([REAL_DIR]).valid)
    out, report = dedup.collapse(frame)
    assert report["copies_dropped"] == 3 and report["logged_more_than_once"] == 3
    dropped = frame.drop(index=out.index)
    assert sorted(zip(dropped["coreData_msgCnt"], dropped["coreData_secMark"])) == [(37, 25399), (55, 57710),
                                                                                   (127, 28589)]
    assert len(out) == 54


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
