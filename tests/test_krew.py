"""The krew manifest of ``kubectl agenttask`` (plugins/krew/agenttask.yaml): the fields krew
requires, an archive that rebuilds to the manifest's sha256, and a real install with krew (built
from its Go module by hack/krew/build.sh) whose plugin the real kubectl then runs.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from krew_archive import MANIFEST, build, version
from localcluster import REPO, LocalCluster

KREW_BUILD = REPO / "hack" / "krew" / "build.sh"


@functools.cache
def krew_binary() -> Path:
    """Build krew from its Go module (cached outside git) and return the binary's path."""
    assert shutil.which("go"), "Go is not installed: krew is built from its Go module"
    proc = subprocess.run(
        ["bash", str(KREW_BUILD)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    assert proc.returncode == 0, f"hack/krew/build.sh failed (exit {proc.returncode})"
    return Path(proc.stdout.strip().splitlines()[-1])


def test_the_manifest_has_what_krew_requires() -> None:
    m = yaml.safe_load(MANIFEST.read_text())
    assert m["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert m["kind"] == "Plugin"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", m["metadata"]["name"])
    spec = m["spec"]
    assert spec["version"] == version()  # the package's version, v-prefixed semver
    assert re.fullmatch(r"v\d+\.\d+\.\d+", spec["version"])
    assert spec["shortDescription"] and len(spec["shortDescription"]) <= 80
    assert spec["description"].strip()
    assert spec["platforms"]
    for p in spec["platforms"]:
        assert p["selector"]["matchExpressions"] or p["selector"]["matchLabels"]
        assert p["uri"].startswith("https://") and p["uri"].endswith(".tar.gz")
        assert re.fullmatch(r"[0-9a-f]{64}", p["sha256"])
        assert p["bin"] == "kubectl-agenttask"
        assert {"from": "kubectl-agenttask", "to": "."} in p["files"]


def test_the_archive_rebuilds_to_the_manifests_sha256(tmp_path: Path) -> None:
    path, sha = build(tmp_path / "a")
    again, sha_again = build(tmp_path / "b")
    assert sha == sha_again and path.read_bytes() == again.read_bytes()
    platforms = yaml.safe_load(MANIFEST.read_text())["spec"]["platforms"]
    assert {p["sha256"] for p in platforms} == {sha}, "run python3 hack/krew_archive.py"
    with tarfile.open(path) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mode) == ("kubectl-agenttask", 0o755)


@pytest.mark.cluster
def test_krew_installs_the_plugin_and_kubectl_runs_it(
    cluster: LocalCluster, crd: Path, tmp_path: Path
) -> None:
    archive, _ = build(tmp_path / "dist")
    root = tmp_path / "krew"
    env = {"KREW_ROOT": str(root), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [str(krew_binary()), "install", f"--manifest={MANIFEST}", f"--archive={archive}"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Installed plugin: agenttask" in proc.stderr + proc.stdout
    assert (root / "bin" / "kubectl-agenttask").exists()

    def kubectl(*args: str, python: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(cluster.kubectl), *args],
            env={
                "KUBECONFIG": str(cluster.kubeconfig),
                "PATH": f"{root / 'bin'}:/usr/bin:/bin",
                "HOME": str(tmp_path),
                "AGENTTASK_PYTHON": python,
            },
            capture_output=True,
            text=True,
            check=False,
        )

    proc = kubectl("agenttask", "list", "-n", "default", python=sys.executable)
    assert proc.returncode == 0, proc.stderr
    assert "No resources found in default namespace." in proc.stderr
    proc = kubectl("plugin", "list", python=sys.executable)
    assert f"{root / 'bin' / 'kubectl-agenttask'}" in proc.stdout
    proc = kubectl("agenttask", "list", python="/bin/false")
    assert proc.returncode == 1
    assert "the Python package agenttask-operator is not installed for /bin/false" in proc.stderr
