"""Discovery, version, root index and OpenAPI documents (SPEC §5.7, §5.8), as bytes.

The legacy discovery documents and the aggregated discovery (``apidiscovery.k8s.io`` v2 and
v2beta1) are constants, written as Go's ``json.Encoder`` writes them (compact, trailing newline);
``/apis`` needs the advertised address and is a function. ``/version`` and the ``/`` index are
written the way ``responsewriters.WriteRawJSON`` writes them (two-space indent, no trailing
newline). The OpenAPI documents are built once from a schema table and dumped compact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final

import orjson

from .objects import json_string

__all__ = [
    "AGGREGATED_DISCOVERY_ETAG",
    "AGGREGATED_DISCOVERY_V2",
    "AGGREGATED_DISCOVERY_V2BETA1",
    "AGGREGATED_V2BETA1_CONTENT_TYPE",
    "AGGREGATED_V2_CONTENT_TYPE",
    "API_GROUP",
    "API_RESOURCE_LIST",
    "DEFAULT_ROOT_PATHS",
    "api_group_list",
    "etag",
    "openapi_v2",
    "openapi_v3_group",
    "openapi_v3_root",
    "openapi_version",
    "root_paths",
    "version_document",
]

GROUP: Final = "metrics.k8s.io"
VERSION: Final = "v1beta1"
GROUP_VERSION: Final = f"{GROUP}/{VERSION}"
_GV: Final = f'{{"groupVersion":"{GROUP_VERSION}","version":"{VERSION}"}}'

AGGREGATED_V2_CONTENT_TYPE: Final = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
)
AGGREGATED_V2BETA1_CONTENT_TYPE: Final = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
)


def api_group_list(server_address: str, client_cidr: str = "0.0.0.0/0") -> bytes:
    """``GET /apis`` (legacy ``APIGroupList``); ``server_address`` is ``<advertise-ip>:<port>``."""
    return (
        f'{{"kind":"APIGroupList","apiVersion":"v1","groups":[{{"name":"{GROUP}",'
        f'"versions":[{_GV}],"preferredVersion":{_GV},"serverAddressByClientCIDRs":'
        f'[{{"clientCIDR":{json_string(client_cidr)},'
        f'"serverAddress":{json_string(server_address)}}}]}}]}}\n'
    ).encode()


API_GROUP: Final = (
    f'{{"kind":"APIGroup","apiVersion":"v1","name":"{GROUP}","versions":[{_GV}],'
    f'"preferredVersion":{_GV}}}\n'
).encode()
"""``GET /apis/metrics.k8s.io``."""

API_RESOURCE_LIST: Final = (
    f'{{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"{GROUP_VERSION}",'
    '"resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics",'
    '"verbs":["get","list"]},{"name":"pods","singularName":"","namespaced":true,'
    '"kind":"PodMetrics","verbs":["get","list"]}]}\n'
).encode()
"""``GET /apis/metrics.k8s.io/v1beta1`` (also the APIService availability probe)."""


def _aggregated(api_version: str) -> bytes:
    def resource(name: str, kind: str, scope: str) -> str:
        return (
            f'{{"resource":"{name}","responseKind":{{"group":"{GROUP}","version":"{VERSION}",'
            f'"kind":"{kind}"}},"scope":"{scope}","singularResource":"","verbs":["get","list"]}}'
        )

    return (
        f'{{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/{api_version}",'
        f'"metadata":{{}},"items":[{{"metadata":{{"name":"{GROUP}","creationTimestamp":null}},'
        f'"versions":[{{"version":"{VERSION}","resources":['
        f'{resource("nodes", "NodeMetrics", "Cluster")},'
        f'{resource("pods", "PodMetrics", "Namespaced")}],"freshness":"Current"}}]}}]}}\n'
    ).encode()


AGGREGATED_DISCOVERY_V2: Final = _aggregated("v2")
"""``GET /apis`` with ``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=...``."""
AGGREGATED_DISCOVERY_V2BETA1: Final = _aggregated("v2beta1")


def etag(body: bytes) -> str:
    """A strong ETag (quoted) for ``body``: the upper-case hex SHA-512, as the apiserver's."""
    return '"' + hashlib.sha512(body).hexdigest().upper() + '"'


