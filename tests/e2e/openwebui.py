"""The real Open WebUI (PyPI `open-webui`, in `.venv-openwebui`, made by `make openwebui`) as a
child process pointed at a Hearth, and a recording proxy between the two that keeps what Open
WebUI actually sends (headers, bodies) and what comes back.

Open WebUI runs offline and without sign-in: `OFFLINE_MODE` (sets `HF_HUB_OFFLINE`, no version
check), `USE_SLIM_DOCKER` (no local embedding/reranking/whisper model, no vector DB client),
`WEBUI_AUTH=false` (one admin, `admin@localhost`/`admin`, signs in with any form), Ollama off,
one OpenAI connection to Hearth's `/v1` with a Hearth token, its data in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
OPENWEBUI = Path(
    os.environ.get("HEARTH_TEST_OPENWEBUI", REPO / ".venv-openwebui" / "bin" / "open-webui")
)
# hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), and the length it recomputes
_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
}


@dataclass
class Exchange:
    """One request Open WebUI sent to Hearth, and Hearth's answer as the proxy passed it on."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response: str = ""
    done: bool = False

    def redacted(self) -> dict[str, Any]:
        headers = dict(self.headers)
        if "authorization" in headers:
            headers["authorization"] = "Bearer <hearth token>"
        return {
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
            "status": self.status,
            "response_headers": self.response_headers,
            "response": self.response,
        }


class RecordingProxy:
    """A plain HTTP reverse proxy on loopback that streams each answer through chunk by chunk
    (Hearth's SSE must arrive as it is written) and records every exchange."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                ex = Exchange(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with proxy._lock:
                    proxy.exchanges.append(ex)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                with (
                    httpx.Client(timeout=httpx.Timeout(600, connect=10)) as client,
                    client.stream(
                        self.command, proxy.upstream + self.path, headers=headers, content=raw
                    ) as resp,
                ):
                    ex.status = resp.status_code
                    ex.response_headers = {k.lower(): v for k, v in resp.headers.items()}
                    self.send_response(resp.status_code)
                    for k, v in resp.headers.items():
                        if k.lower() not in _HOP and k.lower() != "content-encoding":
                            self.send_header(k, v)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    received: list[str] = []
                    for chunk in resp.iter_bytes():
                        received.append(chunk.decode("utf-8", "replace"))
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    ex.response = "".join(received)
                ex.done = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def chats(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    def wait_idle(self, count: int, timeout_s: float) -> list[Exchange]:
        """Wait until at least `count` chat requests were made and every one has finished."""
        deadline = time.monotonic() + timeout_s
        while True:
            chats = self.chats()
            if len(chats) >= count and all(e.done for e in chats):
                return chats
            if time.monotonic() > deadline:
                seen = [(e.path, (e.body or {}).get("stream"), e.done) for e in chats]
                pytest.fail(f"Open WebUI made {seen} after {timeout_s:.0f}s, wanted {count} done")
            time.sleep(0.5)


@dataclass
class OpenWebUI:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    token: str = ""

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=120,
        )

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def openwebui_env(data_dir: Path, hearth_v1: str, hearth_token: str, port: int) -> dict[str, str]:
    """The environment that runs Open WebUI offline, sign-in free, on Hearth alone."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "DATA_DIR": str(data_dir),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "OFFLINE_MODE": "true",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "USE_SLIM_DOCKER": "true",
            "ENABLE_VERSION_UPDATE_CHECK": "false",
            "WEBUI_AUTH": "false",
            "WEBUI_SECRET_KEY": "hearth-e2e-open-webui-key-not-a-secret-0123",
            "ENABLE_OLLAMA_API": "false",
            "ENABLE_OPENAI_API": "true",
            "OPENAI_API_BASE_URLS": hearth_v1,
            "OPENAI_API_KEYS": hearth_token,
            "DEFAULT_MODELS": "hearth",
            "ENABLE_FORWARD_USER_INFO_HEADERS": "true",
            "BYPASS_EMBEDDING_AND_RETRIEVAL": "true",
            "ENABLE_WEB_SEARCH": "false",
            "ENABLE_IMAGE_GENERATION": "false",
            "ENABLE_CODE_INTERPRETER": "false",
            "ENABLE_CODE_EXECUTION": "false",
            "ENABLE_COMMUNITY_SHARING": "false",
            "ENABLE_OTEL": "false",
            "ANONYMIZED_TELEMETRY": "false",
            "SCARF_NO_ANALYTICS": "true",
            "DO_NOT_TRACK": "true",
            "GLOBAL_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextmanager
def run_openwebui(
    data_dir: Path, hearth_v1: str, hearth_token: str, timeout_s: float = 600
) -> Iterator[OpenWebUI]:
    """Start `open-webui serve`, wait for /ready (start-up done, database up), sign in as its
    no-auth admin; stop it after."""
    if not OPENWEBUI.exists():
        message = f"no Open WebUI at {OPENWEBUI} (`make openwebui` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "open-webui.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(OPENWEBUI), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=openwebui_env(data_dir, hearth_v1, hearth_token, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
    owui = OpenWebUI(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"open-webui exited {proc.returncode}:\n{owui.log_tail()}")
            try:
                if httpx.get(owui.url + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"open-webui not ready after {timeout_s:.0f}s:\n{owui.log_tail()}")
            time.sleep(1)
        # WEBUI_AUTH=false: sign-in ignores the form and returns the one admin's token
        r = httpx.post(
            owui.url + "/api/v1/auths/signin",
            json={"email": "admin@localhost", "password": "admin"},
            timeout=60,
        )
        assert r.status_code == 200, (r.status_code, r.text, owui.log_tail())
        owui.token = r.json()["token"]
        # the admin has seen this version's "What's New" (else it covers the chat page)
        with owui.client() as client:
            r = client.post(
                "/api/v1/users/user/settings/update",
                json={"ui": {"showChangelog": False, "version": "0.12.4"}},
            )
            assert r.status_code == 200, (r.status_code, r.text)
        yield owui
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
