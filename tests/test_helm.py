"""deploy/chart: rendered and linted by Helm itself.

Helm comes from the package index as ``helm-python-sdk``: Helm v4's Go SDK built as a shared
library (``libhelm_c``) with Python bindings; ``Chart.render`` is ``helm template`` (the same
engine, ``lookup`` returns nothing offline), ``lint`` is ``helm lint`` and values are checked
against the chart's ``values.schema.json`` as ``helm install`` does. Every rendered object is
checked against the Kubernetes schema offline (tests/_k8s_schema.py), custom resources
(ServiceMonitor, cert-manager's Issuer and Certificate) against schemas written from their CRDs'
documented fields.

The chart takes metrics-server's chart values and renders the objects metrics-server's chart
renders, with the same names and selector labels, so ``helm upgrade`` of an existing
metrics-server release replaces it in place.
"""

from __future__ import annotations

import base64
import copy
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from _k8s_schema import check
from cryptography import x509

import fastmetrics
from fastmetrics.options import parse_args, validate

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "chart"
RELEASE = "metrics-server"
NAMESPACE = "kube-system"
SELECTOR = {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/instance": RELEASE}


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE, chart: Path = CHART) -> list[dict[str, Any]]:
    """``helm template NAME CHART -n NAMESPACE`` with ``values``: the objects, in file order."""
    with helm.Chart.load(str(chart)) as c:
        files = c.render(values, name=name, namespace=namespace)
    objs: list[dict[str, Any]] = []
    for path in sorted(files):
        if path.endswith(".yaml"):
            objs.extend(d for d in yaml.safe_load_all(files[path]) if d is not None)
    return objs


def _by_kind(objs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objs:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = _by_kind(objs)[kind]
    return obj


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def _valid(objs: list[dict[str, Any]]) -> None:
    problems = {f"{o['kind']}/{o['metadata']['name']}": check(o) for o in objs}
    assert {k: v for k, v in problems.items() if v} == {}


# -- lint, schema, defaults ------------------------------------------------------------------


def test_helm_lint() -> None:
    for values in (None, {"tls": {"type": "helm"}, "podDisruptionBudget": {"enabled": True,
                                                                            "minAvailable": 1}}):
        report = helm.lint(str(CHART), values, strict=True, kube_version="v1.31.0")
        assert report["errors"] == [], report
        # severity 2 = warning, 3 = error; only "icon is recommended" (1, info) may remain
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_chart_versions() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["appVersion"] == fastmetrics.__version__
    assert meta["apiVersion"] == "v2"


def test_default_render_is_metrics_server_charts_objects() -> None:
    objs = render()
    _valid(objs)
    keys = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}
    # the objects metrics-server's chart renders for release "metrics-server" (SPEC §9.2)
    assert keys == {
        ("ServiceAccount", NAMESPACE, "metrics-server"),
        ("ClusterRole", None, "system:metrics-server"),
        ("ClusterRole", None, "system:metrics-server-aggregated-reader"),
        ("ClusterRoleBinding", None, "system:metrics-server"),
        ("ClusterRoleBinding", None, "metrics-server:system:auth-delegator"),
        ("RoleBinding", "kube-system", "metrics-server-auth-reader"),
        ("Service", NAMESPACE, "metrics-server"),
        ("Deployment", NAMESPACE, "metrics-server"),
        ("APIService", None, "v1beta1.metrics.k8s.io"),
    }
    for obj in objs:
        labels = obj["metadata"]["labels"]
        assert {k: labels[k] for k in SELECTOR} == SELECTOR
        assert labels["app.kubernetes.io/part-of"] == "fastmetrics"
        assert labels["helm.sh/chart"] == "fastmetrics-0.1.0"
    deployment = _one(objs, "Deployment")
    # the selectors metrics-server's chart uses (immutable on a Deployment)
    assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR}
    assert _one(objs, "Service")["spec"]["selector"] == SELECTOR
    pod = deployment["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["serviceAccountName"] == "metrics-server"
    assert "hostNetwork" not in pod
    container = _container(objs)
    assert container["image"] == f"ghcr.io/fastmetrics/fastmetrics:v{fastmetrics.__version__}"
    assert container["args"] == [
        "--secure-port=10250", "--cert-dir=/tmp",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port", "--metric-resolution=15s"]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "200Mi"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsUser"] == 1000
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "https",
                                                     "scheme": "HTTPS"}
    assert container["readinessProbe"]["initialDelaySeconds"] == 20
    assert container["ports"] == [{"name": "https", "protocol": "TCP", "containerPort": 10250}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    api = _one(objs, "APIService")
    assert api["spec"]["insecureSkipTLSVerify"] is True and "caBundle" not in api["spec"]
    assert api["spec"]["service"] == {"name": "metrics-server", "namespace": NAMESPACE,
                                      "port": 443}
    options = parse_args(container["args"])
    assert validate(options) == []


def test_other_release_name_and_namespace() -> None:
    objs = render(name="ms", namespace="monitoring")
    _valid(objs)
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Deployment", "ms-metrics-server") in names
    assert ("ClusterRole", "system:ms-metrics-server") in names
    rb = _one(objs, "RoleBinding")
    assert rb["metadata"]["namespace"] == "kube-system"  # where the auth ConfigMap lives
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "ms-metrics-server",
                               "namespace": "monitoring"}]