AGGREGATED_DISCOVERY_ETAG: Final = etag(AGGREGATED_DISCOVERY_V2)
"""The ETag of the aggregated discovery (the same for v2 and v2beta1: one content)."""


def _indent(obj: object) -> bytes:
    """``json.MarshalIndent(obj, "", "  ")``: two-space indent, no trailing newline."""
    out: bytes = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
    return out


def version_document(
    git_version: str,
    *,
    major: str = "",
    minor: str = "",
    git_commit: str = "",
    git_tree_state: str = "",
    build_date: str = "1970-01-01T00:00:00Z",
    go_version: str = "",
    compiler: str = "gc",
    platform: str = "linux/amd64",
) -> bytes:
    """``GET /version``: ``version.Info`` in its field order, written indented."""
    return _indent(
        {
            "major": major,
            "minor": minor,
            "gitVersion": git_version,
            "gitCommit": git_commit,
            "gitTreeState": git_tree_state,
            "buildDate": build_date,
            "goVersion": go_version,
            "compiler": compiler,
            "platform": platform,
        }
    )


_CHECKS_COMMON: Final = (
    "log", "ping", "poststarthook/max-in-flight-filter",
    "poststarthook/storage-object-count-tracker-hook",
)
DEFAULT_ROOT_PATHS: Final = (
    "/apis",
    "/apis/",
    f"/apis/{GROUP}",
    f"/apis/{GROUP_VERSION}",
    "/healthz",
    *(f"/healthz/{c}" for c in (*_CHECKS_COMMON, "metadata-informer-sync")),
    "/livez",
    *(
        f"/livez/{c}"
        for c in (*_CHECKS_COMMON, "metadata-informer-sync", "metric-collection-timely")
    ),
    "/metrics",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/",
    "/readyz",
    *(
        f"/readyz/{c}"
        for c in (
            *_CHECKS_COMMON, "metadata-informer-sync", "metric-informer-sync",
            "metric-storage-ready", "shutdown",
        )
    ),
    "/version",
)
"""The registered paths of the ``/`` index (sorted when rendered)."""


def root_paths(paths: Iterable[str] = DEFAULT_ROOT_PATHS) -> bytes:
    """``GET /`` (and the body of a 404 outside ``/apis/``): ``{"paths": [...]}``, sorted."""
    return _indent({"paths": sorted(set(paths))})


# -- OpenAPI ---------------------------------------------------------------------------------

_M: Final = "io.k8s.metrics.pkg.apis.metrics.v1beta1"
_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1"
_QUANTITY: Final = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def openapi_version(version: str) -> str:
    """``info.version``: the version up to the first ``-`` (``v0.8.1-dirty`` -> ``v0.8.1``)."""
    return version.split("-", 1)[0]


