"""A kube-apiserver stand-in for the simulated cluster (aiohttp, HTTPS on loopback).

It serves what metrics-server and kubectl need from a real apiserver:

* authentication (bearer tokens from a table, client certificates from the cluster CA) and
  authorization (``system:masters`` plus a rules table or a callable), with kube-apiserver's
  401/403 Status objects;
* discovery: ``/version``, ``/api``, ``/apis`` (legacy documents and aggregated discovery v2),
  ``/api/v1`` and the group-version documents;
* Nodes and Pods from :class:`~fastmetrics.sim.model.Cluster` (plus Namespaces and the
  ConfigMaps ``extension-apiserver-authentication`` and ``kube-root-ca.crt``): get, list with
  paging and label/field selectors, watch with bookmarks and 410 Gone, full objects,
  PartialObjectMetadata(List) and Tables;
* TokenReview, SubjectAccessReview (plus their self- variants), counted;
* the aggregator: APIServices registered with :meth:`ApiServer.register_api_service` are
  proxied over TLS with the front-proxy client certificate and ``X-Remote-*`` headers.

Everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import calendar
import contextlib
import hashlib
import importlib
import ipaddress
import json
import re
import secrets
import socket
import ssl
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .certs import CertAuthority, KeyPair, server_context
from .model import Cluster, Event, NodeModel, PodModel

__all__ = [
    "ADMIN_USER",
    "METRICS_SERVER_USER",
    "ApiServer",
    "ApiService",
    "Attributes",
    "FieldSelector",
    "LabelSelector",
    "Policy",
    "RequestInfo",
    "Rule",
    "SelectorError",
    "UserInfo",
    "default_rules",
    "human_duration",
    "parse_request_info",
]

JSON = dict[str, Any]

ADMIN_USER: Final = "kubernetes-admin"
METRICS_SERVER_USER: Final = "system:serviceaccount:kube-system:metrics-server"
AUTH_CONFIGMAP: Final = "extension-apiserver-authentication"
API_AUDIENCES: Final = ("https://kubernetes.default.svc.cluster.local",)

VERSION_INFO: Final[JSON] = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "gitCommit": "70d3cc986aa8221cd1dfb1121852688902d3bf53",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T17:59:15Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}
KUBELET_VERSION: Final = "v1.32.0"

AGGREGATED_V2: Final = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1: Final = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
)

# ------------------------------------------------------------------------------ JSON

try:
    _orjson: Any = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


def dumps(obj: object) -> bytes:
    """Compact JSON (orjson when installed)."""
    if _orjson is not None:
        return cast(bytes, _orjson.dumps(obj))
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ------------------------------------------------------------------------------ time


def rfc3339(t_ns: int) -> str:
    """Seconds-precision RFC 3339 in UTC, as metav1.Time marshals."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns // 1_000_000_000))


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration`` (the AGE column)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


# ------------------------------------------------------------------------------ Status


def status_object(code: int, reason: str, message: str,
                  details: JSON | None = None, metadata: JSON | None = None) -> JSON:
    """A metav1.Status for a failure, fields in kube-apiserver's order."""
    out: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": metadata or {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


class ApiError(Exception):
    """A failure answered with a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None,
                 metadata: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status_object(code, reason, message, details, metadata)
        self.code = code


def _details(name: str = "", group: str = "", kind: str = "") -> JSON:
    d: JSON = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    return d


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found',
                    _details(name, group, resource))


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str, metadata: JSON | None = None) -> ApiError:
    return ApiError(410, "Expired", message, None, metadata)


# ------------------------------------------------------------------------------ selectors


class SelectorError(ValueError):
    """A label or field selector that does not parse."""


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_key(key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise SelectorError(f"invalid label key {key!r}: prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise SelectorError(
            f"invalid label key {key!r}: name part must consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _check_value(value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise SelectorError(
            f"invalid label value {value!r}: a valid label must be an empty string or consist "
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )


_OPS = ("!=", "==", "=", "(", ")", ",", "!", ">", "<")


def _lex(selector: str) -> list[tuple[str, str]]:
    """Tokens of a label selector: ("op", text) / ("id", text) / ("in"|"notin", text)."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(selector)
    while i < n:
        ch = selector[i]
        if ch.isspace():
            i += 1
            continue
        for op in _OPS:
            if selector.startswith(op, i):
                tokens.append(("op", op))
                i += len(op)
                break
        else:
            j = i
            while j < n and not selector[j].isspace() and selector[j] not in "!=(),><":
                j += 1
            word = selector[i:j]
            tokens.append((word if word in ("in", "notin") else "id", word))
            i = j
    return tokens


@dataclass(frozen=True)
class Requirement:
    key: str
    op: Literal["exists", "!", "=", "!=", "in", "notin", ">", "<"]
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            have = int(value)
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if op == ">" else have < want


@dataclass(frozen=True)
class LabelSelector:
    """A parsed Kubernetes label selector (=, ==, !=, in, notin, exists, !key, >, <)."""

    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, selector: str) -> LabelSelector:
        """Parse ``selector`` (labels.Parse); raises SelectorError."""
        tokens = _lex(selector)
        reqs: list[Requirement] = []
        pos = 0

        def take() -> tuple[str, str]:
            nonlocal pos
            if pos >= len(tokens):
                raise SelectorError(
                    f"unable to parse requirement: unexpected end of selector {selector!r}")
            pos += 1
            return tokens[pos - 1]

        def peek() -> tuple[str, str] | None:
            return tokens[pos] if pos < len(tokens) else None

        while pos < len(tokens):
            kind, text = take()
            if (kind, text) == ("op", "!"):
                kind, key = take()
                if kind == "op":
                    raise SelectorError(f"found '{key}', expected: identifier after '!'")
                _check_key(key)
                reqs.append(Requirement(key, "!"))
            elif kind != "op":
                key = text
                _check_key(key)
                nxt = peek()
                if nxt is None or nxt == ("op", ","):
                    reqs.append(Requirement(key, "exists"))
                else:
                    reqs.append(cls._operation(key, take(), take, peek))
            else:
                raise SelectorError(f"found '{text}', expected: !, identifier, or 'end of string'")
            nxt = peek()
            if nxt is not None:
                if nxt != ("op", ","):
                    raise SelectorError(f"found '{nxt[1]}', expected: ',' or 'end of string'")
                take()
                if peek() is None:
                    raise SelectorError("found '', expected: identifier after ','")
        return cls(tuple(reqs))

    @staticmethod
    def _operation(key: str, op_token: tuple[str, str],
                   take: Callable[[], tuple[str, str]],
                   peek: Callable[[], tuple[str, str] | None]) -> Requirement:
        kind, op = op_token
        if kind in ("in", "notin"):
            if take() != ("op", "("):
                raise SelectorError(f"found '{op}', expected: '(' after '{kind}'")
            slots: list[str] = [""]
            for _ in range(100_000):
                k2, t2 = take()
                if (k2, t2) == ("op", ")"):
                    break
                if (k2, t2) == ("op", ","):
                    slots.append("")
                elif k2 != "op" and slots[-1] == "":
                    slots[-1] = t2
                else:
                    raise SelectorError(f"found '{t2}', expected: ',', ')' or identifier")
            if slots == [""]:
                raise SelectorError("for 'in', 'notin' operators, values set can't be empty")
            for v in slots:
                _check_value(v)
            return Requirement(key, "in" if kind == "in" else "notin", tuple(slots))
        if kind == "op" and op in ("=", "==", "!=", ">", "<"):
            nxt = peek()
            value = take()[1] if nxt is not None and nxt[0] != "op" else ""
            if op in (">", "<"):
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise SelectorError(
                        f"for 'Gt', 'Lt' operators, the value must be an integer: {value!r}")
                return Requirement(key, ">" if op == ">" else "<", (value,))
            _check_value(value)
            return Requirement(key, "!=" if op == "!=" else "=", (value,))
        raise SelectorError(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i: i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape_field(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector value escape in {value!r}")
            out.append(value[i + 1])
            i += 2
            continue
        if ch in ",=":
            raise SelectorError(f"invalid field selector value: unescaped {ch!r} in {value!r}")
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: comma-separated ``field=value``, ``==``, ``!=`` terms."""

    terms: tuple[tuple[str, Literal["=", "!="], str], ...] = ()

    @classmethod
    def parse(cls, selector: str) -> FieldSelector:
        if not selector.strip():
            return cls()
        terms: list[tuple[str, Literal["=", "!="], str]] = []
        for raw in _split_unescaped(selector, ","):
            for i in range(len(raw)):
                if raw.startswith("!=", i):
                    key, op, value = raw[:i], "!=", raw[i + 2:]
                    break
                if raw.startswith("==", i):
                    key, op, value = raw[:i], "=", raw[i + 2:]
                    break
                if raw.startswith("=", i):
                    key, op, value = raw[:i], "=", raw[i + 1:]
                    break
            else:
                raise SelectorError(f"invalid selector: '{selector}'; can't understand '{raw}'")
            terms.append((key.strip(), cast(Any, op), _unescape_field(value)))
        return cls(tuple(terms))

    def check_supported(self, supported: Iterable[str]) -> None:
        allowed = set(supported)
        for key, _, _ in self.terms:
            if key not in allowed:
                raise SelectorError(f"field label not supported: {key}")

    def matches(self, fields: Mapping[str, str]) -> bool:
        for key, op, value in self.terms:
            have = fields.get(key, "")
            if (have == value) != (op == "="):
                return False
        return True

    def exact(self, key: str) -> str | None:
        """The value ``key`` must equal (``RequiresExactMatch``), if any."""
        for k, op, value in self.terms:
            if k == key and op == "=":
                return value
        return None

    @property
    def empty(self) -> bool:
        return not self.terms


# ------------------------------------------------------------------------------ authn / authz


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def as_json(self) -> JSON:
        out: JSON = {"username": self.name}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


def _authenticated(user: UserInfo) -> UserInfo:
    if "system:authenticated" in user.groups:
        return user
    return UserInfo(user.name, (*user.groups, "system:authenticated"), user.uid, user.extra)


@dataclass(frozen=True)
class Attributes:
    """The authorization attributes of a request (k8s.io/apiserver authorizer.Attributes)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def forbidden_message(self) -> str:
        """kube-apiserver's ``forbiddenMessage``."""
        if not self.resource_request:
            return f'User "{self.user}" cannot {self.verb} path "{self.path}"'
        resource = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = (f'in the namespace "{self.namespace}"' if self.namespace
                 else "at the cluster scope")
        return (f'User "{self.user}" cannot {self.verb} resource "{resource}" '
                f'in API group "{self.api_group}" {where}')


def _match_any(patterns: Sequence[str], value: str) -> bool:
    return "*" in patterns or value in patterns


@dataclass(frozen=True)
class Rule:
    """One grant: subjects (users and/or groups) may ``verbs`` on resources or paths.

    ``resources`` may name subresources (``nodes/metrics``); ``namespaces`` empty means any
    namespace (a ClusterRole binding); ``resource_names`` empty means any name; a
    ``non_resource_urls`` entry ending in ``*`` is a prefix.
    """

    name: str
    verbs: tuple[str, ...]
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def matches(self, a: Attributes) -> bool:
        if a.user not in self.users and not any(g in self.groups for g in a.groups):
            return False
        if not _match_any(self.verbs, a.verb):
            return False
        if not a.resource_request:
            for url in self.non_resource_urls:
                if url == "*" or url == a.path or (
                        url.endswith("*") and a.path.startswith(url[:-1])):
                    return True
            return False
        if not self.resources or not _match_any(self.api_groups, a.api_group):
            return False
        resource = a.resource + (f"/{a.subresource}" if a.subresource else "")
        if not _match_any(self.resources, resource):
            return False
        if self.namespaces and a.namespace not in self.namespaces:
            return False
        return not self.resource_names or a.name in self.resource_names


def default_rules() -> list[Rule]:
    """The cluster's RBAC as far as the simulation needs it (SPEC §6.3, §9.1)."""
    sa = (METRICS_SERVER_USER,)
    return [
        Rule("system:discovery", ("get",), groups=("system:authenticated",),
             non_resource_urls=("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/",
                                "/openapi", "/openapi/*")),
        Rule("system:public-info-viewer", ("get",),
             groups=("system:authenticated", "system:unauthenticated"),
             non_resource_urls=("/healthz", "/livez", "/readyz", "/version", "/version/")),
        Rule("system:basic-user", ("create",), groups=("system:authenticated",),
             api_groups=("authorization.k8s.io", "authentication.k8s.io"),
             resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews",
                        "selfsubjectreviews")),
        Rule("system:metrics-server", ("get", "list", "watch"), users=sa,
             resources=("nodes", "pods")),
        Rule("system:metrics-server:nodes-metrics", ("get",), users=sa,
             resources=("nodes/metrics", "nodes/stats")),
        Rule("extension-apiserver-authentication-reader", ("get", "list", "watch"), users=sa,
             resources=("configmaps",), namespaces=("kube-system",),
             resource_names=(AUTH_CONFIGMAP,)),
        Rule("system:auth-delegator:tokenreviews", ("create",), users=sa,
             api_groups=("authentication.k8s.io",), resources=("tokenreviews",)),
        Rule("system:auth-delegator:subjectaccessreviews", ("create",), users=sa,
             api_groups=("authorization.k8s.io",), resources=("subjectaccessreviews",)),
    ]


Decision = bool | tuple[bool, str] | None


class Policy:
    """``system:masters`` may do anything; then ``authorizer`` (a callable returning True,
    False, ``(allowed, reason)`` or None for no opinion); then the rules (any match allows)."""

    def __init__(self, rules: Iterable[Rule] | None = None,
                 authorizer: Callable[[Attributes], Decision] | None = None) -> None:
        self.rules: list[Rule] = list(default_rules() if rules is None else rules)
        self.authorizer = authorizer

    def authorize(self, a: Attributes) -> tuple[bool, str]:
        if "system:masters" in a.groups:
            return True, ""
        if self.authorizer is not None:
            decision = self.authorizer(a)
            if isinstance(decision, tuple):
                return decision
            if decision is not None:
                return bool(decision), ""
        for rule in self.rules:
            if rule.matches(a):
                return True, f'RBAC: allowed by rule "{rule.name}"'
        return False, ""


@dataclass(frozen=True)
class RequestInfo:
    """What k8s.io/apiserver's RequestInfoFactory derives from a request."""

    resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    watch_path: bool = False


_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
                 "PATCH": "patch", "DELETE": "delete"}


