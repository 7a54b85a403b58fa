"""One typed params object per run, validated on load (unknown keys are errors).

Credentials are never params: a run names an AWS *profile*, never keys.
Relative paths resolve from the project root, so notebooks, CLI and tests agree
whatever the working directory.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from wydot_lab import layout
from wydot_lab.errors import WydotLabError


def project_root() -> Path:
    """The checkout holding `params/` and `test_data/` (falls back to the working directory)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists() and (here / "params").is_dir():
        return here
    return Path.cwd()


def resolve_path(p: str | Path | None) -> str | None:
    """Project-root-relative for local paths; URLs (s3://, memory://, ...) pass through."""
    if p is None:
        return None
    s = str(p)
    if "://" in s or Path(s).is_absolute():
        return s
    return str(project_root() / s)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceParams(_Strict):
    url: str = "test_data/synthetic_wydot"  # folder or s3://bucket[/prefix]
    pilot: str = "wydot"
    message_type: str = "BSM"
    region: str = "us-east-1"
    profile: str | None = None  # an AWS profile *name*; keys never appear here
    anonymous: bool = False
    requester_pays: bool = False
    endpoint_url: str | None = None
    allow_partial: bool = False
    egress_usd_per_gb: float = Field(0.09, ge=0)
    max_object_mb: float = Field(layout.MAX_OBJECT_MB, gt=0)  # inflated size past which an object is quarantined

    @field_validator("url")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


DEFAULT_END = dt.date(2021, 4, 3)