# -- the values operators use ----------------------------------------------------------------


def test_metrics_server_values_file_works_unchanged() -> None:
    """A values file written for metrics-server's chart (every common key) renders."""
    values = {
        "image": {"repository": "registry.example/fastmetrics", "tag": "v9.9.9",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "replicas": 3, "revisionHistoryLimit": 2,
        "updateStrategy": {"type": "RollingUpdate",
                           "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "defaultArgs": ["--cert-dir=/tmp", "--metric-resolution=30s"],
        "args": ["--kubelet-insecure-tls", "--v=2", "--node-selector=role!=edge"],
        "resources": {"requests": {"cpu": "200m", "memory": "300Mi"},
                      "limits": {"memory": "1Gi"}},
        "nodeSelector": {"kubernetes.io/os": "linux", "node-role/infra": "true"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": SELECTOR},
                                                "topologyKey": "kubernetes.io/hostname"}}]}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": SELECTOR}}],
        "priorityClassName": "system-node-critical",
        "podLabels": {"team": "platform"}, "podAnnotations": {"a": "b"},
        "commonLabels": {"cost-center": "k8s"},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
        "rbac": {"create": True, "pspEnabled": False},
        "addonResizer": {"enabled": False, "image": {"repository": "x", "tag": "1"}},
        "service": {"labels": {"kubernetes.io/cluster-service": "true"}},
        "deploymentAnnotations": {"reloader": "true"},
        "extraVolumes": [{"name": "extra", "emptyDir": {}}],
        "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra"}],
        "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
        "hostUsers": False,
    }
    objs = render(values)
    _valid(objs)
    deployment = _one(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objs)
    assert deployment["spec"]["replicas"] == 3 and deployment["spec"]["revisionHistoryLimit"] == 2
    assert deployment["spec"]["strategy"] == values["updateStrategy"]
    assert deployment["metadata"]["annotations"] == {"reloader": "true"}
    assert container["image"] == "registry.example/fastmetrics:v9.9.9"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["--secure-port=10250", "--cert-dir=/tmp",
                                 "--metric-resolution=30s", "--kubelet-insecure-tls", "--v=2",
                                 "--node-selector=role!=edge"]
    assert validate(parse_args(container["args"])) == []
    assert container["resources"] == values["resources"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
                "priorityClassName", "imagePullSecrets", "dnsConfig", "hostUsers"):
        assert pod[key] == values[key], key
    assert {"name": "extra", "mountPath": "/extra"} in container["volumeMounts"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "platform" and labels["app.kubernetes.io/part-of"] == "fastmetrics"
    assert _one(objs, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:x"}
    assert _one(objs, "Service")["metadata"]["labels"]["kubernetes.io/cluster-service"] == "true"
    pdb = _one(objs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": SELECTOR}}
    assert all(o["metadata"]["labels"]["cost-center"] == "k8s" for o in objs)


def test_pdb_max_unavailable_and_eviction_policy() -> None:
    objs = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%",
                                           "unhealthyPodEvictionPolicy": "AlwaysAllow"}})
    _valid(objs)
    assert _one(objs, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": "50%", "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": SELECTOR}}
    assert "PodDisruptionBudget" not in _by_kind(render())


def test_host_network() -> None:
    objs = render({"hostNetwork": {"enabled": True}, "containerPort": 4443})
    _valid(objs)
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    container = _container(objs)
    assert container["args"][0] == "--secure-port=4443"
    assert container["ports"] == [{"name": "https", "protocol": "TCP", "containerPort": 4443}]


def test_metrics_and_service_monitor() -> None:
    assert "ServiceMonitor" not in _by_kind(render({"serviceMonitor": {"enabled": True}}))
    objs = render({"metrics": {"enabled": True},
                   "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prom"},
                                      "interval": "30s",
                                      "relabelings": [{"action": "replace",
                                                       "targetLabel": "cluster",
                                                       "replacement": "prod"}]}})
    _valid(objs)
    assert "--authorization-always-allow-paths=/metrics" in _container(objs)["args"]
    sm = _one(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["selector"] == {"matchLabels": SELECTOR}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {"port": "https", "path": "/metrics", "scheme": "https",
                        "tlsConfig": {"insecureSkipVerify": True}, "interval": "30s",
                        "scrapeTimeout": "10s",
                        "relabelings": [{"action": "replace", "targetLabel": "cluster",
                                         "replacement": "prod"}]}
    bad = copy.deepcopy(sm)
    bad["spec"]["endpoints"][0]["tlsconfig"] = {}
    assert check(bad) == ["spec.endpoints[0].tlsconfig: unknown field"]
    del bad["spec"]["selector"]
    assert "spec.selector: required field missing" in check(bad)


# -- TLS modes --------------------------------------------------------------------------------


def _tls_args(objs: list[dict[str, Any]]) -> list[str]:
    return [a for a in _container(objs)["args"] if a.startswith("--tls-")]


def test_tls_helm_generates_a_certificate_for_the_service() -> None:
    objs = render({"tls": {"type": "helm"}})
    _valid(objs)
    secret = _one(objs, "Secret")
    assert secret["type"] == "Opaque"  # as metrics-server's chart: the type is immutable
    cert_pem = base64.b64decode(secret["data"]["tls.crt"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "metrics-server.kube-system", "metrics-server.kube-system.svc",
        "metrics-server.kube-system.svc.cluster.local"]
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])
    api = _one(objs, "APIService")["spec"]
    # the aggregator verifies the serving certificate: the CA bundle, no insecure flag
    assert api["caBundle"] == secret["data"]["tls.crt"]
    assert "insecureSkipTLSVerify" not in api
    assert _tls_args(objs) == ["--tls-cert-file=/tmp/tls-certs/tls.crt",
                               "--tls-private-key-file=/tmp/tls-certs/tls.key"]
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "certs", "secret": {"secretName": "metrics-server"}} in pod["volumes"]
    assert {"name": "certs", "mountPath": "/tmp/tls-certs", "readOnly": True} in \
        _container(objs)["volumeMounts"]


