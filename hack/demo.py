"""``make demo``: the disk-space scenario end to end, on a local control plane if need be.

1. Uses the cluster that ``KUBECONFIG`` names, or starts the local control plane.
2. Installs the CRD; starts the bundled demo model (a scripted stand-in, not an LLM) unless
   ``OPENAI_API_KEY`` is set, in which case the real model at ``OPENAI_BASE_URL`` is used.
3. Fills a demo workspace with log files, starts the operator, applies
   ``examples/disk-cleanup.yaml``, shows the task's progress live and prints the result.
Exits non-zero if the task does not succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localcluster import DEFAULT_DIR, REPO, build_binaries, link_bin, up

DEMO = REPO / ".cache" / "demo"
EXAMPLE = REPO / "examples" / "disk-cleanup.yaml"
NAME = "disk-cleanup"
NAMESPACE = os.environ.get("DEMO_NAMESPACE", "default")


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def kubectl(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def make_workspace(ws: Path = DEMO / "workspace") -> Path:
    """Fill ``ws`` with 3.7 MiB of log files under logs/ and a README; return it."""
    logs = ws / "logs"
    (logs / "archive").mkdir(parents=True, exist_ok=True)
    lines = "".join(
        f"2026-11-24T10:{i % 60:02d}:00Z INFO request served in 12ms\n" for i in range(20_000)
    )
    for name in ("app.log", "app.log.1", "worker.log", "archive/app.log.2"):
        (logs / name).write_text(lines)
    (ws / "README.txt").write_text(
        "Demo workspace of agenttask-operator. Only logs/ gets cleaned.\n"
    )
    return ws


def start_bundled_model(env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """Start the bundled demo model on 127.0.0.1: its process, first line and base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agenttask_operator.demo_model"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line, line.rsplit(" at ", 1)[-1]


def start_model(env: dict[str, str]) -> subprocess.Popen[str] | None:
    if os.environ.get("OPENAI_API_KEY"):
        base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        say(f"using the model at {base} (OPENAI_API_KEY is set)")
        return None
    proc, line, base = start_bundled_model(env)
    say("OPENAI_API_KEY is not set: using the BUNDLED DEMO MODEL, a scripted stand-in, not an LLM")
    say(f"  {line}")
    env["OPENAI_BASE_URL"] = base
    env["OPENAI_API_KEY"] = "demo-no-key-needed"
    return proc


WATCH_FIELDS = (
    "{.status.phase}|{.status.iterations}|{.status.currentStep.kind}|{.status.currentStep.toolName}"
    "|{.status.attempts}|{.status.lastError}\n"
)


def describe(fields: list[str]) -> str:
    phase, iterations, kind, tool, attempts, error = (fields + [""] * 6)[:6]
    line = f"phase={phase or 'Pending':<9} iterations={iterations or 0}"
    if kind:
        what = (
            f"running tool {tool}"
            if kind == "Tool"
            else f"asking the model (call {int(iterations or 0) + 1})"
        )
        line += f"  now: {what}, attempt {attempts}"
    if error:
        line += f"  last error: {error}"
    return line


def follow(operator: subprocess.Popen[bytes], timeout: float) -> None:
    """Print every change of the task's status (a watch sees each write) until it ends."""
    watch = subprocess.Popen(
        [
            "kubectl",
            "get",
            "agenttask",
            NAME,
            "-n",
            NAMESPACE,
            "--watch",
            "-o",
            f"jsonpath={WATCH_FIELDS}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    deadline = time.monotonic() + timeout
    last = ""
    try:
        for raw in watch.stdout:
            line = describe(raw.rstrip("\n").split("|"))
            if line != last:
                say(line)
                last = line
            if raw.split("|", 1)[0] in ("Succeeded", "Failed"):
                return
            if time.monotonic() > deadline or operator.poll() is not None:
                return
    finally:
        watch.terminate()


def save_metrics(port: str | None) -> None:
    """With AGENTTASK_METRICS_PORT set, keep what the operator's /metrics says at the end."""
    if not port or port == "0":
        return
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    (DEMO / "metrics.txt").write_text(text)
    say(f"{url} saved in {os.path.relpath(DEMO / 'metrics.txt')}")


def main() -> int:
    DEMO.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not env.get("KUBECONFIG"):
        up(DEFAULT_DIR)
        env["KUBECONFIG"] = os.environ["KUBECONFIG"] = str(DEFAULT_DIR / "kubeconfig")
    else:
        say(f"using the cluster of KUBECONFIG={env['KUBECONFIG']}")
    bin_dir = link_bin(build_binaries())
    os.environ["PATH"] = env["PATH"] = f"{bin_dir}:{env['PATH']}"

    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/agenttasks.agenttask.dev")
    kubectl("delete", "agenttask", NAME, "-n", NAMESPACE, "--ignore-not-found", "--wait=true")

    ws = make_workspace()
    size = sum(p.stat().st_size for p in (ws / "logs").rglob("*") if p.is_file())
    say(f"workspace {os.path.relpath(ws)} holds {size / 2**20:.1f} MiB of logs")
    model = start_model(env)
    env["AGENTTASK_WORKSPACE"] = str(ws)
    log = (DEMO / "operator.log").open("w")
    operator = subprocess.Popen(
        [sys.executable, "-m", "agenttask_operator", "--namespace", NAMESPACE],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    say(f"operator started (log: {os.path.relpath(DEMO / 'operator.log')})")
    try:
        say(kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE)).strip())
        follow(operator, float(os.environ.get("DEMO_TIMEOUT", "300")))
        if operator.poll() is not None:
            say(f"the operator exited with {operator.returncode}; see its log")
            return 1
        print()
        print(kubectl("get", "agenttasks", "-n", NAMESPACE, "-o", "wide"))
        st = json.loads(kubectl("get", "agenttask", NAME, "-n", NAMESPACE, "-o", "json"))["status"]
        left = sum(p.stat().st_size for p in (ws / "logs").rglob("*") if p.is_file())
        if st.get("phase") != "Succeeded":
            why = st.get("error") or st.get("message")
            say(f"task ended {st.get('phase')}: {st.get('reason')}: {why}")
            return 1
        say(f"result: {st.get('result')}")
        say(f"logs left in the workspace: {left} bytes (were {size})")
        save_metrics(env.get("AGENTTASK_METRICS_PORT"))
        say(
            "the cluster keeps running: kubectl get agenttasks; kubectl agenttask logs "
            f"{NAME} (the plugin is in .venv/bin); make cluster-down stops it"
        )
        return 0
    finally:
        operator.terminate()
        if model is not None:
            model.terminate()
        try:
            operator.wait(15)
        except subprocess.TimeoutExpired:
            operator.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