class DateParams(_Strict):
    start: dt.date = dt.date(2021, 4, 1)
    end: dt.date = Field(DEFAULT_END, validate_default=True)  # checked against start even when left out

    @field_validator("end")
    @classmethod
    def _ordered(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError(f"{end}{' (the default)' if end == DEFAULT_END else ''} is before start {start}")
        return end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


class CacheParams(_Strict):
    root: str = "data/cache"  # local path or any fsspec URL
    ttl_days: float | None = Field(None, ge=0)  # None: never expires; 0: every cached hour is refetched


SCHEDULERS = ("threads", "processes", "synchronous", "local-cluster",
              "threading", "multiprocessing", "sync", "single-threaded")  # the last four: dask's other names


class DaskParams(_Strict):
    scheduler: str = "threads"  # one of SCHEDULERS, or tcp://host:port of a running cluster
    npartitions: int | None = Field(None, ge=1)  # None: about ROWS_PER_PARTITION rows each
    n_workers: int = Field(2, ge=1)  # local-cluster: worker processes
    threads_per_worker: int = Field(1, ge=1)  # local-cluster: threads in each worker
    memory_limit: str = "3GiB"  # local-cluster: per worker; above it a worker spills, then is restarted

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS and not (v.startswith("tcp://") and len(v) > len("tcp://")):
            raise ValueError(f"{v!r} is not one of {', '.join(SCHEDULERS)} or tcp://host:port")
        return v


MAX_DEFECT_SHARE = 0.5


Range = tuple[float, float]


class RealismParams(_Strict):
    """How messy the synthetic traffic is (docs/SYNTHETIC.md gives each number's source).
    Off by default so the API's small corpora stay clean; params/default.yaml turns it on."""

    enabled: bool = False
    gnss_sd_m: Range = (2.0, 5.0)  # per-vehicle sd of the drifting GNSS bias, per axis
    gnss_tau_s: Range = (30.0, 120.0)  # its correlation time (Gauss-Markov)
    gnss_white_m: float = Field(0.3, ge=0)  # per-message jitter on top
    poor_fix_share: float = Field(0.05, ge=0, le=1)  # vehicles with a poor receiver (sd 8-14 m, semiMajor at the 12.7 cap)
    accuracy_unavailable_share: float = Field(0.03, ge=0, le=1)  # runs reporting semiMajor/semiMinor unavailable
    heading_sd_deg: float = Field(0.5, ge=0)  # GNSS heading noise at speed; grows as 15 deg*m/s / speed
    slowdown_every_s: Range = (1800.0, 7200.0)  # one slowdown per vehicle per this period
    stop_share: float = Field(0.3, ge=0, le=1)  # of the vehicles whose slowdowns come to a full stop
    ramp_share: float = Field(0.15, ge=0, le=1)  # runs that join or leave I-80 by a ramp
    ramp_offset_m: Range = (30.0, 150.0)  # how far off the line the ramp / rest area / frontage road is
    ramp_length_m: Range = (150.0, 500.0)
    rx_share: float = Field(0.2, ge=0, le=1)  # runs another connected vehicle in radio range also logged (rxMsg, RV)
    run_length: tuple[int, int] = (6, 34)  # messages per observed run, uniform (mean 20)
    drop_share: float = Field(0.05, ge=0, lt=1)  # messages lost on the air
    jitter_ms: float = Field(8.0, ge=0)  # sd of the timestamp jitter around the transmit grid
    id_rotation_s: float | None = Field(None, gt=0)  # temporary-id rotation period; null: ids persist


class SynthParams(_Strict):
    """What `wydot-lab synth --params FILE` generates (`make synth-data` uses params/default.yaml)."""

    start: dt.date = dt.date(2021, 4, 1)
    days: int = Field(3, ge=1)
    vehicles: int = Field(100, ge=1)
    rate_hz: float = Field(0.1, gt=0)
    seed: int = 7
    records_per_hour: int | None = Field(None, ge=1)  # runs of 20 messages; null: every vehicle transmits all the time
    # share of the lines that are defects (default.yaml: 0.005); capped: n * share / (1 - share)
    # defect lines per n records explodes towards 1
    defect_share: float = Field(0.0, ge=0, le=MAX_DEFECT_SHARE, allow_inf_nan=False)
    schema_version: int = Field(6, ge=6, le=9)  # the ODE schemaVersion written; 9 = J2735 frame, integer units
    # accuracy ellipse on J2735's steps (0.05 m, 360/65535 deg); null: on for 9 (which needs it), off for 6..8
    j2735_grid: bool | None = None
    realism: RealismParams = RealismParams()  # docs/SYNTHETIC.md; on in params/default.yaml

    @property
    def grid(self) -> bool:
        return self.schema_version == 9 if self.j2735_grid is None else self.j2735_grid

    @model_validator(mode="after")
    def _grid_for_v9(self) -> "SynthParams":
        if self.schema_version == 9 and self.j2735_grid is False:
            raise ValueError("j2735_grid: false cannot be written as schema_version 9 (J2735 integers carry only its steps)")
        return self


class FeatureParams(_Strict):
    window: int = Field(5, ge=2)  # rolling window, messages


class AttackSpec(BaseModel):
    """One attack of the matrix: `name` from the registry plus that attack's own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @model_validator(mode="after")
    def _known(self) -> "AttackSpec":
        from wydot_lab import attacks  # the registry validates each attack's own parameters

        attacks.check_spec(self.model_dump())
        return self

    @property
    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "name"}


Share = Annotated[float, Field(gt=0, lt=1)]
Rate = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]  # a false-positive rate in (0, 1)


def _unique(values: list, what: str) -> list:
    seen: list = []
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v} is listed twice")
        seen.append(v)
    return values


class AttackParams(_Strict):
    attacker_share: Share = 0.3
    extra_shares: list[Share] = [0.05]  # also evaluated (realistic share)
    seed: int = 42
    kinds: list[AttackSpec] = []
    privacy_filter: bool = False  # drop attacked records outside the privacy filter's speed window, as publishing would

    @field_validator("kinds")
    @classmethod
    def _kinds_once(cls, v: list[AttackSpec]) -> list[AttackSpec]:
        from wydot_lab import attacks

        _unique([attacks.label(k.model_dump()) for k in v], "attack")  # defaults spelt out are the same attack
        return v

    @field_validator("extra_shares")
    @classmethod
    def _shares_once(cls, v: list[float], info: ValidationInfo) -> list[float]:
        return _unique([info.data.get("attacker_share"), *v], "share")[1:]


class ModelParams(_Strict):
    detectors: list[str] = Field(["rules", "random_forest", "hist_gradient_boosting", "position_only"], min_length=1)
    split: Literal["vehicle", "vehicle_day"] = "vehicle"
    test_share: float = Field(0.3, gt=0, lt=1)
    seed: int = 42
    n_estimators: int = Field(200, ge=1)
    repeats: int = Field(1, ge=1)  # independent runs (attack and model seeds +0, +1, ...); F1 tables are means
    train_sample_rows: int = Field(1_000_000, ge=1)  # each detector trains on at most ~this many train rows
    # evaluation (issue 19, wydot_lab/evaluation.py)
    min_test_attackers: int = Field(5, ge=1)  # a share whose test side holds fewer attacker vehicles is refused
    validation_share: float = Field(0.2, gt=0, lt=1)  # of the train vehicles, held out to choose thresholds
    fpr_targets: list[Rate] = Field([0.001, 0.01], min_length=1)  # message-level false-positive rates
    alarm_k: int = Field(3, ge=1)  # vehicle-level alarm: k of ...
    alarm_n: int = Field(5, ge=1)  # ... the vehicle's last n messages flagged
    bootstrap: int = Field(1000, ge=1)  # resamples of the test vehicles for the 95 % intervals

    @field_validator("fpr_targets")
    @classmethod
    def _fprs_once(cls, v: list[float]) -> list[float]:
        return _unique(v, "false-positive rate")

    @field_validator("alarm_n")
    @classmethod
    def _k_of_n(cls, n: int, info: ValidationInfo) -> int:
        k = info.data.get("alarm_k")
        if k is not None and k > n:
            raise ValueError(f"{n} is below model.alarm_k {k} (the alarm needs k of the last n messages flagged)")
        return n

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, v: list[str]) -> list[str]:
        from wydot_lab.models import DETECTORS

        unknown = [d for d in v if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector {unknown[0]!r} (known: {', '.join(DETECTORS)})")
        return _unique(v, "detector")


class MapParams(_Strict):
    width: int = Field(900, ge=64)
    height: int = Field(500, ge=64)
    tiles: bool = False  # background tiles need the network; off by default


class OutputParams(_Strict):
    dir: str = "outputs"


class Params(_Strict):
    source: SourceParams = SourceParams()
    dates: DateParams = DateParams()
    cache: CacheParams = CacheParams()
    dask: DaskParams = DaskParams()
    synth: SynthParams = SynthParams()
    features: FeatureParams = FeatureParams()
    attacks: AttackParams = AttackParams()
    model: ModelParams = ModelParams()
    maps: MapParams = MapParams()
    outputs: OutputParams = OutputParams()

    @model_validator(mode="after")
    def _split_has_days(self) -> "Params":
        if self.model.split == "vehicle_day" and self.dates.days < 2:
            raise ValueError(f"model.split: vehicle_day holds out whole days, so it needs at least two days; "
                             f"dates {self.dates.start}..{self.dates.end} is one (add a day or use split: vehicle)")
        return self


class ParamsError(WydotLabError, ValueError):
    """A params file is wrong; the message is one line naming the bad key."""


def _one_line(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)  # cross-key checks name their keys themselves
    return f"{origin}: " + "; ".join(parts)


def from_dict(data: dict[str, Any], origin: str = "params") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{origin}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_one_line(err, origin)) from None


def find(path: str | Path) -> Path:
    """The params file a path names: relative paths try the cwd first, then the project root."""
    p = Path(path)
    if not p.exists() and not p.is_absolute():
        p = project_root() / p
    if not p.exists():
        raise ParamsError(f"{path}: no such params file")
    return p.resolve()


def load(path: str | Path) -> Params:
    """Read and validate a params YAML (see `find` for where relative paths are looked up)."""
    p = find(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{p}: not valid YAML ({err.__class__.__name__})") from None
    return from_dict(data, origin=str(p))


def to_dict(params: Params) -> dict[str, Any]:
    return params.model_dump(mode="json")
