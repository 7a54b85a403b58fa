"""`wydot-lab` command line: progress on stderr, one JSON summary as the last stdout line.

Each subcommand is a small `_cmd_<name>(args)` that calls into the package and returns its
JSON summary (a dict, or an `Outcome` that also carries a non-zero exit code);
`main` turns the package's errors (`wydot_lab.errors`) into a one-line reason and exit code 2;
any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import sys
import time

from wydot_lab.errors import CliError, WydotLabError  # CliError: re-exported here

# exit codes (docs/CACHE.md); 0: the command ran and its JSON line says what it did; 3 and 4: fetch.EXIT_*
EXIT_CORRUPT = 1  # `cache verify` found corrupt partitions or day copies (hidden / dropped)
EXIT_ERROR = 2  # one line on stderr: a `WydotLabError`, a missing path, a full or read-only disk


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A command that ran: its JSON summary and the exit code it must signal (e.g. partial data)."""

    summary: dict
    exit_code: int = 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- argument types
# argparse reports a bad value as `wydot-lab <cmd>: error: argument --flag: <reason>`.


def _range_bound(text: str) -> str:
    """A `--start`/`--end` value: checked here, passed on as written (its form, day or hour, matters)."""
    from wydot_lab import layout

    try:
        layout.parse_bound(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text}: {err} (use YYYY-MM-DD or YYYY-MM-DDTHH)") from None
    return text


def _number(kind: type, low: float, low_ok: bool):
    """An argparse `type=` for an int or float that must be >= `low` (`low_ok`) or > `low`."""
    word = "an integer" if kind is int else "a number"
    bound = f">= {low}" if low_ok else f"> {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text}: not {word}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: not a finite number")
        if value < low or (value == low and not low_ok):
            raise argparse.ArgumentTypeError(f"{text}: must be {bound}")
        return value

    parse.__name__ = f"{kind.__name__} {bound}"
    return parse


_positive_int = _number(int, 1, True)
_non_negative_float = _number(float, 0, True)


# ---------------------------------------------------------------- subcommands


def _cmd_synth(args: argparse.Namespace) -> dict:
    from wydot_lab import config, synth

    # defaults: the `synth` section of --params (or its built-in defaults); given flags win
    base = config.load(args.params).synth if args.params else config.SynthParams()
    flags = {"start": args.start, "days": args.days, "vehicles": args.vehicles, "rate_hz": args.rate,
             "seed": args.seed, "records_per_hour": args.records_per_hour, "defect_share": args.defect_share,
             "schema_version": args.schema_version}
    merged = {**base.model_dump(), **{k: v for k, v in flags.items() if v is not None}}
    sp = config.from_dict({"synth": merged}, origin="command line").synth  # a bad flag: one line naming its key
    return synth.write_corpus(args.out, start=str(sp.start), days=sp.days, vehicles=sp.vehicles, rate_hz=sp.rate_hz,
                              seed=sp.seed, records_per_hour=sp.records_per_hour, defect_share=sp.defect_share,
                              schema_version=sp.schema_version, j2735_grid=sp.j2735_grid, realism=sp.realism,
                              workers=args.workers, progress=_log)


def _cmd_validate(args: argparse.Namespace) -> dict:
    from wydot_lab import ingest

    try:
        result = ingest.ingest_paths(args.paths, progress=_log, unknown_version=args.unknown_version)
    except ingest.SchemaVersionError as err:
        raise CliError(f"{err}; `--unknown-version quarantine` counts such records in quarantine instead") from err
    out = result.counts()
    out["rules"] = result.rule_counts
    out["non_bsm_types"] = result.non_bsm_types()
    refused = {f: why for f, why in result.file_issues if why.startswith(("symlink_", "not_a_regular_file"))}
    if refused:
        out["refused_files"] = refused
    if args.quarantine:
        result.write_quarantine(args.quarantine)
    return out


def _cmd_ingest(args: argparse.Namespace) -> Outcome:
    from wydot_lab import fetch

    try:
        result = fetch.run_ingest_cli(args, progress=_log)
    except fetch.VanishedObjects as err:  # nothing rewritten; the summary names every vanished object
        _log(f"error: {err}")
        return Outcome({"status": "refused", "error": str(err), "vanished_objects": sorted(err.vanished)},
                       fetch.EXIT_VANISHED)
    return Outcome(result.as_dict(), fetch.EXIT_PARTIAL if result.status == "partial" else 0)


