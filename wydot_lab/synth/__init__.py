"""Synthetic WYDOT BSMs: a seeded fleet driving the real I-80 centre lines, written as ODE
`bsmTx` NDJSON (schemaVersion 6 by default; 7, 8 or 9 on request) in the bucket layout
`<out>/wydot/BSM/YYYY/MM/DD/HH/<object>`.

Why synthetic: the public bucket needs credentials and money, and genuine data carries no
attack labels. Every field a real v6 record has is present (see test_data/real_wydot/06_*).

Semantics
- Fleet: `vehicles` persistent 8-hex ids, 30% trucks (slower, longer). Each vehicle drives
  non-stop laps of the corridor, eastbound then westbound (a U-turn at each state line), at a
  smooth speed v(t) = mean + three sinusoids: two quick ones (minutes, <= 1.5 m/s: driver and
  grade) and a slow one of 20-90 min and up to 7 m/s (weather, variable speed limits, traffic).
  Cars' means 28-32.5 m/s, trucks' 23-28; speeds stay within 14.5-35.5 m/s, inside the
  privacy window 2.235..35.763 m/s (a speed attack cannot be told from its value alone).
  Its odometer is the exact integral of v, so where a vehicle is at any instant is one
  closed-form function: windows hours apart agree.
- Lanes: the I-80 lines are one per carriageway; a vehicle drives the centre of the right lane
  (LANE_M right of its line) and, for a share of the time (cars 10-40%, trucks 2-15%), of the
  left lane, switching on a slow per-vehicle cycle (10-40 min), also a closed-form function.
- Messages sit on the vehicle's transmit grid t = phase + k / rate_hz; msgCnt = (k + c) % 128,
  secMark = ms within the minute of recordGeneratedAt.
- `records_per_hour=None`: every vehicle transmits all the time. `records_per_hour=R`: each
  hour observes R messages as runs of `window` (20) consecutive messages of distinct vehicles,
  the way an RSU hears a passing car; with 3 days x 24 h x 100 and 100 vehicles every vehicle
  is seen in several runs on different days (enough for vehicle-disjoint splits).
- Reported position = true position + Gaussian GPS noise of scale semiMajor/semiMinor along
  `orientation`, clipped at 13 m, so every point stays within 15 m of its carriageway's line.
  Heading = true bearing of the centre line (meridian convergence applied), 0.0125 deg steps.
  Path history: CRUMBS crumbs of the vehicle's *true* past positions, as offsets from the
  reported current position in the sign convention real WYDOT records show
  (frames.CRUMB_SIGN: past = reported - offset), spanning ~2.5 message periods.
- `defect_share` > 0: real objects are not clean, so that share of the lines written are
  defect lines (kinds in DEFECTS: truncated, TIM, wrong type, missing coreData, unknown
  schemaVersion, out of range, unparseable time, blank), each right after the valid record
  it was made from. They come on top of the valid records, which stay exactly as with 0.
- Versions: 7 and 8 are v6's record with their metadata additions; 9 is the J2735 message
  frame in integer units (`payload.data.value.BasicSafetyMessage`, partII as
  `{partII-Id, partII-Value}`), so every value must sit on J2735's grid. All of them already
  do but the accuracy ellipse (semi-axes 0.01 m, orientation 0.0001 deg in the v6 corpus):
  `j2735_grid` (on for v9 unless set) puts it on J2735's 0.05 m and 360/65535 deg steps, and
  then any version writes the same numbers, so v6 and v9 corpora of one seed ingest alike.
- `realism` (config.RealismParams, off unless asked; on in params/default.yaml; numbers and
  sources in docs/SYNTHETIC.md): a drifting GNSS bias (closed-form Gauss-Markov per vehicle)
  that the crumbs share, semiMajor from the vehicle's error (12.7 cap, unavailable), heading
  and yaw noise, slowdowns and stops by a time-warped clock (records under the privacy floor
  dropped), ramps / rest areas off the line, runs of irregular length with lost messages and
  jittered timestamps, rxMsg copies logged by a receiver in range, optional id rotation. Its
  draws come from its own generators ((seed, 4) per vehicle, (seed, 3, hour, block)), so
  with it off the bytes are the clean corpus's.
- Bytes are a pure function of the parameters: all randomness comes from
  numpy Generators seeded by (seed, hour, block); no clock, no uuid4, no hash order.

Speed: records are formatted column-wise into a fixed-width uint8 matrix (NUL = padding)
that one `bytes.replace` per chunk compacts, and hours are spread over worker processes.

Modules: `fleet` (the fleet and the road: per-vehicle constants, lanes, closed-form kinematics,
positions on the I-80 lines, elevation; the corpus-wide constants), `realism` (GNSS bias,
slowdowns, id rotation, ramps), `block` (one (hour, block) batch of messages: runs, received
copies, objects), `writer` (the column-wise JSON record writer, ODE v6..v9), `defects` (defect
lines), `table` (a block as the BSM_SCHEMA table ingest would make), `corpus` (`generate`,
`write_corpus` over a process pool, `write_from_params`; `python -m wydot_lab.synth PARAMS OUT`).
Each imports only the ones before it in that order, never this package.

Every public name is re-exported here (`from wydot_lab import synth; synth.write_corpus(...)`).
Tunables live in their module: set `synth.writer.CHUNK_ROWS` there, not on this package.
"""

