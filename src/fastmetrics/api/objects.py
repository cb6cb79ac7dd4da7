"""metrics.k8s.io JSON bodies, byte for byte as metrics-server writes them (SPEC §5.2-§5.6).

Pure functions from usages (``store.NodeUsage``/``PodUsage``) and live labels to response bytes.
Every body is what Go's ``json.Encoder`` writes: compact, one line, **with the trailing
newline** (``b"...}\\n"``); the HTTP layer sends it as is. Strings are escaped as Go does
(``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u....``; control characters as orjson and Go agree),
maps (labels) are sorted by key, and the fixed parts are built with f-strings and joins, so that
a 150,000-pod list renders in well under a second.

Errors are ``(http code, body)`` pairs of Kubernetes ``Status`` objects (SPEC §5.5); Tables follow
metrics-server's ``table.go`` and the generic ``includeObject`` handling (SPEC §5.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import orjson

from ..store import NodeUsage, PodUsage
from . import _format_py
from .format import format_cpu, format_memory, format_timestamp, format_window

__all__ = [
    "API_VERSION",
    "INCLUDE_OBJECT_VALUES",
    "check_include_object",
    "json_string",
    "node_metrics",
    "node_metrics_list",
    "node_metrics_table",
    "node_metrics_table_single",
    "pod_metrics",
    "pod_metrics_list",
    "pod_metrics_table",
    "pod_metrics_table_single",
    "pretty",
    "status",
    "status_bad_request",
    "status_internal",
    "status_method_not_allowed",
    "status_node_not_found",
    "status_nodemetrics_not_found",
    "status_not_acceptable",
    "status_not_found_path",
    "status_pod_not_found",
    "status_podmetrics_not_found",
]

API_VERSION: Final = "metrics.k8s.io/v1beta1"
GROUP: Final = "metrics.k8s.io"
INCLUDE_OBJECT_VALUES: Final = ("Metadata", "None", "Object")
"""The values ``includeObject`` accepts (``""`` means ``Metadata``)."""

NodeItem = tuple[str, Mapping[str, str], NodeUsage]
"""``(node name, live labels, usage)``."""
PodItem = tuple[str, str, Mapping[str, str], PodUsage]
"""``(namespace, pod name, live labels, usage)``."""

# characters a JSON string needs escaped, or that Go's encoder escapes (HTML-safe output)
_UNSAFE: Final = re.compile('["\\\\<>&\x00-\x1f\u2028\u2029]')
_GO_ONLY: Final = re.compile(b"[<>&]|\xe2\x80[\xa8\xa9]")
_GO_ESCAPE: Final = {
    b"<": b"\\u003c",
    b">": b"\\u003e",
    b"&": b"\\u0026",
    "\u2028".encode(): b"\\u2028",
    "\u2029".encode(): b"\\u2029",
}


def _go_fix(out: bytes) -> bytes:
    """orjson output -> Go ``encoding/json`` output (HTML escaping and U+2028/U+2029)."""
    if _GO_ONLY.search(out) is None:
        return out
    return _GO_ONLY.sub(lambda m: _GO_ESCAPE[m.group()], out)


def json_string(s: str) -> str:
    """The JSON literal of ``s`` (quotes included) exactly as Go's ``encoding/json`` writes it."""
    if _UNSAFE.search(s) is None:
        return f'"{s}"'
    return _go_fix(orjson.dumps(s)).decode()


_q = json_string


def _labels(labels: Mapping[str, str]) -> str:
    """``,"labels":{...}`` (keys sorted, as Go marshals a map), or ``""`` when empty."""
    if not labels:
        return ""
    d = labels if type(labels) is dict else dict(labels)
    return ',"labels":' + _go_fix(orjson.dumps(d, option=orjson.OPT_SORT_KEYS)).decode()


def _ts(timestamp_ns: int | None) -> str:
    return "null" if timestamp_ns is None else f'"{format_timestamp(timestamp_ns)}"'


# -- objects ---------------------------------------------------------------------------------

def _node_fields(name: str, labels: Mapping[str, str], usage: NodeUsage, created: str) -> str:
    return (
        f'"metadata":{{"name":{_q(name)},"creationTimestamp":"{created}"{_labels(labels)}}},'
        f'"timestamp":{_ts(usage.timestamp_ns)},"window":"{format_window(usage.window_ns)}",'
        f'"usage":{{"cpu":"{format_cpu(usage.cpu_nanocores)}",'
        f'"memory":"{format_memory(usage.memory_bytes)}"}}'
    )


def _pod_metadata(namespace: str, name: str, labels: Mapping[str, str], created: str) -> str:
    return (
        f'{{"name":{_q(name)},"namespace":{_q(namespace)},"creationTimestamp":"{created}"'
        f"{_labels(labels)}}}"
    )