def _cmd_cache(args: argparse.Namespace) -> Outcome:
    from wydot_lab import fetch

    summary = fetch.run_cache_cli(args, progress=_log)
    corrupt = summary["action"] == "verify" and (summary["corrupt"] or summary["day_copies"]["corrupt"])
    return Outcome(summary, EXIT_CORRUPT if corrupt else 0)


def _cmd_experiment(args: argparse.Namespace) -> dict:
    from wydot_lab import config, experiment

    params = config.load(args.params)
    return experiment.run_cli(params, args.out, progress=_log)


def _cmd_pipeline(args: argparse.Namespace) -> dict:
    from wydot_lab import pipeline

    try:
        return pipeline.run(args.params, out=args.out, progress=_log)
    except pipeline.PipelineError as err:  # one line naming the executed notebook with the error
        raise CliError(str(err)) from None


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wydot-lab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic I-80 BSM corpus in the bucket layout")
    s.add_argument("--out", required=True, help="folder to write <out>/wydot/BSM/YYYY/MM/DD/HH/<object>")
    s.add_argument("--params", help="take the `synth` section of this params YAML as defaults")
    s.add_argument("--start", help="YYYY-MM-DD (UTC); default 2021-04-01")
    s.add_argument("--days", type=int, help="default 3")
    s.add_argument("--vehicles", type=int, help="default 100")
    s.add_argument("--rate", type=float, help="messages per second per vehicle (default 0.1)")
    s.add_argument("--seed", type=int, help="default 7")
    s.add_argument("--records-per-hour", type=int, default=None,
                   help="observe this many messages per hour as runs of 20 consecutive messages "
                        "(default: every vehicle transmits all the time)")
    s.add_argument("--defect-share", type=float, default=None,
                   help="share of the lines written that are defect lines (truncated, TIM, wrong type, ...), "
                        "on top of the valid records; in [0, 0.5] (default 0; params/default.yaml: 0.005)")
    s.add_argument("--schema-version", type=int, default=None,
                   help="ODE schemaVersion to write, 6..9 (default 6); 9 is the J2735 message frame in integer "
                        "units, with the accuracy ellipse on J2735's steps (synth.j2735_grid)")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs for big corpora)")
    s.set_defaults(func=_cmd_synth)

    v = sub.add_parser("validate", help="parse and validate files or folders")
    v.add_argument("paths", nargs="+", help="ODE NDJSON / JSON / .gz files, data.transportation.gov CSV exports, "
                                          "or folders of them")
    v.add_argument("--quarantine", help="write quarantined records to this Parquet file")
    v.add_argument("--unknown-version", choices=["raise", "quarantine"], default="raise",
                   help="a record of an ODE schemaVersion outside 1..9: stop with its file and line (default), "
                        "or quarantine it as unknown_schema_version")
    v.set_defaults(func=_cmd_validate)

    i = sub.add_parser("ingest", help="fetch a date range into the Parquet cache")
    i.add_argument("source", help="folder or s3://bucket[/prefix] (e.g. s3://usdot-its-cvpilot-publicdata)")
    i.add_argument("--start", required=True, type=_range_bound,
                   help="first UTC day YYYY-MM-DD (or an hour YYYY-MM-DDTHH:00, included)")
    i.add_argument("--end", required=True, type=_range_bound,
                   help="last UTC day YYYY-MM-DD, included (or an hour YYYY-MM-DDTHH:00, excluded); "
                        "e.g. --start 2021-04-01T05:00 --end 2021-04-01 is 19 hours")
    i.add_argument("--cache", required=True, help="cache root, a path or fsspec URL; one root per source")
    i.add_argument("--pilot", default="wydot", help="source folder in the bucket (default wydot)")
    i.add_argument("--type", dest="message_type", default="BSM", help="message type folder (default BSM)")
    i.add_argument("--profile", help="AWS profile name from ~/.aws (keys are never arguments)")
    i.add_argument("--anonymous", action="store_true", help="unsigned requests (buckets open to anyone)")
    i.add_argument("--requester-pays", action="store_true", help="you pay the egress (requester-pays buckets)")
    i.add_argument("--endpoint-url", help="any S3-compatible endpoint, e.g. http://127.0.0.1:9000")
    i.add_argument("--region", default="us-east-1", help="bucket region (default us-east-1)")
    i.add_argument("--allow-partial", action="store_true",
                   help="an hour that still fails after retries is recorded as missing instead of failing the run "
                        "(then the summary says \"status\": \"partial\" and the exit code is 3)")
    i.add_argument("--ttl-days", type=_non_negative_float,
                   help="refetch cached hours older than this, >= 0 (0: refetch all; default: never expire)")
    i.add_argument("--dry-run", action="store_true",
                   help="list the source and print the plan only: hours already cached and to fetch, objects "
                        "and bytes to download, estimated egress cost at --price-per-gb; downloads nothing and "
                        "writes no partition")
    i.add_argument("--price-per-gb", type=_non_negative_float, default=0.09,
                   help="egress USD/GB for the --dry-run estimate, >= 0 (default 0.09)")
    i.add_argument("--offline", action="store_true", help="serve from the cache only; no listing, no download")
    i.add_argument("--workers", type=_positive_int, default=8, help="parallel listings/downloads, >= 1 (default 8)")
    i.add_argument("--mirror-deletions", action="store_true",
                   help="rewrite cached hours whose source objects are gone (their records are dropped); "
                        "without it such a run stops, keeps the cache and exits 4 naming every vanished object")
    i.add_argument("--allow-empty", action="store_true",
                   help="accept a range in which the source holds no object at all (default: error, nothing cached)")
    i.add_argument("--max-object-mb", type=_number(float, 0, False), default=None,
                   help="inflated MB past which an object is quarantined whole as object_too_large "
                        "(default 512, params source.max_object_mb)")
    i.set_defaults(func=_cmd_ingest)

    c = sub.add_parser("cache", help="list, verify or clear cached partitions")
    c.add_argument("action", choices=["ls", "verify", "clear"],
                   help="ls: one line per hour; verify: SHA-256 of every file; clear: remove hours")
    c.add_argument("--cache", required=True, help="cache root, a path or fsspec URL")
    c.add_argument("--start", type=_range_bound,
                   help="first UTC day YYYY-MM-DD or hour YYYY-MM-DDTHH:00 (default: all cached hours)")
    c.add_argument("--end", type=_range_bound,
                   help="last UTC day, included (or an hour, excluded); give both --start and --end, or neither")
    c.add_argument("--pilot", default="wydot", help="default wydot")
    c.add_argument("--type", dest="message_type", default="BSM", help="default BSM")
    c.add_argument("--ttl-days", type=_non_negative_float, help="ls: show partitions older than this (>= 0) as expired")
    c.set_defaults(func=_cmd_cache)

    e = sub.add_parser("experiment", help="run the attack x detector matrix from a params file")
    e.add_argument("params", help="params YAML (see docs/PARAMS.md)")
    e.add_argument("--out", required=True, help="folder for results, metrics.json, models/")
    e.set_defaults(func=_cmd_experiment)

    pl = sub.add_parser("pipeline", help="run the stage notebooks with papermill")
    pl.add_argument("params", nargs="?", default="params/default.yaml", help="default params/default.yaml")
    pl.add_argument("--out", help="run folder (default outputs/<UTC time>-<params hash>)")
    pl.set_defaults(func=_cmd_pipeline)
    return p