from wydot_lab.errors import SynthParamsError as SynthParamsError
from wydot_lab.frames import CRUMB_SIGN as CRUMB_SIGN  # the old module's names
from wydot_lab.frames import PRIVACY_MPS as PRIVACY_MPS
from wydot_lab.synth.block import Block, simulate_block
from wydot_lab.synth.corpus import _fleet as _fleet
from wydot_lab.synth.corpus import _write_unit as _write_unit
from wydot_lab.synth.corpus import generate, write_corpus, write_from_params
from wydot_lab.synth.defects import _NO_DEFECTS as _NO_DEFECTS
from wydot_lab.synth.defects import DEFECTS, KINDS, NOT_QUARANTINED, DefectKind, Defects, defect_line, plan_defects
from wydot_lab.synth.fleet import (
    BLOCK_ROWS,
    BUCKET_M,
    CRUMBS,
    EPOCH,
    HOUR_MS,
    LANE_M,
    MAX_NOISE_M,
    OBJECTS_PER_HOUR,
    ORIENT_DIVIDED,
    ORIENT_STEP,
    ORIENT_TIMES,
    SCHEMA_VERSIONS,
    SUPPLEMENTAL,
    TRUCK_SHARE,
    V_TOP,
    WINDOW,
    Fleet,
    elevation_m,
    kinematics,
    lane_offset_m,
    make_fleet,
    place,
)
from wydot_lab.synth.fleet import _lines as _lines
from wydot_lab.synth.fleet import _locate as _locate
from wydot_lab.synth.fleet import _m_per_deg as _m_per_deg
from wydot_lab.synth.realism import GM_TERMS, Messy, gnss_bias, make_messy, ramp_offset, rotated_ids, warp_clock
from wydot_lab.synth.table import to_table
from wydot_lab.synth.writer import CHUNK_ROWS, format_chunks
from wydot_lab.synth.writer import _num as _num
from wydot_lab.synth.writer import _template as _template

__all__ = [
    "BLOCK_ROWS",
    "BUCKET_M",
    "CRUMBS",
    "EPOCH",
    "Fleet",
    "HOUR_MS",
    "LANE_M",
    "MAX_NOISE_M",
    "OBJECTS_PER_HOUR",
    "ORIENT_DIVIDED",
    "ORIENT_STEP",
    "ORIENT_TIMES",
    "SCHEMA_VERSIONS",
    "SUPPLEMENTAL",
    "TRUCK_SHARE",
    "V_TOP",
    "WINDOW",
    "elevation_m",
    "kinematics",
    "lane_offset_m",
    "make_fleet",
    "place",
    "GM_TERMS",
    "Messy",
    "gnss_bias",
    "make_messy",
    "ramp_offset",
    "rotated_ids",
    "warp_clock",
    "Block",
    "simulate_block",
    "CHUNK_ROWS",
    "format_chunks",
    "DEFECTS",
    "DefectKind",
    "Defects",
    "KINDS",
    "NOT_QUARANTINED",
    "defect_line",
    "plan_defects",
    "to_table",
    "generate",
    "write_corpus",
    "write_from_params",
]