def test_tls_cert_manager() -> None:
    objs = render({"tls": {"type": "cert-manager", "certManager": {"duration": "2160h"}}})
    _valid(objs)
    issuer = _one(objs, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    certificate = _one(objs, "Certificate")
    assert certificate["spec"]["secretName"] == "metrics-server"
    assert certificate["spec"]["issuerRef"] == {"name": "metrics-server-issuer",
                                                "kind": "Issuer", "group": "cert-manager.io"}
    assert certificate["spec"]["duration"] == "2160h"
    api = _one(objs, "APIService")
    assert api["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "kube-system/metrics-server"}
    assert "insecureSkipTLSVerify" not in api["spec"] and "caBundle" not in api["spec"]
    assert len(_tls_args(objs)) == 2
    objs = render({"tls": {"type": "cert-manager", "certManager": {
        "existingIssuer": {"enabled": True, "kind": "ClusterIssuer", "name": "corp-ca"}}}})
    _valid(objs)
    assert "Issuer" not in _by_kind(objs)
    assert _one(objs, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_tls_existing_secret_with_a_ca_bundle_value(tmp_path: Path) -> None:
    from fastmetrics.sim.certs import CertAuthority

    pem = CertAuthority(tmp_path, "corp").cert_pem.decode()
    objs = render({"tls": {"type": "existingSecret", "existingSecret": {"name": "my-tls"}},
                   "apiService": {"caBundle": pem}})
    _valid(objs)
    api = _one(objs, "APIService")["spec"]
    assert base64.b64decode(api["caBundle"]).decode() == pem
    assert "insecureSkipTLSVerify" not in api
    pod = _one(objs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "certs", "secret": {"secretName": "my-tls"}} in pod["volumes"]
    assert "Secret" not in _by_kind(objs)  # the operator's own


@pytest.mark.parametrize(("data", "expected"), [
    ({"tls.crt": "VExTLUNSVA==", "ca.crt": "Q0EtQ1JU"}, "Q0EtQ1JU"),
    ({"tls.crt": "VExTLUNSVA=="}, "VExTLUNSVA=="),
])
def test_tls_existing_secret_lookup_renders_its_ca(tmp_path: Path, data: dict[str, str],
                                                   expected: str) -> None:
    """The fix of metrics-server's lookup bug: the Secret found in the cluster gives the
    APIService its caBundle (``ca.crt``, else ``tls.crt``). Offline, ``lookup`` finds nothing,
    so this renders a copy of the chart whose lookup helper returns a Secret."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    helpers = chart / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    lookup = ('{{- toJson (lookup "v1" "Secret" (include "metrics-server.namespace" .) '
              ".Values.tls.existingSecret.name) -}}")
    assert text.count(lookup) == 1
    stand_in = "{{- toJson (dict \"data\" (dict " + " ".join(
        f'"{k}" "{v}"' for k, v in data.items()) + ")) -}}"
    helpers.write_text(text.replace(lookup, stand_in))
    values = {"tls": {"type": "existingSecret", "existingSecret": {"name": "my-tls"}}}
    api = _one(render(values, chart=chart), "APIService")["spec"]
    assert api["caBundle"] == expected
    assert "insecureSkipTLSVerify" not in api
    # and with lookup disabled, the found Secret is not used
    values["tls"]["existingSecret"]["lookup"] = False  # type: ignore[index]
    api = _one(render(values, chart=chart), "APIService")["spec"]
    assert "caBundle" not in api and api["insecureSkipTLSVerify"] is True


# -- bad values: one clear message naming the value --------------------------------------------


@pytest.mark.parametrize(("values", "message"), [
    ({"replica": 2}, "additional properties 'replica' not allowed"),
    ({"replicas": "two"}, "at '/replicas': got string, want integer"),
    ({"tls": {"type": "self-signed"}}, "at '/tls/type': value must be one of"),
    ({"args": ["kubelet-insecure-tls"]}, "at '/args/0': 'kubelet-insecure-tls' does not match"),
    ({"containerPort": 70000}, "at '/containerPort'"),
    ({"hostNetwork": {"enabled": True}},
     "hostNetwork.enabled with containerPort 10250: the kubelet listens on 10250"),
    ({"addonResizer": {"enabled": True}}, "addonResizer.enabled: the addon-resizer sidecar is "
                                          "not supported"),
    ({"tls": {"type": "existingSecret"}},
     "tls.existingSecret.name: required with tls.type existingSecret"),
])
def test_bad_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as info:
        render(values)
    assert message in str(info.value)
