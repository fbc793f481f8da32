"""The operator as a real subprocess (``python -m agenttask_operator``), killable with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path


def operator_env(fake_base_url: str, workspace: Path, faults: Path) -> dict[str, str]:
    """The environment of an operator under test: the fake model, a workspace, fault markers."""
    return {
        "OPENAI_BASE_URL": fake_base_url,
        "OPENAI_API_KEY": "sk-test-secret-key",
        "AGENTTASK_WORKSPACE": str(workspace),
        "AGENTTASK_FAULT_DIR": str(faults),
    }


def replica_processes(
    kubeconfig: Path, namespace: str, logs: Path, env: dict[str, str], names: list[str]
) -> dict[str, OperatorProcess]:
    """Replicas of one installation watching ``namespace``: each its own identity (and Lease)
    and log (``logs/<name>.log``); not started.
    """
    return {
        name: OperatorProcess(
            kubeconfig, namespace, logs / f"{name}.log", env | {"AGENTTASK_REPLICA_ID": name}
        )
        for name in names
    }


class OperatorProcess:
    """One operator process; its output goes to ``log``.

    It watches ``namespace`` only, or every namespace with ``all_namespaces=True`` (as the
    chart's default Deployment does: only for a cluster of its own, or it would pick up other
    tests' tasks).
    """

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        env: dict[str, str],
        *,
        all_namespaces: bool = False,
    ) -> None:
        """Configure; call :meth:`start`."""
        self.kubeconfig, self.namespace, self.log, self.env = kubeconfig, namespace, log, env
        self.all_namespaces = all_namespaces
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *args: str, **extra_env: str) -> OperatorProcess:
        """Start (again); ``args`` (flags, e.g. ``-v``) and ``extra_env`` apply to this start
        only (e.g. fault injection).
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AGENTTASK_"))}
        env |= {
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            # One replica per test namespace, its Lease in that namespace: a restart is the
            # same replica coming back (as a container restarted in its Pod).
            "AGENTTASK_REPLICA_ID": f"op-{self.namespace}",
            "POD_NAMESPACE": self.namespace,
        }
        env |= self.env | extra_env
        self.starts += 1
        scope = [] if self.all_namespaces else ["--namespace", self.namespace]
        with self.log.open("ab") as f:
            f.write(f"\n===== start #{self.starts} =====\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agenttask_operator", *scope, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        return self

    def wait_started(self, timeout: float = 30.0) -> None:
        """Wait until this start has logged that it watches AgentTasks."""
        marker = "agenttask-operator started"
        self._wait_log(lambda text: text.count(marker) >= self.starts, timeout, "start")

    def wait_replicas(self, names: Iterable[str], timeout: float = 30.0) -> None:
        """Wait until this replica has logged that exactly ``names`` are live: it has seen
        their Leases, so a task it finds owned by one of them is owned by a replica it knows.
        """
        line = "replicas: " + ", ".join(sorted(names))

        def seen(text: str) -> bool:
            return any(ln.endswith(line) for ln in text.splitlines())

        self._wait_log(seen, timeout, f"log {line!r}")

    def _wait_log(self, done: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if done(text):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{text[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"operator did not {what} in time")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        """Everything the operator logged so far."""
        return self.log.read_text(errors="replace")
