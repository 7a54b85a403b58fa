"""Test helpers: a moto S3 server on loopback, a fault-injecting proxy, a small corpus.

The corpus is built from one real ODE v6 record (test_data/real_wydot) with new
times and ids, laid out like the bucket: `wydot/BSM/YYYY/MM/DD/HH/<object>`.
"""
from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_FILE = ROOT / "test_data" / "real_wydot" / "01_sandbox_sample_bsm_schemaVersion6.ndjson"
HOUR = dt.timedelta(hours=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    return free_port()


class MotoS3:
    """moto's S3 server bound to 127.0.0.1 on a free port; `stop()` in teardown."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        self.server.start()
        return self

    def stop(self) -> None:
        self.set_auth(None)
        self.server.stop()

    def client(self, service: str = "s3", key: str = "testing", secret: str = "testing"):
        import boto3

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret)

    def reset(self) -> None:
        """Drop every bucket and IAM entity (moto's own reset endpoint)."""
        _post(self.url + "/moto-api/reset", b"")

    def set_auth(self, after_requests: int | None) -> None:
        """Enforce IAM signatures and policies after N more requests (None: never)."""
        limit = float("inf") if after_requests is None else after_requests
        _post(self.url + "/moto-api/reset-auth", str(limit).encode())


def _post(url: str, body: bytes) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


# ---------------------------------------------------------------- fault-injecting proxy


class FlakyProxy:
    """HTTP proxy in front of moto that can fail GETs of chosen keys and counts requests.

    fail: {substring of the path: number of 503 answers to give first (-1: forever)}.
    """

    def __init__(self, upstream_port: int, fail: dict[str, int] | None = None, status: int = 503,
                 deny_unsigned: bool = False, slow: dict[str, int] | None = None, delay_s: float = 0.0,
                 short: dict[str, int] | None = None, reset: dict[str, int] | None = None,
                 corrupt: dict[str, int] | None = None):
        self.upstream_port = upstream_port
        self.fail = dict(fail or {})
        self.status = status
        self.deny_unsigned = deny_unsigned  # like the real bucket since anonymous reads stopped
        self.slow = dict(slow or {})  # {substring: answers to stall by delay_s (a read timeout)}
        self.delay_s = delay_s
        # {substring: answers to spoil (-1: forever)}: short = half the body without Content-Length,
        # then the connection closes; reset = the connection drops before any answer; corrupt =
        # the body with one byte flipped (same length)
        self.spoil = {"short": dict(short or {}), "reset": dict(reset or {}), "corrupt": dict(corrupt or {})}
        self.counts: Counter = Counter()
        self.failed: Counter = Counter()
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                kind = ("LIST" if "list-type" in self.path or self.path.rstrip("/").count("/") <= 1 else "GET") \
                    if self.command == "GET" else self.command
                with proxy.lock:
                    proxy.counts[kind] += 1
                    proxy.requests.append((self.command, self.path, dict(self.headers.items())))
                    if proxy.deny_unsigned and "Authorization" not in self.headers:
                        return self._answer(403, "AccessDenied")
                    stall = False
                    for pat, left in proxy.slow.items():
                        if pat in self.path and left > 0:
                            proxy.slow[pat] = left - 1
                            proxy.failed["slow:" + pat] += 1
                            stall = True
                    for pat, left in proxy.fail.items():
                        if pat in self.path and left != 0:
                            proxy.fail[pat] = left - 1 if left > 0 else -1
                            proxy.failed[pat] += 1
                            return self._answer(proxy.status, "ServiceUnavailable")
                    spoil = None
                    if self.command == "GET" and kind == "GET":
                        for how, pats in proxy.spoil.items():
                            for pat, left in pats.items():
                                if pat in self.path and left != 0 and spoil is None:
                                    pats[pat] = left - 1 if left > 0 else -1
                                    proxy.failed[f"{how}:{pat}"] += 1
                                    spoil = how
                if stall:
                    time.sleep(proxy.delay_s)
                if spoil == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if spoil == "corrupt" and data:
                    data = data[:-1] + bytes([data[-1] ^ 0x01])
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-range"):
                        self.send_header(k, v)
                if spoil == "short":  # no length: the client cannot tell the body is cut
                    data = data[: len(data) // 2]
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(data)))
                    if resp.getheader("Content-Range"):
                        self.send_header("Content-Range", resp.getheader("Content-Range"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            def _answer(self, status: int, code: str) -> None:
                msg = f"<Error><Code>{code}</Code><Message>injected by FlakyProxy</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(msg)))
                self.send_header("Content-Type", "application/xml")
                self.end_headers()
                self.wfile.write(msg)

            def _safe_relay(self):
                try:
                    self._relay()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a read timeout we caused on purpose)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _safe_relay

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- corpus


def _template() -> dict:
    return json.loads(TEMPLATE_FILE.read_text().splitlines()[0])


def bsm_line(t: dt.datetime, vid: str, lat: float, lon: float, template: dict | None = None) -> str:
    rec = json.loads(json.dumps(template or _template()))
    iso = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    rec["metadata"]["recordGeneratedAt"] = iso
    rec["metadata"]["odeReceivedAt"] = iso
    core = rec["payload"]["data"]["coreData"]
    core["id"] = vid
    core["secMark"] = (t.second * 1000 + t.microsecond // 1000) % 60000
    core["position"]["latitude"] = round(lat, 7)
    core["position"]["longitude"] = round(lon, 7)
    return json.dumps(rec, separators=(",", ":"))


TIM_LINE = json.dumps({"metadata": {"recordType": "dnMsg", "schemaVersion": 6,
                                    "payloadType": "us.dot.its.jpo.ode.model.OdeTimPayload"},
                       "payload": {"dataType": "TravelerInformation", "data": {}}})
BAD_LINE = '{"metadata": {"schemaVersion": 6, "recordGeneratedAt": "2021-04-01T00:00:00.000Z"}, "payload": {'


def hour_objects(hour: dt.datetime, per_hour: int, seed: int, pilot: str = "wydot", spill_next: int = 0,
                 objects: int = 2, extras: bool = True) -> dict[str, bytes]:
    """Objects of one hour folder: `per_hour` BSMs of this hour plus `spill_next` of the next hour;
    with `extras` each object also holds one blank, one broken and one TIM line."""
    rng = np.random.default_rng(seed)
    tmpl = _template()
    n = per_hour + spill_next
    offs = np.sort(rng.integers(0, 3_600_000, per_hour))
    times = [hour + dt.timedelta(milliseconds=int(o)) for o in offs]
    times += [hour + HOUR + dt.timedelta(milliseconds=int(o)) for o in rng.integers(0, 600_000, spill_next)]
    ids = [f"{int(v):08X}" for v in rng.integers(0x10000000, 0xFFFFFFFF, 8)]
    lat = 41.3 + rng.random(n) * 0.05
    lon = -105.6 + rng.random(n) * 0.05
    lines = [bsm_line(t, ids[i % len(ids)], lat[i], lon[i], tmpl) for i, t in enumerate(times)]
    out = {}
    for k, chunk in enumerate(np.array_split(np.arange(n), objects)):
        body = [lines[i] for i in chunk]
        if extras:
            body += ["", BAD_LINE, TIM_LINE]
        key = f"{pilot}/BSM/{hour:%Y/%m/%d/%H}/usdot-its-cvpilot-bsm-public-{hour:%Y-%m-%d-%H}-{k:02d}"
        out[key] = ("\n".join(body) + "\n").encode()
    return out


def corpus(start: dt.datetime, hours: int, per_hour: int = 20, seed: int = 1, spill: dict | None = None,
           extras: bool = True, objects: int = 2) -> dict[str, bytes]:
    """Objects for `hours` consecutive hour folders; `spill={hour_index: n}` puts n next-hour records there."""
    out: dict[str, bytes] = {}
    for i in range(hours):
        out.update(hour_objects(start + i * HOUR, per_hour, seed * 1000 + i, spill_next=(spill or {}).get(i, 0),
                                extras=extras, objects=objects))
    return out


def upload(client, bucket: str, objects: dict[str, bytes], prefix: str = "") -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=prefix + key, Body=body)


def write_folder(root: Path, objects: dict[str, bytes]) -> Path:
    for key, body in objects.items():
        p = root / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    return root


def delete_bucket(client, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=o["Key"])
    client.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------- hostile objects (issue 15)


def write_hostile(d: Path) -> dict[str, Path]:
    """{label: file} of objects built to take memory: 50 MB of blank lines, one 200 MB line, a
    gzip bomb (1 GiB of zeros in ~1 MB), each written a MiB at a time."""
    import zlib

    d.mkdir(parents=True, exist_ok=True)
    files = {"50 MB of blank lines": d / "blank.ndjson", "one 200 MB line": d / "line.ndjson",
             "gzip bomb, 1 GiB of zeros": d / "bomb.gz"}
    with open(files["50 MB of blank lines"], "wb") as f:
        for _ in range(50):
            f.write(b"\n" * (1 << 20))
    with open(files["one 200 MB line"], "wb") as f:
        f.write(b'{"metadata": {"x": "')
        for _ in range(200):
            f.write(b"x" * (1 << 20))
        f.write(b'"}}\n')
    c, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    with open(files["gzip bomb, 1 GiB of zeros"], "wb") as f:
        for _ in range(1024):
            f.write(c.compress(zeros))
        f.write(c.flush())
    return files