def parse_request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Derive authorization attributes from method, path and query (mirrors the Go code)."""
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    verb = _METHOD_VERBS.get(method.upper(), method.lower())
    non_resource = RequestInfo(False, path, method.lower())
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    watch_path = False
    if rest and rest[0] == "watch":
        watch_path = True
        verb = "watch"
        rest = rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "") in _TRUE else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    if not name and verb in ("list", "watch"):
        with contextlib.suppress(SelectorError):
            exact = FieldSelector.parse(query.get("fieldSelector", "")).exact("metadata.name")
            if exact:
                name = exact
    return RequestInfo(True, path, verb, prefix, group, version, namespace, resource,
                       subresource, name, watch_path)


# ------------------------------------------------------------------------------ objects

NAME_DESC: Final = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DESC: Final = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def _col(name: str, description: str, *, type_: str = "string", fmt: str = "",
         priority: int = 0) -> JSON:
    return {"name": name, "type": type_, "format": fmt, "description": description,
            "priority": priority}


NODE_COLUMNS: Final = [
    _col("Name", NAME_DESC, fmt="name"),
    _col("Status", "The status of the node"),
    _col("Roles", "The roles of the node"),
    _col("Age", AGE_DESC),
    _col("Version", "Kubelet Version reported by the node."),
    _col("Internal-IP", "List of addresses reachable to the node.", priority=1),
    _col("External-IP", "List of addresses reachable to the node.", priority=1),
    _col("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian "
         "GNU/Linux 7 (wheezy)).", priority=1),
    _col("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. "
         "3.16.0-0.bpo.4-amd64).", priority=1),
    _col("Container-Runtime", "ContainerRuntime Version reported by the node through runtime "
         "remote API (e.g. containerd://1.4.2).", priority=1),
]
POD_COLUMNS: Final = [
    _col("Name", NAME_DESC, fmt="name"),
    _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _col("Status", "The aggregate status of the containers in this pod."),
    _col("Restarts", "The number of times the containers in this pod have been restarted and "
         "when the last container in this pod has restarted."),
    _col("Age", AGE_DESC),
    _col("IP", "podIP address allocated to the pod. Routable at least within the cluster. "
         "Empty if not yet allocated.", priority=1),
    _col("Node", "NodeName indicates in which node this pod is scheduled.", priority=1),
    _col("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods "
         "on the node.", priority=1),
    _col("Readiness Gates", "If specified, all readiness gates will be evaluated for pod "
         "readiness.", priority=1),
]
NAMESPACE_COLUMNS: Final = [
    _col("Name", NAME_DESC, fmt="name"),
    _col("Status", "The status of the namespace"),
    _col("Age", AGE_DESC),
]
CONFIGMAP_COLUMNS: Final = [
    _col("Name", NAME_DESC, fmt="name"),
    _col("Data", "Data contains the configuration data.", type_="integer"),
    _col("Age", AGE_DESC),
]


def _uid_hex(uid: str) -> str:
    return uid.replace("-", "")


def pod_ip(pod: PodModel, node: NodeModel | None) -> str:
    idx = node.index if node is not None else 0
    host = zlib.crc32(pod.uid.encode()) % 250 + 2
    return f"10.{(idx >> 8) & 255}.{idx & 255}.{host}"


def _image(container: str) -> str:
    base = container.split("-")[0] if container.startswith("sidecar-") else container
    return f"registry.k8s.io/sim/{base}:1.0"


@dataclass
class _Kind:
    """One served resource type of the core group."""

    resource: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    field_labels: tuple[str, ...]
    columns: list[JSON]
    verbs: tuple[str, ...] = ("get", "list", "watch")


KINDS: Final[dict[str, _Kind]] = {
    "configmaps": _Kind("configmaps", "ConfigMap", "configmap", True, ("cm",), (),
                        ("metadata.name", "metadata.namespace"), CONFIGMAP_COLUMNS),
    "namespaces": _Kind("namespaces", "Namespace", "namespace", False, ("ns",), (),
                        ("metadata.name", "status.phase"), NAMESPACE_COLUMNS),
    "nodes": _Kind("nodes", "Node", "node", False, ("no",), (),
                   ("metadata.name", "spec.unschedulable"), NODE_COLUMNS),
    "pods": _Kind("pods", "Pod", "pod", True, ("po",), ("all",),
                  ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                   "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
                   "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName"),
                  POD_COLUMNS),
}

GROUP_RESOURCES: Final[dict[str, list[tuple[str, str, str]]]] = {
    # group -> (resource, kind, singular) served at v1, all "create"-only and cluster scoped
    "authentication.k8s.io": [("selfsubjectreviews", "SelfSubjectReview", "selfsubjectreview"),
                              ("tokenreviews", "TokenReview", "tokenreview")],
    "authorization.k8s.io": [
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", "selfsubjectaccessreview"),
        ("subjectaccessreviews", "SubjectAccessReview", "subjectaccessreview"),
    ],
}

Attrs = tuple[Mapping[str, str], Mapping[str, str]]
"""(labels, selectable fields) of one object state."""


@dataclass
class _Change:
    """One event as the apiserver's watch cache holds it."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    resource: str
    namespace: str
    name: str
    rv: int
    obj: JSON
    new: Attrs
    old: Attrs | None
    prev_obj: JSON | None
    encoded: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Format:
    """The negotiated output: plain JSON, PartialObjectMetadata(List) or Table."""

    kind: Literal["json", "meta", "table"]
    version: str = "v1"
    include_object: str = "Metadata"


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for item in accept.split(","):
        pieces = [p.strip() for p in item.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for p in pieces[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip()
        out.append((pieces[0].lower(), params))
    return out


def negotiate(accept: str, *, list_: bool, watch: bool, query: Mapping[str, str]) -> _Format:
    """Pick the output as kube-apiserver does from the Accept header (JSON flavours only)."""
    ranges = _media_ranges(accept) or [("*/*", {})]
    include = query.get("includeObject", "") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise bad_request(f'unrecognized includeObject value: "{include}"')
    for media, params in ranges:
        if media not in ("application/json", "application/*", "*/*"):
            continue
        as_ = params.get("as", "")
        group, version = params.get("g", ""), params.get("v", "")
        if not as_:
            return _Format("json")
        if group != "meta.k8s.io" or version not in ("v1", "v1beta1"):
            continue
        if as_ == "Table":
            return _Format("table", version, include)
        if as_ == "PartialObjectMetadata":
            if list_ and not watch:
                raise ApiError(406, "NotAcceptable",
                               "you requested PartialObjectMetadata, but the requested object "
                               "is a list")
            return _Format("meta", version)
        if as_ == "PartialObjectMetadataList":
            if not list_:
                raise ApiError(406, "NotAcceptable",
                               "you requested PartialObjectMetadataList, but the requested "
                               "object is not a list")
            return _Format("meta", version)
    raise ApiError(406, "NotAcceptable",
                   "the server was unable to respond with a content type that the client "
                   "supports")


def _partial(obj: JSON, version: str = "v1") -> JSON:
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
            "metadata": obj["metadata"]}


def _with_rv(obj: JSON, rv: int) -> JSON:
    out = dict(obj)
    out["metadata"] = {**obj["metadata"], "resourceVersion": str(rv)}
    return out


# ------------------------------------------------------------------------------ aggregator

_HOP_BY_HOP: Final = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade",
})


