"""Where BSM objects come from: a local folder or `s3://bucket[/prefix]` read through s3fs.

A `Source` lists the objects of one UTC hour folder (with ETag and size) and downloads
their bytes checked against the listing (size, and MD5 where the ETag is a plain MD5),
retrying throttling, 5xx, timeouts, short bodies and checksum errors with exponential
backoff. A local source reads files linked from inside its root and refuses (names) links
leading outside it.
Every other failure becomes a `SourceError` whose one-line message names the
bucket, the credential mode tried and the fix, so the CLI prints one line and a
notebook shows the same text. Credentials are never parameters: a run names a
*profile*, the default chain, anonymous access or requester-pays, nothing else.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import fsspec

from wydot_lab import layout
from wydot_lab.errors import IncompleteDownload, SourceError, SourceLayoutError  # re-exported here

# botocore / S3 error codes that mean "try again later"
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
})
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
BAD_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                                  "TokenRefreshRequired"})
# exception types (anywhere in the chain) that mean "try again later" / "no route to the endpoint"
TRANSIENT_TYPES = frozenset({
    "ReadTimeoutError", "ConnectTimeoutError", "ConnectionClosedError", "EndpointConnectionError",
    "ServerDisconnectedError", "ClientPayloadError", "ClientOSError", "IncompleteRead", "ResponseStreamingError",
    "FSTimeoutError", "TimeoutError", "ConnectionResetError", "ConnectionRefusedError", "ProxyConnectionError",
    "HTTPClientError", "ServerTimeoutError", "FlexibleChecksumError", "IncompleteDownload"})
UNREACHABLE_TYPES = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ConnectionRefusedError",
                               "ProxyConnectionError", "ClientConnectorError"})


DOWNLOAD_CHUNK = 8 << 20  # bytes per ranged GET / read while downloading
SPOOL_MEMORY = 8 << 20  # a downloaded object up to this size stays in memory, a bigger one in a temp file
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


def plain_md5(etag: str) -> str | None:
    """The MD5 an ETag is, if it is one (32 hex digits; `-N` multipart and SSE-KMS ETags are not)."""
    e = etag.strip('"').lower()
    return e if _PLAIN_MD5.match(e) else None


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Everything needed to open a source; no secrets (see module docstring)."""

    url: str
    pilot: str = layout.DEFAULT_PILOT
    message_type: str = layout.DEFAULT_TYPE
    region: str = layout.DEFAULT_REGION
    profile: str | None = None
    anonymous: bool = False
    requester_pays: bool = False
    endpoint_url: str | None = None
    attempts: int = 4  # our retries per object/listing, on top of botocore's own
    sdk_attempts: int = 3  # botocore's "standard" retry mode (throttling, 5xx, timeouts)
    backoff_s: float = 0.5  # first wait; doubles per attempt
    max_backoff_s: float = 20.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    @classmethod
    def from_params(cls, source, **overrides) -> SourceSpec:
        """From `config.SourceParams` (the `source:` section of a params file)."""
        from wydot_lab.config import resolve_path

        kw = dict(url=resolve_path(source.url), pilot=source.pilot, message_type=source.message_type,
                  region=source.region, profile=source.profile, anonymous=source.anonymous,
                  requester_pays=source.requester_pays, endpoint_url=source.endpoint_url)
        kw.update(overrides)
        return cls(**kw)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith(("s3://", "s3a://"))

    @property
    def bucket(self) -> str:
        if self.is_s3:
            return urlsplit(self.url).netloc
        return self.url

    @property
    def root(self) -> str:
        """Path of the source root as the filesystem sees it (`bucket/prefix` or a folder)."""
        return layout.source_root(self.url)

    def mode(self) -> str:
        """Human description of the credential mode, for messages and manifests."""
        if not self.is_s3:
            return "local folder" if "://" not in self.url else f"fsspec {self.url.split('://')[0]}"
        if self.anonymous:
            m = "anonymous (unsigned requests)"
        elif self.profile:
            m = f"AWS profile '{self.profile}'"
        else:
            m = "default credential chain (environment, ~/.aws, instance role)"
        if self.requester_pays:
            m += ", requester-pays"
        if self.endpoint_url:
            m += f", endpoint {redact_url(self.endpoint_url)}"
        return m

    def display(self) -> str:
        return redact_url(self.url)

    def identity(self) -> str:
        """`layout.source_identity` of the URL (kept in cache manifests)."""
        return layout.source_identity(self.url)


