"""An offline check of Kubernetes objects against the API's schema, for the rendered manifests
and Helm chart.

Built-in kinds are checked against the models of the official ``kubernetes`` Python client
(generated from the Kubernetes OpenAPI document): every field must be one the model declares
(``attribute_map``), every value of the declared type (``openapi_types``: str, int, bool,
lists, maps, nested models; ``object`` is IntOrString or free-form), and every field the model
requires (its constructor refuses ``None``) must be present. The kinds a manifest may use are
listed with their ``apiVersion`` (a Deployment under ``extensions/v1beta1`` is an error).

Custom resources (the Prometheus operator's ServiceMonitor, cert-manager's Certificate and
Issuer) have no model there: they are checked against small schemas written here from the
CRDs' documented fields (a subset: the fields the chart may render; unknown fields are
rejected), in the same terms, with ``!`` marking a required field.

``check(obj)`` returns the problems as ``path: message`` strings; ``[]`` when the object is
valid.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from kubernetes.client import models

__all__ = ["KINDS", "check"]

#: (apiVersion, kind) -> model class name in kubernetes.client.models
KINDS: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("v1", "Secret"): "V1Secret",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("apiregistration.k8s.io/v1", "APIService"): "V1APIService",
}

# -- custom resources ------------------------------------------------------------------------
# A schema is a dict of field -> type; a type is "str" | "int" | "bool" | "object" (anything) |
# a model class name | a nested schema dict | ["list", type] | ["map", type]. "name!" = required.

_RELABEL: dict[str, Any] = {
    "sourceLabels": ["list", "str"], "separator": "str", "targetLabel": "str", "regex": "str",
    "modulus": "int", "replacement": "str", "action": "str",
}
_SAFE_TLS: dict[str, Any] = {
    "insecureSkipVerify": "bool", "serverName": "str", "caFile": "str", "certFile": "str",
    "keyFile": "str", "ca": "object", "cert": "object", "keySecret": "object",
}
_ENDPOINT: dict[str, Any] = {
    "port": "str", "targetPort": "object", "path": "str", "scheme": "str", "params": "object",
    "interval": "str", "scrapeTimeout": "str", "tlsConfig": _SAFE_TLS, "bearerTokenFile": "str",
    "bearerTokenSecret": "object", "authorization": {"type": "str", "credentials": "object"},
    "honorLabels": "bool", "honorTimestamps": "bool", "metricRelabelings": ["list", _RELABEL],
    "relabelings": ["list", _RELABEL], "followRedirects": "bool", "enableHttp2": "bool",
}
_CERT_PRIVATE_KEY: dict[str, Any] = {
    "algorithm": "str", "size": "int", "encoding": "str", "rotationPolicy": "str",
}
_ISSUER_REF: dict[str, Any] = {"name!": "str", "kind": "str", "group": "str"}

CUSTOM: dict[tuple[str, str], dict[str, Any]] = {
    # monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator API reference)
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "jobLabel": "str", "targetLabels": ["list", "str"], "podTargetLabels": ["list", "str"],
        "endpoints": ["list", _ENDPOINT], "selector!": "V1LabelSelector",
        "namespaceSelector": {"any": "bool", "matchNames": ["list", "str"]},
        "sampleLimit": "int", "targetLimit": "int",
    },
    # cert-manager.io/v1 Certificate and Issuer (cert-manager API reference)
    ("cert-manager.io/v1", "Certificate"): {
        "secretName!": "str", "issuerRef!": _ISSUER_REF, "commonName": "str",
        "dnsNames": ["list", "str"], "ipAddresses": ["list", "str"], "uris": ["list", "str"],
        "duration": "str", "renewBefore": "str", "usages": ["list", "str"],
        "privateKey": _CERT_PRIVATE_KEY, "isCA": "bool",
        "secretTemplate": {"annotations": ["map", "str"], "labels": ["map", "str"]},
    },
    ("cert-manager.io/v1", "Issuer"): {
        "selfSigned": {"crlDistributionPoints": ["list", "str"]},
        "ca": {"secretName!": "str", "crlDistributionPoints": ["list", "str"]},
    },
}

CERT_MANAGER_USAGES = frozenset({
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
})

# -- names and labels (the apiserver's validation, which the schema alone does not express) --

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
# kinds whose names are path segments rather than DNS subdomains
_PATH_SEGMENT_NAMES = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"label key {key!r}: prefix is not a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return f"label key {key!r}: name part is not a valid label name"
    return None


def _metadata_problems(obj: dict[str, Any], kind: str, namespaced: bool) -> list[str]:
    out: list[str] = []
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: missing"]
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.append("metadata.name: missing")
    elif kind in _PATH_SEGMENT_NAMES:
        if "/" in name or "%" in name or name in (".", ".."):
            out.append(f"metadata.name {name!r}: not a valid path segment name")
    elif kind == "APIService":
        spec = obj.get("spec") or {}
        if name != f"{spec.get('version')}.{spec.get('group')}":
            out.append(f"metadata.name {name!r}: must be <version>.<group>")
    elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        out.append(f"metadata.name {name!r}: not a DNS subdomain")
    if kind == "Service" and isinstance(name, str) and not _DNS_LABEL.fullmatch(name):
        out.append(f"metadata.name {name!r}: a Service name must be a DNS label")
    ns = meta.get("namespace")
    if namespaced and ns is not None and not _DNS_LABEL.fullmatch(str(ns)):
        out.append(f"metadata.namespace {ns!r}: not a DNS label")
    if not namespaced and ns is not None:
        out.append(f"metadata.namespace: {kind} is cluster-scoped")
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            problem = _label_key_problem(key)
            if problem:
                out.append(f"metadata.{field}: {problem}")
            if field == "labels" and value != "" and (
                    len(value) > 63 or not _LABEL_NAME.fullmatch(value)):
                out.append(f"metadata.labels[{key}]: {value!r} is not a valid label value")
    return out


_CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "APIService"}


# -- the type walk ---------------------------------------------------------------------------


def _type_name(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_value(value: Any, typ: Any, path: str, out: list[str]) -> None:
    if isinstance(typ, list):
        container, inner = typ
        if container == "list":
            if not isinstance(value, list):
                out.append(f"{path}: expected a list, got {_type_name(value)}")
                return
            for i, item in enumerate(value):
                _check_value(item, inner, f"{path}[{i}]", out)
        else:
            if not isinstance(value, dict):
                out.append(f"{path}: expected a map, got {_type_name(value)}")
                return
            for k, v in value.items():
                _check_value(v, inner, f"{path}[{k}]", out)
        return
    if isinstance(typ, dict):
        _check_schema(value, typ, path, out)
        return
    if typ.startswith("list["):
        _check_value(value, ["list", typ[5:-1]], path, out)
    elif typ.startswith("dict("):
        _check_value(value, ["map", typ[typ.index(",") + 1:-1].strip()], path, out)
    elif typ == "str":
        if not isinstance(value, str):
            out.append(f"{path}: expected a string, got {_type_name(value)} {value!r}")
    elif typ == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{path}: expected an integer, got {_type_name(value)} {value!r}")
    elif typ == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            out.append(f"{path}: expected a number, got {_type_name(value)}")
    elif typ == "bool":
        if not isinstance(value, bool):
            out.append(f"{path}: expected a boolean, got {_type_name(value)} {value!r}")
    elif typ == "object":
        if value is None:
            out.append(f"{path}: null")
    elif typ in ("datetime", "date"):
        if not isinstance(value, str):
            out.append(f"{path}: expected a timestamp string, got {_type_name(value)}")
    else:
        _check_model(value, typ, path, out)


def _check_model(value: Any, model_name: str, path: str, out: list[str]) -> None:
    cls = getattr(models, model_name)
    if not isinstance(value, dict):
        out.append(f"{path}: expected an object ({model_name}), got {_type_name(value)}")
        return
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = by_json.get(key)
        here = f"{path}.{key}" if path else key
        if attr is None:
            out.append(f"{here}: unknown field (not in {model_name})")
            continue
        if item is None:
            continue  # YAML null: as if absent
        _check_value(item, cls.openapi_types[attr], here, out)
        kwargs[attr] = item
    # required fields: the generated constructor refuses None for them, one at a time
    for _ in range(len(cls.attribute_map) + 1):
        try:
            cls(**kwargs)
            return
        except ValueError as e:
            m = re.search(r"Invalid value for `(\w+)`, must not be `None`", str(e))
            if m is None:
                out.append(f"{path or model_name}: {e}")
                return
            attr = m[1]
            out.append(f"{path + '.' if path else ''}{cls.attribute_map[attr]}: required field "
                       f"missing ({model_name})")
            kwargs[attr] = "placeholder"


def _check_schema(value: Any, schema: dict[str, Any], path: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        out.append(f"{path}: expected an object, got {_type_name(value)}")
        return
    fields = {k.rstrip("!"): t for k, t in schema.items()}
    for key, item in value.items():
        here = f"{path}.{key}" if path else key
        if key not in fields:
            out.append(f"{here}: unknown field")
        elif item is not None:
            _check_value(item, fields[key], here, out)
    for key in schema:
        if key.endswith("!") and value.get(key[:-1]) is None:
            out.append(f"{path + '.' if path else ''}{key[:-1]}: required field missing")


def check(obj: Any) -> list[str]:
    """Every schema problem of one Kubernetes object (a dict as YAML loads it)."""
    if not isinstance(obj, dict):
        return [f"not an object: {_type_name(obj)}"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    out: list[str] = []
    if key in KINDS:
        _check_model(obj, KINDS[key], "", out)  # type: ignore[index]
    elif key in CUSTOM:
        top = {"apiVersion!": "str", "kind!": "str", "metadata!": "V1ObjectMeta",
               "spec!": CUSTOM[key]}  # type: ignore[index]
        _check_schema(obj, top, "", out)
        if key == ("cert-manager.io/v1", "Certificate"):
            for usage in (obj.get("spec") or {}).get("usages") or []:
                if usage not in CERT_MANAGER_USAGES:
                    out.append(f"spec.usages: {usage!r} is not a cert-manager key usage")
    else:
        return [f"apiVersion {key[0]!r} kind {key[1]!r}: not a kind the manifests may use"]
    kind = str(obj.get("kind"))
    out.extend(_metadata_problems(obj, kind, kind not in _CLUSTER_SCOPED))
    if kind == "APIService":
        out.extend(_apiservice_problems(obj.get("spec") or {}))
    return out


def _apiservice_problems(spec: dict[str, Any]) -> list[str]:
    """The apiserver's APIService validation beyond the schema: a CA bundle excludes
    insecureSkipTLSVerify, and it is base64 of PEM certificates."""
    out: list[str] = []
    ca = spec.get("caBundle")
    if ca and spec.get("insecureSkipTLSVerify"):
        out.append("spec.insecureSkipTLSVerify: may not be true if caBundle is present")
    if ca:
        try:
            pem = base64.b64decode(ca, validate=True)
        except ValueError:
            return [*out, "spec.caBundle: not base64"]
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            out.append("spec.caBundle: not a PEM certificate bundle")
    return out