_DISK_FIX = {
    errno.ENOSPC: "no space left on the device: free space there or pass --cache on another disk",
    errno.EDQUOT: "disk quota exceeded: free space there or pass --cache on another disk",
    errno.EROFS: "read-only filesystem: a fully cached range is served without writing (ingest of that range, "
                 "load); to fetch or clear, pass a writable --cache",
    errno.EACCES: "permission denied: make it writable for this user (chown/chmod) or pass another --cache",
    errno.EPERM: "operation not permitted: make it writable for this user (chown/chmod) or pass another --cache",
}


def _disk_error(err: OSError) -> str:
    """One line naming the path and the fix (nothing half-written stays visible: see docs/CACHE.md)."""
    return f"{err.filename or 'the cache'}: {_DISK_FIX[err.errno]}"


# One line, exit 2: the error family, and a path the user named that is missing or not theirs.
# Anything else is a bug and shows its traceback.
_ONE_LINE = (WydotLabError, FileNotFoundError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        summary = args.func(args)
    except KeyboardInterrupt:
        _log("wydot-lab: interrupted")
        return 130
    except _ONE_LINE as err:
        reason = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        if isinstance(err, OSError) and err.errno in _DISK_FIX:
            reason = _disk_error(err)
        _log(f"wydot-lab {args.command}: error: {reason}")
        return EXIT_ERROR
    except OSError as err:
        if err.errno not in _DISK_FIX:
            raise
        _log(f"wydot-lab {args.command}: error: {_disk_error(err)}")
        return EXIT_ERROR
    outcome = summary if isinstance(summary, Outcome) else Outcome(summary)
    summary, exit_code = dict(outcome.summary), outcome.exit_code
    summary.setdefault("seconds", round(time.perf_counter() - t0, 3))
    print(json.dumps(summary, default=str), flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