def redact_url(url: str) -> str:
    """Drop user:password and query strings from a URL before it is logged or stored."""
    u = urlsplit(url)
    netloc = u.hostname or ""
    if u.port:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme, netloc, u.path, "", "")) if u.scheme else url


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One source object: `key` relative to the source root, `path` as the filesystem opens it."""

    key: str
    path: str
    size: int
    etag: str
    hour: dt.datetime  # the hour folder it sits in

    def as_dict(self) -> dict:
        return {"key": self.key, "etag": self.etag, "size": self.size}


def make_filesystem(spec: SourceSpec) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for `spec`; s3fs instances are never shared (credentials differ)."""
    if not spec.is_s3:
        protocol = spec.url.split("://", 1)[0] if "://" in spec.url else "file"
        return fsspec.filesystem(protocol, skip_instance_cache=True)
    import s3fs

    client_kwargs: dict = {"region_name": spec.region}
    if spec.endpoint_url:
        client_kwargs["endpoint_url"] = spec.endpoint_url
    kw: dict = dict(
        anon=spec.anonymous,
        requester_pays=spec.requester_pays,
        client_kwargs=client_kwargs,
        config_kwargs={
            "connect_timeout": spec.connect_timeout_s,
            "read_timeout": spec.read_timeout_s,
            "retries": {"max_attempts": spec.sdk_attempts, "mode": "standard"},
        },
        skip_instance_cache=True,
        use_listings_cache=False,
    )
    if spec.profile and not spec.anonymous:
        kw["profile"] = spec.profile
    try:
        fs = s3fs.S3FileSystem(**kw)
    except Exception as err:  # ProfileNotFound surfaces here in some botocore versions
        raise translate(err, spec) from None
    fs.retries = 2  # s3fs' own retry loop; ours (with backoff) wraps it
    return fs


# ---------------------------------------------------------------- error translation


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _error_code(err: BaseException) -> str | None:
    for e in _chain(err):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            code = resp.get("Error", {}).get("Code")
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code:
                return str(code)
            if status:
                return str(status)
    return None


def _names(err: BaseException) -> set[str]:
    return {type(e).__name__ for e in _chain(err)}


def is_transient(err: BaseException) -> bool:
    """Throttling, 5xx, timeouts and dropped connections: worth another try."""
    return _error_code(err) in TRANSIENT_CODES or bool(_names(err) & TRANSIENT_TYPES)


def _unreachable(err: BaseException) -> bool:
    return bool(_names(err) & UNREACHABLE_TYPES)


def _no_such_bucket(err: BaseException) -> bool:
    return _error_code(err) == "NoSuchBucket" or "NoSuchBucket" in _names(err)


def translate(err: BaseException, spec: SourceSpec, what: str | None = None,
              hour: dt.datetime | None = None) -> SourceError:
    """Map any failure to a one-line `SourceError` naming bucket, mode and fix."""
    if isinstance(err, SourceError):
        return err
    where = f"s3://{spec.bucket}" if spec.is_s3 else spec.display()
    mode = spec.mode()
    names = _names(err)
    code = _error_code(err)
    if not spec.is_s3:
        if isinstance(err, FileNotFoundError):
            return SourceError(f"{what or where}: no such file or folder (source {where})", "no_such_folder", hour)
        return SourceError(f"{what or where}: {type(err).__name__}: {err}", "error", hour)
    if "ProfileNotFound" in names:
        return SourceError(
            f"{where}: AWS profile '{spec.profile}' not found (mode: {mode}); create it with "
            f"`aws configure --profile {spec.profile}` or pass an existing one with --profile NAME",
            "profile_not_found")
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return SourceError(
            f"{where}: no AWS credentials found (mode: {mode}); the bucket now requires credentials "
            "(anonymous reads stopped working): run `aws configure`, pass --profile NAME, or set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; for another S3-compatible store pass --endpoint-url URL",
            "missing_credentials")
    if code in BAD_CREDENTIAL_CODES:
        return SourceError(
            f"{where}: the credentials were rejected ({code}; mode: {mode}); refresh them with `aws configure` "
            "or pick another --profile NAME", "bad_credentials")
    if code in DENIED_CODES or (code is None and isinstance(err, PermissionError)):
        hint = ("the bucket now requires credentials: drop --anonymous and use --profile NAME or `aws configure`"
                if spec.anonymous else
                "these credentials lack s3:ListBucket/s3:GetObject here; the bucket now requires credentials "
                "of an allowed identity: try another --profile NAME, `aws configure`, or --requester-pays "
                "if the bucket bills the requester")
        return SourceError(f"{where}: access denied{' to ' + what if what else ''} (mode: {mode}); {hint}",
                           "access_denied", hour)
    if _no_such_bucket(err):
        ep = f" at {redact_url(spec.endpoint_url)}" if spec.endpoint_url else ""
        return SourceError(
            f"{where}: no such bucket{ep} (mode: {mode}); check the name (the old "
            f"'usdot-its-cvpilot-public-data' is gone, use '{layout.DEFAULT_BUCKET}') or pass --endpoint-url URL "
            "for another S3-compatible store", "no_such_bucket")
    if _unreachable(err):
        ep = redact_url(spec.endpoint_url) if spec.endpoint_url else f"AWS S3 ({spec.region})"
        return SourceError(
            f"{where}: cannot reach the endpoint {ep} (mode: {mode}); check the network/proxy or "
            "--endpoint-url URL", "unreachable", hour)
    if "IncompleteDownload" in names:
        first = next(str(e) for e in _chain(err) if type(e).__name__ == "IncompleteDownload")
        return SourceError(
            f"{what or where}: incomplete download after {spec.attempts} attempts ({first}; mode: {mode}); "
            "the object is changing or a proxy cuts bodies: retry later or pass --allow-partial", "transient", hour)
    if is_transient(err):
        return SourceError(
            f"{what or where}: still failing after {spec.attempts} attempts with backoff "
            f"({code or type(err).__name__}; mode: {mode}); retry later or pass --allow-partial", "transient", hour)
    first = str(err).splitlines()[0] if str(err) else ""
    return SourceError(f"{what or where}: {code or type(err).__name__}: {first} (mode: {mode})", "error", hour)


