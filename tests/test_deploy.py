"""deploy/: the kustomize base, components and overlays, rendered by ``kubectl kustomize``.

Every rendered object is checked against the Kubernetes schema offline (tests/_k8s_schema.py)
and against what metrics-server's own manifests install (SPEC §9.1): the same objects with the
same names, labels, selectors, args, probes and security context, so that applying ours
replaces metrics-server in place. The container args must also parse and validate with
fastmetrics' own flag parser.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _k8s_schema import check

import fastmetrics
from fastmetrics.options import manifest_args, parse_args, validate

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["base", "overlays/release", "overlays/high-availability", "overlays/test",
            "overlays/test-ha"]

# what metrics-server's manifests/base installs (SPEC §9.1): (apiVersion, kind, namespace, name)
METRICS_SERVER_OBJECTS = {
    ("v1", "ServiceAccount", "kube-system", "metrics-server"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", None, "system:aggregated-metrics-reader"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", None, "system:metrics-server"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding", "kube-system", "metrics-server-auth-reader"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None,
     "metrics-server:system:auth-delegator"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "system:metrics-server"),
    ("v1", "Service", "kube-system", "metrics-server"),
    ("apps/v1", "Deployment", "kube-system", "metrics-server"),
    ("apiregistration.k8s.io/v1", "APIService", None, "v1beta1.metrics.k8s.io"),
}
PDB = ("policy/v1", "PodDisruptionBudget", "kube-system", "metrics-server")
SECURITY_CONTEXT = {
    "readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 1000,
    "allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"},
    "capabilities": {"drop": ["ALL"]},
}


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not on PATH (required under CI)")
        pytest.skip("kubectl is not on PATH")
    return path


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/<overlay>`` as a list of objects (cached; copies returned)."""
    if overlay not in _rendered:
        r = subprocess.run([_kubectl(), "kustomize", str(DEPLOY / overlay)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stderr == "", r.stderr  # no deprecation warnings either
        _rendered[overlay] = [d for d in yaml.safe_load_all(r.stdout) if d is not None]
    return copy.deepcopy(_rendered[overlay])


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None, str]:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"]


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [o for o in objs if o["kind"] == kind]
    return obj


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


# -- the schema check ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schema(overlay: str) -> None:
    objs = render(overlay)
    assert objs
    problems = {f"{o['kind']}/{o['metadata']['name']}": check(o) for o in objs}
    assert {k: v for k, v in problems.items() if v} == {}


def test_the_schema_check_finds_problems() -> None:
    """The check is not vacuous: each kind of mistake is reported with its path."""
    objs = render("overlays/high-availability")
    deployment = _one(objs, "Deployment")
    assert check(deployment) == []

    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicies"] = "Always"
    assert check(bad) == ["spec.template.spec.containers[0].imagePullPolicies: unknown field "
                          "(not in V1Container)"]
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "2"
    assert check(bad) == ["spec.replicas: expected an integer, got string '2'"]
    bad = copy.deepcopy(deployment)
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]
    assert check(bad) == ["spec.template.spec.containers[0].name: required field missing "
                          "(V1Container)"]
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = [10250]
    assert check(bad) == ["spec.template.spec.containers[0].ports[0].containerPort: expected an "
                          "integer, got list [10250]"]
    bad = copy.deepcopy(deployment)
    bad["apiVersion"] = "extensions/v1beta1"
    assert check(bad) == ["apiVersion 'extensions/v1beta1' kind 'Deployment': not a kind the "
                          "manifests may use"]
    bad = copy.deepcopy(deployment)
    bad["metadata"]["labels"]["k8s-app"] = "metrics server"
    assert check(bad) == ["metadata.labels[k8s-app]: 'metrics server' is not a valid label value"]
    api = _one(objs, "APIService")
    bad = copy.deepcopy(api)
    del bad["spec"]["groupPriorityMinimum"]
    assert check(bad) == ["spec.groupPriorityMinimum: required field missing (V1APIServiceSpec)"]
    pdb = _one(objs, "PodDisruptionBudget")
    bad = copy.deepcopy(pdb)
    bad["spec"]["selector"]["matchLabel"] = bad["spec"]["selector"].pop("matchLabels")
    assert check(bad) == ["spec.selector.matchLabel: unknown field (not in V1LabelSelector)"]
    bad = copy.deepcopy(pdb)
    bad["metadata"]["namespace"] = "Kube_System"
    assert check(bad) == ["metadata.namespace 'Kube_System': not a DNS label"]