def _containers(usage: PodUsage) -> str:
    return ",".join(
        [
            f'{{"name":{_q(c.name)},"usage":{{"cpu":"{format_cpu(c.cpu_nanocores)}",'
            f'"memory":"{format_memory(c.memory_bytes)}"}}}}'
            for c in usage.containers
        ]
    )


def _pod_fields(
    namespace: str, name: str, labels: Mapping[str, str], usage: PodUsage, created: str
) -> str:
    return (
        f'"metadata":{_pod_metadata(namespace, name, labels, created)},'
        f'"timestamp":{_ts(usage.timestamp_ns)},"window":"{format_window(usage.window_ns)}",'
        f'"containers":[{_containers(usage)}]'
    )


def _node_object(name: str, labels: Mapping[str, str], usage: NodeUsage, created: str) -> str:
    return (
        f'{{"kind":"NodeMetrics","apiVersion":"{API_VERSION}",'
        f"{_node_fields(name, labels, usage, created)}}}"
    )


def _pod_object(
    namespace: str, name: str, labels: Mapping[str, str], usage: PodUsage, created: str
) -> str:
    return (
        f'{{"kind":"PodMetrics","apiVersion":"{API_VERSION}",'
        f"{_pod_fields(namespace, name, labels, usage, created)}}}"
    )


def node_metrics(name: str, labels: Mapping[str, str], usage: NodeUsage, now_ns: int) -> bytes:
    """A ``NodeMetrics`` body; ``now_ns`` (the request time) is its ``creationTimestamp``."""
    return (_node_object(name, labels, usage, format_timestamp(now_ns)) + "\n").encode()


def pod_metrics(
    namespace: str, name: str, labels: Mapping[str, str], usage: PodUsage, now_ns: int
) -> bytes:
    """A ``PodMetrics`` body; containers in the order given."""
    return (_pod_object(namespace, name, labels, usage, format_timestamp(now_ns)) + "\n").encode()


def node_metrics_list(items: Iterable[NodeItem], now_ns: int) -> bytes:
    """A ``NodeMetricsList`` body; items in the order given (the caller sorts them by name)."""
    created = format_timestamp(now_ns)
    body = ",".join(
        [f"{{{_node_fields(name, labels, u, created)}}}" for name, labels, u in items]
    )
    return (
        f'{{"kind":"NodeMetricsList","apiVersion":"{API_VERSION}","metadata":{{}},'
        f'"items":[{body}]}}\n'
    ).encode()


def pod_metrics_list(items: Iterable[PodItem], now_ns: int) -> bytes:
    """A ``PodMetricsList`` body; items in the order given (namespace, then name)."""
    created = f'"{format_timestamp(now_ns)}"'
    ts_cache: dict[int | None, str] = {None: "null"}
    win_cache: dict[int, str] = {}
    cpu_cache: dict[int, str] = {}
    mem_cache: dict[int, str] = {}
    ns_cache: dict[str, str] = {}
    cname_cache: dict[str, str] = {}
    parts: list[str] = []
    append = parts.append
    for namespace, name, labels, u in items:
        ts = ts_cache.get(u.timestamp_ns)
        if ts is None:
            ts = ts_cache[u.timestamp_ns] = _ts(u.timestamp_ns)
        win = win_cache.get(u.window_ns)
        if win is None:
            win = win_cache[u.window_ns] = format_window(u.window_ns)
        ns = ns_cache.get(namespace)
        if ns is None:
            ns = ns_cache[namespace] = _q(namespace)
        cs = []
        for c in u.containers:
            cn = cname_cache.get(c.name)
            if cn is None:
                cn = cname_cache[c.name] = _q(c.name)
            cpu = cpu_cache.get(c.cpu_nanocores)
            if cpu is None:
                cpu = cpu_cache[c.cpu_nanocores] = format_cpu(c.cpu_nanocores)
            mem = mem_cache.get(c.memory_bytes)
            if mem is None:
                mem = mem_cache[c.memory_bytes] = format_memory(c.memory_bytes)
            cs.append(f'{{"name":{cn},"usage":{{"cpu":"{cpu}","memory":"{mem}"}}}}')
        lab = _labels(labels) if labels else ""
        append(
            f'{{"metadata":{{"name":{_q(name)},"namespace":{ns},"creationTimestamp":{created}'
            f'{lab}}},"timestamp":{ts},"window":"{win}","containers":[{",".join(cs)}]}}'
        )
    return (
        f'{{"kind":"PodMetricsList","apiVersion":"{API_VERSION}","metadata":{{}},'
        f'"items":[{",".join(parts)}]}}\n'
    ).encode()


def pretty(body: bytes) -> bytes:
    """The ``?pretty=true`` form of a compact body: Go's ``json.MarshalIndent(obj, "", "  ")``
    (two-space indent, key order kept, Go escaping, no trailing newline)."""
    return _go_fix(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2))