@dataclass
class ApiService:
    """A registered aggregated API (an APIService object) and the proxy towards it."""

    group: str
    version: str
    url: str
    ca_bundle: bytes | None = None
    insecure_skip_tls_verify: bool = False
    group_priority_minimum: int = 100
    version_priority: int = 100
    calls: int = 0
    """Requests proxied to the backend (not counting discovery polls)."""
    session: aiohttp.ClientSession | None = None
    discovery: JSON | None = None
    """The backend's APIVersionDiscovery for this group-version, once fetched."""
    discovery_at: float = -1e9
    discovery_ok: bool = False
    fetching: asyncio.Task[None] | None = None


# ------------------------------------------------------------------------------ the server


@dataclass(eq=False)
class _Watcher:
    queue: asyncio.Queue[_Change | None]
    resource: str


class ApiServer:
    """A kube-apiserver stand-in serving ``cluster`` over HTTPS on 127.0.0.1.

    Use ``await start()`` / ``await stop()`` (or ``async with``); :attr:`url` then names it.

    * Nodes report ``kubelet_port`` (or ``kubelet_port(node)``) as
      ``status.daemonEndpoints.kubeletEndpoint.Port`` and ``node.address`` as InternalIP.
    * Certificates: the serving certificate (SANs 127.0.0.1, localhost) comes from
      ``cluster_ca``, the front-proxy client certificate from ``front_proxy_ca``; both CAs
      are created in ``cert_dir`` when not given. :attr:`ca_file` is what clients trust.
    * Authentication: client certificates from the cluster CA (user = CN, groups = O), then
      bearer tokens from :attr:`tokens` (:attr:`admin_token` is ``kubernetes-admin`` in
      ``system:masters``, :attr:`metrics_server_token` the metrics-server service account;
      add more with :meth:`add_token`); otherwise 401. Impersonation headers are honoured
      for users allowed to ``impersonate``.
    * Authorization: :attr:`policy` (``system:masters``, then an optional callable, then
      :class:`Rule` s; :func:`default_rules` gives the metrics-server RBAC and discovery).
    * The ``kube-system/extension-apiserver-authentication`` ConfigMap can be watched;
      :meth:`rotate_front_proxy_ca` and :meth:`update_auth_configmap` change it (a MODIFIED
      event), the former also the aggregator's client certificate.
    * Watches: cluster changes are taken synchronously as the :class:`Cluster` makes them;
      the event history holds as many events as ``cluster.history`` (older resourceVersions
      get 410 Gone); bookmarks every ``bookmark_interval`` seconds when asked for.
    * :attr:`counts` counts calls (``tokenreviews``, ``subjectaccessreviews``,
      ``selfsubjectaccessreviews``, ``list pods``, ``watch nodes``, ``get configmaps``,
      ``proxy metrics.k8s.io/v1beta1``, ...); :attr:`token_reviews` and
      :attr:`subject_access_reviews` keep the review specs received, in order.
    """

    def __init__(
        self,
        cluster: Cluster,
        cert_dir: Path,
        *,
        cluster_ca: CertAuthority | None = None,
        front_proxy_ca: CertAuthority | None = None,
        kubelet_port: int | Callable[[NodeModel], int] = 10250,
        port: int = 0,
        policy: Policy | None = None,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
        aggregated_discovery: bool = True,
        allow_anonymous: bool = False,
        discovery_refresh: float = 60.0,
    ) -> None:
        self.cluster = cluster
        self.cert_dir = Path(cert_dir)
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_ca = cluster_ca or CertAuthority(self.cert_dir, "cluster")
        self.front_proxy_ca = front_proxy_ca or CertAuthority(self.cert_dir, "front-proxy")
        # issued files land in the CA's directory: a suffix keeps servers sharing a CA apart
        suffix = secrets.token_hex(4)
        self.serving = self.cluster_ca.issue(
            f"kube-apiserver-{suffix}", "kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default.svc"),
            ip_addresses=("127.0.0.1",), server=True)
        self.front_proxy_client = self.front_proxy_ca.issue(
            f"front-proxy-client-{suffix}", "front-proxy-client", client=True)
        self.kubelet_port = kubelet_port
        self.requested_port = port
        self.policy = policy or Policy()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.aggregated_discovery = aggregated_discovery
        self.allow_anonymous = allow_anonymous
        self.discovery_refresh = discovery_refresh

        self.tokens: dict[str, UserInfo] = {}
        self.admin_token = secrets.token_urlsafe(24)
        self.metrics_server_token = secrets.token_urlsafe(24)
        self.add_token(self.admin_token, ADMIN_USER, ("system:masters",))
        self.add_token(self.metrics_server_token, METRICS_SERVER_USER,
                       ("system:serviceaccounts", "system:serviceaccounts:kube-system"),
                       uid=str(uuid.uuid4()))

        self.counts: Counter[str] = Counter()
        """Calls by kind: ``tokenreviews``, ``subjectaccessreviews``, ``list pods``, ..."""
        self.token_reviews: list[JSON] = []
        self.subject_access_reviews: list[JSON] = []
        self.api_services: dict[tuple[str, str], ApiService] = {}

        self._created_ns = cluster.clock()
        self._static_rv = cluster.resource_version
        self._history: deque[_Change] = deque(maxlen=cluster.history.maxlen)
        self._rv = cluster.resource_version
        self._state: dict[tuple[str, str], Attrs] = {}
        self._last_obj: dict[tuple[str, str], JSON] = {}
        self._watchers: set[_Watcher] = set()
        self._sorted: dict[str, tuple[int, list[str]]] = {}
        self._listening = False
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = False
        self._uids: dict[str, str] = {}
        self._cm_cache: tuple[int, dict[str, JSON]] | None = None
        self._cm_rv: dict[str, int] = {}
        self._auth_cm_changes: dict[str, str | None] = {}
        self._front_proxy_generation = 0
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ public API

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def ca_file(self) -> Path:
        """The cluster CA certificate (trust anchor of the serving certificate)."""
        return self.cluster_ca.cert_file

    def add_token(self, token: str, user: str, groups: Iterable[str] = (), *,
                  uid: str = "") -> None:
        """Accept ``token`` as ``user`` in ``groups`` (bearer auth and TokenReview)."""
        self.tokens[token] = UserInfo(user, tuple(groups), uid)

    def issue_client_cert(self, file_stem: str, user: str,
                          groups: Iterable[str] = ()) -> KeyPair:
        """A client certificate from the cluster CA: user = CN, groups = O (written into the
        CA's directory as ``file_stem``.crt/.key)."""
        return self.cluster_ca.issue(file_stem, user, organizations=tuple(groups), client=True)

    def register_api_service(self, group: str = "metrics.k8s.io", version: str = "v1beta1",
                             url: str = "", *, ca_bundle: bytes | str | None = None,
                             insecure_skip_tls_verify: bool = False,
                             group_priority_minimum: int = 100,
                             version_priority: int = 100) -> ApiService:
        """Register an aggregated API (an APIService) served at ``url``.

        ``url`` is ``https://127.x.y.z:PORT`` (loopback only). The backend's serving
        certificate is verified against ``ca_bundle`` (PEM) unless
        ``insecure_skip_tls_verify``; requests reach it with the front-proxy client
        certificate and ``X-Remote-User``/``X-Remote-Group`` headers.
        """
        target = URL(url)
        if target.scheme != "https" or not target.host or target.path not in ("", "/"):
            raise ValueError(f"APIService URL must be https://host:port, got {url!r}")
        if target.host != "localhost" and not _is_loopback(target.host):
            raise ValueError(f"APIService URL must point at loopback, got {url!r}")
        if ca_bundle is None and not insecure_skip_tls_verify:
            raise ValueError("give ca_bundle or insecure_skip_tls_verify=True")
        if isinstance(ca_bundle, str):
            ca_bundle = ca_bundle.encode()
        self.unregister_api_service(group, version)
        svc = ApiService(group, version, url.rstrip("/"), ca_bundle, insecure_skip_tls_verify,
                         group_priority_minimum, version_priority)
        self.api_services[(group, version)] = svc
        return svc

    def unregister_api_service(self, group: str, version: str) -> None:
        svc = self.api_services.pop((group, version), None)
        if svc is None:
            return
        if svc.fetching is not None:
            svc.fetching.cancel()
        if svc.session is not None:
            self._close_later(svc.session)

    def _close_later(self, session: aiohttp.ClientSession) -> None:
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(session.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        """Bind to 127.0.0.1 (the given port, or a free one) and serve."""
        for ev in list(self.cluster.history):
            self._ingest(ev, initial=True)
        for node in self.cluster.nodes:
            self._state[("nodes", node.name)] = self._node_attrs(node)
        for pod in self.cluster.pods.values():
            self._state[("pods", f"{pod.namespace}/{pod.name}")] = self._pod_attrs(pod)
        self._rv = self.cluster.resource_version
        # The cluster calls listeners inside the mutating call: rendering the object right
        # there (not later) captures every version of it, as the real watch cache does.
        self.cluster.add_listener(self._ingest)
        self._listening = True

        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     handler_cancellation=True, shutdown_timeout=2.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.requested_port))
            sock.listen(128)
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        ctx = server_context(self.serving, client_ca=self.cluster_ca.cert_file)
        site = web.SockSite(self._runner, sock, ssl_context=ctx)
        await site.start()

    async def stop(self) -> None:
        """End every watch, close proxy sessions, stop listening."""
        self._stopping = True
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        if self._listening:
            self.cluster.remove_listener(self._ingest)
            self._listening = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        fetches = [svc.fetching for svc in self.api_services.values() if svc.fetching]
        for task in fetches:
            task.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)
        for svc in self.api_services.values():
            if svc.session is not None:
                await svc.session.close()
                svc.session = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ event history

    def _ingest(self, ev: Event, initial: bool = False) -> None:
        """Record one cluster event (rendered now) and hand it to the watchers."""
        if ev.resource_version <= self._rv and not initial:
            return
        if isinstance(ev.obj, NodeModel):
            resource, namespace, name = "nodes", "", ev.obj.name
            obj = self.render_node(ev.obj, ev.resource_version)
            new = self._node_attrs(ev.obj)
        else:
            resource, namespace, name = "pods", ev.obj.namespace, ev.obj.name
            obj = self.render_pod(ev.obj, ev.resource_version)
            new = self._pod_attrs(ev.obj)
        skey = f"{namespace}/{name}" if namespace else name
        key = (resource, skey)
        old = None if ev.type == "ADDED" else self._state.get(key, new)
        prev_obj = None if ev.type == "ADDED" else self._last_obj.get(key, obj)
        change = _Change(ev.type, resource, namespace, name, ev.resource_version, obj, new, old,
                         prev_obj)
        if ev.type == "DELETED":
            self._state.pop(key, None)
            self._last_obj.pop(key, None)
        else:
            self._state[key] = new
            self._last_obj[key] = obj
        self._history.append(change)
        self._rv = max(self._rv, ev.resource_version)
        for w in self._watchers:
            if w.resource == resource:
                w.queue.put_nowait(change)

    def _changes_since(self, rv: int) -> list[_Change] | None:
        if rv >= self._rv:
            return []
        h = self._history
        if not h or h[0].rv > rv + 1:
            return None
        return [c for c in h if c.rv > rv]

    def _oldest_rv(self) -> int:
        return self._history[0].rv - 1 if self._history else self._rv

    # ------------------------------------------------------------------ rendering

    def _now(self) -> int:
        return self.cluster.clock()

    def _node_attrs(self, node: NodeModel) -> Attrs:
        return dict(node.labels), {"metadata.name": node.name, "spec.unschedulable": "false"}

    def _pod_attrs(self, pod: PodModel) -> Attrs:
        host = self.cluster.node_by_name.get(pod.node)
        ip = pod_ip(pod, host) if pod.phase not in ("Pending",) else ""
        return dict(pod.labels), {
            "metadata.name": pod.name, "metadata.namespace": pod.namespace,
            "spec.nodeName": pod.node, "spec.restartPolicy": "Always",
            "spec.schedulerName": "default-scheduler", "spec.serviceAccountName": "default",
            "spec.hostNetwork": "false", "status.phase": pod.phase, "status.podIP": ip,
            "status.podIPs": ip, "status.nominatedNodeName": "",
        }

    def render_node(self, node: NodeModel, rv: int | None = None) -> JSON:
        """A v1.Node (kind and apiVersion included)."""
        created = rfc3339(node.creation_ns)
        now = rfc3339(self._now())
        booted = rfc3339(node.boot_ns)
        idx = node.index
        cidr = f"10.{(idx >> 8) & 255}.{idx & 255}.0/24"
        port = self.kubelet_port(node) if callable(self.kubelet_port) else self.kubelet_port
        resources = {"cpu": node.allocatable_cpu, "ephemeral-storage": "100Gi",
                     "memory": node.allocatable_memory, "pods": "110"}

        def cond(type_: str, status: str, reason: str, message: str) -> JSON:
            return {"type": type_, "status": status, "lastHeartbeatTime": now,
                    "lastTransitionTime": booted, "reason": reason, "message": message}

        ready = (cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
                 if node.ready else
                 cond("Ready", "False", "KubeletNotReady",
                      "container runtime network not ready: NetworkReady=false"))
        uid_hex = _uid_hex(node.uid)
        return {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": node.name,
                "uid": node.uid,
                "resourceVersion": str(node.resource_version if rv is None else rv),
                "creationTimestamp": created,
                "labels": dict(node.labels),
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                },
            },
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": f"sim://{node.name}"},
            "status": {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                         "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure",
                         "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID",
                         "kubelet has sufficient PID available"),
                    ready,
                ],
                "addresses": [{"type": "InternalIP", "address": node.address},
                              {"type": "Hostname", "address": node.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                "nodeInfo": {
                    "machineID": uid_hex,
                    "systemUUID": node.uid,
                    "bootID": str(uuid.UUID(hex=hashlib.md5(
                        f"{node.uid}{node.boot_ns}".encode()).hexdigest())),
                    "kernelVersion": "6.8.0-sim",
                    "osImage": "Ubuntu 24.04.1 LTS",
                    "containerRuntimeVersion": "containerd://1.7.24",
                    "kubeletVersion": KUBELET_VERSION,
                    "kubeProxyVersion": KUBELET_VERSION,
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    def render_pod(self, pod: PodModel, rv: int | None = None) -> JSON:
        """A v1.Pod (kind and apiVersion included)."""
        host = self.cluster.node_by_name.get(pod.node)
        created = rfc3339(pod.creation_ns)
        started = rfc3339(pod.creation_ns + 1_000_000_000)
        phase = pod.phase
        running = phase == "Running"
        statuses = []
        for i, c in enumerate(pod.containers):
            st: JSON = {"name": c.name}
            if running:
                st["state"] = {"running": {"startedAt": rfc3339(c.start_time_ns)}}
            elif phase == "Pending":
                st["state"] = {"waiting": {"reason": "ContainerCreating"}}
            elif phase in ("Succeeded", "Failed"):
                ok = phase == "Succeeded"
                st["state"] = {"terminated": {
                    "exitCode": 0 if ok else 1, "reason": "Completed" if ok else "Error",
                    "startedAt": rfc3339(c.start_time_ns), "finishedAt": rfc3339(self._now()),
                    "containerID": f"containerd://{_uid_hex(pod.uid)}{i:04x}"}}
            else:
                st["state"] = {}
            st.update({
                "lastState": {}, "ready": running, "restartCount": 0, "image": _image(c.name),
                "imageID": f"{_image(c.name)}@sha256:{hashlib.sha256(c.name.encode()).hexdigest()}",
            })
            if phase != "Pending":
                st["containerID"] = f"containerd://{_uid_hex(pod.uid)}{i:04x}"
            st["started"] = running
            statuses.append(st)
        tf = "True" if running else "False"
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True" if phase != "Pending"
             else "False", "lastProbeTime": None, "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": started},
            {"type": "Ready", "status": tf, "lastProbeTime": None, "lastTransitionTime": started},
            {"type": "ContainersReady", "status": tf, "lastProbeTime": None,
             "lastTransitionTime": started},
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
             "lastTransitionTime": created},
        ]
        status: JSON = {"phase": phase, "conditions": conditions}
        if host is not None:
            status["hostIP"] = host.address
            status["hostIPs"] = [{"ip": host.address}]
        if phase != "Pending":
            ip = pod_ip(pod, host)
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
        status["startTime"] = started
        status["containerStatuses"] = statuses
        status["qosClass"] = "BestEffort"
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "resourceVersion": str(pod.resource_version if rv is None else rv),
                "creationTimestamp": created,
                "labels": dict(pod.labels),
            },
            "spec": {
                "containers": [{
                    "name": c.name, "image": _image(c.name), "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                } for c in pod.containers],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "dnsPolicy": "ClusterFirst",
                "serviceAccountName": "default",
                "serviceAccount": "default",
                "nodeName": pod.node,
                "securityContext": {},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300},
                    {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                     "effect": "NoExecute", "tolerationSeconds": 300},
                ],
                "priority": 0,
                "enableServiceLinks": True,
                "preemptionPolicy": "PreemptLowerPriority",
            },
            "status": status,
        }

    def _static_uid(self, key: str) -> str:
        uid = self._uids.get(key)
        if uid is None:
            uid = self._uids[key] = str(uuid.uuid4())
        return uid

    def _namespace_names(self) -> list[str]:
        names = {"default", "kube-system", "kube-public", "kube-node-lease",
                 *self.cluster.shape.namespaces}
        names.update(ns for ns, _ in self.cluster.pods)
        return sorted(names)

    def render_namespace(self, name: str) -> JSON:
        return {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {
                "name": name, "uid": self._static_uid(f"ns/{name}"),
                "resourceVersion": str(self._static_rv),
                "creationTimestamp": rfc3339(self._created_ns - 30 * 86_400 * 1_000_000_000),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def auth_configmap_data(self) -> dict[str, str]:
        """The data of kube-system/extension-apiserver-authentication (as kube-apiserver
        publishes it, with the changes made by :meth:`update_auth_configmap`)."""
        data = {
            "client-ca-file": self.cluster_ca.cert_pem.decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-client-ca-file": self.front_proxy_ca.cert_pem.decode(),
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-username-headers": '["X-Remote-User"]',
        }
        for key, value in self._auth_cm_changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return data

    def update_auth_configmap(self, **changes: str | None) -> None:
        """Change keys of the ``extension-apiserver-authentication`` ConfigMap (``None``
        removes one; underscores in the names stand for dashes), as an operator editing it
        would; watchers get a MODIFIED event."""
        for key, value in changes.items():
            self._auth_cm_changes[key.replace("_", "-")] = value
        self._publish_configmap("kube-system", AUTH_CONFIGMAP)

    def rotate_front_proxy_ca(self, ca: CertAuthority | None = None) -> CertAuthority:
        """Replace the front-proxy CA (a new one in ``cert_dir`` unless given) and the
        aggregator's client certificate; the ConfigMap changes (a MODIFIED event) and
        proxied requests use the new certificate from now on. Returns the new CA."""
        self._front_proxy_generation += 1
        n = self._front_proxy_generation
        self.front_proxy_ca = ca or CertAuthority(self.cert_dir, f"front-proxy-{n}")
        suffix = secrets.token_hex(4)
        self.front_proxy_client = self.front_proxy_ca.issue(
            f"front-proxy-client-{suffix}-{n}", "front-proxy-client", client=True)
        for svc in self.api_services.values():
            if svc.session is not None:
                self._close_later(svc.session)
                svc.session = None
        self._publish_configmap("kube-system", AUTH_CONFIGMAP)
        return self.front_proxy_ca

    def _publish_configmap(self, namespace: str, name: str) -> None:
        """A new resourceVersion for one ConfigMap and a MODIFIED event to its watchers."""
        key = f"{namespace}/{name}"
        before = self._configmaps().get(key)
        self.cluster.resource_version += 1  # configmaps share the cluster's version sequence
        rv = self.cluster.resource_version
        self._cm_rv[key] = rv
        self._rv = rv
        self._cm_cache = None
        obj = self._configmaps()[key]
        attrs: Attrs = ({}, {"metadata.name": name, "metadata.namespace": namespace})
        change = _Change("MODIFIED", "configmaps", namespace, name, rv, obj, attrs, attrs,
                         before)
        self._history.append(change)
        for w in self._watchers:
            if w.resource == "configmaps":
                w.queue.put_nowait(change)

    def _configmaps(self) -> dict[str, JSON]:
        """Every ConfigMap, by ``namespace/name``."""
        if self._cm_cache is not None and self._cm_cache[0] == self._rv:
            return self._cm_cache[1]
        out: dict[str, JSON] = {}
        created = rfc3339(self._created_ns)
        for ns in self._namespace_names():
            names = [("kube-root-ca.crt", {"ca.crt": self.cluster_ca.cert_pem.decode()})]
            if ns == "kube-system":
                names.append((AUTH_CONFIGMAP, self.auth_configmap_data()))
            for name, data in names:
                key = f"{ns}/{name}"
                out[key] = {
                    "kind": "ConfigMap",
                    "apiVersion": "v1",
                    "metadata": {"name": name, "namespace": ns,
                                 "uid": self._static_uid(f"cm/{key}"),
                                 "resourceVersion": str(self._cm_rv.get(key, self._static_rv)),
                                 "creationTimestamp": created},
                    "data": data,
                }
        self._cm_cache = (self._rv, out)
        return out

    # ------------------------------------------------------------------ object access

    def _keys(self, resource: str) -> list[str]:
        """Sorted storage keys (``name`` or ``namespace/name``), cached per resourceVersion."""
        cached = self._sorted.get(resource)
        if cached is not None and cached[0] == self._rv:
            return cached[1]
        if resource == "nodes":
            keys = sorted(n.name for n in self.cluster.nodes)
        elif resource == "pods":
            keys = sorted(f"{ns}/{name}" for ns, name in self.cluster.pods)
        elif resource == "namespaces":
            keys = self._namespace_names()
        else:
            keys = sorted(self._configmaps())
        self._sorted[resource] = (self._rv, keys)
        return keys

    def _get_object(self, resource: str, key: str) -> JSON | None:
        if resource == "nodes":
            node = self.cluster.node_by_name.get(key)
            return None if node is None else self.render_node(node)
        if resource == "pods":
            ns, _, name = key.partition("/")
            pod = self.cluster.pods.get((ns, name))
            return None if pod is None else self.render_pod(pod)
        if resource == "namespaces":
            return self.render_namespace(key) if key in self._namespace_names() else None
        return self._configmaps().get(key)

    def _attrs_of(self, resource: str, key: str, obj: JSON) -> Attrs:
        if resource == "nodes":
            node = self.cluster.node_by_name[key]
            return self._node_attrs(node)
        if resource == "pods":
            ns, _, name = key.partition("/")
            return self._pod_attrs(self.cluster.pods[(ns, name)])
        meta = obj["metadata"]
        fields = {"metadata.name": meta["name"]}
        if resource == "namespaces":
            fields["status.phase"] = "Active"
        else:
            fields["metadata.namespace"] = meta["namespace"]
        return meta.get("labels", {}), fields

    # ------------------------------------------------------------------ request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except ApiError as e:
            return self._json(e.status, e.code)
        except SelectorError as e:
            return self._json(status_object(400, "BadRequest", str(e)), 400)

    def _json(self, body: object, status: int = 200,
              content_type: str = "application/json",
              headers: Mapping[str, str] | None = None) -> web.Response:
        h = {"Content-Type": content_type, "Cache-Control": "no-cache, private"}
        if headers:
            h.update(headers)
        return web.Response(body=dumps(body), status=status, headers=h)

    def _authenticate(self, request: web.Request) -> UserInfo:
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if cert:
            cn, orgs = "", []
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
                    elif key == "organizationName":
                        orgs.append(value)
            if cn:
                return _authenticated(UserInfo(cn, tuple(orgs)))
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = self.tokens.get(token.strip())
            if user is not None:
                return _authenticated(user)
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if self.allow_anonymous:
            return UserInfo("system:anonymous", ("system:unauthenticated",))
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def _attributes(self, user: UserInfo, info: RequestInfo) -> Attributes:
        if not info.resource_request:
            return Attributes(user.name, user.groups, info.verb, False, path=info.path)
        return Attributes(user.name, user.groups, info.verb, True, info.path, info.api_group,
                          info.api_version, info.resource, info.subresource, info.namespace,
                          info.name)

    def _authorize(self, user: UserInfo, info: RequestInfo) -> None:
        attrs = self._attributes(user, info)
        allowed, reason = self.policy.authorize(attrs)
        if allowed:
            return
        msg = attrs.forbidden_message()
        if reason:
            msg = f"{msg}: {reason}"
        if not info.resource_request:
            raise ApiError(403, "Forbidden", f"forbidden: {msg}", {})
        qualified = (f"{info.resource}.{info.api_group}" if info.api_group else info.resource)
        prefix = (f'{qualified} "{info.name}" is forbidden' if info.name
                  else f"{qualified} is forbidden")
        raise ApiError(403, "Forbidden", f"{prefix}: {msg}",
                       _details(info.name, info.api_group, info.resource))

    def _impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        target = request.headers.get("Impersonate-User")
        groups = tuple(request.headers.getall("Impersonate-Group", ()))
        if not target and not groups:
            return user
        if not target:
            raise ApiError(500, "InternalError",
                           "requested impersonation of groups without a user")
        info = RequestInfo(True, request.path, "impersonate", "api", "", "v1", "", "users",
                           "", target)
        self._authorize(user, info)
        for g in groups:
            self._authorize(user, RequestInfo(True, request.path, "impersonate", "api", "",
                                              "v1", "", "groups", "", g))
        return _authenticated(UserInfo(target, groups))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        user = self._impersonate(request, self._authenticate(request))
        query = request.query
        info = parse_request_info(request.method, request.path, query)
        self._authorize(user, info)
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]

        if parts[:1] == ["apis"] and len(parts) >= 2:
            group = parts[1]
            versions = [s for (g, _), s in self.api_services.items() if g == group]
            if versions:
                if len(parts) == 2:
                    return self._json(self._api_group(group, [s.version for s in versions]))
                svc = self.api_services.get((group, parts[2]))
                if svc is None:
                    raise path_not_found()
                return await self._proxy(request, svc, user)

        if request.method not in ("GET", "HEAD") and not (
                request.method == "POST" and info.verb == "create"):
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource",
                           {})
        if request.method == "POST":
            return await self._create(request, user, info)

        if not info.resource_request:
            return await self._non_resource(request, path)
        if info.api_prefix == "api" and info.api_version == "v1" and info.resource in KINDS:
            return await self._resource(request, info, user)
        raise path_not_found()

    async def _non_resource(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == "/version":
            return self._json(VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain", charset="utf-8",
                                headers={"X-Content-Type-Options": "nosniff"})
        if path == "/":
            return self._json({"paths": sorted([
                "/api", "/api/v1", "/apis", "/apis/", "/healthz", "/livez", "/readyz",
                "/version", *(f"/apis/{g}" for g in GROUP_RESOURCES),
                *(f"/apis/{g}/v1" for g in GROUP_RESOURCES),
                *(f"/apis/{g}/{v}" for g, v in self.api_services),
            ])})
        agg = self._wants_aggregated(request)
        if path == "/api":
            if agg is not None:
                return self._aggregated(request, agg, [self._core_discovery()])
            return self._json({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}],
            })
        if path == "/apis":
            if agg is not None:
                items = [self._group_discovery(g) for g in GROUP_RESOURCES]
                items += await self._aggregated_services()
                return self._aggregated(request, agg, items)
            groups = [self._api_group(g, ["v1"], typed=False) for g in GROUP_RESOURCES]
            by_group: dict[str, list[ApiService]] = {}
            for svc in self.api_services.values():
                by_group.setdefault(svc.group, []).append(svc)
            for g, svcs in by_group.items():
                svcs.sort(key=lambda s: -s.version_priority)
                groups.append(self._api_group(g, [s.version for s in svcs], typed=False))
            return self._json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path == "/api/v1":
            return self._json({
                "kind": "APIResourceList", "groupVersion": "v1",
                "resources": [{
                    "name": k.resource, "singularName": k.singular, "namespaced": k.namespaced,
                    "kind": k.kind, "verbs": list(k.verbs),
                    **({"shortNames": list(k.short_names)} if k.short_names else {}),
                    **({"categories": list(k.categories)} if k.categories else {}),
                } for k in KINDS.values()],
            })
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "apis" and parts[2] in GROUP_RESOURCES:
            group = parts[2]
            if len(parts) == 3:
                return self._json(self._api_group(group, ["v1"]))
            if len(parts) == 4 and parts[3] == "v1":
                return self._json({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1",
                    "resources": [{"name": r, "singularName": s, "namespaced": False,
                                   "kind": kind, "verbs": ["create"]}
                                  for r, kind, s in GROUP_RESOURCES[group]],
                })
        raise path_not_found()

    # ------------------------------------------------------------------ discovery

    @staticmethod
    def _api_group(group: str, versions: list[str], typed: bool = True) -> JSON:
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        out: JSON = {"kind": "APIGroup", "apiVersion": "v1"} if typed else {}
        out.update({"name": group, "versions": vs, "preferredVersion": vs[0]})
        return out

    def _wants_aggregated(self, request: web.Request) -> str | None:
        """The aggregated discovery version asked for first ("v2"/"v2beta1"), if any."""
        if not self.aggregated_discovery:
            return None
        for media, params in _media_ranges(request.headers.get("Accept", "")):
            if media not in ("application/json", "application/*", "*/*"):
                continue
            if (params.get("as") == "APIGroupDiscoveryList"
                    and params.get("g") == "apidiscovery.k8s.io"
                    and params.get("v") in ("v2", "v2beta1")):
                return params["v"]
            if not params.get("as"):
                return None
        return None

    def _aggregated(self, request: web.Request, version: str, items: list[JSON]) -> web.Response:
        body = dumps({"kind": "APIGroupDiscoveryList",
                      "apiVersion": f"apidiscovery.k8s.io/{version}",
                      "metadata": {}, "items": items})
        etag = '"' + hashlib.sha512(body).hexdigest()[:64].upper() + '"'
        ctype = AGGREGATED_V2 if version == "v2" else AGGREGATED_V2BETA1
        headers = {"Content-Type": ctype, "ETag": etag, "Cache-Control": "no-cache, private",
                   "Vary": "Accept"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag, "Vary": "Accept"})
        return web.Response(body=body, headers=headers)

    def _core_discovery(self) -> JSON:
        resources = []
        for k in KINDS.values():
            r: JSON = {"resource": k.resource,
                       "responseKind": {"group": "", "version": "v1", "kind": k.kind},
                       "scope": "Namespaced" if k.namespaced else "Cluster",
                       "singularResource": k.singular, "verbs": list(k.verbs)}
            if k.short_names:
                r["shortNames"] = list(k.short_names)
            if k.categories:
                r["categories"] = list(k.categories)
            resources.append(r)
        return {"metadata": {"creationTimestamp": None},
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}]}

    @staticmethod
    def _group_discovery(group: str) -> JSON:
        resources = [{"resource": r, "responseKind": {"group": group, "version": "v1",
                                                      "kind": kind},
                      "scope": "Cluster", "singularResource": s, "verbs": ["create"]}
                     for r, kind, s in GROUP_RESOURCES[group]]
        return {"metadata": {"name": group, "creationTimestamp": None},
                "versions": [{"version": "v1", "resources": resources,
                              "freshness": "Current"}]}

    async def _aggregated_services(self) -> list[JSON]:
        """Discovery of the registered APIServices, fetched from their backends."""
        by_group: dict[str, list[ApiService]] = {}
        for svc in self.api_services.values():
            by_group.setdefault(svc.group, []).append(svc)
        items = []
        for group, svcs in sorted(by_group.items(),
                                  key=lambda kv: -max(s.group_priority_minimum for s in kv[1])):
            versions = []
            for svc in sorted(svcs, key=lambda s: -s.version_priority):
                await self._refresh_discovery(svc)
                if svc.discovery is not None:
                    doc = dict(svc.discovery)
                    doc["freshness"] = "Current" if svc.discovery_ok else "Stale"
                    versions.append(doc)
            if versions:
                items.append({"metadata": {"name": group, "creationTimestamp": None},
                              "versions": versions})
        return items

    async def _refresh_discovery(self, svc: ApiService) -> None:
        """Re-poll a backend in the background when its document is stale (as the aggregator
        does); only before the first document exists, wait for the poll (up to 2 s)."""
        age = time.monotonic() - svc.discovery_at
        if age <= (self.discovery_refresh if svc.discovery_ok else 1.0):
            return
        if svc.fetching is None or svc.fetching.done():
            svc.fetching = asyncio.get_running_loop().create_task(self._fetch_discovery(svc))
            self._background.add(svc.fetching)
            svc.fetching.add_done_callback(self._background.discard)
        if svc.discovery is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(svc.fetching), 2.0)

    async def _fetch_discovery(self, svc: ApiService) -> None:
        """Poll the backend as the aggregator does (aggregated first, then the legacy doc)."""
        svc.discovery_at = time.monotonic()
        agg = UserInfo("system:kube-aggregator", ("system:masters",))
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            session = self._session(svc)
            headers = self._proxy_headers(CIMultiDict(), agg, "127.0.0.1")
            headers["Accept"] = AGGREGATED_V2 + ",application/json"
            async with session.get(svc.url + "/apis", headers=headers, timeout=timeout) as r:
                body = await r.read()
                ctype = r.headers.get("Content-Type", "")
                if r.status == 200 and _is_aggregated_v2(ctype):
                    for item in json.loads(body).get("items", []):
                        if item.get("metadata", {}).get("name") != svc.group:
                            continue
                        for v in item.get("versions", []):
                            if v.get("version") == svc.version:
                                svc.discovery, svc.discovery_ok = v, True
                                return
                if r.status == 503:
                    svc.discovery_ok = False
                    return
            legacy = self._proxy_headers(CIMultiDict(), UserInfo("system:kube-aggregator"),
                                         "127.0.0.1")
            legacy["Accept"] = "application/json"
            async with session.get(f"{svc.url}/apis/{svc.group}/{svc.version}",
                                   headers=legacy, timeout=timeout) as r:
                if r.status != 200:
                    svc.discovery_ok = False
                    return
                doc = json.loads(await r.read())
            svc.discovery = _legacy_to_aggregated(svc.group, svc.version, doc)
            svc.discovery_ok = True
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, AttributeError,
                RuntimeError):
            svc.discovery_ok = False

    # ------------------------------------------------------------------ aggregator proxy

    def _session(self, svc: ApiService) -> aiohttp.ClientSession:
        if svc.session is None or svc.session.closed:
            if svc.insecure_skip_tls_verify:
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                assert svc.ca_bundle is not None
                ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                 cadata=svc.ca_bundle.decode())
            ctx.load_cert_chain(self.front_proxy_client.cert_file,
                                self.front_proxy_client.key_file)
            connector = aiohttp.TCPConnector(ssl=ctx, limit=100, keepalive_timeout=30)
            svc.session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5),
            )
        return svc.session

    @staticmethod
    def _proxy_headers(incoming: CIMultiDict[str], user: UserInfo,
                       remote: str | None) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        for k, v in incoming.items():
            lk = k.lower()
            if (lk in _HOP_BY_HOP or lk in ("host", "authorization", "content-length")
                    or lk.startswith("x-remote-") or lk.startswith("impersonate-")):
                continue
            out.add(k, v)
        out["X-Remote-User"] = user.name
        for g in user.groups:
            out.add("X-Remote-Group", g)
        for key, values in user.extra.items():
            for v in values:
                out.add("X-Remote-Extra-" + quote(key, safe=""), v)
        if remote:
            prior = incoming.get("X-Forwarded-For")
            out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
        return out

    async def _proxy(self, request: web.Request, svc: ApiService,
                     user: UserInfo) -> web.StreamResponse:
        """Forward to the APIService backend as the front proxy; stream the answer back."""
        headers = self._proxy_headers(CIMultiDict(request.headers), user, request.remote)
        target = URL(svc.url + request.raw_path, encoded=True)
        data = request.content if request.body_exists else None
        self.counts[f"proxy {svc.group}/{svc.version}"] += 1
        try:
            session = self._session(svc)
            upstream = await session.request(request.method, target, headers=headers,
                                             data=data, allow_redirects=False)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return web.Response(status=503, text="service unavailable\n",
                                content_type="text/plain", charset="utf-8",
                                headers={"X-Content-Type-Options": "nosniff"})
        svc.calls += 1
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    resp.headers.add(k, v)
            if upstream.content_length is not None:
                resp.content_length = upstream.content_length
            await resp.prepare(request)
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            return resp
        finally:
            upstream.release()

    # ------------------------------------------------------------------ reviews

    async def _read_json(self, request: web.Request) -> JSON:
        """The request body as JSON; a protobuf review (what kubectl sends) is decoded."""
        if request.content_type == "application/vnd.kubernetes.protobuf":
            try:
                return decode_review_protobuf(await request.read())
            except ValueError as e:
                raise bad_request(
                    f"the body of the request was in an unknown format: {e}") from None
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request(f"the body of the request was in an unknown format: {e}") from None
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        return body

    async def _create(self, request: web.Request, user: UserInfo,
                      info: RequestInfo) -> web.StreamResponse:
        if info.api_version != "v1" or info.namespace or info.name:
            raise path_not_found()
        if info.api_group == "authentication.k8s.io" and info.resource == "tokenreviews":
            return self._json(self._token_review(await self._read_json(request)), 201)
        if info.api_group == "authentication.k8s.io" and info.resource == "selfsubjectreviews":
            self.counts["selfsubjectreviews"] += 1
            return self._json({"kind": "SelfSubjectReview",
                               "apiVersion": "authentication.k8s.io/v1",
                               "metadata": {"creationTimestamp": None},
                               "status": {"userInfo": user.as_json()}}, 201)
        if info.api_group == "authorization.k8s.io" and info.resource in (
                "subjectaccessreviews", "selfsubjectaccessreviews"):
            body = await self._read_json(request)
            return self._json(self._access_review(body, info.resource, user), 201)
        if info.api_prefix == "api" and info.resource in KINDS:
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource",
                           {})
        raise path_not_found()

    def _token_review(self, body: JSON) -> JSON:
        self.counts["tokenreviews"] += 1
        spec = body.get("spec") or {}
        self.token_reviews.append(spec)
        token = spec.get("token", "")
        if not isinstance(token, str) or not token:
            raise ApiError(422, "Invalid",
                           'TokenReview.authentication.k8s.io "" is invalid: spec.token: '
                           "Required value: token must not be empty",
                           {"group": "authentication.k8s.io", "kind": "TokenReview"})
        status: JSON
        user = self.tokens.get(token)
        if user is None:
            status = {"user": {}}
        else:
            audiences = spec.get("audiences") or list(API_AUDIENCES)
            status = {"authenticated": True, "user": _authenticated(user).as_json(),
                      "audiences": audiences}
        return {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    def _access_review(self, body: JSON, resource: str, caller: UserInfo) -> JSON:
        self.counts[resource] += 1
        spec = body.get("spec") or {}
        kind = ("SubjectAccessReview" if resource == "subjectaccessreviews"
                else "SelfSubjectAccessReview")
        if resource == "subjectaccessreviews":
            self.subject_access_reviews.append(spec)
            name = spec.get("user", "") or ""
            groups = tuple(spec.get("groups") or ())
            if not name and not groups:
                raise ApiError(422, "Invalid",
                               f'{kind}.authorization.k8s.io "" is invalid: spec.user: Invalid '
                               'value: "": at least one of user or group must be specified',
                               {"group": "authorization.k8s.io", "kind": kind})
        else:
            name, groups = caller.name, caller.groups
        ra = spec.get("resourceAttributes")
        nra = spec.get("nonResourceAttributes")
        if (ra is None) == (nra is None):
            raise ApiError(422, "Invalid",
                           f'{kind}.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                           "Invalid value: exactly one of nonResourceAttributes or "
                           "resourceAttributes must be specified",
                           {"group": "authorization.k8s.io", "kind": kind})
        if isinstance(ra, dict):
            attrs = Attributes(name, groups, ra.get("verb", ""), True, "", ra.get("group", ""),
                               ra.get("version", ""), ra.get("resource", ""),
                               ra.get("subresource", ""), ra.get("namespace", ""),
                               ra.get("name", ""))
        elif isinstance(nra, dict):
            attrs = Attributes(name, groups, nra.get("verb", ""), False, nra.get("path", ""))
        else:
            raise bad_request("spec.resourceAttributes must be an object")
        allowed, reason = self.policy.authorize(attrs)
        status: JSON = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        return {"kind": kind, "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}

    # ------------------------------------------------------------------ resources

    async def _resource(self, request: web.Request, info: RequestInfo,
                        user: UserInfo) -> web.StreamResponse:
        kind = KINDS[info.resource]
        if info.subresource:
            raise path_not_found()
        if kind.namespaced is False and info.namespace and info.resource != "namespaces":
            raise path_not_found()
        query = request.query
        watch = info.verb == "watch" or query.get("watch", "") in _TRUE
        if info.name and not watch and info.verb == "get":
            self.counts[f"get {info.resource}"] += 1
            fmt = negotiate(request.headers.get("Accept", ""), list_=False, watch=False,
                            query=query)
            key = f"{info.namespace}/{info.name}" if kind.namespaced else info.name
            obj = self._get_object(info.resource, key)
            if obj is None:
                raise not_found(info.resource, info.name)
            return self._json(self._format_single(obj, kind, fmt))
        label = LabelSelector.parse(query.get("labelSelector", ""))
        fields = FieldSelector.parse(query.get("fieldSelector", ""))
        fields.check_supported(kind.field_labels)
        if info.name and watch:
            fields = FieldSelector((*fields.terms, ("metadata.name", "=", info.name)))
        fmt = negotiate(request.headers.get("Accept", ""), list_=True, watch=watch, query=query)
        if watch:
            self.counts[f"watch {info.resource}"] += 1
            return await self._watch(request, kind, info.namespace, label, fields, fmt)
        self.counts[f"list {info.resource}"] += 1
        return self._list(request, kind, info.namespace, label, fields, fmt)

    def _format_single(self, obj: JSON, kind: _Kind, fmt: _Format) -> JSON:
        if fmt.kind == "meta":
            return _partial(obj, fmt.version)
        if fmt.kind == "table":
            return self._table(kind, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                               fmt)
        return obj

    def _rollback(self, resource: str, at_rv: int) -> dict[str, tuple[JSON, Attrs] | None]:
        """How the objects changed after ``at_rv`` looked at ``at_rv`` (None: absent then),
        from the history's before-images; ``at_rv`` must not be older than the history."""
        out: dict[str, tuple[JSON, Attrs] | None] = {}
        for c in self._history:
            if c.rv <= at_rv or c.resource != resource:
                continue
            key = f"{c.namespace}/{c.name}" if c.namespace else c.name
            if key in out:
                continue  # the earliest change after at_rv holds the before-image
            if c.type == "ADDED" or c.old is None:
                out[key] = None
            else:
                out[key] = (c.prev_obj if c.prev_obj is not None else c.obj, c.old)
        return out

    def _key_range(self, kind: _Kind, namespace: str, start: str, at_rv: int | None
                   ) -> tuple[list[str], int, int, dict[str, tuple[JSON, Attrs] | None]]:
        """Sorted keys (as of ``at_rv``), the index range for ``namespace`` from ``start``,
        and the rolled-back objects."""
        keys = self._keys(kind.resource)
        past: dict[str, tuple[JSON, Attrs] | None] = {}
        if at_rv is not None and at_rv < self._rv:
            past = self._rollback(kind.resource, at_rv)
            if past:
                keys = sorted((set(keys) | {k for k, v in past.items() if v is not None})
                              - {k for k, v in past.items() if v is None})
        lo, hi = 0, len(keys)
        if namespace and kind.namespaced:
            lo = bisect.bisect_left(keys, namespace + "/")
            hi = bisect.bisect_left(keys, namespace + "0")  # "0" sorts right after "/"
        if start:
            lo = max(lo, bisect.bisect_left(keys, start))
        return keys, lo, hi, past

    def _matching(self, kind: _Kind, namespace: str, label: LabelSelector,
                  fields: FieldSelector, start: str = "",
                  at_rv: int | None = None) -> Iterator[tuple[str, JSON]]:
        """Objects in storage-key order from ``start`` on (as of ``at_rv`` when given)."""
        keys, lo, hi, past = self._key_range(kind, namespace, start, at_rv)
        exact = fields.exact("metadata.name")
        for i in range(lo, hi):
            key = keys[i]
            if exact is not None and key.rpartition("/")[2] != exact:
                continue
            before = past.get(key)
            if before is not None:
                obj, attrs = before
                if not label.matches(attrs[0]) or not fields.matches(attrs[1]):
                    continue
                yield key, obj
                continue
            found = self._get_object(kind.resource, key)
            if found is None:
                continue
            if not label.empty or not fields.empty:
                labels, fvals = self._attrs_of(kind.resource, key, found)
                if not label.matches(labels) or not fields.matches(fvals):
                    continue
            yield key, found

    def _list(self, request: web.Request, kind: _Kind, namespace: str, label: LabelSelector,
              fields: FieldSelector, fmt: _Format) -> web.Response:
        query = request.query
        rv_param = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        cont = query.get("continue", "")
        limit_s = query.get("limit", "")
        try:
            limit = int(limit_s) if limit_s else 0
        except ValueError:
            raise bad_request(f'invalid limit "{limit_s}"') from None
        if match and match not in ("Exact", "NotOlderThan"):
            raise ApiError(422, "Invalid", f'resourceVersionMatch: Unsupported value: "{match}"')
        if match and not rv_param:
            raise ApiError(422, "Invalid", "resourceVersionMatch: Forbidden: resourceVersionMatch"
                           " is forbidden unless resourceVersion is provided")
        if cont and rv_param:
            raise bad_request("specifying resource version is not allowed when using continue")
        list_rv = self._rv
        at_rv: int | None = None
        start = ""
        if cont:
            try:
                token = json.loads(base64.b64decode(cont, validate=True))
                token_rv = int(token["rv"])
                start = str(token["start"])
            except (binascii.Error, ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: incorrect encoded start "
                                  "resourceVersion (version meta.k8s.io/v1)") from None
            if 0 < token_rv < self._oldest_rv():
                raise expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list.",
                    {"continue": _continue_token(-1, start)})
            if token_rv > 0:
                list_rv = at_rv = token_rv  # continued pages show the first page's state
        elif rv_param and rv_param != "0":
            try:
                want = int(rv_param)
            except ValueError:
                raise bad_request(f'invalid resource version "{rv_param}"') from None
            if want > self._rv:
                raise ApiError(504, "Timeout",
                               f"Timeout: Too large resource version: {want}, current: {self._rv}",
                               {"causes": [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}],
                                "retryAfterSeconds": 1})
            if match == "Exact":
                if want < self._oldest_rv():
                    raise expired("The resourceVersion for the provided list is too old.")
                list_rv = at_rv = want
        elif rv_param == "0" and match == "Exact":
            raise ApiError(422, "Invalid", 'resourceVersionMatch: Forbidden: resourceVersionMatch'
                           ' "exact" is forbidden for resourceVersion "0"')

        items: list[JSON] = []
        more = False
        last = ""
        for key, obj in self._matching(kind, namespace, label, fields, start, at_rv):
            if limit and len(items) >= limit:
                more = True
                break
            items.append(obj)
            last = key
        meta: JSON = {"resourceVersion": str(list_rv)}
        if more:
            meta["continue"] = _continue_token(list_rv, last + "\x00")
            if label.empty and fields.empty:
                _, lo, hi, _ = self._key_range(kind, namespace, last + "\x00", at_rv)
                meta["remainingItemCount"] = max(0, hi - lo)
        if fmt.kind == "table":
            return self._json(self._table(kind, items, meta, fmt))
        if fmt.kind == "meta":
            return self._json({"kind": "PartialObjectMetadataList",
                               "apiVersion": f"meta.k8s.io/{fmt.version}", "metadata": meta,
                               "items": [_partial(o, fmt.version) for o in items]})
        return self._json({"kind": f"{kind.kind}List", "apiVersion": "v1", "metadata": meta,
                           "items": [{k: v for k, v in o.items()
                                      if k not in ("kind", "apiVersion")} for o in items]})

    # ------------------------------------------------------------------ tables

    def _cells(self, kind: _Kind, obj: JSON) -> list[Any]:
        meta = obj["metadata"]
        now_s = self._now() / 1e9
        created = meta.get("creationTimestamp")
        age = ("<unknown>" if not created else human_duration(
            now_s - calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))))
        if kind.resource == "nodes":
            st = obj["status"]
            ready = next((c for c in st["conditions"] if c["type"] == "Ready"), None)
            status = "Ready" if ready and ready["status"] == "True" else "NotReady"
            roles = sorted({k.split("/", 1)[1] for k in meta.get("labels", {})
                            if k.startswith("node-role.kubernetes.io/") and "/" in k}
                           | {v for k, v in meta.get("labels", {}).items()
                              if k == "kubernetes.io/role" and v})
            addrs = st.get("addresses", [])
            internal = next((a["address"] for a in addrs if a["type"] == "InternalIP"), "<none>")
            external = next((a["address"] for a in addrs if a["type"] == "ExternalIP"), "<none>")
            ni = st["nodeInfo"]
            return [meta["name"], status, ",".join(r for r in roles if r) or "<none>", age,
                    ni["kubeletVersion"], internal, external, ni["osImage"],
                    ni["kernelVersion"], ni["containerRuntimeVersion"]]
        if kind.resource == "pods":
            st = obj["status"]
            cs = st.get("containerStatuses", [])
            ready = sum(1 for c in cs if c.get("ready"))
            reason = st.get("phase", "")
            for c in cs:
                state = c.get("state", {})
                if "waiting" in state and state["waiting"].get("reason"):
                    reason = state["waiting"]["reason"]
                elif "terminated" in state and state["terminated"].get("reason"):
                    reason = state["terminated"]["reason"]
            return [meta["name"], f"{ready}/{len(obj['spec']['containers'])}", reason,
                    str(sum(c.get("restartCount", 0) for c in cs)), age,
                    st.get("podIP", "<none>"), obj["spec"].get("nodeName") or "<none>",
                    "<none>", "<none>"]
        if kind.resource == "namespaces":
            return [meta["name"], obj["status"]["phase"], age]
        return [meta["name"], len(obj.get("data", {})), age]

    def _table(self, kind: _Kind, items: list[JSON], meta: JSON, fmt: _Format,
               headers: bool = True) -> JSON:
        rows = []
        for obj in items:
            row: JSON = {"cells": self._cells(kind, obj)}
            if fmt.include_object == "Object":
                row["object"] = obj
            elif fmt.include_object == "Metadata":
                row["object"] = _partial(obj)
            else:
                row["object"] = None
            rows.append(row)
        return {"kind": "Table", "apiVersion": f"meta.k8s.io/{fmt.version}", "metadata": meta,
                "columnDefinitions": kind.columns if headers else None, "rows": rows}

    # ------------------------------------------------------------------ watch

    def _event_line(self, type_: str, obj: JSON, kind: _Kind, fmt: _Format,
                    state: dict[str, bool]) -> bytes:
        if fmt.kind == "meta":
            body: JSON = _partial(obj, fmt.version)
        elif fmt.kind == "table":
            body = self._table(kind, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                               fmt, headers=not state.get("headers_sent", False))
            state["headers_sent"] = True
        else:
            body = obj
        return dumps({"type": type_, "object": body}) + b"\n"

    def _bookmark_line(self, kind: _Kind, fmt: _Format, rv: int,
                       annotations: Mapping[str, str] | None = None) -> bytes:
        meta: JSON = {"resourceVersion": str(rv)}
        if annotations:
            meta["annotations"] = dict(annotations)
        if fmt.kind == "meta":
            obj: JSON = {"kind": "PartialObjectMetadata",
                         "apiVersion": f"meta.k8s.io/{fmt.version}", "metadata": meta}
        else:
            obj = {"kind": kind.kind, "apiVersion": "v1", "metadata": meta}
        return dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    def _filter(self, change: _Change, namespace: str, label: LabelSelector,
                fields: FieldSelector) -> tuple[str, JSON] | None:
        """The event a filtered watcher sees for ``change`` (as the watch cache decides)."""
        if namespace and change.namespace != namespace:
            return None
        cur = (change.type != "DELETED" and label.matches(change.new[0])
               and fields.matches(change.new[1]))
        old = (change.old is not None and label.matches(change.old[0])
               and fields.matches(change.old[1]))
        if change.type == "DELETED":
            return ("DELETED", change.obj) if old else None
        if cur:
            return ("MODIFIED" if old else "ADDED"), change.obj
        if old:
            prev = change.prev_obj if change.prev_obj is not None else change.obj
            return "DELETED", _with_rv(prev, change.rv)
        return None

    async def _watch(self, request: web.Request, kind: _Kind, namespace: str,
                     label: LabelSelector, fields: FieldSelector,
                     fmt: _Format) -> web.StreamResponse:
        query = request.query
        rv_param = query.get("resourceVersion", "")
        timeout_s = query.get("timeoutSeconds", "")
        try:
            timeout = float(timeout_s) if timeout_s else 0.0
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds "{timeout_s}"') from None
        if timeout <= 0:  # 0 or absent: the server's own limit
            timeout = self.default_watch_timeout
        bookmarks = query.get("allowWatchBookmarks", "") in _TRUE
        send_initial = query.get("sendInitialEvents", "")
        initial_events = send_initial in _TRUE or (not send_initial and rv_param in ("", "0"))
        dynamic = kind.resource in ("nodes", "pods", "configmaps")
        lines: list[bytes] = []
        state: dict[str, bool] = {}
        backlog: list[_Change] = []
        start_rv = self._rv
        error: JSON | None = None
        if rv_param not in ("", "0"):
            try:
                start_rv = int(rv_param)
            except ValueError:
                raise bad_request(f'invalid resource version "{rv_param}"') from None
        if initial_events:
            for _key, obj in self._matching(kind, namespace, label, fields):
                lines.append(self._event_line("ADDED", obj, kind, fmt, state))
            start_rv = self._rv
            if send_initial in _TRUE:
                lines.append(self._bookmark_line(kind, fmt, self._rv,
                                                 {"k8s.io/initial-events-end": "true"}))
        elif dynamic:
            since = self._changes_since(start_rv)
            if since is None:
                error = status_object(
                    410, "Expired",
                    f"too old resource version: {start_rv} ({self._oldest_rv()})")
            else:
                backlog = [c for c in since if c.resource == kind.resource]
        for change in backlog:
            ev = self._filter(change, namespace, label, fields)
            if ev is not None:
                lines.append(self._event_line(ev[0], ev[1], kind, fmt, state))
        progress = max([start_rv, *(c.rv for c in backlog)])
        watcher = _Watcher(asyncio.Queue(), kind.resource)
        if error is None:
            self._watchers.add(watcher)  # before any await: no event can slip through
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)
            if error is not None:
                await resp.write(dumps({"type": "ERROR", "object": error}) + b"\n")
            else:
                if lines:
                    await resp.write(b"".join(lines))
                await self._stream(resp, watcher, kind, namespace, label, fields, fmt, state,
                                   progress, timeout, bookmarks)
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        return resp

    async def _stream(self, resp: web.StreamResponse, watcher: _Watcher, kind: _Kind,
                      namespace: str, label: LabelSelector, fields: FieldSelector,
                      fmt: _Format, state: dict[str, bool], progress: int, timeout: float,
                      bookmarks: bool) -> None:
        """Send the watcher's events (and bookmarks) until the timeout or the server stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        next_bookmark = loop.time() + self.bookmark_interval
        for _ in range(1 << 62):
            now = loop.time()
            if now >= deadline or self._stopping:
                return
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                item = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
            except TimeoutError:
                if bookmarks and loop.time() >= next_bookmark:
                    next_bookmark = loop.time() + self.bookmark_interval
                    # every ingested event has been seen only if nothing was queued since the
                    # timeout fired (an event may have arrived before this task resumed)
                    if watcher.queue.empty():
                        progress = max(progress, self._rv)
                    await resp.write(self._bookmark_line(kind, fmt, progress))
                continue
            batch: list[_Change | None] = [item]
            batch += [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
            out = []
            for change in batch:
                if change is None:
                    break
                if change.rv <= progress:
                    continue
                progress = change.rv
                ev = self._filter(change, namespace, label, fields)
                if ev is not None:
                    out.append(self._event_line(ev[0], ev[1], kind, fmt, state))
            if out:
                await resp.write(b"".join(out))
            if None in batch:
                return


# ------------------------------------------------------------------------------ protobuf

_PROTOBUF_MAGIC: Final = b"k8s\x00"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i
    raise ValueError("varint too long")


def _pb_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message (no schema needed)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    for _ in range(len(data)):
        if i >= len(data):
            break
        key, i = _varint(data, i)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire in (1, 2, 5):
            if wire == 2:
                n, i = _varint(data, i)
            else:
                n = 8 if wire == 1 else 4
            if i + n > len(data):
                raise ValueError("truncated field")
            value, i = data[i: i + n], i + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((num, value))
    return out


def _pb_message(fields: list[tuple[int, int | bytes]], names: Mapping[int, str],
                repeated: Iterable[int] = (),
                nested: Mapping[int, Callable[[bytes], JSON]] | None = None) -> JSON:
    out: JSON = {}
    rep = set(repeated)
    for num, value in fields:
        name = names.get(num)
        if name is None or not isinstance(value, bytes):
            continue
        item: Any = (nested[num](value) if nested and num in nested
                     else value.decode("utf-8"))
        if num in rep:
            out.setdefault(name, []).append(item)
        else:
            out[name] = item
    return out


def _resource_attributes(data: bytes) -> JSON:
    return _pb_message(_pb_fields(data), {1: "namespace", 2: "verb", 3: "group", 4: "version",
                                          5: "resource", 6: "subresource", 7: "name"})


def _non_resource_attributes(data: bytes) -> JSON:
    return _pb_message(_pb_fields(data), {1: "path", 2: "verb"})


def _extra(data: bytes) -> JSON:
    entry = _pb_fields(data)
    key = next((v.decode() for n, v in entry if n == 1 and isinstance(v, bytes)), "")
    items: list[str] = next((_pb_message(_pb_fields(v), {1: "items"}, (1,)).get("items", [])
                  for n, v in entry if n == 2 and isinstance(v, bytes)), [])
    return {key: items}


def decode_review_protobuf(body: bytes) -> JSON:
    """A TokenReview / (Self)SubjectAccessReview sent as protobuf, as its JSON form."""
    if not body.startswith(_PROTOBUF_MAGIC):
        raise ValueError("missing the protobuf envelope prefix")
    unknown = _pb_fields(body[len(_PROTOBUF_MAGIC):])
    raw = next((v for n, v in unknown if n == 2 and isinstance(v, bytes)), b"")
    type_meta = next((v for n, v in unknown if n == 1 and isinstance(v, bytes)), b"")
    tm = _pb_message(_pb_fields(type_meta), {1: "apiVersion", 2: "kind"})
    kind = tm.get("kind", "")
    spec_bytes = next((v for n, v in _pb_fields(raw) if n == 2 and isinstance(v, bytes)), b"")
    spec_fields = _pb_fields(spec_bytes)
    if kind == "TokenReview":
        spec = _pb_message(spec_fields, {1: "token", 2: "audiences"}, (2,))
    elif kind in ("SubjectAccessReview", "SelfSubjectAccessReview"):
        spec = _pb_message(
            spec_fields,
            {1: "resourceAttributes", 2: "nonResourceAttributes", 3: "user", 4: "groups",
             6: "uid"} if kind == "SubjectAccessReview" else
            {1: "resourceAttributes", 2: "nonResourceAttributes"},
            (4,), {1: _resource_attributes, 2: _non_resource_attributes})
        extra: JSON = {}
        for n, v in spec_fields:
            if n == 5 and kind == "SubjectAccessReview" and isinstance(v, bytes):
                extra.update(_extra(v))
        if extra:
            spec["extra"] = extra
    else:
        raise ValueError(f"unsupported kind {kind!r}")
    return {"kind": kind, "apiVersion": tm.get("apiVersion", ""), "spec": spec}


# ------------------------------------------------------------------------------ helpers


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _continue_token(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start},
                     separators=(",", ":")).encode()
    return base64.b64encode(raw).decode()


def _is_aggregated_v2(content_type: str) -> bool:
    media, params = _media_ranges(content_type)[0] if content_type else ("", {})
    return (media == "application/json" and params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2" and params.get("as") == "APIGroupDiscoveryList")


def _legacy_to_aggregated(group: str, version: str, doc: JSON) -> JSON:
    """An APIResourceList converted to APIVersionDiscovery (as the aggregator does)."""
    resources: dict[str, JSON] = {}
    subs: list[tuple[str, str, JSON]] = []
    for r in doc.get("resources", []):
        name = r.get("name", "")
        if "/" in name:
            parent, _, sub = name.partition("/")
            subs.append((parent, sub, r))
            continue
        entry: JSON = {
            "resource": name,
            "responseKind": {"group": r.get("group", group), "version": r.get("version", version),
                             "kind": r.get("kind", "")},
            "scope": "Namespaced" if r.get("namespaced") else "Cluster",
            "singularResource": r.get("singularName", ""),
            "verbs": r.get("verbs", []),
        }
        if r.get("shortNames"):
            entry["shortNames"] = r["shortNames"]
        if r.get("categories"):
            entry["categories"] = r["categories"]
        resources[name] = entry
    for parent, sub, r in subs:
        if parent in resources:
            resources[parent].setdefault("subresources", []).append({
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": r.get("kind", "")},
                "verbs": r.get("verbs", []),
            })
    return {"version": version, "resources": list(resources.values()), "freshness": "Current"}
