"""The metrics.k8s.io HTTP handlers: routes, selection, content negotiation (SPEC §5.1-§5.8).

:class:`MetricsAPI` holds what a request reads (the informers' read API, the current storage
snapshot, the server's ``--node-selector``, the freshness histogram) and :func:`add_routes`
registers the resource, discovery, ``/version`` and OpenAPI routes on an aiohttp application.
Bodies come from :mod:`.objects`, :mod:`.protobuf` and :mod:`.discovery` unchanged, except
long pod lists (``OFFLOAD_MIN_PODS`` and more, JSON or protobuf): those are written by
:mod:`.render` from the snapshot's columns, in the render executor (:func:`render_executor`),
and sent in chunks, so that a 150,000-pod list never holds up the small requests around it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import orjson
from aiohttp import web

from .. import gcpause
from .._version import __version__
from ..monitoring import ServerMetrics
from ..selectors import (
    EVERYTHING,
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from ..store import NodeUsage, PodUsage, Snapshot
from . import discovery, objects, protobuf, render

__all__ = [
    "PREFIX",
    "ClusterView",
    "MetricsAPI",
    "SnapshotView",
    "add_routes",
    "negotiate",
    "render_executor",
]

log = logging.getLogger("fastmetrics.api")

PREFIX: Final = "/apis/metrics.k8s.io/v1beta1"

JSON: Final = "application/json"
PROTOBUF: Final = "application/vnd.kubernetes.protobuf"
_TABLE_VERSIONS: Final = ("v1", "v1beta1")
_ACCEPTED: Final = (JSON, PROTOBUF)
_FIELDS: Final = ("metadata.name", "metadata.namespace")
_TRUE: Final = frozenset({"1", "t", "T", "true", "TRUE", "True"})


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


class _PodLike(_Named, Protocol):
    @property
    def namespace(self) -> str: ...


class ClusterView(Protocol):
    """The informers' read API (``ClusterState``). ``pods_in`` yields each pod once; it is
    called on the event loop's thread (where the informers change) and its result may then be
    read from a worker thread, so the pods it yields must not change afterwards."""

    def nodes(self) -> Iterable[_Named]: ...
    def node(self, name: str) -> _Named | None: ...
    def pods_in(self, namespace: str | None) -> Iterable[_PodLike]: ...
    def pod(self, namespace: str, name: str) -> _PodLike | None: ...


class SnapshotView(Protocol):
    """The storage lookups of a ``Snapshot``."""

    def node(self, name: str) -> NodeUsage | None: ...
    def pod(self, namespace: str, name: str) -> PodUsage | None: ...


@dataclass
class MetricsAPI:
    """What the handlers read. ``snapshot`` is called once per request."""

    cluster: ClusterView
    snapshot: Callable[[], SnapshotView]
    node_selector: LabelSelector = EVERYTHING
    metrics: ServerMetrics | None = None
    server_address: str = "127.0.0.1:443"
    version: str = field(default_factory=lambda: f"v{__version__}")
    clock_ns: Callable[[], int] = time.time_ns


API_KEY: Final = web.AppKey("metrics_api", MetricsAPI)

OFFLOAD_MIN_PODS: Final = 1000
"""A pod list of at least this many items is built in the render executor, off the event loop
(and, for JSON and protobuf, from the snapshot's columns: ``api.render``)."""
SELECT_INLINE_MAX: Final = 10_000
"""Selectors are evaluated on the event loop over at most this many candidate pods (a
namespace's); beyond, the selection runs in the render executor too."""
STREAM_MIN_BYTES: Final = 1 << 20
"""Bodies from this size on are written in chunks, yielding to the loop between them (one
write of a 50 MB body would encrypt all of it in one go on the loop's thread)."""
STREAM_CHUNK_BYTES: Final = 256 << 10

_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def render_executor() -> ThreadPoolExecutor:
    """The small thread pool (two threads) where long lists and ``/metrics`` are rendered.

    Created on first use and shared by every application of the process: the compiled
    renderers release the GIL, so two renders run beside the event loop, and more would only
    compete for the same cores."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fastmetrics-render")
        return _EXECUTOR


# ================================================================ content negotiation


@dataclass(frozen=True)
class Format:
    kind: str  # "json" | "protobuf" | "table"
    table_version: str = "v1"

    @property
    def content_type(self) -> str:
        if self.kind == "protobuf":
            return PROTOBUF
        if self.kind == "table":
            return f"{JSON};as=Table;v={self.table_version};g=meta.k8s.io"
        return JSON


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        for p in pieces[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        if params.get("q") in ("0", "0.0", "0.00", "0.000"):
            continue
        out.append((pieces[0].lower(), params))
    return out


def negotiate(accept: str) -> Format | None:
    """The response format for an ``Accept`` header: the first acceptable range wins;
    None when nothing is acceptable (a 406)."""
    if not accept.strip():
        return Format("json")
    for media, params in _media_ranges(accept):
        params.pop("q", None)
        as_ = params.get("as")
        if media == JSON:
            if as_ is None:
                return Format("json")
            if (as_ == "Table" and params.get("g") == "meta.k8s.io"
                    and params.get("v") in _TABLE_VERSIONS):
                return Format("table", params["v"])
            continue
        if media == PROTOBUF and as_ is None:
            return Format("protobuf")
        if media in ("*/*", "application/*") and as_ is None:
            return Format("json")
    return None


# ================================================================ responses


def _pretty(fmt: Format, request: web.Request) -> bool:
    return fmt.kind != "protobuf" and request.query.get("pretty") in _TRUE


def _respond(fmt: Format, body: bytes, request: web.Request) -> web.Response:
    if _pretty(fmt, request):
        body = objects.pretty(body)
    return web.Response(body=body, headers={"Content-Type": fmt.content_type})


async def _send(fmt: Format, body: bytes, request: web.Request) -> web.StreamResponse:
    """``body`` as the response; a long one in chunks, letting other requests run between
    them (a body is complete before its headers go out, so it never fails half-way)."""
    headers = {"Content-Type": fmt.content_type}
    if len(body) < STREAM_MIN_BYTES or request.method != "GET":
        return web.Response(body=body, headers=headers)
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    view = memoryview(body)
    try:
        for start in range(0, len(body), STREAM_CHUNK_BYTES):
            await resp.write(view[start:start + STREAM_CHUNK_BYTES])
            await asyncio.sleep(0)
        await resp.write_eof()
    except ConnectionResetError:  # the client went away: nothing to answer, nothing wrong here
        log.debug("Client went away during a response", extra={"path": request.path})
    return resp


def _error(fmt: Format | None, code_body: tuple[int, bytes]) -> web.Response:
    code, body = code_body
    if fmt is not None and fmt.kind == "protobuf":
        st = orjson.loads(body)
        body = protobuf.status(code, st["reason"], st["message"], st.get("details"))
        return web.Response(status=code, body=body, headers={"Content-Type": PROTOBUF})
    return web.Response(status=code, body=body, headers={"Content-Type": JSON})


class _Fail(Exception):
    def __init__(self, code_body: tuple[int, bytes]) -> None:
        self.code_body = code_body


def _selectors(request: web.Request) -> tuple[LabelSelector, FieldSelector]:
    try:
        label = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
    except SelectorError as e:
        raise _Fail(objects.status_bad_request(e.reason)) from None
    for key in fields.keys():  # noqa: SIM118 (a method, not a dict)
        if key not in _FIELDS:
            raise _Fail(objects.status_bad_request(
                f'"{key}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'))
    return label, fields


def _include_object(request: web.Request, fmt: Format) -> str | None:
    value = request.query.get("includeObject")
    if fmt.kind == "table":
        try:
            objects.check_include_object(value)
        except ValueError as e:
            raise _Fail(objects.status_bad_request(str(e))) from None
    return value


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Impl = Callable[[web.Request, MetricsAPI, Format], Awaitable[web.StreamResponse]]


def _resource(resource: str, impl: _Impl) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _error(None, objects.status_method_not_allowed())
        fmt = negotiate(request.headers.get("Accept", ""))
        if fmt is None:
            return _error(None, objects.status_not_acceptable(_ACCEPTED))
        if request.query.get("watch") in _TRUE:
            return _error(fmt, objects.status_method_not_allowed(resource))
        try:
            return await impl(request, request.app[API_KEY], fmt)
        except _Fail as f:
            return _error(fmt, f.code_body)
    return handler


def _observe(api: MetricsAPI, now_ns: int, timestamps: Iterable[int | None]) -> None:
    if api.metrics is not None:
        api.metrics.observe_freshness(
            [(now_ns - ts) / 1e9 for ts in timestamps if ts is not None])


# ================================================================ resources


async def _list_nodes(request: web.Request, api: MetricsAPI, fmt: Format) -> web.Response:
    label, fields = _selectors(request)
    include = _include_object(request, fmt)
    now = api.clock_ns()
    snap = api.snapshot()
    items: list[tuple[str, Mapping[str, str], NodeUsage]] = []
    for node in api.cluster.nodes():
        if not (label.matches(node.labels) and api.node_selector.matches(node.labels)):
            continue
        if not fields.matches({"metadata.name": node.name}):
            continue
        usage = snap.node(node.name)
        if usage is not None:
            items.append((node.name, node.labels, usage))
    items.sort(key=lambda i: i[0])
    _observe(api, now, (u.timestamp_ns for _, _, u in items))
    if fmt.kind == "protobuf":
        body = protobuf.node_metrics_list(items, now)
    elif fmt.kind == "table":
        body = objects.node_metrics_table(items, now, include, fmt.table_version)
    else:
        body = objects.node_metrics_list(items, now)
    return _respond(fmt, body, request)


async def _get_node(request: web.Request, api: MetricsAPI, fmt: Format) -> web.Response:
    name = request.match_info["name"]
    include = _include_object(request, fmt)
    now = api.clock_ns()
    node = api.cluster.node(name)
    if node is None:
        raise _Fail(objects.status_node_not_found(name))
    usage = api.snapshot().node(name)
    if usage is None:
        raise _Fail(objects.status_nodemetrics_not_found(name))
    _observe(api, now, [usage.timestamp_ns])
    if fmt.kind == "protobuf":
        body = protobuf.node_metrics(name, node.labels, usage, now)
    elif fmt.kind == "table":
        body = objects.node_metrics_table_single(name, node.labels, usage, now, include,
                                                 fmt.table_version)
    else:
        body = objects.node_metrics(name, node.labels, usage, now)
    return _respond(fmt, body, request)


def _select_pods(
    pods: Sequence[_PodLike], label: LabelSelector, fields: FieldSelector
) -> Sequence[_PodLike]:
    """The pods matching both selectors (SPEC §5.4); label sets shared between pods (the
    informer's ``Labels``) are matched once."""
    if label.empty and fields.empty:
        return pods
    out = []
    seen: dict[int, tuple[Mapping[str, str], bool]] = {}
    for pod in pods:
        labels = pod.labels
        hit = seen.get(id(labels))
        if hit is None:
            ok = label.matches(labels)
            seen[id(labels)] = (labels, ok)  # the labels kept alive: their id stays theirs
        else:
            ok = hit[1]
        if ok and (fields.empty or fields.matches(
                {"metadata.name": pod.name, "metadata.namespace": pod.namespace})):
            out.append(pod)
    return out


@dataclass(frozen=True, slots=True)
class _PodListJob:
    """A pod list's body, built on the loop or in the render executor."""

    candidates: Sequence[_PodLike]
    selected: bool
    label: LabelSelector
    fields: FieldSelector
    snap: SnapshotView
    fmt: Format
    include: str | None
    now_ns: int
    pretty: bool

    def __call__(self) -> tuple[bytes, tuple[npt.NDArray[np.int64], float]]:
        """The body, and the freshness histogram's counts and sum for the listed pods."""
        pods = self.candidates if self.selected else _select_pods(
            self.candidates, self.label, self.fields)
        if (self.fmt.kind != "table" and len(pods) >= OFFLOAD_MIN_PODS
                and isinstance(self.snap, Snapshot)):
            body, timestamps = render.pod_list(render.pod_table(self.snap), pods, self.now_ns,
                                               self.fmt.kind)
        else:
            # ~10^6 acyclic objects for 150,000 pods: no collections over them (~0.4 s)
            with gcpause.paused():
                body, timestamps = self._objects(pods)
        if self.pretty:
            body = objects.pretty(body)
        return body, ServerMetrics.freshness_counts((self.now_ns - timestamps) / 1e9)

    def _objects(self, pods: Sequence[_PodLike]) -> tuple[bytes, npt.NDArray[np.int64]]:
        # object by object: PodUsage per pod, then the objects/protobuf renderers
        snap = self.snap
        idents = [(pod.namespace, pod.name) for pod in pods]
        bulk = getattr(snap, "pods_bulk", None)  # Snapshot's; any SnapshotView has ``pod``
        usages = bulk(idents) if bulk is not None else [snap.pod(ns, n) for ns, n in idents]
        items: list[tuple[str, str, Mapping[str, str], PodUsage]] = [
            (pod.namespace, pod.name, pod.labels, usage)
            for pod, usage in zip(pods, usages, strict=True) if usage is not None
        ]
        items.sort(key=lambda i: (i[0], i[1]))
        timestamps = np.array([u.timestamp_ns for _, _, _, u in items
                               if u.timestamp_ns is not None], np.int64)
        if self.fmt.kind == "protobuf":
            body = protobuf.pod_metrics_list(items, self.now_ns)
        elif self.fmt.kind == "table":
            body = objects.pod_metrics_table(items, self.now_ns, self.include,
                                             self.fmt.table_version)
        else:
            body = objects.pod_metrics_list(items, self.now_ns)
        return body, timestamps


async def _list_pods(request: web.Request, api: MetricsAPI, fmt: Format) -> web.StreamResponse:
    namespace = request.match_info.get("namespace") or None
    label, fields = _selectors(request)
    include = _include_object(request, fmt)
    now = api.clock_ns()
    snap = api.snapshot()
    # read the informer here, on the loop's thread, where it changes
    candidates: Sequence[_PodLike] = list(api.cluster.pods_in(namespace))
    selected = label.empty and fields.empty
    if not selected and len(candidates) <= SELECT_INLINE_MAX:
        candidates = _select_pods(candidates, label, fields)
        selected = True
    job = _PodListJob(candidates, selected, label, fields, snap, fmt, include, now,
                      _pretty(fmt, request))
    if not selected or len(candidates) >= OFFLOAD_MIN_PODS:
        loop = asyncio.get_running_loop()
        body, freshness = await loop.run_in_executor(render_executor(), job)
    else:
        body, freshness = job()
    if api.metrics is not None:
        api.metrics.add_freshness(*freshness)
    return await _send(fmt, body, request)


async def _get_pod(request: web.Request, api: MetricsAPI, fmt: Format) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    include = _include_object(request, fmt)
    now = api.clock_ns()
    pod = api.cluster.pod(namespace, name)
    if pod is None:
        raise _Fail(objects.status_pod_not_found(name))
    usage = api.snapshot().pod(namespace, name)
    if usage is None:
        raise _Fail(objects.status_podmetrics_not_found(namespace, name))
    _observe(api, now, [usage.timestamp_ns])
    if fmt.kind == "protobuf":
        body = protobuf.pod_metrics(namespace, name, pod.labels, usage, now)
    elif fmt.kind == "table":
        body = objects.pod_metrics_table_single(namespace, name, pod.labels, usage, now,
                                                include, fmt.table_version)
    else:
        body = objects.pod_metrics(namespace, name, pod.labels, usage, now)
    return _respond(fmt, body, request)


# ================================================================ discovery, version, openapi


def _aggregated_version(accept: str) -> str | None:
    """``v2``/``v2beta1`` when the first usable range asks for aggregated discovery."""
    for media, params in _media_ranges(accept):
        if media == JSON and params.get("as") == "APIGroupDiscoveryList":
            if params.get("g") == "apidiscovery.k8s.io" and params.get("v") in ("v2", "v2beta1"):
                return params["v"]
            continue
        if media in (JSON, "*/*", "application/*"):
            return None
    return None


async def _apis(request: web.Request) -> web.StreamResponse:
    version = _aggregated_version(request.headers.get("Accept", ""))
    headers = {"Vary": "Accept"}
    if version is None:
        headers["Content-Type"] = JSON
        body = discovery.api_group_list(request.app[API_KEY].server_address)
        return web.Response(body=body, headers=headers)
    tag = discovery.AGGREGATED_DISCOVERY_ETAG
    headers["ETag"] = tag
    if request.headers.get("If-None-Match") == tag:
        return web.Response(status=304, headers=headers)
    if version == "v2":
        headers["Content-Type"] = discovery.AGGREGATED_V2_CONTENT_TYPE
        body = discovery.AGGREGATED_DISCOVERY_V2
    else:
        headers["Content-Type"] = discovery.AGGREGATED_V2BETA1_CONTENT_TYPE
        body = discovery.AGGREGATED_DISCOVERY_V2BETA1
    return web.Response(body=body, headers=headers)


def _constant(body: bytes | Callable[[MetricsAPI], bytes]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        data = body(request.app[API_KEY]) if callable(body) else body
        return web.Response(body=data, headers={"Content-Type": JSON})
    return handler


def _openapi_v3_group(api: MetricsAPI) -> bytes:
    return discovery.openapi_v3_group(api.version)


def _openapi_v2(api: MetricsAPI) -> bytes:
    return discovery.openapi_v2(api.version)


def _openapi_v3_root(api: MetricsAPI) -> bytes:
    return discovery.openapi_v3_root(api.version)


def _version(api: MetricsAPI) -> bytes:
    return discovery.version_document(api.version)


def add_routes(app: web.Application, api: MetricsAPI) -> None:
    """Register the metrics.k8s.io resources, discovery, ``/version`` and OpenAPI on ``app``."""
    app[API_KEY] = api
    add: Any = app.router.add_route
    add("GET", "/apis", _apis)
    add("GET", "/apis/", _apis)
    add("GET", "/apis/metrics.k8s.io", _constant(discovery.API_GROUP))
    add("GET", PREFIX, _constant(discovery.API_RESOURCE_LIST))
    add("GET", "/version", _constant(_version))
    add("GET", "/openapi/v2", _constant(_openapi_v2))
    add("GET", "/openapi/v3", _constant(_openapi_v3_root))
    add("GET", f"/openapi/v3/{discovery.OPENAPI_V3_GROUP_PATH}", _constant(_openapi_v3_group))
    add("*", f"{PREFIX}/nodes", _resource("nodes", _list_nodes))
    add("*", f"{PREFIX}/nodes/{{name}}", _resource("nodes", _get_node))
    add("*", f"{PREFIX}/pods", _resource("pods", _list_pods))
    add("*", f"{PREFIX}/namespaces/{{namespace}}/pods", _resource("pods", _list_pods))
    add("*", f"{PREFIX}/namespaces/{{namespace}}/pods/{{name}}", _resource("pods", _get_pod))
