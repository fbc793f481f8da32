"""What the benchmark reads besides the fake server: /proc, and the /metrics of the control plane.

* CPU seconds of a process: ``utime + stime`` of ``/proc/<pid>/stat``, in clock ticks;
* resident memory: ``VmRSS`` of ``/proc/<pid>/status``, sampled every 0.2 s;
* requests the API server served, from its side: ``apiserver_request_total`` of its ``/metrics``
  by verb, resource and subresource;
* bytes etcd was asked to put, and its database size, from etcd's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from fakemodel import PUT_SIZE_METRICS, metric_value

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ApiKey = tuple[str, str, str]  # (verb, resource, subresource)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def machine_cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (all cores: user, system, irq …, not idle)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process now (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


@dataclass
class RssSampler:
    """Samples the RSS of the process ``pid()`` names every ``interval`` seconds."""

    interval: float = 0.2
    samples: list[tuple[float, int]] = field(default_factory=list)
    pid: int | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            if self.pid is not None:
                rss = rss_bytes(self.pid)
                if rss:
                    self.samples.append((time.monotonic(), rss))
            await asyncio.sleep(self.interval)

    def peak(self, start: float, end: float | None = None) -> int:
        """The highest sample between ``start`` and ``end`` (monotonic times)."""
        stop = end if end is not None else float("inf")
        return max((r for t, r in self.samples if start <= t <= stop), default=0)

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_LABELS = re.compile(r'(\w+)="([^"]*)"')


def request_totals(text: str) -> Counter[ApiKey]:
    """``apiserver_request_total`` summed by (verb, resource, subresource), resources only."""
    out: Counter[ApiKey] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition("} ")
        labels = dict(_LABELS.findall(labels_text))
        resource = labels.get("resource", "")
        if not resource:  # /metrics, /readyz …: not an API resource
            continue
        out[(labels.get("verb", "?"), resource, labels.get("subresource", ""))] += int(float(value))
    return out


@dataclass(frozen=True)
class EtcdSample:
    """What etcd's /metrics said at one moment."""

    put_bytes: float
    db_size: float


class Scraper:
    """Reads the API server's and etcd's /metrics (the admin client certificate for the first)."""

    def __init__(self, api_server: str, pki: Path, etcd_url: str) -> None:
        """Remember where; call :meth:`open` before use."""
        self.api_server, self.etcd_url = api_server, etcd_url
        self.ssl = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ssl.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.session: aiohttp.ClientSession | None = None
        self.put_metric = ""

    async def open(self) -> None:
        """Open the HTTP session; find which put-size counter this etcd has."""
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.put_metric = metric_value(await self._get(self.etcd_url + "/metrics"))[0]

    async def close(self) -> None:
        """Close the HTTP session."""
        if self.session is not None:
            await self.session.close()

    async def _get(self, url: str, tls: bool = False) -> str:
        assert self.session is not None
        async with self.session.get(url, ssl=self.ssl if tls else True) as resp:
            resp.raise_for_status()
            return await resp.text()

    async def api_requests(self) -> Counter[ApiKey]:
        """The API server's request counters now."""
        return request_totals(await self._get(self.api_server + "/metrics", tls=True))

    async def etcd(self) -> EtcdSample:
        """etcd's put-bytes counter and database size now."""
        text = await self._get(self.etcd_url + "/metrics")
        return EtcdSample(
            metric_value(text, PUT_SIZE_METRICS)[1],
            metric_value(text, ("etcd_mvcc_db_total_size_in_bytes",))[1],
        )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]
