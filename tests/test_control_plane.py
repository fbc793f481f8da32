"""The local control plane is a real Kubernetes API server, not a mock.

Each test shows one behaviour the operator relies on: schema pruning of status, optimistic
concurrency, RBAC, watches, garbage collection and namespace deletion.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from localcluster import REPO, LocalCluster

from kubehelpers import eventually

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "test.agenttask.dev", "v1", "widgets"


def pinned_version() -> str:
    for line in (REPO / "hack/control-plane/versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("KUBERNETES_VERSION not in versions.env")


@pytest.fixture
async def widget_crd(api: client.ApiClient) -> str:
    """A CRD with a structural schema and a status subresource; returns its plural."""
    ext = client.ApiextensionsV1Api(api)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"declared": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    try:
        await ext.create_custom_resource_definition(crd)
    except ApiException as e:
        if e.status != 409:
            raise

    async def established() -> bool:
        got = await ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        conds = got.status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    await eventually(established, what="CRD Established")
    return PLURAL


async def test_server_reports_pinned_version(api: client.ApiClient) -> None:
    info = await client.VersionApi(api).get_code()
    assert info.git_version == pinned_version()


def test_kubectl_reports_pinned_versions(cluster: LocalCluster, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(cluster.kubectl), "version", "-o", "json"],
        env={"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f'"gitVersion": "{pinned_version()}"' in out  # client and server alike
    assert "v0.0.0" not in out


async def test_undeclared_status_field_is_pruned(
    api: client.ApiClient, namespace: str, widget_crd: str
) -> None:
    co = client.CustomObjectsApi(api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w"}}
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, widget_crd, body)
    await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        widget_crd,
        "w",
        {"status": {"declared": "kept", "undeclared": "dropped"}},
        _content_type="application/merge-patch+json",
    )
    got = await co.get_namespaced_custom_object(GROUP, VERSION, namespace, widget_crd, "w")
    assert got["status"] == {"declared": "kept"}


async def test_stale_resource_version_conflicts(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    cm = await core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm"), data={"n": "0"})
    )
    stale = cm.metadata.resource_version
    cm.data = {"n": "1"}
    await core.replace_namespaced_config_map("cm", namespace, cm)
    cm.data = {"n": "2"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("cm", namespace, cm)
    assert err.value.status == 409
    assert (await core.read_namespaced_config_map("cm", namespace)).data == {"n": "1"}


async def test_rbac_denies_then_allows_a_service_account(
    api: client.ApiClient, cluster: LocalCluster, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot"))
    )
    tr = await core.create_namespaced_service_account_token(
        "bot",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    cfg = client.Configuration(host=cluster.server)
    cfg.ssl_ca_cert = str(cluster.pki / "ca.crt")
    cfg.api_key = {"BearerToken": tr.status.token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    async with client.ApiClient(cfg) as bot:
        bot_core = client.CoreV1Api(bot)
        with pytest.raises(ApiException) as err:
            await bot_core.list_namespaced_config_map(namespace)
        assert err.value.status == 403
        assert (
            f'"system:serviceaccount:{namespace}:bot"'
            in json.loads(err.value.body or "{}")["message"]
        )

        rbac = client.RbacAuthorizationV1Api(api)
        await rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "read-cm"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            },
        )
        await rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "bot-read-cm"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-cm",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": namespace}],
            },
        )

        async def allowed() -> bool:
            try:
                await bot_core.list_namespaced_config_map(namespace)
            except ApiException as e:
                if e.status != 403:
                    raise
                return False
            return True

        await eventually(allowed, what="RBAC to allow the service account")
        # Only what the Role grants: secrets stay forbidden.
        with pytest.raises(ApiException) as err:
            await bot_core.list_namespaced_secret(namespace)
        assert err.value.status == 403


async def test_watch_sees_creation_and_status_change(
    api: client.ApiClient, namespace: str, widget_crd: str
) -> None:
    co = client.CustomObjectsApi(api)
    seen: list[tuple[str, Any]] = []

    async def watcher() -> None:
        w = watch.Watch()
        async with w.stream(
            co.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            widget_crd,
            timeout_seconds=30,
        ) as stream:
            async for event in stream:
                obj = event["object"]
                seen.append((event["type"], obj.get("status", {}).get("declared")))
                if obj.get("status", {}).get("declared") == "done":
                    return

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0.5)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w"}}
    await co.create_namespaced_custom_object(GROUP, VERSION, namespace, widget_crd, body)
    await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        widget_crd,
        "w",
        {"status": {"declared": "done"}},
        _content_type="application/merge-patch+json",
    )
    await asyncio.wait_for(task, 30)
    assert seen[0] == ("ADDED", None)
    assert seen[-1] == ("MODIFIED", "done")


async def test_orphan_is_garbage_collected(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = await core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    await core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref])),
    )
    await core.delete_namespaced_config_map("owner", namespace)

    async def child_gone() -> bool:
        try:
            await core.read_namespaced_config_map("child", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(child_gone, within=60, what="the garbage collector to delete the child")


async def test_deleted_namespace_goes_away(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    await core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
    )
    await core.delete_namespace(name)

    async def gone() -> bool:
        try:
            await core.read_namespace(name)
        except ApiException as e:
            return e.status == 404
        return False

    await eventually(gone, within=60, what="the namespace controller to finish the namespace")


def test_build_without_go_fails_in_one_clear_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["/bin/bash", str(REPO / "hack/control-plane/build.sh")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Go is not installed" in lines[0]


def test_build_without_module_proxy_fails_in_one_clear_line(tmp_path: Path) -> None:
    import os
    import shutil

    go = shutil.which("go")
    assert go, "Go must be installed to run the tests"
    env = {
        "PATH": f"{Path(go).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AGENTTASK_CACHE_DIR": str(tmp_path / "cache"),
        "GOMODCACHE": str(tmp_path / "modcache"),
        "GOCACHE": str(tmp_path / "gocache"),
        "GOPROXY": "off",
    }
    proc = subprocess.run(
        ["/bin/bash", str(REPO / "hack/control-plane/build.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot download Go modules" in lines[0]
    assert "GOPROXY=off" in lines[0]
    # Go marks module cache files read-only; make them removable for tmp_path cleanup.
    for root, dirs, _ in os.walk(tmp_path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
