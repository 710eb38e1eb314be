"""deploy/nginx/hearth.conf in a real nginx (Debian's, from `make system-deps`): the site passes
`nginx -t`, redirects HTTP to HTTPS, negotiates HTTP/2, forwards the client's address and scheme,
keeps upstream connections alive, and passes a Server-Sent Events stream on chunk by chunk.

The site file is used as shipped, with only its addresses and certificate paths replaced; a copy
with `proxy_buffering on` shows the streaming check can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from api.uploads import FORM_OVERHEAD
from core.settings import Settings
from tests.conftest import free_port
from tests.factories import self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "hearth.conf"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
EVENTS = 5
INTERVAL_S = 0.3
MIB = 1024 * 1024


# --- the upstream: a tiny streaming server --------------------------------------------------------


@dataclass
class Backend:
    """Stands in for `hearth serve-api`: SSE on POST /v1/chat/completions, headers on /echo."""

    port: int
    sent: list[float] = field(default_factory=list)  # time.monotonic() of each event's send

    def app(self) -> Starlette:
        async def stream(request: Request) -> StreamingResponse:
            await request.body()

            async def events() -> AsyncIterator[bytes]:
                for i in range(EVENTS):
                    self.sent.append(time.monotonic())
                    yield f"data: {i}\n\n".encode()
                    await asyncio.sleep(INTERVAL_S)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        async def echo(request: Request) -> JSONResponse:
            client = request.scope.get("client") or ("", 0)
            return JSONResponse({"headers": dict(request.headers), "client_port": client[1]})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", stream, methods=["POST"]),
                Route("/echo", echo),
            ]
        )


@pytest.fixture
def backend() -> Iterator[Backend]:
    backend = Backend(free_port())
    config = uvicorn.Config(
        backend.app(),
        host="127.0.0.1",
        port=backend.port,
        lifespan="off",
        ws="none",
        http="h11",
        log_level="warning",
        proxy_headers=False,  # show the headers nginx sends, unprocessed
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "backend did not start"
        time.sleep(0.02)
    yield backend
    server.should_exit = True
    thread.join(10)


# --- nginx with the real site file --------------------------------------------------------------


def localise(site: str, *, upstream: int, http: int, https: int, cert: Path, key: Path) -> str:
    """The site with test addresses and certificate; each replacement must hit, so a reshaped
    site file fails here instead of being tested half-changed."""
    replacements = [
        (r"^(\s*)server 127\.0\.0\.1:8000;", rf"\g<1>server 127.0.0.1:{upstream};", 1),
        (r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{http};", 1),
        (r"^(\s*)listen 443 ssl http2;", rf"\g<1>listen 127.0.0.1:{https} ssl http2;", 1),
        (r"^\s*listen \[::\]:(80|443)[^;]*;\n", "", 2),  # no IPv6 in every test sandbox
        (r"^(\s*)ssl_certificate \S+;", rf"\g<1>ssl_certificate {cert};", 1),
        (r"^(\s*)ssl_certificate_key \S+;", rf"\g<1>ssl_certificate_key {key};", 1),
    ]
    for pattern, replacement, count in replacements:
        site, n = re.subn(pattern, replacement, site, flags=re.M)
        assert n == count, f"{pattern!r} matched {n} times in {SITE.name}, expected {count}"
    return site


def main_conf(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf around the site, everything under `prefix`, in the foreground."""
    temp = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
{temp}
    include {site};
}}
"""


@dataclass
class Nginx:
    http: int
    https: int
    cert: Path
    conf: Path
    prefix: Path

    def command(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-c",
            str(self.conf),
            "-p",
            str(self.prefix),
            "-e",
            str(self.prefix / "error.log"),
            *extra,
        ]

    def test(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command("-t"), capture_output=True, text=True, timeout=30, check=False
        )

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        return httpx.Client(base_url=f"https://127.0.0.1:{self.https}", verify=context, timeout=10)


def make_nginx(tmp_path: Path, upstream: int, site_text: str | None = None) -> Nginx:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: run `make system-deps`")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = self_signed_certificate(prefix)
    http, https = free_port(), free_port()
    site = prefix / "hearth.conf"
    site.write_text(
        localise(
            site_text or SITE.read_text(encoding="utf-8"),
            upstream=upstream,
            http=http,
            https=https,
            cert=cert,
            key=key,
        ),
        encoding="utf-8",
    )
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, site), encoding="utf-8")
    return Nginx(http, https, cert, conf, prefix)


@contextlib.contextmanager
def running(nginx: Nginx) -> Iterator[Nginx]:
    """nginx in the foreground until the block ends; fails with its error log if it dies."""
    log = nginx.prefix / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(nginx.command(), stdout=err, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                errors = (nginx.prefix / "error.log").read_text(errors="replace")
                pytest.fail(f"nginx exited with {proc.returncode}: {log.read_text()}{errors}")
            try:
                socket.create_connection(("127.0.0.1", nginx.https), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield nginx
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def stream_arrivals(nginx: Nginx) -> tuple[list[str], list[float]]:
    """POST a chat request through nginx; every event's data and time.monotonic() of arrival."""
    data, arrived = [], []
    with (
        nginx.client() as client,
        client.stream("POST", "/v1/chat/completions", json={"stream": True}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrived.append(time.monotonic())
                data.append(line.removeprefix("data: "))
    return data, arrived


# --- nginx -t -----------------------------------------------------------------------------------


def test_site_passes_nginx_t(tmp_path: Path) -> None:
    result = make_nginx(tmp_path, free_port()).test()
    output = result.stderr + result.stdout
    assert result.returncode == 0, output
    assert "test is successful" in output
    # nginx >= 1.25.1 deprecates `listen ... http2`; nothing else may warn
    warnings = [
        line
        for line in output.splitlines()
        if ("[warn]" in line and "http2" not in line) or "[emerg]" in line
    ]
    assert warnings == []


def test_nginx_t_rejects_a_broken_site(tmp_path: Path) -> None:
    site = SITE.read_text(encoding="utf-8")
    assert site.count("proxy_buffering off;") == 1
    broken = site.replace("proxy_buffering off;", "proxy_buffering maybe;")
    result = make_nginx(tmp_path, free_port(), broken).test()
    assert result.returncode != 0
    assert "proxy_buffering" in result.stderr


# --- through a running nginx --------------------------------------------------------------------


def test_events_pass_through_as_they_are_sent(backend: Backend, tmp_path: Path) -> None:
    with running(make_nginx(tmp_path, backend.port)) as nginx:
        data, arrived = stream_arrivals(nginx)
    assert data == [*(str(i) for i in range(EVENTS)), "[DONE]"]
    assert len(backend.sent) == EVENTS
    # each event is at the client before the backend has sent the one after next (0.6 s later),
    # and the first long before the last is sent: nothing waits for a buffer to fill
    assert arrived[0] < backend.sent[-1]
    late = [i for i in range(EVENTS - 2) if arrived[i] >= backend.sent[i + 2]]
    assert late == []


def test_a_buffering_proxy_fails_the_streaming_check(backend: Backend, tmp_path: Path) -> None:
    site = SITE.read_text(encoding="utf-8").replace("proxy_buffering off;", "proxy_buffering on;")
    with running(make_nginx(tmp_path, backend.port, site)) as nginx:
        data, arrived = stream_arrivals(nginx)
    assert data[-1] == "[DONE]"
    assert arrived[0] >= backend.sent[-1]  # everything came at the end


def test_http_redirects_to_https(backend: Backend, tmp_path: Path) -> None:
    with running(make_nginx(tmp_path, backend.port)) as nginx:
        response = httpx.get(
            f"http://127.0.0.1:{nginx.http}/v1/models?limit=2",
            headers={"Host": "hearth.test"},
            timeout=10,
        )
    assert response.status_code == 301
    assert response.headers["location"] == "https://hearth.test/v1/models?limit=2"


def test_forwarded_headers_and_upstream_keepalive(backend: Backend, tmp_path: Path) -> None:
    with running(make_nginx(tmp_path, backend.port)) as nginx, nginx.client() as client:
        first = client.get("/echo", headers={"Host": "hearth.test"}).json()
        second = client.get("/echo", headers={"Host": "hearth.test"}).json()
    headers = first["headers"]
    assert headers["host"] == "hearth.test"
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert "connection" not in headers or headers["connection"].lower() != "close"
    # both requests came over one kept-alive upstream connection
    assert first["client_port"] == second["client_port"]


def test_http2_is_offered(backend: Backend, tmp_path: Path) -> None:
    with running(make_nginx(tmp_path, backend.port)) as nginx:
        context = ssl.create_default_context(cafile=str(nginx.cert))
        context.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", nginx.https), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.selected_alpn_protocol() == "h2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


# --- values that must agree with Hearth ---------------------------------------------------------

_SIZE = re.compile(r"(\d+)([kKmMgG]?)")


def _bytes(size: str) -> int:
    match = _SIZE.fullmatch(size)
    assert match, size
    return int(match[1]) * {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB}[match[2].lower()]


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    assert match, value
    return int(match[1]) * {"ms": 0, None: 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def _directive(text: str, name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.M)


def _upload_limit_ok(size: int) -> bool:
    """Above Hearth's own check (so Hearth answers 413 itself), yet not far above it."""
    hearth = int(Settings.model_fields["max_file_mb"].default * MIB) + FORM_OVERHEAD
    return hearth <= size <= hearth + 8 * MIB


def test_upload_limit_lets_hearth_answer_413() -> None:
    sizes = _directive(SITE.read_text(encoding="utf-8"), "client_max_body_size")
    assert len(sizes) == 1
    assert _upload_limit_ok(_bytes(sizes[0]))
    assert not _upload_limit_ok(_bytes("200m")), "a 200 MiB file plus its envelope must pass"
    assert not _upload_limit_ok(_bytes("1g"))


def test_streaming_directives() -> None:
    site = SITE.read_text(encoding="utf-8")
    assert _directive(site, "proxy_buffering") == ["off"]
    assert _directive(site, "proxy_request_buffering") == ["off"]
    assert _directive(site, "proxy_http_version") == ["1.1"]
    assert _seconds(_directive(site, "proxy_read_timeout")[0]) >= 600
    assert re.search(r"upstream hearth_api \{[^}]*keepalive \d+;", site)


# --- the Caddy equivalent -----------------------------------------------------------------------

CADDY = shutil.which("caddy")


@pytest.mark.skipif(CADDY is None, reason="caddy not installed (Debian package `caddy`)")
def test_caddyfile_adapts_to_a_streaming_proxy() -> None:
    assert CADDY is not None
    result = subprocess.run(
        [CADDY, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    handlers: list[dict[str, object]] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if "handler" in node:
                handlers.append(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(json.loads(result.stdout))
    proxies = [h for h in handlers if h["handler"] == "reverse_proxy"]
    bodies = [h for h in handlers if h["handler"] == "request_body"]
    assert len(proxies) == 1 and len(bodies) == 1
    assert proxies[0]["flush_interval"] == -1
    assert proxies[0]["upstreams"] == [{"dial": "127.0.0.1:8000"}]
    max_size = bodies[0]["max_size"]
    assert isinstance(max_size, int) and _upload_limit_ok(max_size)