def _schemas(ref_prefix: str) -> dict[str, Any]:
    def ref(name: str) -> dict[str, Any]:
        return {"$ref": ref_prefix + name}

    def gvk(kind: str) -> list[dict[str, str]]:
        return [{"group": GROUP, "kind": kind, "version": VERSION}]

    usage = {
        "description": "The memory usage is the memory working set.",
        "type": "object",
        "additionalProperties": ref(_QUANTITY),
    }
    type_meta = {
        "apiVersion": {
            "description": "APIVersion defines the versioned schema of this representation "
            "of an object.",
            "type": "string",
        },
        "kind": {
            "description": "Kind is a string value representing the REST resource this "
            "object represents.",
            "type": "string",
        },
    }
    window = {"$ref": ref_prefix + f"{_META}.Duration"}
    timestamp = {"$ref": ref_prefix + f"{_META}.Time"}
    return {
        f"{_M}.ContainerMetrics": {
            "description": "ContainerMetrics sets resource usage metrics of a container.",
            "type": "object",
            "required": ["name", "usage"],
            "properties": {
                "name": {
                    "description": "Container name corresponding to the one from "
                    "pod.spec.containers.",
                    "type": "string",
                },
                "usage": usage,
            },
        },
        f"{_M}.NodeMetrics": {
            "description": "NodeMetrics sets resource usage metrics of a node.",
            "type": "object",
            "required": ["timestamp", "window", "usage"],
            "properties": {
                **type_meta,
                "metadata": {
                    "description": "Standard object's metadata.",
                    "default": {},
                    "allOf": [ref(f"{_META}.ObjectMeta")],
                },
                "timestamp": timestamp,
                "window": window,
                "usage": usage,
            },
            "x-kubernetes-group-version-kind": gvk("NodeMetrics"),
        },
        f"{_M}.NodeMetricsList": {
            "description": "NodeMetricsList is a list of NodeMetrics.",
            "type": "object",
            "required": ["items"],
            "properties": {
                **type_meta,
                "metadata": {
                    "description": "Standard list metadata.",
                    "default": {},
                    "allOf": [ref(f"{_META}.ListMeta")],
                },
                "items": {
                    "description": "List of node metrics.",
                    "type": "array",
                    "items": ref(f"{_M}.NodeMetrics"),
                },
            },
            "x-kubernetes-group-version-kind": gvk("NodeMetricsList"),
        },
        f"{_M}.PodMetrics": {
            "description": "PodMetrics sets resource usage metrics of a pod.",
            "type": "object",
            "required": ["timestamp", "window", "containers"],
            "properties": {
                **type_meta,
                "metadata": {
                    "description": "Standard object's metadata.",
                    "default": {},
                    "allOf": [ref(f"{_META}.ObjectMeta")],
                },
                "timestamp": timestamp,
                "window": window,
                "containers": {
                    "description": "Metrics for all containers are collected within the same "
                    "time window.",
                    "type": "array",
                    "items": ref(f"{_M}.ContainerMetrics"),
                    "x-kubernetes-list-type": "atomic",
                },
            },
            "x-kubernetes-group-version-kind": gvk("PodMetrics"),
        },
        f"{_M}.PodMetricsList": {
            "description": "PodMetricsList is a list of PodMetrics.",
            "type": "object",
            "required": ["items"],
            "properties": {
                **type_meta,
                "metadata": {
                    "description": "Standard list metadata.",
                    "default": {},
                    "allOf": [ref(f"{_META}.ListMeta")],
                },
                "items": {
                    "description": "List of pod metrics.",
                    "type": "array",
                    "items": ref(f"{_M}.PodMetrics"),
                },
            },
            "x-kubernetes-group-version-kind": gvk("PodMetricsList"),
        },
        _QUANTITY: {
            "description": "Quantity is a fixed-point representation of a number.",
            "type": "string",
        },
        f"{_META}.Duration": {
            "description": "Duration is a wrapper around time.Duration which supports correct "
            "marshaling to YAML and JSON.",
            "type": "string",
        },
        f"{_META}.Time": {
            "description": "Time is a wrapper around time.Time which supports correct "
            "marshaling to YAML and JSON.",
            "type": "string",
            "format": "date-time",
        },
        f"{_META}.ListMeta": {
            "description": "ListMeta describes metadata that synthetic resources must have.",
            "type": "object",
            "properties": {
                "continue": {"type": "string"},
                "remainingItemCount": {"type": "integer", "format": "int64"},
                "resourceVersion": {"type": "string"},
                "selfLink": {"type": "string"},
            },
        },
        f"{_META}.ObjectMeta": {
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "type": "object",
            "properties": {
                "creationTimestamp": {"$ref": ref_prefix + f"{_META}.Time"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "name": {"type": "string"},
                "namespace": {"type": "string"},
            },
        },
    }


_JSON_TYPES: Final = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
_ENDPOINTS: Final = (
    # (path, kind, operation id, namespaced, named)
    ("/apis/metrics.k8s.io/v1beta1/nodes", "NodeMetricsList", "listMetricsV1beta1NodeMetrics",
     False, False),
    ("/apis/metrics.k8s.io/v1beta1/nodes/{name}", "NodeMetrics", "readMetricsV1beta1NodeMetrics",
     False, True),
    ("/apis/metrics.k8s.io/v1beta1/pods", "PodMetricsList",
     "listMetricsV1beta1PodMetricsForAllNamespaces", False, False),
    ("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods", "PodMetricsList",
     "listMetricsV1beta1NamespacedPodMetrics", True, False),
    ("/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{name}", "PodMetrics",
     "readMetricsV1beta1NamespacedPodMetrics", True, True),
)


def _parameters(namespaced: bool, named: bool, v3: bool) -> list[dict[str, Any]]:
    def param(name: str, where: str, description: str) -> dict[str, Any]:
        p: dict[str, Any] = {"name": name, "in": where, "description": description}
        if where == "path":
            p["required"] = True
        if v3:
            p["schema"] = {"type": "string"}
        else:
            p["type"] = "string"
        if where == "query":
            p["uniqueItems"] = True
        return p

    out = []
    if named:
        out.append(param("name", "path", "name of the resource"))
    if namespaced:
        out.append(param("namespace", "path", "object name and auth scope"))
    out.append(param("pretty", "query", "If 'true', then the output is pretty printed."))
    if not named:
        out.append(param("labelSelector", "query", "A selector to restrict the list of "
                         "returned objects by their labels. Defaults to everything."))
        out.append(param("fieldSelector", "query", "A selector to restrict the list of "
                         "returned objects by their fields. Defaults to everything."))
    return out


def _paths(ref_prefix: str, v3: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, kind, op_id, namespaced, named in _ENDPOINTS:
        schema = {"$ref": f"{ref_prefix}{_M}.{kind}"}
        ok: dict[str, Any] = {"description": "OK"}
        if v3:
            ok["content"] = {t: {"schema": schema} for t in _JSON_TYPES}
        else:
            ok["schema"] = schema
        op: dict[str, Any] = {
            "description": f"{'read' if named else 'list'} {kind}",
            "operationId": op_id,
            "tags": ["metricsV1beta1"],
            "responses": {"200": ok, "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": "get" if named else "list",
            "x-kubernetes-group-version-kind": {
                "group": GROUP, "version": VERSION, "kind": kind.removesuffix("List"),
            },
        }
        if not v3:
            op["consumes"] = ["*/*"]
            op["produces"] = _JSON_TYPES
            op["schemes"] = ["https"]
        paths[path] = {"get": op, "parameters": _parameters(namespaced, named, v3)}
    return paths


def openapi_v2(version: str) -> bytes:
    """``GET /openapi/v2``: Swagger 2.0 with the metrics paths and definitions."""
    doc = {
        "swagger": "2.0",
        "info": {"title": "Kubernetes metrics-server", "version": openapi_version(version)},
        "paths": _paths("#/definitions/", v3=False),
        "definitions": _schemas("#/definitions/"),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            }
        },
        "security": [{"BearerToken": []}],
    }
    out: bytes = orjson.dumps(doc)
    return out


OPENAPI_V3_GROUP_PATH: Final = f"apis/{GROUP_VERSION}"


def openapi_v3_group(version: str) -> bytes:
    """``GET /openapi/v3/apis/metrics.k8s.io/v1beta1``: OpenAPI 3.0 for the group version."""
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes metrics-server", "version": openapi_version(version)},
        "paths": _paths("#/components/schemas/", v3=True),
        "components": {
            "schemas": _schemas("#/components/schemas/"),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }
    out: bytes = orjson.dumps(doc)
    return out


def openapi_v3_root(version: str) -> bytes:
    """``GET /openapi/v3``: the index, one path with a hash-pinned ``serverRelativeURL``."""
    h = hashlib.sha512(openapi_v3_group(version)).hexdigest().upper()
    doc = {
        "paths": {
            OPENAPI_V3_GROUP_PATH: {
                "serverRelativeURL": f"/openapi/v3/{OPENAPI_V3_GROUP_PATH}?hash={h}"
            }
        }
    }
    out: bytes = orjson.dumps(doc)
    return out