def with_retries(fn: Callable[[], object], spec: SourceSpec, what: str, hour: dt.datetime | None = None,
                 sleep: Callable[[float], None] = time.sleep):
    """Call `fn`, retrying transient failures with exponential backoff; others fail at once."""
    delay = spec.backoff_s
    for attempt in range(1, spec.attempts + 1):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - classified below, never swallowed
            if attempt == spec.attempts or not is_transient(err) or (_unreachable(err) and attempt >= 2):
                raise translate(err, spec, what, hour) from None
            sleep(delay)
            delay = min(delay * 2, spec.max_backoff_s)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- the source


class Source:
    """List hour folders and read objects of one source (see module docstring).

    `refused`: {key: reason} of the objects listed but not read (symlinks leading outside a
    local source root, dangling links, other non-files), kept for the run's summary.
    """

    def __init__(self, spec: SourceSpec, fs: fsspec.AbstractFileSystem | None = None):
        self.spec = spec
        self.fs = fs if fs is not None else make_filesystem(spec)
        self._checked = False
        self.refused: dict[str, str] = {}

    def hour_path(self, hour: dt.datetime) -> str:
        return f"{self.spec.root}/{layout.hour_prefix(self.spec.pilot, self.spec.message_type, hour)}"

    def check(self) -> None:
        """Fail early with a clear message if the bucket/folder cannot be listed at all, or if its
        URL names the pilot/type folders themselves (the hour folders would be looked for below them)."""
        if self._checked:
            return
        root = self.spec.root
        prefix = f"{root}/{self.spec.pilot}"
        if not self.spec.is_s3:
            if not self.fs.exists(root):
                raise SourceError(f"{self.spec.display()}: source folder does not exist", "no_such_folder")
            found = self.fs.exists(prefix)
        else:
            found = bool(with_retries(lambda: self._ls(prefix), self.spec, f"s3://{prefix}"))
        if not found:
            self._check_url_tail()
        self._checked = True

    def _check_url_tail(self) -> None:
        """The URL ends in `<pilot>[/<type>]` and the root has no `<pilot>` folder: name the URL to use."""
        url = self.spec.url.rstrip("/")
        tails = (f"/{self.spec.pilot}/{self.spec.message_type}", f"/{self.spec.pilot}")
        for tail in tails:
            if url.lower().endswith(tail.lower()):
                base = url[: len(url) - len(tail)] or "/"
                raise SourceLayoutError(
                    f"{redact_url(url)} includes the pilot/type folders ({tail.lstrip('/')}); the source is the "
                    f"folder or bucket above them: use {redact_url(base)} (pilot and type are --pilot "
                    f"{self.spec.pilot} --type {self.spec.message_type})")

    def pilots(self) -> list[str]:
        """Folder names at the source root (for the advice when a range holds no object)."""
        try:
            return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self._ls(self.spec.root)
                          if e.get("type") == "directory")
        except Exception:  # noqa: BLE001 - advice only
            return []

    def _ls(self, path: str) -> list[dict]:
        """Entries of a folder, fresh from the store; an absent folder (not bucket) is empty."""
        try:
            return self.fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError as err:
            if _no_such_bucket(err):
                raise
            return []

    def list_hour(self, hour: dt.datetime) -> list[ObjectInfo]:
        """Objects of one hour folder, sorted by key; an absent folder is an empty hour. In a local
        source, files linked from inside the root are listed; links leading outside it (or nowhere)
        are refused and named in `refused`."""
        self.check()
        path = self.hour_path(hour)
        what = f"hour {layout.hour_label(hour)} ({self._url(path)}/)"
        entries = with_retries(lambda: self._ls(path), self.spec, what, hour)
        out = []
        root = self.spec.root.rstrip("/") + "/"
        local = not self.spec.is_s3 and "://" not in self.spec.url
        real_root = os.path.realpath(self.spec.root) if local else None
        for e in entries:
            name = e["name"]
            base = name.rsplit("/", 1)[-1]
            key = name[len(root):] if name.startswith(root) else name
            if base.startswith(".") or e.get("type") == "directory":
                continue
            if local:
                why = layout.link_problem(name, real_root)
                if why:
                    self.refused[key] = why
                    continue
                if e.get("islink") or e.get("type") != "file":
                    st = os.stat(name)
                    e = {"name": name, "size": st.st_size, "mtime": st.st_mtime, "type": "file"}
            elif e.get("type") != "file":
                continue
            out.append(ObjectInfo(key=key, path=name, size=int(e.get("size") or 0), etag=_etag(e), hour=hour))
        return sorted(out, key=lambda o: o.key)

    def download(self, obj: ObjectInfo):
        """The object's raw bytes (gzip is the ingest's business) as a binary file positioned at 0,
        verified against the listing: its size, and its MD5 where the ETag is a plain MD5. A short
        body or a mismatch is retried like a dropped connection; memory stays bounded (ranged
        reads of `DOWNLOAD_CHUNK`; past `SPOOL_MEMORY` the bytes go to a temp file)."""
        what = f"hour {layout.hour_label(obj.hour)} object {self._url(obj.path)}"
        return with_retries(lambda: self._download(obj), self.spec, what, obj.hour)

    def _download(self, obj: ObjectInfo):
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        md5 = plain_md5(obj.etag) if self.spec.is_s3 else None
        digest = hashlib.md5(usedforsecurity=False) if md5 else None
        got = 0
        try:
            if self.spec.is_s3:
                while got < obj.size:  # one ranged GET per chunk: a short body shows as a short range
                    want = min(DOWNLOAD_CHUNK, obj.size - got)
                    data = self.fs.cat_file(obj.path, start=got, end=got + want)
                    self._take(spool, digest, data)
                    got += len(data)
                    if len(data) != want:
                        break
            else:
                with self.fs.open(obj.path, "rb") as f:
                    while data := f.read(DOWNLOAD_CHUNK):
                        self._take(spool, digest, data)
                        got += len(data)
            if got != obj.size:
                raise IncompleteDownload(f"{got:,} bytes received, {obj.size:,} listed")
            if digest is not None and digest.hexdigest() != md5:
                raise IncompleteDownload(f"MD5 {digest.hexdigest()} != ETag {md5}")
            spool.seek(0)
            return spool
        except BaseException:
            spool.close()
            raise

    @staticmethod
    def _take(spool, digest, data: bytes) -> None:
        spool.write(data)
        if digest is not None:
            digest.update(data)

    def read(self, obj: ObjectInfo) -> bytes:
        """The object's verified raw bytes in memory (small objects; the fetch streams `download`)."""
        with self.download(obj) as f:
            return f.read()

    def _url(self, path: str) -> str:
        return f"s3://{path}" if self.spec.is_s3 else path


def _etag(entry: dict) -> str:
    """S3 ETag; for plain files a size+mtime signature plays the same role."""
    for k in ("ETag", "etag", "Etag"):
        if entry.get(k):
            return str(entry[k]).strip('"')
    mtime = entry.get("mtime") or entry.get("LastModified") or entry.get("created") or 0
    if isinstance(mtime, dt.datetime):
        mtime = mtime.timestamp()
    return f"mtime:{float(mtime):.6f}:size:{entry.get('size')}"
