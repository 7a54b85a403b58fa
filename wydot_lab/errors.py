"""One error family: catch `WydotLabError` for every failure the package raises on purpose.

Each class keeps the builtin base it had (`ValueError`, `RuntimeError`, `OSError`, ...) as a
second base, so older `except ValueError:` callers still work. The CLI prints one line for
the family and lets anything else (a bug) show its traceback. This module imports nothing
heavy: any module can import it.

Defined here: the classes of cli, source, fetch, pipeline, cache, attacks and synth (re-exported
there). Still
defined beside their code, on these bases: `config.ParamsError`, `ingest.IngestError`
(`SchemaVersionError`; in `ingest/results.py`), `ingest.ObjectTooLarge`, `models.LeakError`.
"""

from __future__ import annotations

import datetime as dt


class WydotLabError(Exception):
    """Base of every error wydot_lab raises on purpose; `str()` is one line saying what to fix."""


class WydotLabWarning(UserWarning):
    """Base of every warning wydot_lab issues."""


# ---------------------------------------------------------------- arguments and data


class UsageError(WydotLabError, ValueError):
    """Arguments that do not fit together or name nothing usable (a range ending before it
    starts, a cache root that does not exist, two options that exclude each other)."""


class AttackSpecError(UsageError):
    """An attack spec naming no attack, an unknown one or an unknown parameter, or a value out of
    its range; a `ValueError` still, so the params' validators report it as one of theirs."""


class SynthParamsError(UsageError):
    """Synthetic-corpus arguments no corpus can meet (a transmit rate above 1000 Hz, more runs an
    hour than vehicles to drive them)."""


class NoRecords(WydotLabError, ValueError):
    """A range or frame holds nothing to work on (no valid BSM, no date, nothing to map)."""


class TooFewAttackers(WydotLabError, ValueError):
    """A share's test side holds fewer attacker vehicles than `model.min_test_attackers`: its F1
    would rest on a handful of vehicles (more vehicles, another share, or lower the param)."""


# ---------------------------------------------------------------- cli


class CliError(WydotLabError):
    """A failure the user can fix; printed as one line, no traceback."""


# ---------------------------------------------------------------- source and fetch


class SourceError(WydotLabError, RuntimeError):
    """A source failure the user must act on; `str()` is one line naming bucket, mode and fix.

    kind: missing_credentials | profile_not_found | bad_credentials | access_denied |
    no_such_bucket | unreachable | transient | no_such_folder | error
    """

    def __init__(self, message: str, kind: str = "error", hour: dt.datetime | None = None):
        super().__init__(message)
        self.kind = kind
        self.hour = hour


class IncompleteDownload(WydotLabError, IOError):
    """Bytes received differ from the listing (size, or MD5 against a plain ETag): retried like
    a dropped connection, then the hour fails."""


class SourceLayoutError(SourceError):
    """The source URL names the pilot/type folders (or a pilot absent from the root)."""

    def __init__(self, message: str):
        super().__init__(message, "bad_source")


class VanishedObjects(SourceError):
    """Objects a cached hour was built from are gone from the source: the hour is not rewritten
    with fewer records unless deletions are to be mirrored. `vanished`: {key: cached hour}."""

    def __init__(self, message: str, vanished: dict[str, str]):
        super().__init__(message, "vanished")
        self.vanished = vanished


class EmptyRange(SourceError):
    """No object at all in the range (nor an hour either side): nothing is cached."""

    def __init__(self, message: str):
        super().__init__(message, "empty_range")


# ---------------------------------------------------------------- cache


class CorruptPartition(WydotLabError, RuntimeError):
    """A cached file does not match its manifest; it is never returned."""


class SourceConflict(WydotLabError, ValueError):
    """A cache root holds hours of the range from another source: never served or fetched over."""


class RangeNotCached(WydotLabError, LookupError):
    """`load(..., strict=True)`: hours of the range the cache cannot serve; run `wydot-lab ingest`."""


class CacheWarning(WydotLabWarning):
    """Hours of a requested range that the cache cannot serve completely."""


# ---------------------------------------------------------------- pipeline


class PipelineError(WydotLabError, RuntimeError):
    """A stage failed; the one-line message names the executed notebook that shows the error."""
