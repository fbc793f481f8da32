"""Helpers for the packaging tests: helm (built from its Go module), the chart, and an operator
that talks to the API server as the chart's ServiceAccount and nothing more.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import REPO, LocalCluster, kubeconfig_yaml

from operatorproc import OperatorProcess

CHART = REPO / "charts" / "agenttask-operator"
CRD = REPO / "crds" / "agenttask.dev_agenttasks.yaml"
CHART_CRD = CHART / "crds" / CRD.name
DEPLOY = REPO / "deploy"
RENDER_DEPLOY = REPO / "hack" / "render-deploy.sh"
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"
RELEASE = "agenttask-operator"  # release name == chart name: objects are called just that
RBAC_TEMPLATES = (
    "templates/serviceaccount.yaml",
    "templates/clusterrole.yaml",
    "templates/clusterrolebinding.yaml",
    "templates/role.yaml",
    "templates/rolebinding.yaml",
    "templates/lease-role.yaml",
)


class HelmUnavailableError(RuntimeError):
    """helm could not be built (no Go, no module proxy): the message says why."""


@functools.cache
def helm_binary() -> Path:
    """Build helm from its Go module (cached outside git) and return the binary's path."""
    if not shutil.which("go"):
        raise HelmUnavailableError("Go is not installed: helm is built from its Go module")
    proc = subprocess.run(
        ["bash", str(HELM_BUILD)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    if proc.returncode != 0:
        raise HelmUnavailableError(f"hack/helm/build.sh failed (exit {proc.returncode}), see above")
    return Path(proc.stdout.strip().splitlines()[-1])


def tool_env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """A minimal environment for helm/kubectl: its own HOME, so nothing of ~/.kube or ~/.config
    leaks in or out."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run(
    args: list[str], env: dict[str, str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output (far more useful than an exit code)."""
    proc = subprocess.run(
        args, env=env, input=stdin, capture_output=True, text=True, check=False, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def set_flags(values: dict[str, Any]) -> list[str]:
    """``--set-json`` flags for top-level values."""
    flags: list[str] = []
    for key, value in values.items():
        flags += ["--set-json", f"{key}={json.dumps(value)}"]
    return flags


def helm_template(
    home: Path,
    namespace: str,
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    show_only: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> str:
    """``helm template`` of the chart as ``release`` in ``namespace``."""
    args = [str(helm_binary()), "template", release, str(CHART), "--namespace", namespace]
    args += set_flags(values or {})
    for s in show_only:
        args += ["--show-only", s]
    return run([*args, *extra], tool_env(home)).stdout


def docs(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a stream."""
    return [d for d in yaml.safe_load_all(text) if d]


def rbac_manifests(
    home: Path, namespace: str, watch: list[str], release: str = RELEASE
) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects for ``release`` in ``namespace`` that watches
    ``watch`` (empty: all namespaces)."""
    per_namespace = ("templates/role.yaml", "templates/rolebinding.yaml")
    present = tuple(t for t in RBAC_TEMPLATES if watch or t not in per_namespace)
    values = {"watchNamespaces": watch}
    return docs(helm_template(home, namespace, values, release=release, show_only=present))


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The one object of ``kind``."""
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def kubectl_apply(cluster: LocalCluster, home: Path, objs: list[dict[str, Any]]) -> None:
    """``kubectl apply`` objects as the admin."""
    stream = "\n---\n".join(yaml.safe_dump(o) for o in objs)
    env = tool_env(home, cluster.kubeconfig)
    run([str(cluster.kubectl), "apply", "-f", "-"], env, stdin=stream)


async def service_account_token(
    api: client.ApiClient, namespace: str, name: str, seconds: int = 3600
) -> str:
    """Mint a token for a ServiceAccount (TokenRequest), as the kubelet would for its Pod."""
    core = client.CoreV1Api(api)
    body = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
    )
    resp = await core.create_namespaced_service_account_token(name, namespace, body)
    token: str = resp.status.token
    return token


def token_kubeconfig(cluster: LocalCluster, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with ``token`` only (no client certificate)."""
    path.write_text(kubeconfig_yaml(cluster.server, cluster.pki, user="operator-sa", token=token))
    path.chmod(0o600)
    return path


def forbidden_lines(proc: OperatorProcess) -> list[str]:
    """Lines of the operator's log that report an authorization failure."""
    return forbidden_in(proc.output())


def forbidden_in(log: str) -> list[str]:
    """Lines of an operator's log that report an authorization failure (``403`` as a number
    of its own: a port such as 40397 in a URL is not one, nor the milliseconds of a timestamp
    such as 22:46:31,403, nor a part of a name such as the test namespace t-403beddd).
    """
    return [
        line
        for line in log.splitlines()
        if re.search(r"(?<![\w.:,-])403(?![\w-])", line)
        or "forbidden" in line.lower()
        or "not enough permissions" in line.lower()
    ]


def approver_binding(namespace: str, role: str, account: str) -> dict[str, Any]:
    """A RoleBinding in ``namespace`` of the chart's approver ClusterRole ``role`` to the
    ServiceAccount ``account`` of that namespace.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "approvers", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


async def allowed_once_bound(call: Callable[[], Awaitable[Any]]) -> bool:
    """Make ``call``; False while it is refused with 403 (the authorizer learns of new bindings
    with a lag), True once it passes; other errors are raised. For ``eventually``.
    """
    try:
        await call()
    except ApiException as e:
        if e.status != 403:
            raise
        return False
    return True
