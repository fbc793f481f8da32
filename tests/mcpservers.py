"""Real MCP servers for the tests, each a subprocess on a free 127.0.0.1 port.

- :func:`start_everything` — ``@modelcontextprotocol/server-everything`` (npm, a server no one
  here wrote) in streamable-HTTP mode;
- :func:`start_time_proxy` — the stdio-only ``mcp-server-time`` (PyPI) bridged to streamable
  HTTP by ``mcp-proxy`` (PyPI), the way users expose stdio servers;
- :func:`start_ledger` — our own ``tests/ledger_mcp.py``, which records every effect.

``make mcp-servers`` installs the first two into ``.cache/mcp/`` (``make test`` does it first);
``mcp-server-time`` comes with the ``dev`` extra. Fixtures: ``everything`` and ``time_server``
(one per session), ``ledger`` (a fresh server and ledger per test).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from localcluster import free_port

REPO = Path(__file__).resolve().parents[1]
MCP_DIR = REPO / ".cache" / "mcp"
EVERYTHING_JS = (
    MCP_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
MCP_PROXY = MCP_DIR / "proxy" / "bin" / "mcp-proxy"
TIME_SERVER = Path(sys.executable).parent / "mcp-server-time"
LEDGER_SERVER = Path(__file__).resolve().parent / "ledger_mcp.py"
EVERYTHING_VERSION = "2026.8.31"  # pinned in hack/mcp-servers/package-lock.json
MISSING = "{} is not installed: run `make mcp-servers` (make test does)"


def _base_env() -> dict[str, str]:
    """A small environment: the servers (server-everything has a ``get-env`` tool) see no more."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


@dataclass
class ServerProcess:
    """One MCP server subprocess; its output goes to ``log``."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(
    name: str, argv: list[str], port: int, log: Path, env: dict[str, str], timeout: float = 60.0
) -> ServerProcess:
    """Start ``argv`` and wait until it accepts connections on ``port``."""
    with log.open("ab") as f:
        proc = subprocess.Popen(
            argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    server = ServerProcess(name, f"http://127.0.0.1:{port}/mcp", proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{server.output()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not listen on {port} within {timeout:g}s:\n{server.output()}")


def start_everything(workdir: Path) -> ServerProcess:
    """server-everything, streamable HTTP at ``http://127.0.0.1:<port>/mcp``."""
    if not EVERYTHING_JS.exists():
        raise RuntimeError(MISSING.format(EVERYTHING_JS))
    port = free_port()
    env = _base_env() | {"PORT": str(port)}
    argv = ["node", str(EVERYTHING_JS), "streamableHttp"]
    return start("server-everything", argv, port, workdir / "everything.log", env)


def start_time_proxy(workdir: Path) -> ServerProcess:
    """mcp-server-time (stdio) behind mcp-proxy, streamable HTTP at ``…/mcp``."""
    for path in (MCP_PROXY, TIME_SERVER):
        if not path.exists():
            raise RuntimeError(MISSING.format(path))
    port = free_port()
    argv = [
        str(MCP_PROXY), "--host", "127.0.0.1", "--port", str(port), "--",
        str(TIME_SERVER), "--local-timezone", "UTC",
    ]  # fmt: skip
    return start("mcp-proxy+mcp-server-time", argv, port, workdir / "time-proxy.log", _base_env())


@dataclass
class LedgerServer(ServerProcess):
    """``tests/ledger_mcp.py``: what it executed is in ``ledger``, what it was sent in
    ``requests`` (one JSON object a line each).
    """

    ledger: Path = field(default=Path())
    requests: Path = field(default=Path())
    started: Path = field(default=Path())

    def entries(self) -> list[dict[str, Any]]:
        """The effects so far: one entry per execution of a tool that changes something."""
        return _lines(self.ledger)

    def started_calls(self) -> list[dict[str, Any]]:
        """``slow_change`` calls that began (``change``, ``metaKey``), finished or not."""
        return _lines(self.started)

    def request_log(self) -> list[dict[str, Any]]:
        """Every HTTP request so far: method, path, headers (lower-case names)."""
        return _lines(self.requests)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_ledger(workdir: Path) -> LedgerServer:
    """A fresh ledger server with an empty ledger in ``workdir``."""
    port = free_port()
    ledger, requests = workdir / "ledger.jsonl", workdir / "requests.jsonl"
    started = workdir / "started.jsonl"
    argv = [
        sys.executable, str(LEDGER_SERVER), "--port", str(port), "--ledger", str(ledger),
        "--requests", str(requests), "--started", str(started),
    ]  # fmt: skip
    s = start("ledger", argv, port, workdir / "ledger.log", _base_env())
    return LedgerServer(
        s.name, s.url, s.proc, s.log, ledger=ledger, requests=requests, started=started
    )


def _serve(factory: Any, workdir: Path) -> Iterator[Any]:
    try:
        server = factory(workdir)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def everything(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """server-everything for the whole session."""
    yield from _serve(start_everything, tmp_path_factory.mktemp("everything"))


@pytest.fixture(scope="session")
def time_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """mcp-server-time behind mcp-proxy for the whole session."""
    yield from _serve(start_time_proxy, tmp_path_factory.mktemp("time-proxy"))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[LedgerServer]:
    """A ledger server of this test's own."""
    workdir = tmp_path / "ledger"
    workdir.mkdir()
    yield from _serve(start_ledger, workdir)
