"""A real Prometheus (Debian's package, ``make prometheus``) for tests: started on 127.0.0.1 with
its own storage, scraping the targets it is given every second; queried over its HTTP API.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from localcluster import free_port

from kubehelpers import eventually


def binary() -> str:
    """The ``prometheus`` binary; fails with how to get it."""
    found = shutil.which("prometheus")
    assert found, "prometheus is not installed: run `make prometheus` (Debian's package, as root)"
    return found


def promtool() -> str:
    """The ``promtool`` binary (in the same package)."""
    found = shutil.which("promtool")
    assert found, "promtool is not installed: run `make prometheus` (Debian's package, as root)"
    return found


def lint_metrics(text: str) -> str:
    """What ``promtool check metrics`` says about an exposition ("" when nothing)."""
    proc = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return (proc.stdout + proc.stderr).strip() if proc.returncode else proc.stdout.strip()


def lint_rules(path: Path) -> str:
    """What ``promtool check rules`` finds wrong with a rules file ("" when nothing)."""
    proc = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()


async def scrape(port: int) -> str:
    """What ``/metrics`` on 127.0.0.1:``port`` serves now."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as r,
    ):
        assert r.status == 200, r.status
        return await r.text()


def version() -> str:
    """``prometheus --version``'s first line, e.g. ``prometheus, version 2.42.0+ds (…)``."""
    out = subprocess.run([binary(), "--version"], capture_output=True, text=True, check=True)
    return (out.stdout or out.stderr).splitlines()[0]


IMPLICIT = ("__name__", "job", "instance")  # labels every scraped series has


class Prometheus:
    """One Prometheus server scraping ``targets`` (``host:port``) every second."""

    def __init__(self, workdir: Path, targets: list[str], job: str = "agenttask-operator") -> None:
        """Configure; call :meth:`start`."""
        self.workdir, self.targets, self.job = workdir, targets, job
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        """Where its HTTP API is."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        """Write the configuration and start the server (see :meth:`ready`)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary(),
                    f"--config.file={path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    async def ready(self, within: float = 60.0) -> None:
        """Wait until the server answers ``/-/ready``."""

        async def check() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{self.url}/-/ready") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(check, within=within, what="prometheus to be ready")

    async def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; its ``data``."""
        query = urllib.parse.urlencode(params)
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/api/v1/{path}?{query}") as r:
            body = await r.json()
        assert body.get("status") == "success", body
        return body["data"]

    async def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query: each series' labels → its value. Labels are sorted pairs, without
        ``__name__``, ``job`` and ``instance``.
        """
        data = await self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        out: dict[tuple[tuple[str, str], ...], float] = {}
        for item in data["result"]:
            labels = {k: v for k, v in item["metric"].items() if k not in IMPLICIT}
            out[tuple(sorted(labels.items()))] = float(item["value"][1])
        return out

    async def scalar(self, expr: str) -> float | None:
        """The single value of an instant query (None: no series)."""
        found = await self.query(expr)
        assert len(found) <= 1, found
        return next(iter(found.values()), None)

    async def until(self, expr: str, want: float, within: float = 60.0) -> None:
        """Wait until ``expr`` has the value ``want`` (scrapes come every second)."""
        seen: list[float | None] = []

        async def check() -> bool:
            seen.append(await self.scalar(expr))
            return seen[-1] == want

        try:
            await eventually(check, within=within, what=f"{expr} == {want}")
        except AssertionError:
            raise AssertionError(f"{expr}: want {want}, last seen {seen[-1:]}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