# -- Status errors (SPEC §5.5) -----------------------------------------------------------------

def status(code: int, reason: str, message: str, details: Mapping[str, object] | None) -> bytes:
    """A ``Status`` body (``status: Failure``); ``details`` None omits the key (Go's nil)."""
    det = "" if details is None else ',"details":' + _go_fix(orjson.dumps(dict(details))).decode()
    return (
        f'{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure",'
        f'"message":{_q(message)},"reason":{_q(reason)}{det},"code":{int(code)}}}\n'
    ).encode()


def _not_found(group: str, resource: str, name: str) -> tuple[int, bytes]:
    # apierrors.NewNotFound: details {name, group?, kind}; message `<resource[.group]> "<name>" not
    # found` with the name quoted as Go's %q (a JSON string literal for the names that occur)
    qualified = f"{resource}.{group}" if group else resource
    details: dict[str, object] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = resource
    return 404, status(404, "NotFound", f"{qualified} {_q(name)} not found", details)


def status_node_not_found(name: str) -> tuple[int, bytes]:
    """404: the node is not in the informer (``node "X" not found``)."""
    return _not_found("", "node", name)


def status_nodemetrics_not_found(name: str) -> tuple[int, bytes]:
    """404: the node is known but has no metrics."""
    return _not_found(GROUP, "nodemetrics", name)


def status_pod_not_found(name: str) -> tuple[int, bytes]:
    """404: the pod is not in the informer or not Running (``pods "P" not found``)."""
    return _not_found("", "pods", name)


def status_podmetrics_not_found(namespace: str, name: str) -> tuple[int, bytes]:
    """404: the pod is known but has no metrics (the name is ``NS/P``)."""
    return _not_found(GROUP, "podmetrics", f"{namespace}/{name}")


def status_method_not_allowed(
    resource: str | None = None, action: str = "watch"
) -> tuple[int, bytes]:
    """405. With ``resource`` (``"nodes"``/``"pods"``): ``apierrors.NewMethodNotSupported``
    (``watch is not supported on resources of kind "nodes.metrics.k8s.io"``); without: the
    generic answer to another HTTP method on a resource path."""
    if resource is None:
        return 405, status(
            405, "MethodNotAllowed",
            "the server does not allow this method on the requested resource", {},
        )
    return 405, status(
        405, "MethodNotAllowed",
        f'{action} is not supported on resources of kind "{resource}.{GROUP}"',
        {"group": GROUP, "kind": resource},
    )


def status_bad_request(message: str) -> tuple[int, bytes]:
    """400 BadRequest with ``message`` (``apierrors.NewBadRequest``: no details)."""
    return 400, status(400, "BadRequest", message, None)


def status_not_found_path() -> tuple[int, bytes]:
    """404 for an unknown path under ``/apis/``."""
    return 404, status(404, "NotFound", "the server could not find the requested resource", {})


