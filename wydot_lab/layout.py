"""The bucket key layout `{source}/{type}/YYYY/MM/DD/HH/<object>`, shared by synth, source and cache."""
from __future__ import annotations

import datetime as dt
import os
import re
from urllib.parse import urlsplit

from wydot_lab.errors import UsageError

DEFAULT_BUCKET = "usdot-its-cvpilot-publicdata"
DEFAULT_PILOT = "wydot"
DEFAULT_TYPE = "BSM"
DEFAULT_REGION = "us-east-1"
MAX_OBJECT_MB = 512  # inflated MB past which one source object is quarantined whole (source.max_object_mb)

_HOUR_RE = re.compile(r"(?:^|/)(\d{4})/(\d{2})/(\d{2})/(\d{2})(?:/|$)")


def hour_prefix(pilot: str, message_type: str, hour: dt.datetime) -> str:
    """Key prefix of one UTC hour folder, e.g. `wydot/BSM/2021/04/01/07`."""
    return f"{pilot}/{message_type}/{hour:%Y/%m/%d/%H}"


def floor_hour(t: dt.datetime) -> dt.datetime:
    t = to_utc(t)
    return t.replace(minute=0, second=0, microsecond=0)


def to_utc(t: dt.datetime | dt.date | str) -> dt.datetime:
    if isinstance(t, str):
        t = dt.datetime.fromisoformat(t)
    if not isinstance(t, dt.datetime):
        t = dt.datetime(t.year, t.month, t.day)
    if t.tzinfo is None:
        return t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(dt.timezone.utc)


def date_range_bounds(start: dt.date | str, end: dt.date | str) -> tuple[dt.datetime, dt.datetime]:
    """[start 00:00, end+1 00:00) in UTC for an inclusive date range."""
    s = to_utc(start if isinstance(start, (str, dt.datetime)) else dt.datetime(start.year, start.month, start.day))
    e = to_utc(end if isinstance(end, (str, dt.datetime)) else dt.datetime(end.year, end.month, end.day))
    s = s.replace(hour=0, minute=0, second=0, microsecond=0)
    e = e.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    if e <= s:
        raise UsageError(f"end date {end} is before start date {start}")
    return s, e


def hours_between(t0: dt.datetime, t1: dt.datetime, pad: int = 0) -> list[dt.datetime]:
    """Hour starts covering [t0, t1), widened by `pad` hours on each side
    (records can sit one hour folder away from their timestamp)."""
    h = floor_hour(t0) - dt.timedelta(hours=pad)
    stop = to_utc(t1) + dt.timedelta(hours=pad)
    out = []
    while h < stop:
        out.append(h)
        h += dt.timedelta(hours=1)
    return out


def hour_of_key(key: str) -> dt.datetime | None:
    """UTC hour a key's folder names, or None if it is not in the layout."""
    m = _HOUR_RE.search(key)
    if not m:
        return None
    y, mo, d, h = (int(g) for g in m.groups())
    return dt.datetime(y, mo, d, h, tzinfo=dt.timezone.utc)


_HOUR_ONLY_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}")


def parse_bound(value: dt.datetime | dt.date | str) -> tuple[dt.datetime, bool]:
    """(UTC datetime, is_day) of one end of a range.

    A `date` or a `YYYY-MM-DD` string is a day (is_day, at its 00:00 UTC); a `datetime` or a
    `YYYY-MM-DDTHH[:MM[:SS]][+HH:MM|Z]` string is an instant (naive means UTC). A string that is
    neither raises ValueError with the reason (`month must be in 1..12`, ...).
    """
    if isinstance(value, dt.datetime):
        return to_utc(value), False
    if isinstance(value, dt.date):
        return to_utc(value), True
    text = str(value).strip()
    try:
        return to_utc(dt.date.fromisoformat(text)), True
    except ValueError as day_err:
        if len(text) <= 10:  # no time part: the day's own reason (e.g. `day is out of range for month`)
            raise day_err from None
    if _HOUR_ONLY_RE.fullmatch(text):
        text += ":00"  # `YYYY-MM-DDTHH`: Python < 3.11 wants minutes
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"  # Python < 3.11 does not read `Z`
    return to_utc(dt.datetime.fromisoformat(text)), False


def hour_range(start, end) -> tuple[dt.datetime, dt.datetime]:
    """[t0, t1) UTC hours of a range; each bound's own form (see `parse_bound`) decides.

    start: a day starts at its 00:00; an instant at its hour (floored).
    end: a day is included (t1 = 00:00 of the next day); an instant is excluded (t1 = that hour,
    or the next one if it has minutes). So `2021-04-01`..`2021-04-01` is 24 hours,
    `2021-04-01T05:00`..`2021-04-01` 19 hours and `2021-04-01T05:00`..`2021-04-01T07:00` 2 hours.
    """
    t0, start_is_day = parse_bound(start)
    t0 = floor_hour(t0)
    t1, end_is_day = parse_bound(end)
    if end_is_day:
        t1 += dt.timedelta(days=1)
    elif t1 > floor_hour(t1):
        t1 = floor_hour(t1) + dt.timedelta(hours=1)
    if t1 <= t0:
        raise UsageError(f"end {end} is not after start {start}" if not end_is_day
                         else f"end date {end} is before start date {start}" if start_is_day
                         else f"end {end} is before start {start}")
    return t0, t1


def hour_label(hour: dt.datetime) -> str:
    """How an hour is named in manifests, summaries and messages: `2021-04-01T07`."""
    return f"{hour:%Y-%m-%dT%H}"


def source_root(url: str) -> str:
    """Path of a source root as its filesystem sees it: `bucket/prefix`, or a folder."""
    if url.startswith(("s3://", "s3a://")):
        u = urlsplit(url)
        return (u.netloc + "/" + u.path.strip("/")).rstrip("/")
    if url.startswith("file://"):
        return url[len("file://"):].rstrip("/") or "/"
    if "://" in url:
        return url.split("://", 1)[1].rstrip("/")
    return os.path.abspath(url)


def source_identity(url: str) -> str:
    """Which data a source URL names, whatever its spelling or endpoint: `s3://bucket/prefix`, or
    a resolved path. Cache manifests keep it, so one cache root never mixes two sources."""
    root = source_root(url)
    if url.startswith(("s3://", "s3a://")):
        return f"s3://{root}"
    if "://" not in url or url.startswith("file://"):
        return os.path.realpath(root)
    return f"{url.split('://', 1)[0]}://{root}"


def link_problem(path: str, real_root: str) -> str | None:
    """Why a file under a local source root is refused (a symlink leading outside `real_root`, a
    realpath; a dangling link; not a regular file), else None. Ingest and validate both use it."""
    real = os.path.realpath(path)
    if not os.path.exists(real):
        return f"symlink_dangling (-> {os.readlink(path) if os.path.islink(path) else real})"
    if os.path.commonpath([real, real_root]) != real_root:
        return f"symlink_outside_source (-> {real}, outside {real_root})"
    if not os.path.isfile(real):
        return "not_a_regular_file"
    return None