# -- the same objects as metrics-server ------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_same_objects_as_metrics_server(overlay: str) -> None:
    keys = [_key(o) for o in render(overlay)]
    assert len(keys) == len(set(keys))
    expected = set(METRICS_SERVER_OBJECTS)
    if overlay.endswith("high-availability") or overlay.endswith("-ha"):
        expected.add(PDB)
    assert set(keys) == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_labels_and_selectors(overlay: str) -> None:
    """metrics-server's commonLabels (k8s-app) everywhere and in the selectors, which are
    immutable: ours must be the same for `kubectl apply` to replace metrics-server in place."""
    objs = render(overlay)
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert labels["k8s-app"] == "metrics-server", _key(obj)
        assert labels["app.kubernetes.io/name"] == "fastmetrics", _key(obj)
    deployment = _one(objs, "Deployment")
    assert deployment["spec"]["selector"] == {"matchLabels": {"k8s-app": "metrics-server"}}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == {"k8s-app": "metrics-server", "app.kubernetes.io/name": "fastmetrics"}
    assert _one(objs, "Service")["spec"]["selector"] == {"k8s-app": "metrics-server"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str) -> None:
    objs = render(overlay)
    service = _one(objs, "Service")
    container = _container(objs)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port == {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https",
                    "appProtocol": "https"}
    assert port_names == {"https": 10250}
    api = _one(objs, "APIService")["spec"]
    assert api["service"] == {"name": service["metadata"]["name"],
                              "namespace": service["metadata"]["namespace"]}
    assert (api["group"], api["version"], api["groupPriorityMinimum"],
            api["versionPriority"], api["insecureSkipTLSVerify"]) == (
        "metrics.k8s.io", "v1beta1", 100, 100, True)
    sa = _one(objs, "ServiceAccount")["metadata"]
    deployment = _one(objs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    roles = {o["metadata"]["name"] for o in objs if o["kind"] == "ClusterRole"}
    for binding in (o for o in objs if o["kind"].endswith("Binding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"],
                                        "namespace": sa["namespace"]}]
        ref = binding["roleRef"]
        if ref["name"].startswith("system:metrics"):
            assert ref["name"] in roles
    by_ref = {o["metadata"]["name"]: o["roleRef"] for o in objs if o["kind"].endswith("Binding")}
    assert by_ref == {
        "metrics-server-auth-reader": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                       "name": "extension-apiserver-authentication-reader"},
        "metrics-server:system:auth-delegator": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:auth-delegator"},
        "system:metrics-server": {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "system:metrics-server"},
    }


def test_rbac_rules() -> None:
    objs = render("overlays/release")
    rules = {o["metadata"]["name"]: o["rules"] for o in objs if o["kind"] == "ClusterRole"}
    assert rules["system:metrics-server"] == [
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
    ]
    reader = next(o for o in objs if o["metadata"]["name"] == "system:aggregated-metrics-reader")
    assert reader["rules"] == [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"],
                                "verbs": ["get", "list", "watch"]}]
    for verb in ("view", "edit", "admin"):
        assert reader["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{verb}"] \
            == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_as_metrics_server(overlay: str) -> None:
    objs = render(overlay)
    deployment = _one(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objs)
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["volumes"] == [{"name": "tmp-dir", "emptyDir": {}}]
    assert container["volumeMounts"] == [{"name": "tmp-dir", "mountPath": "/tmp"}]
    assert container["name"] == "metrics-server"
    assert container["securityContext"] == SECURITY_CONTEXT
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "200Mi"}}
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/readyz", "port": "https", "scheme": "HTTPS"},
        "periodSeconds": 10, "failureThreshold": 3, "initialDelaySeconds": 20}
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/livez", "port": "https", "scheme": "HTTPS"},
        "periodSeconds": 10, "failureThreshold": 3}
    assert container["args"][:5] == manifest_args()
    ha = overlay.endswith("high-availability") or overlay.endswith("-ha")
    assert deployment["spec"].get("replicas", 1) == (2 if ha else 1)
    assert deployment["spec"]["strategy"] == {"rollingUpdate": {"maxUnavailable": 1 if ha else 0}}
    test = overlay.startswith("overlays/test")
    assert container["args"][5:] == (["--kubelet-insecure-tls", "--v=4",
                                      "--node-selector=metrics-server-skip!=true"] if test else [])
    assert container["imagePullPolicy"] == ("Never" if test else "IfNotPresent")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_args_are_fastmetrics_flags(overlay: str) -> None:
    """The manifests' args parse and validate with fastmetrics' own command line."""
    options = parse_args(_container(render(overlay))["args"])
    assert validate(options) == []
    assert (options.cert_dir, options.secure_port, options.metric_resolution_ns) == (
        "/tmp", 10250, 15 * 10**9)
    assert options.kubelet_preferred_address_types == ("InternalIP", "ExternalIP", "Hostname")
    assert options.kubelet_use_node_status_port


def test_high_availability() -> None:
    objs = render("overlays/high-availability")
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    term = {"labelSelector": {"matchLabels": {"k8s-app": "metrics-server"}},
            "namespaces": ["kube-system"], "topologyKey": "kubernetes.io/hostname"}
    assert pod["affinity"] == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    pdb = _one(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 1,
                           "selector": {"matchLabels": {"k8s-app": "metrics-server"}}}
    assert "affinity" not in _one(render("overlays/release"), "Deployment")["spec"]["template"][
        "spec"]


def test_images() -> None:
    version = fastmetrics.__version__
    assert _container(render("base"))["image"] == "fastmetrics:dev"
    assert _container(render("overlays/test"))["image"] == "fastmetrics:dev"
    for overlay in ("overlays/release", "overlays/high-availability"):
        assert _container(render(overlay))["image"] == \
            f"ghcr.io/fastmetrics/fastmetrics:v{version}", "bump the release component's newTag"