def status_internal(message: str) -> tuple[int, bytes]:
    """500 ``apierrors.NewInternalError``: ``Internal error occurred: <message>``."""
    return 500, status(
        500, "InternalError", f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def status_not_acceptable(accepted: Sequence[str]) -> tuple[int, bytes]:
    """406: no acceptable media type (``only the following media types are accepted: ...``)."""
    return 406, status(
        406, "NotAcceptable",
        "only the following media types are accepted: " + ", ".join(accepted), None,
    )


# -- Table (SPEC §5.6) -------------------------------------------------------------------------

_NAME_COLUMN: Final = (
    '{"name":"Name","type":"string","format":"name","description":"Name of the resource",'
    '"priority":0}'
)
_WINDOW_COLUMN: Final = (
    '{"name":"Window","type":"string","format":"duration","description":"","priority":0}'
)


def _sum_cpu(nanocores: int) -> str:
    """A Quantity sum of CPU: exact (Go's Add), also beyond int64 where no digit is dropped."""
    if nanocores <= _format_py.MAX_INT64:
        return format_cpu(nanocores)
    return _format_py._decimal_si(nanocores, -9)


def _sum_memory(nbytes: int) -> str:
    """A Quantity sum of memory (BinarySI), exact beyond int64."""
    if nbytes <= _format_py.MAX_INT64:
        return format_memory(nbytes)
    k = 0
    while nbytes % 1024 == 0 and k < 6:
        nbytes //= 1024
        k += 1
    return f"{nbytes}{_format_py._BINARY_SUFFIX[k]}"


def check_include_object(value: str | None) -> str:
    """The effective ``includeObject`` (``Metadata`` when unset); ValueError (a 400) otherwise.

    The message is the one the generic apiserver puts in its BadRequest Status.
    """
    if value is None or value == "":
        return "Metadata"
    if value not in INCLUDE_OBJECT_VALUES:
        raise ValueError(
            "Unable to convert to Table as requested: includeObject: Unsupported value: "
            f'{_q(value)}: supported values: "Metadata", "None", "Object"'
        )
    return value


def _columns(names: Sequence[str]) -> str:
    usage = "".join(
        f',{{"name":{_q(n)},"type":"string","format":"quantity","description":"","priority":0}}'
        for n in names
    )
    return f"[{_NAME_COLUMN}{usage},{_WINDOW_COLUMN}]"


def _table(
    rows: Iterable[tuple[str, dict[str, str], str, str, str]],
    include_object: str | None,
    table_version: str,
) -> bytes:
    """Rows of ``(name, usage strings by key, window, metadata json, full object json)``.

    Follows ``addNodeMetricsToTable``: the columns come from the first item with usage keys
    (an item without keys leaves them undecided), a key missing later renders ``"0"``.
    """
    include = check_include_object(include_object)
    names: tuple[str, ...] | None = None
    columns = "null"
    out: list[str] = []
    partial_head = (
        f'{{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/{table_version}",'
        '"metadata":'
    )
    for name, usage, window, metadata, obj in rows:
        if names is None:
            keys = tuple(sorted(usage))
            names = keys or None
            columns = _columns(keys)
        cells = "".join(f',"{usage.get(k, "0")}"' for k in names or ())
        if include == "Metadata":
            row_object = f"{partial_head}{metadata}}}"
        elif include == "Object":
            row_object = obj
        else:
            row_object = "null"
        out.append(f'{{"cells":[{_q(name)}{cells},"{window}"],"object":{row_object}}}')
    body = f"[{','.join(out)}]" if out else "null"
    return (
        f'{{"kind":"Table","apiVersion":"meta.k8s.io/{table_version}","metadata":{{}},'
        f'"columnDefinitions":{columns},"rows":{body}}}\n'
    ).encode()


def node_metrics_table(
    items: Iterable[NodeItem],
    now_ns: int,
    include_object: str | None = "Metadata",
    table_version: str = "v1",
) -> bytes:
    """A ``Table`` (``meta.k8s.io/<table_version>``) of NodeMetrics: Name, cpu, memory, Window.

    ``include_object`` is ``Metadata`` (or ``""``/None), ``Object`` or ``None``; anything else
    raises ValueError (answer it with ``status_bad_request(str(exc))``).
    """
    check_include_object(include_object)
    created = format_timestamp(now_ns)

    def rows() -> Iterable[tuple[str, dict[str, str], str, str, str]]:
        for name, labels, u in items:
            usage = {"cpu": format_cpu(u.cpu_nanocores), "memory": format_memory(u.memory_bytes)}
            meta = f'{{"name":{_q(name)},"creationTimestamp":"{created}"{_labels(labels)}}}'
            obj = _node_object(name, labels, u, created) if include_object == "Object" else ""
            yield name, usage, format_window(u.window_ns), meta, obj

    return _table(rows(), include_object, table_version)


def pod_metrics_table(
    items: Iterable[PodItem],
    now_ns: int,
    include_object: str | None = "Metadata",
    table_version: str = "v1",
) -> bytes:
    """A ``Table`` of PodMetrics: Name, cpu and memory summed over containers, Window."""
    check_include_object(include_object)
    created = format_timestamp(now_ns)

    def rows() -> Iterable[tuple[str, dict[str, str], str, str, str]]:
        for namespace, name, labels, u in items:
            usage: dict[str, str] = {}
            if u.containers:
                cpu = sum(int(c.cpu_nanocores) for c in u.containers)
                mem = sum(int(c.memory_bytes) for c in u.containers)
                usage = {"cpu": _sum_cpu(cpu), "memory": _sum_memory(mem)}
            meta = _pod_metadata(namespace, name, labels, created)
            obj = (
                _pod_object(namespace, name, labels, u, created)
                if include_object == "Object" else ""
            )
            yield name, usage, format_window(u.window_ns), meta, obj

    return _table(rows(), include_object, table_version)


def node_metrics_table_single(
    name: str,
    labels: Mapping[str, str],
    usage: NodeUsage,
    now_ns: int,
    include_object: str | None = "Metadata",
    table_version: str = "v1",
) -> bytes:
    """The Table of one NodeMetrics (a GET of one node with Table output)."""
    return node_metrics_table([(name, labels, usage)], now_ns, include_object, table_version)


def pod_metrics_table_single(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    usage: PodUsage,
    now_ns: int,
    include_object: str | None = "Metadata",
    table_version: str = "v1",
) -> bytes:
    """The Table of one PodMetrics."""
    return pod_metrics_table(
        [(namespace, name, labels, usage)], now_ns, include_object, table_version
    )
