"""Loopback servers for the download tests: a real STAC API (``rustac serve``, in memory),
an HTTP file server with Range requests, a forwarding proxy that counts and fails requests
on demand, and a fake Planetary Computer token endpoint. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rustac_binary() -> str | None:
    """The ``rustac`` CLI of this interpreter's environment (the dev extra installs it)."""
    import sys

    here = Path(sys.executable).parent / "rustac"
    return str(here) if here.exists() else shutil.which("rustac")


class RustacServer:
    """``rustac serve FILES --addr 127.0.0.1:PORT``, stopped by its process id."""

    def __init__(self, files: list[Path], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        exe = rustac_binary()
        assert exe, "rustac is not installed"
        self.proc = subprocess.Popen(
            [exe, "serve", *map(str, files), "--addr", f"127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rustac serve did not start (see {log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


class Loopback:
    """A threaded HTTP server on 127.0.0.1 whose requests go to ``respond``.

    ``respond(method, path, headers, body) -> (status, headers, bytes)``. Every request is
    recorded in ``requests``; the first ``fail_first`` get 503.
    """

    def __init__(self, respond: Callable[..., tuple[int, dict[str, str], bytes]]) -> None:
        self.respond, self.requests, self.fail_first = respond, [], 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _go(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.lock:
                    outer.requests.append((self.command, self.path, body))
                    fail = outer.fail_first > 0
                    if fail:
                        outer.fail_first -= 1
                if fail:
                    status, headers, data = 503, {"Content-Type": "text/plain"}, b"busy"
                else:
                    status, headers, data = outer.respond(
                        self.command, self.path, self.headers, body
                    )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _go

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def file_server(root: Path) -> Loopback:
    """Serve ``root`` with HTTP Range support (what GDAL's /vsicurl/ reads COGs with)."""

    def respond(method: str, path: str, headers: Any, body: bytes):
        f = root / path.split("?")[0].lstrip("/")
        if not f.is_file():
            return 404, {}, b""
        data = f.read_bytes()
        rng = headers.get("Range")
        base = {"Accept-Ranges": "bytes", "Content-Type": "image/tiff"}
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].split(",")[0].partition("-")
            start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
            base["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, base, data[start : end + 1]
        return 200, base, data

    return Loopback(respond)


def proxy(upstream: str, *, declare_query: bool = False) -> Loopback:
    """Forward to ``upstream``, rewriting its URLs to the proxy's.

    ``declare_query``: add the Query extension to the conformance classes and remove
    ``query`` from forwarded search bodies (rustac's memory backend answers nothing to
    it); the recorded request bodies show what the client sent.
    """
    box: dict[str, str] = {}
    query_cc = "https://api.stacspec.org/v1.0.0/item-search#query"

    def respond(method: str, path: str, headers: Any, body: bytes):
        if method == "POST" and declare_query and body:
            d = json.loads(body)
            d.pop("query", None)
            body = json.dumps(d).encode()
        req = urllib.request.Request(upstream + path, data=body or None, method=method)
        req.add_header("Content-Type", headers.get("Content-Type") or "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        text = data.decode("utf-8").replace(upstream, box["url"])
        if declare_query and '"conformsTo"' in text:
            d = json.loads(text)
            d["conformsTo"].append(query_cc)
            text = json.dumps(d)
        return status, {"Content-Type": "application/json"}, text.encode()

    import urllib.error

    server = Loopback(respond)
    box["url"] = server.url
    return server


def token_server() -> Loopback:
    """A fake Planetary Computer SAS token endpoint: /token/{account}/{container}."""

    def respond(method: str, path: str, headers: Any, body: bytes):
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "token":
            return 404, {}, b""
        token = f"sv=2021&se=2099-01-01&sp=rl&sig={parts[1]}-{parts[2]}"
        out = {"msft:expiry": "2099-01-01T00:00:00Z", "token": token}
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()

    return Loopback(respond)
