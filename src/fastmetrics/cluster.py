"""Cluster state from kube-apiserver: the client configuration and the Node and Pod informers.

``NodeInfo`` and ``PodInfo`` keep only what fastmetrics uses (SPEC §2.1, §2.3, §5.4).

Three layers, bottom up:

* :func:`load_client_config` reads a kubeconfig (or the in-cluster service account) into a
  :class:`ClientConfig`: the server URL, TLS material (:meth:`ClientConfig.ssl_context`) and
  credentials (:meth:`ClientConfig.auth_headers`; token files re-read when they rotate, exec
  plugins run and cached until their credential expires), as client-go's ``clientcmd`` and
  ``rest.InClusterConfig`` do.
* :class:`KubeClient`: one aiohttp session (keep-alive) with ``get_json``/``get_bytes`` and a
  streaming ``watch``.
* :class:`Informer` (client-go's reflector and store in one): a paged list, then a watch from
  the list's resourceVersion with bookmarks, resumed from the last seen resourceVersion when it
  ends, a full relist on 410 Gone, exponential backoff with jitter on errors.
  :class:`NodeInformer` keeps :class:`NodeInfo` per node; :class:`PodInformer` keeps
  :class:`PodInfo` per Running pod, from metadata-only lists and watches, indexed by namespace.
  :class:`ClusterState` owns a client and both informers.

The read API (``nodes()``, ``pods_in()``, ...) is synchronous and is meant to be called from
the event loop's thread, as the informers update their caches there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import json
import logging
import os
import random
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Final, Generic, NoReturn, TypeVar

import aiohttp
import msgspec
import yaml
from multidict import CIMultiDict

from ._version import __version__
from .errors import ConfigError, FastMetricsError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "IN_CLUSTER_CA_FILE",
    "IN_CLUSTER_TOKEN_FILE",
    "PARTIAL_OBJECT_METADATA",
    "PARTIAL_OBJECT_METADATA_LIST",
    "RESOURCE_METRICS_PATH_ANNOTATION",
    "USER_AGENT",
    "Backoff",
    "ClientConfig",
    "ClusterState",
    "ExecConfig",
    "Informer",
    "InformerStats",
    "KubeApiError",
    "KubeClient",
    "Labels",
    "NodeInfo",
    "NodeInformer",
    "PodInfo",
    "PodInformer",
    "TLSConfig",
    "decode_node",
    "in_cluster_config",
    "label_pb_entries",
    "load_client_config",
]

log = logging.getLogger("fastmetrics.cluster")

RESOURCE_METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"

USER_AGENT: Final = f"fastmetrics/{__version__}"

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN_FILE: Final = SERVICE_ACCOUNT_DIR / "token"
IN_CLUSTER_CA_FILE: Final = SERVICE_ACCOUNT_DIR / "ca.crt"

PARTIAL_OBJECT_METADATA_LIST: Final = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)
PARTIAL_OBJECT_METADATA: Final = (
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
)

DEFAULT_PAGE_SIZE: Final = 500
"""client-go's pager default (``limit=500`` per list page)."""
TOKEN_REFRESH_S: Final = 60.0
"""client-go's cached token source re-reads a token file at most once a minute."""
EXEC_TIMEOUT_S: Final = 60.0
MAX_WATCH_LINE_BYTES: Final = 64 * 1024 * 1024


# ============================================================================ shared shapes


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _uvarint(len(payload)) + payload


def label_pb_entries(labels: Mapping[str, str]) -> bytes:
    """``labels`` as the entries of ObjectMeta's ``labels`` field in Kubernetes protobuf
    (field 11, ``map<string, string>``): one entry ``{key 1, value 2}`` per label, keys sorted,
    ``b""`` when empty. The API writes a pod's labels from this form, in protobuf as is and in
    JSON through the compiled list renderer (``api.render``)."""
    return b"".join([
        _pb_field(0x5A, _pb_field(0x0A, k.encode()) + _pb_field(0x12, labels[k].encode()))
        for k in sorted(labels)
    ])


class Labels(dict[str, str]):
    """A read-only label set. Pods with equal labels share one instance; do not mutate it
    (every mutating method raises ``TypeError``). It is a ``dict`` subclass, so ``json`` and
    ``orjson`` serialize it as an object; ``dict(labels)`` makes a private, mutable copy.

    :meth:`pb_entries` is the set's encoded form, built on first use and kept with the set:
    once per distinct label set, not once per pod or per request."""

    __slots__ = ("_pb_entries",)
    _pb_entries: bytes

    def pb_entries(self) -> bytes:
        """:func:`label_pb_entries` of this set, computed once."""
        try:
            return self._pb_entries
        except AttributeError:
            entries = self._pb_entries = label_pb_entries(self)
            return entries

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("Labels are shared between objects and read-only; copy with dict()")

    __setitem__ = _read_only
    __delitem__ = _read_only
    __ior__ = _read_only
    clear = _read_only
    pop = _read_only
    popitem = _read_only
    setdefault = _read_only
    update = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (Labels, (dict(self),))

    def __repr__(self) -> str:
        return f"Labels({dict.__repr__(self)})"


EMPTY_LABELS: Final = Labels()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What fastmetrics keeps of a Node."""

    name: str
    labels: Mapping[str, str]
    addresses: tuple[tuple[str, str], ...]
    """``(type, address)`` pairs in ``status.addresses`` order,
    e.g. ``("InternalIP", "10.0.0.4")``."""
    kubelet_port: int
    """``status.daemonEndpoints.kubeletEndpoint.Port``; 0 when absent."""
    ready: bool
    """The ``Ready`` condition is ``True``."""
    metrics_path: str = ""
    """The ``metrics.k8s.io/resource-metrics-path`` annotation, or "" (use /metrics/resource)."""
    allocatable_cpu: str = ""
    allocatable_memory: str = ""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What fastmetrics keeps of a Running pod (from metadata-only lists and watches)."""

    namespace: str
    name: str
    labels: Mapping[str, str]


# ============================================================================ client config


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS towards a server: what to trust and which client certificate to present.

    ``*_data`` wins over the matching ``*_file`` (as in client-go's ``rest.TLSClientConfig``).
    """

    ca_file: str | None = None
    ca_data: bytes | None = None
    """PEM (already base64-decoded from ``certificate-authority-data``)."""
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    insecure: bool = False
    """``insecure-skip-tls-verify``: no certificate or hostname verification."""
    server_name: str | None = None
    """``tls-server-name``: the name for SNI and for verifying the serving certificate."""

    def ssl_context(self, dynamic_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
        """A client context: TLS 1.2+, the CA (else the system's trust store), the client
        certificate (static, else ``dynamic_cert`` from an exec plugin). Raises ConfigError."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            try:
                ctx.load_verify_locations(cadata=self.ca_data.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as e:
                raise ConfigError(
                    f"certificate-authority-data: not a PEM certificate: {e}") from None
        elif self.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"certificate authority {self.ca_file}: {_why(e)}") from None
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        cert = self.cert_data if self.cert_data else None
        key = self.key_data if self.key_data else None
        if cert is not None or key is not None or self.cert_file or self.key_file:
            if cert is None and self.cert_file:
                cert = _read_file(self.cert_file, "client certificate")
            if key is None and self.key_file:
                key = _read_file(self.key_file, "client key")
            if cert is None or key is None:
                raise ConfigError("a client certificate needs both a certificate and a key")
            _load_cert_chain(ctx, cert, key, self._cert_origin())
        elif dynamic_cert is not None:
            _load_cert_chain(ctx, dynamic_cert[0], dynamic_cert[1], "exec plugin credential")
        # aiohttp speaks HTTP/1.1 only
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    @property
    def has_client_cert(self) -> bool:
        return bool(self.cert_data or self.cert_file)

    def _cert_origin(self) -> str:
        cert = ("client-certificate-data" if self.cert_data
                else f"client certificate {self.cert_file}")
        key = "client-key-data" if self.key_data else f"client key {self.key_file}"
        return f"{cert} / {key}"


def _why(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read: {_why(e)}") from None


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes, origin: str) -> None:
    """``load_cert_chain`` takes files only: PEM held in memory goes through a private temporary
    directory (mode 0700) for the duration of the call."""
    with tempfile.TemporaryDirectory(prefix="fastmetrics-tls-") as tmp:
        cert_path = os.path.join(tmp, "tls.crt")
        key_path = os.path.join(tmp, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as e:
            raise ConfigError(f"{origin}: not a matching PEM certificate and key: {e}") from None


@dataclass(frozen=True, slots=True)
class ExecConfig:
    """A kubeconfig ``user.exec`` credential plugin (client.authentication.k8s.io)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"


@dataclass(slots=True)
class _ExecCredential:
    token: str | None
    cert: tuple[bytes, bytes] | None
    expiry: float | None
    """Unix seconds; None: valid until the server answers 401."""


class _ExecProvider:
    """Runs an exec plugin and caches its ExecCredential until ``expirationTimestamp``."""

    def __init__(self, cfg: ExecConfig, source: str, cluster_info: dict[str, Any] | None,
                 *, wall_clock: Callable[[], float] = time.time,
                 timeout_s: float = EXEC_TIMEOUT_S) -> None:
        self.cfg = cfg
        self.source = source
        self._cluster_info = cluster_info
        self._wall = wall_clock
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._cred: _ExecCredential | None = None
        self.generation = 0
        """Bumped whenever the plugin hands out a different client certificate."""
        self.runs = 0

    def stale(self) -> bool:
        cred = self._cred
        return cred is None or (cred.expiry is not None and self._wall() >= cred.expiry)

    def credential(self) -> _ExecCredential:
        with self._lock:
            cred = self._cred
            if cred is None or (cred.expiry is not None and self._wall() >= cred.expiry):
                new = self._run()
                old_cert = cred.cert if cred is not None else None
                if new.cert != old_cert:
                    self.generation += 1
                self._cred = cred = new
            return cred

    def cached_cert(self) -> tuple[bytes, bytes] | None:
        cred = self._cred
        return cred.cert if cred is not None else None

    def invalidate(self) -> None:
        with self._lock:
            if self._cred is not None:
                self._cred.expiry = -1.0  # keep the cert until a new one replaces it

    def _fail(self, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: exec plugin {self.cfg.command!r}: {problem}")

    def _run(self) -> _ExecCredential:
        cfg = self.cfg
        spec: dict[str, Any] = {"interactive": False}
        if cfg.provide_cluster_info and self._cluster_info is not None:
            spec["cluster"] = self._cluster_info
        env = dict(os.environ)
        env.update(cfg.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": cfg.api_version, "kind": "ExecCredential", "spec": spec})
        self.runs += 1
        try:
            proc = subprocess.run(  # the kubeconfig names the plugin, as for kubectl
                [cfg.command, *cfg.args], env=env, stdin=subprocess.DEVNULL,
                capture_output=True, timeout=self._timeout_s, check=False)
        except FileNotFoundError:
            hint = f" ({cfg.install_hint.strip()})" if cfg.install_hint.strip() else ""
            self._fail(f"executable not found{hint}")
        except subprocess.TimeoutExpired:
            self._fail(f"did not finish within {self._timeout_s:g} s")
        except OSError as e:
            self._fail(f"cannot run: {_why(e)}")
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            self._fail(f"exit status {proc.returncode}" + (f": {err}" if err else ""))
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            self._fail("output is not an ExecCredential JSON object")
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            self._fail("output is not an ExecCredential JSON object")
        if doc.get("apiVersion") != cfg.api_version:
            self._fail(f"configured for API version {cfg.api_version}, the plugin returned "
                       f"{doc.get('apiVersion')!r}")
        status = doc.get("status")
        if not isinstance(status, dict):
            self._fail("the ExecCredential has no status")
        token = status.get("token") or None
        cert_pem = status.get("clientCertificateData") or None
        key_pem = status.get("clientKeyData") or None
        if (cert_pem is None) != (key_pem is None):
            self._fail("status has only one of clientCertificateData and clientKeyData")
        if token is None and cert_pem is None:
            self._fail("status has neither a token nor a client certificate and key")
        if not all(v is None or isinstance(v, str) for v in (token, cert_pem, key_pem)):
            self._fail("status fields must be strings")
        expiry: float | None = None
        stamp = status.get("expirationTimestamp")
        if stamp:
            try:
                expiry = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
            except ValueError:
                self._fail(f"expirationTimestamp {stamp!r} is not an RFC 3339 time")
        cert = (cert_pem.encode(), key_pem.encode()) if cert_pem and key_pem else None
        return _ExecCredential(token, cert, expiry)


class _TokenFile:
    """A bearer token file re-read when it changes (projected service-account tokens rotate).

    The file is stat'ed at most once every ``refresh_s`` (client-go's cached token source
    re-reads once a minute); when it cannot be read the last token is kept.
    """

    def __init__(self, path: str, refresh_s: float, clock: Callable[[], float]) -> None:
        self.path = path
        self._refresh_s = refresh_s
        self._clock = clock
        self._token: str | None = None
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self.reads = 0
        self.token()  # fail early: a missing token file is a configuration error

    def token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._next_check:
            return self._token
        self._next_check = now + self._refresh_s
        try:
            st = os.stat(self.path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature != self._signature or self._token is None:
                token = Path(self.path).read_text().strip()
                if not token:
                    raise ValueError("the file is empty")
                self.reads += 1
                self._token, self._signature = token, signature
        except (OSError, ValueError) as e:
            if self._token is None:
                raise ConfigError(
                    f"token file {self.path}: cannot read a token: {_why(e)}") from None
            log.warning("Failed to re-read token file, keeping the last token",
                        extra={"path": self.path, "err": _why(e)})
        return self._token

    def invalidate(self) -> None:
        self._next_check = 0.0


class ClientConfig:
    """How to reach and authenticate to kube-apiserver (client-go's ``rest.Config``).

    * :attr:`server`: the base URL (``https://host:port``, maybe with a path prefix);
    * :meth:`ssl_context` and :attr:`tls` (:class:`TLSConfig`): trust and client certificate;
      :attr:`ca_file`/:attr:`ca_data`/:attr:`client_cert`/:attr:`client_key` (and the
      ``*_data`` variants) describe them for deriving the kubelet client (SPEC §2.4);
    * :meth:`auth_headers`: ``Authorization`` (bearer from a token, token file or exec plugin,
      or basic), refreshed as needed; :meth:`impersonation_headers` for ``as``/``as-groups``.

    :meth:`with_tls` makes a copy with other TLS settings that shares the credentials.
    """

    def __init__(
        self,
        server: str,
        tls: TLSConfig | None = None,
        *,
        token: str | None = None,
        token_file: _TokenFile | None = None,
        username: str | None = None,
        password: str | None = None,
        exec_provider: _ExecProvider | None = None,
        impersonate_user: str | None = None,
        impersonate_uid: str | None = None,
        impersonate_groups: Sequence[str] = (),
        impersonate_extra: Mapping[str, Sequence[str]] | None = None,
        proxy_url: str | None = None,
        source: str = "",
    ) -> None:
        self.server = server.rstrip("/")
        self.tls = tls or TLSConfig()
        self.source = source
        """Where this came from: ``kubeconfig <path> (context <name>)`` or ``in-cluster``."""
        self.proxy_url = proxy_url
        self._token = token or None
        self._token_file = token_file
        self._basic = (username or "", password or "") if (username or password) else None
        self._exec = exec_provider
        self._impersonation: list[tuple[str, str]] = []
        if impersonate_user:
            self._impersonation.append(("Impersonate-User", impersonate_user))
        if impersonate_uid:
            self._impersonation.append(("Impersonate-Uid", impersonate_uid))
        self._impersonation += [("Impersonate-Group", g) for g in impersonate_groups]
        for key, values in (impersonate_extra or {}).items():
            self._impersonation += [(f"Impersonate-Extra-{key}", v) for v in values]

    def __repr__(self) -> str:
        return (f"ClientConfig(server={self.server!r}, source={self.source!r}, "
                f"auth={self.auth_kind!r})")

    # ---------------------------------------------------------------- TLS description

    @property
    def ca_file(self) -> str | None:
        return self.tls.ca_file

    @property
    def ca_data(self) -> bytes | None:
        return self.tls.ca_data

    @property
    def client_cert(self) -> str | None:
        """Path of the client certificate (None when given as data or not at all)."""
        return self.tls.cert_file

    @property
    def client_key(self) -> str | None:
        return self.tls.key_file

    @property
    def client_cert_data(self) -> bytes | None:
        return self.tls.cert_data

    @property
    def client_key_data(self) -> bytes | None:
        return self.tls.key_data

    @property
    def insecure(self) -> bool:
        return self.tls.insecure

    @property
    def tls_server_name(self) -> str | None:
        return self.tls.server_name

    def ssl_context(self) -> ssl.SSLContext:
        """A fresh client SSL context (TLS 1.2+, the CA, the client certificate).

        A client certificate from an exec plugin is included when the plugin has run (call
        :meth:`auth_headers` first); :attr:`tls_generation` changes when it rotates.
        """
        dynamic = None
        if self._uses_exec() and self._exec is not None and not self.tls.has_client_cert:
            dynamic = self._exec.cached_cert()
        return self.tls.ssl_context(dynamic)

    @property
    def tls_generation(self) -> int:
        """Changes whenever :meth:`ssl_context` would present another client certificate."""
        return self._exec.generation if self._exec is not None else 0

    def with_tls(self, tls: TLSConfig) -> ClientConfig:
        """A copy with ``tls`` instead (e.g. for kubelets), sharing the credentials."""
        clone = object.__new__(ClientConfig)
        clone.__dict__.update(self.__dict__)
        clone.tls = tls
        return clone

    # ---------------------------------------------------------------- credentials

    @property
    def auth_kind(self) -> str:
        """``token-file``, ``token``, ``basic``, ``exec``, ``client-certificate`` or ``none``."""
        if self._token_file is not None:
            return "token-file"
        if self._token:
            return "token"
        if self._basic:
            return "basic"
        if self._exec is not None:
            return "exec"
        return "client-certificate" if self.tls.has_client_cert else "none"

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header (or none), refreshed as needed.

        A token file is re-read when it changed (checked at most once a minute); an exec plugin
        runs when it has no unexpired credential, which blocks: an async caller checks
        :meth:`credentials_stale` and runs this in a thread then (:class:`KubeClient` does).
        Raises ConfigError when the credential cannot be had.
        """
        token = self.bearer_token()
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic is not None:
            raw = f"{self._basic[0]}:{self._basic[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        return {}

    def bearer_token(self) -> str | None:
        """The bearer token to send now (None when the credential is not a token).

        Fits ``KubeletClientConfig.token_provider``: the kubelets get the same token."""
        if self._token_file is not None:
            return self._token_file.token()
        if self._token:
            return self._token
        if self._uses_exec() and self._exec is not None:
            return self._exec.credential().token
        return None

    def impersonation_headers(self) -> list[tuple[str, str]]:
        """``Impersonate-*`` headers from the kubeconfig's ``as*`` fields (groups repeat)."""
        return list(self._impersonation)

    def credentials_stale(self) -> bool:
        """:meth:`auth_headers` would run an exec plugin (i.e. block)."""
        return self._uses_exec() and self._exec is not None and self._exec.stale()

    def _uses_exec(self) -> bool:
        # as in client-go, credentials given outright win over the plugin's
        return (self._exec is not None and self._token_file is None and not self._token
                and self._basic is None)

    def invalidate_credentials(self) -> bool:
        """After a 401: make the next :meth:`auth_headers` fetch afresh. Returns whether
        anything can change (a token file or an exec plugin)."""
        changed = False
        if self._token_file is not None:
            self._token_file.invalidate()
            changed = True
        if self._exec is not None:
            self._exec.invalidate()
            changed = True
        return changed


# ------------------------------------------------------------------------ kubeconfig reading


def load_client_config(
    kubeconfig: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    token_file: str | os.PathLike[str] = IN_CLUSTER_TOKEN_FILE,
    ca_file: str | os.PathLike[str] = IN_CLUSTER_CA_FILE,
    token_refresh_s: float = TOKEN_REFRESH_S,
    clock: Callable[[], float] = time.monotonic,
) -> ClientConfig:
    """The apiserver client configuration, like metrics-server's ``--kubeconfig`` handling.

    With a path: that kubeconfig's current context (cluster, user); relative file names in it
    are relative to its directory. With None or "": in-cluster (:func:`in_cluster_config`, the
    other keyword arguments are for it and for tests). Raises ConfigError naming the file and
    the problem.
    """
    if kubeconfig is None or not os.fspath(kubeconfig):
        return in_cluster_config(environ=environ, token_file=token_file, ca_file=ca_file,
                                 token_refresh_s=token_refresh_s, clock=clock)
    return _Kubeconfig(Path(os.fspath(kubeconfig)), token_refresh_s, clock).load()


def in_cluster_config(
    *,
    environ: Mapping[str, str] | None = None,
    token_file: str | os.PathLike[str] = IN_CLUSTER_TOKEN_FILE,
    ca_file: str | os.PathLike[str] = IN_CLUSTER_CA_FILE,
    token_refresh_s: float = TOKEN_REFRESH_S,
    clock: Callable[[], float] = time.monotonic,
) -> ClientConfig:
    """client-go's ``rest.InClusterConfig``: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the
    service account token (re-read when it rotates) and CA."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and "
                          "KUBERNETES_SERVICE_PORT must be defined (or pass --kubeconfig)")
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tokens = _TokenFile(os.fspath(token_file), token_refresh_s, clock)
    ca = os.fspath(ca_file)
    tls = TLSConfig(ca_file=ca)
    try:
        tls.ssl_context()
    except ConfigError as e:
        # client-go logs this and goes on with the system's trust store
        log.error("Failed to load the in-cluster CA, using the system trust store",
                  extra={"path": ca, "err": str(e)})
        tls = TLSConfig()
    return ClientConfig(f"https://{hostport}", tls, token_file=tokens, source="in-cluster")


class _Kubeconfig:
    def __init__(self, path: Path, token_refresh_s: float, clock: Callable[[], float]) -> None:
        self.path = path
        self.base = path.resolve().parent
        self.token_refresh_s = token_refresh_s
        self.clock = clock

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(f"kubeconfig {self.path}: {problem}")

    def load(self) -> ClientConfig:
        try:
            text = self.path.read_text()
        except OSError as e:
            self.fail(f"cannot read: {_why(e)}")
        except UnicodeDecodeError:
            self.fail("not a text file")
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            self.fail(f"not valid YAML: {e}")
        if not isinstance(doc, dict):
            self.fail("expected a mapping (apiVersion: v1, kind: Config) at the top level")
        ctx_name = doc.get("current-context")
        if not ctx_name:
            self.fail("no current-context is set")
        context = self.named(doc, "contexts", "context", str(ctx_name))
        cluster_name = context.get("cluster")
        if not cluster_name:
            self.fail(f"context {ctx_name!r} names no cluster")
        cluster = self.named(doc, "clusters", "cluster", str(cluster_name))
        user_name = context.get("user")
        user = self.named(doc, "users", "user", str(user_name)) if user_name else {}
        where = f"kubeconfig {self.path} (context {ctx_name})"
        server = cluster.get("server")
        if not server or not isinstance(server, str):
            self.fail(f"cluster {cluster_name!r} has no server")
        if not server.startswith(("https://", "http://")):
            self.fail(f"cluster {cluster_name!r}: server {server!r} is not an http(s) URL")
        tls, cluster_info = self.tls(cluster, user, str(cluster_name), str(user_name))
        proxy = cluster.get("proxy-url") or None
        if proxy is not None and not str(proxy).startswith(("http://", "https://")):
            self.fail(f"cluster {cluster_name!r}: proxy-url {proxy!r}: only http(s) proxies are "
                      "supported")
        return self.auth(user, str(user_name), server, tls, cluster_info, where,
                         None if proxy is None else str(proxy))

    def named(self, doc: dict[str, Any], section: str, key: str, name: str) -> dict[str, Any]:
        entries = doc.get(section) or []
        if not isinstance(entries, list):
            self.fail(f"{section} must be a list")
        for entry in entries:
            if isinstance(entry, dict) and entry.get("name") == name:
                value = entry.get(key) or {}
                if not isinstance(value, dict):
                    self.fail(f"{section}[{name!r}].{key} must be a mapping")
                return value
        self.fail(f"{key} {name!r} (named by the current context) is not in {section}")

    def file(self, value: object, what: str) -> str:
        p = Path(os.path.expanduser(str(value)))
        if not p.is_absolute():
            p = self.base / p
        try:
            with p.open("rb"):
                pass
        except OSError as e:
            self.fail(f"{what} {p}: cannot read: {_why(e)}")
        return str(p)

    def data(self, value: object, what: str) -> bytes:
        try:
            return base64.b64decode(str(value).strip(), validate=True)
        except (binascii.Error, ValueError):
            self.fail(f"{what} is not valid base64")

    def tls(self, cluster: dict[str, Any], user: dict[str, Any], cluster_name: str,
            user_name: str) -> tuple[TLSConfig, dict[str, Any]]:
        cn, un = f"cluster {cluster_name!r}", f"user {user_name!r}"
        insecure = bool(cluster.get("insecure-skip-tls-verify", False))
        ca_file = ca_data = None
        if cluster.get("certificate-authority-data"):
            ca_data = self.data(cluster["certificate-authority-data"],
                                f"{cn}: certificate-authority-data")
        elif cluster.get("certificate-authority"):
            ca_file = self.file(cluster["certificate-authority"], f"{cn}: certificate-authority")
        if insecure and (ca_file or ca_data):
            self.fail(f"{cn}: specifying a root certificates file with insecure-skip-tls-verify "
                      "is not allowed")
        cert_file = cert_data = key_file = key_data = None
        if user.get("client-certificate-data"):
            cert_data = self.data(user["client-certificate-data"], f"{un}: client-certificate-data")
        elif user.get("client-certificate"):
            cert_file = self.file(user["client-certificate"], f"{un}: client-certificate")
        if user.get("client-key-data"):
            key_data = self.data(user["client-key-data"], f"{un}: client-key-data")
        elif user.get("client-key"):
            key_file = self.file(user["client-key"], f"{un}: client-key")
        if (cert_file or cert_data) and not (key_file or key_data):
            self.fail(f"{un}: client-key-data or client-key must be specified to use the "
                      "client certificate")
        if (key_file or key_data) and not (cert_file or cert_data):
            self.fail(f"{un}: client-certificate-data or client-certificate must be specified "
                      "to use the client key")
        server_name = cluster.get("tls-server-name") or None
        tls = TLSConfig(ca_file=ca_file, ca_data=ca_data, cert_file=cert_file,
                        cert_data=cert_data, key_file=key_file, key_data=key_data,
                        insecure=insecure, server_name=None if server_name is None
                        else str(server_name))
        try:
            tls.ssl_context()  # every PEM parses and the key matches the certificate
        except ConfigError as e:
            self.fail(str(e))
        info: dict[str, Any] = {"server": cluster.get("server", "")}
        if server_name:
            info["tls-server-name"] = str(server_name)
        if insecure:
            info["insecure-skip-tls-verify"] = True
        ca_pem = ca_data if ca_data is not None else (
            Path(ca_file).read_bytes() if ca_file else None)
        if ca_pem:
            info["certificate-authority-data"] = base64.b64encode(ca_pem).decode("ascii")
        return tls, info

    def auth(self, user: dict[str, Any], user_name: str, server: str, tls: TLSConfig,
             cluster_info: dict[str, Any], where: str, proxy: str | None) -> ClientConfig:
        un = f"user {user_name!r}"
        if user.get("auth-provider"):
            name = (user["auth-provider"] or {}).get("name", "?")
            self.fail(f"{un}: auth-provider {name!r} is not supported (use an exec plugin)")
        token = user.get("token") or None
        token_file = None
        if user.get("tokenFile"):
            path = self.file(user["tokenFile"], f"{un}: tokenFile")
            try:
                token_file = _TokenFile(path, self.token_refresh_s, self.clock)
            except ConfigError as e:
                self.fail(str(e))
        username = user.get("username") or None
        password = user.get("password") or None
        methods = [m for m, on in (("token", token or token_file), ("basic auth",
                                                                    username or password)) if on]
        if len(methods) > 1:
            self.fail(f"{un}: more than one authentication method found ({', '.join(methods)}); "
                      "only one is allowed")
        exec_provider = None
        exec_cfg = user.get("exec")
        if exec_cfg:
            exec_provider = _ExecProvider(self.exec_config(exec_cfg, un), where, cluster_info)
        extra = user.get("as-user-extra") or {}
        if not isinstance(extra, dict):
            self.fail(f"{un}: as-user-extra must be a mapping")
        return ClientConfig(
            server, tls, token=None if token is None else str(token), token_file=token_file,
            username=None if username is None else str(username),
            password=None if password is None else str(password),
            exec_provider=exec_provider,
            impersonate_user=user.get("as") or None, impersonate_uid=user.get("as-uid") or None,
            impersonate_groups=[str(g) for g in user.get("as-groups") or []],
            impersonate_extra={str(k): [str(x) for x in (v or [])] for k, v in extra.items()},
            proxy_url=proxy, source=where)

    def exec_config(self, raw: object, un: str) -> ExecConfig:
        if not isinstance(raw, dict):
            self.fail(f"{un}: exec must be a mapping")
        command = raw.get("command")
        if not command:
            self.fail(f"{un}: exec: command must be specified")
        api_version = raw.get("apiVersion")
        if not api_version:
            self.fail(f"{un}: exec: apiVersion must be specified")
        if api_version not in ("client.authentication.k8s.io/v1",
                               "client.authentication.k8s.io/v1beta1"):
            self.fail(f"{un}: exec: apiVersion {api_version!r} is not supported")
        mode = raw.get("interactiveMode") or "IfAvailable"
        if mode not in ("Never", "IfAvailable", "Always"):
            self.fail(f"{un}: exec: invalid interactiveMode {mode!r}")
        if mode == "Always":
            self.fail(f"{un}: exec: interactiveMode Always needs a terminal, fastmetrics has none")
        command = str(command)
        # client-go resolves a command with a path separator relative to the kubeconfig
        if os.sep in command and not os.path.isabs(command):
            command = str(self.base / command)
        env: list[tuple[str, str]] = []
        for item in raw.get("env") or []:
            if not isinstance(item, dict) or not item.get("name"):
                self.fail(f"{un}: exec: env entries need a name and a value")
            env.append((str(item["name"]), str(item.get("value", ""))))
        return ExecConfig(
            command=command, args=tuple(str(a) for a in raw.get("args") or []), env=tuple(env),
            api_version=str(api_version), install_hint=str(raw.get("installHint") or ""),
            provide_cluster_info=bool(raw.get("provideClusterInfo", False)),
            interactive_mode=str(mode))


# ============================================================================ the client


class KubeApiError(FastMetricsError):
    """kube-apiserver answered with an error status (or a watch stream carried an ERROR)."""

    def __init__(self, status: int, reason: str = "", message: str = "", url: str = "") -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.url = url
        where = f" ({url})" if url else ""
        super().__init__(f"kube-apiserver: {status} {reason}: {message}{where}".replace(": :", ":"))

    @property
    def gone(self) -> bool:
        """410 Gone/Expired: the resourceVersion is too old; list again."""
        return self.status == 410


class _Status(msgspec.Struct):
    kind: str = ""
    status: str = ""
    message: str = ""
    reason: str = ""
    code: int = 0


_STATUS_DECODER: Final = msgspec.json.Decoder(_Status)


class KubeClient:
    """An async kube-apiserver client on one aiohttp session (keep-alive connections).

    Requests carry ``User-Agent: fastmetrics/<version>`` and the credentials of ``config``.
    On a 401 the credentials are invalidated (token file re-read, exec plugin re-run) and the
    request is tried once more. Errors: :class:`KubeApiError` for error statuses,
    ``aiohttp.ClientError``/``OSError``/``TimeoutError`` for transport problems, ConfigError
    when credentials cannot be had. Use ``async with`` or call :meth:`close`.
    """

    def __init__(self, config: ClientConfig, *, user_agent: str = USER_AGENT,
                 request_timeout_s: float = 60.0, connect_timeout_s: float = 10.0,
                 max_line_bytes: int = MAX_WATCH_LINE_BYTES) -> None:
        self.config = config
        self.user_agent = user_agent
        self._request_timeout_s = request_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_line_bytes = max_line_bytes
        self._session: aiohttp.ClientSession | None = None
        self._tls_generation = -1
        self._closed = False

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("KubeClient is closed")
        generation = self.config.tls_generation
        session = self._session
        if session is not None and generation == self._tls_generation:
            return session
        ctx = self.config.ssl_context()
        connector = aiohttp.TCPConnector(ssl=ctx, limit=100, keepalive_timeout=60.0)
        self._session = new = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": self.user_agent},
            trust_env=self.config.proxy_url is None, timeout=aiohttp.ClientTimeout(total=None))
        self._tls_generation = generation
        if session is not None:  # the exec plugin's client certificate rotated
            await session.close()
        return new

    async def _headers(self, accept: str) -> CIMultiDict[str]:
        if self.config.credentials_stale():
            auth = await asyncio.to_thread(self.config.auth_headers)
        else:
            auth = self.config.auth_headers()
        headers: CIMultiDict[str] = CIMultiDict(auth)
        headers["Accept"] = accept
        for k, v in self.config.impersonation_headers():
            headers.add(k, v)
        return headers

    @contextlib.asynccontextmanager
    async def _open(self, path: str, params: Mapping[str, str] | None, accept: str,
                    timeout: aiohttp.ClientTimeout, *,
                    reuse: bool = True) -> AsyncIterator[aiohttp.ClientResponse]:
        url = self.config.server + path
        for attempt in range(2):
            headers = await self._headers(accept)
            if not reuse:
                # aiohttp pools a connection by itself once the body ends: ask for it closed
                headers["Connection"] = "close"
            session = await self._ensure_session()
            resp = await session.get(
                url, params=dict(params or {}), headers=headers, timeout=timeout,
                server_hostname=self.config.tls_server_name, proxy=self.config.proxy_url)
            try:
                if (resp.status == 401 and attempt == 0
                        and self.config.invalidate_credentials()):
                    log.debug("Unauthorized, refreshing credentials", extra={"url": url})
                    continue
                if resp.status >= 400:
                    raise await _api_error(resp, url)
                yield resp
                return
            finally:
                if reuse and resp.content.at_eof():
                    resp.release()
                else:
                    resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, total_s: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total_s, sock_connect=self._connect_timeout_s)

    async def get_bytes(self, path: str, params: Mapping[str, str] | None = None,
                        accept: str = "application/json") -> bytes:
        """GET ``path`` (e.g. ``/api/v1/nodes``); the body as bytes (decompressed)."""
        async with self._open(path, params, accept, self._timeout(self._request_timeout_s)) as r:
            return await r.read()

    async def get_json(self, path: str, params: Mapping[str, str] | None = None,
                       accept: str = "application/json") -> dict[str, Any]:
        """GET ``path``; the decoded JSON object."""
        body = await self.get_bytes(path, params, accept)
        try:
            out = json.loads(body)
        except ValueError as e:
            raise KubeApiError(200, "InvalidBody", f"response is not JSON: {e}", path) from None
        if not isinstance(out, dict):
            raise KubeApiError(200, "InvalidBody", "response is not a JSON object", path)
        return out

    async def watch_lines(self, path: str, params: Mapping[str, str] | None = None,
                          accept: str = "application/json", *,
                          timeout_s: float | None = None) -> AsyncGenerator[bytes, None]:
        """GET ``path`` with ``params`` (which should ask for ``watch=true``) and yield the
        stream's events, one JSON document per item, as they arrive; ends with the stream.
        ``timeout_s`` bounds the whole request (None: no bound).

        The connection is closed afterwards, not pooled: a watch lasts minutes, so a new
        handshake costs nothing, and a retry never lands on a connection that a restarting
        server left half-alive."""
        async with self._open(path, params, accept, self._timeout(timeout_s),
                              reuse=False) as resp:
            buf = bytearray()
            async for chunk in resp.content.iter_any():
                buf += chunk
                start = 0
                while True:
                    nl = buf.find(b"\n", start)
                    if nl < 0:
                        break
                    if nl > start:
                        yield bytes(buf[start:nl])
                    start = nl + 1
                if start:
                    del buf[:start]
                if len(buf) > self._max_line_bytes:
                    raise KubeApiError(200, "InvalidBody",
                                       f"watch event larger than {self._max_line_bytes} bytes",
                                       path)
            if buf.strip():
                yield bytes(buf)

    async def watch(self, path: str, params: Mapping[str, str] | None = None,
                    accept: str = "application/json", *,
                    timeout_s: float | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Like :meth:`watch_lines`, each event decoded: ``{"type": ..., "object": {...}}``."""
        async with contextlib.aclosing(self.watch_lines(path, params, accept,
                                                        timeout_s=timeout_s)) as lines:
            async for line in lines:
                try:
                    event = json.loads(line)
                except ValueError as e:
                    raise KubeApiError(200, "InvalidBody", f"watch event is not JSON: {e}",
                                       path) from None
                if isinstance(event, dict):
                    yield event


async def _api_error(resp: aiohttp.ClientResponse, url: str) -> KubeApiError:
    body = await resp.content.read(64 * 1024)
    reason, message = resp.reason or "", ""
    try:
        status = _STATUS_DECODER.decode(body)
    except msgspec.DecodeError:
        message = body[:200].decode("utf-8", "replace").strip()
    else:
        reason, message = status.reason or reason, status.message
    return KubeApiError(resp.status, reason, message, url)


# ============================================================================ informers


class Backoff:
    """Exponential backoff with jitter (client-go's reflector: 0.8 s doubling to 30 s, each
    delay stretched by up to ``jitter`` times itself)."""

    def __init__(self, initial_s: float = 0.8, max_s: float = 30.0, factor: float = 2.0,
                 jitter: float = 1.0, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next_s = initial_s

    def next(self) -> float:
        base = self._next_s
        self._next_s = min(base * self.factor, self.max_s)
        return min(base * (1.0 + self.jitter * self._rng.random()), self.max_s)

    def reset(self) -> None:
        self._next_s = self.initial_s


@dataclass
class InformerStats:
    """Counters for tests and the server's own metrics."""

    lists: int = 0
    """Complete lists (the first one and every relist)."""
    list_pages: int = 0
    relists: int = 0
    """Relists forced by 410 Gone."""
    watches: int = 0
    """Watch requests made."""
    events: int = 0
    """ADDED/MODIFIED/DELETED events applied."""
    bookmarks: int = 0
    errors: int = 0
    """Failed lists and watches (each followed by a backoff)."""


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _RawEvent(msgspec.Struct):
    type: str = ""
    object: msgspec.Raw = msgspec.Raw()


class _RVMeta(msgspec.Struct):
    resourceVersion: str = ""


class _RVObject(msgspec.Struct):
    metadata: _RVMeta = msgspec.field(default_factory=_RVMeta)


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str = msgspec.field(default="", name="continue")


_EVENT_DECODER: Final = msgspec.json.Decoder(_RawEvent)
_RV_DECODER: Final = msgspec.json.Decoder(_RVObject)

K = TypeVar("K")
V = TypeVar("V")
Listener = Callable[[str, V | None, V | None], None]


class Informer(Generic[K, V]):
    """List and watch one resource into a local cache (client-go's reflector and store).

    * The first list is paged (``limit=page_size`` and ``continue``); a page whose continue
      token expired (410) restarts the list unpaged, as client-go's pager does. Every list
      replaces the cache. :attr:`synced` is set after the first complete list.
    * Then a watch from the list's resourceVersion with ``allowWatchBookmarks=true`` and a
      ``timeoutSeconds`` drawn from ``watch_timeout_s`` (5 to 10 minutes). Each event and each
      bookmark advances :attr:`resource_version`; when the watch ends (timeout, connection lost)
      the next one resumes from there, so nothing is missed and nothing relisted.
    * 410 Gone (an HTTP 410 or an ERROR event with code 410): a full relist.
    * Errors (connection refused, 5xx, 401/403, garbage) back off exponentially with jitter
      (``backoff_initial_s`` doubling to ``backoff_max_s``) and retry; any progress resets
      the backoff. A watch that ends within a second without any event counts as an error.

    Subclasses define the decoding and the cache. ``add_listener(fn)`` calls
    ``fn(type, old, new)`` (``"ADDED"``: old None; ``"DELETED"``: new None) after each change,
    including the differences a relist finds; unchanged objects (e.g. node heartbeats) are not
    reported.
    """

    resource = "objects"

    def __init__(
        self,
        client: KubeClient,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        list_accept: str = "application/json",
        watch_accept: str = "application/json",
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout_s: tuple[float, float] = (300.0, 600.0),
        backoff_initial_s: float = 0.8,
        backoff_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.params = dict(params or {})
        self.list_accept = list_accept
        self.watch_accept = watch_accept
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self._rng = rng or random.Random()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng=self._rng)
        self.synced = asyncio.Event()
        """Set once the first complete list is in the cache (never cleared)."""
        self.stats = InformerStats()
        self.last_error: BaseException | None = None
        """The last list/watch failure (None after a successful list)."""
        self._rv = ""
        self._listeners: list[Listener[V]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ---------------------------------------------------------------- subclass interface

    def _decode_page(self, body: bytes) -> tuple[list[V], str, str]:
        """A list body: its items, resourceVersion and continue token."""
        raise NotImplementedError

    def _decode_object(self, raw: msgspec.Raw) -> tuple[V, str]:
        """A watch event's object: the value and its resourceVersion."""
        raise NotImplementedError

    def _key(self, value: V) -> K:
        raise NotImplementedError

    def _get(self, key: K) -> V | None:
        raise NotImplementedError

    def _put(self, key: K, value: V) -> None:
        raise NotImplementedError

    def _pop(self, key: K) -> V | None:
        raise NotImplementedError

    def _replace(self, items: list[V]) -> list[tuple[str, V | None, V | None]] | None:
        """Swap the cache for ``items``; the changes when asked for (listeners), else None."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------- public

    @property
    def resource_version(self) -> str:
        """The resourceVersion the cache reflects (from the last list, event or bookmark)."""
        return self._rv

    def add_listener(self, listener: Listener[V]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        """Start listing and watching in a task of the running loop."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"fastmetrics-informer-{self.resource}")

    async def stop(self) -> None:
        """Stop the task (the open watch is closed); the cache keeps its last state."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until :attr:`synced`; False when ``timeout`` seconds pass first."""
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        need_list = True
        gone_in_a_row = 0
        while not self._stopping:
            if need_list:
                try:
                    await self._list()
                except Exception as e:  # every failure is retried
                    await self._failed("list", e)
                    continue
                need_list = False
            loop = asyncio.get_running_loop()
            started = loop.time()
            before = self.stats.events + self.stats.bookmarks
            try:
                await self._watch()
            except _Gone as e:
                # the watch cannot resume: list again (immediately the first time)
                self.stats.relists += 1
                need_list = True
                gone_in_a_row += 1
                log.info("Watch expired, relisting",
                         extra={"resource": self.resource, "rv": self._rv, "err": str(e)})
                if gone_in_a_row > 1:
                    await asyncio.sleep(self._backoff.next())
                continue
            except Exception as e:
                if self.stats.events + self.stats.bookmarks > before:
                    self._backoff.reset()
                await self._failed("watch", e)
                continue
            gone_in_a_row = 0
            progressed = self.stats.events + self.stats.bookmarks > before
            if progressed or loop.time() - started >= 1.0:
                self._backoff.reset()
                log.debug("Watch ended, resuming", extra={"resource": self.resource,
                                                          "rv": self._rv})
            else:
                await self._failed("watch", RuntimeError(
                    "very short watch: ended within a second and no events received"))

    async def _failed(self, what: str, e: Exception) -> None:
        self.stats.errors += 1
        self.last_error = e
        delay = self._backoff.next()
        log.warning("List or watch failed, backing off", extra={
            "resource": self.resource, "op": what, "err": f"{type(e).__name__}: {e}",
            "delay_s": round(delay, 3)})
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        items: list[V] = []
        rv = ""
        cont = ""
        limit = self.page_size
        for _ in range(1 << 40):  # one request per page; ends when the server says so
            params = dict(self.params)
            if limit > 0:
                params["limit"] = str(limit)
            if cont:
                params["continue"] = cont
            try:
                body = await self.client.get_bytes(self.path, params, self.list_accept)
            except KubeApiError as e:
                if e.gone and cont:
                    log.info("List continue token expired, listing again without paging",
                             extra={"resource": self.resource})
                    items, rv, cont, limit = [], "", "", 0
                    continue
                raise
            page, page_rv, cont = self._decode_page(body)
            self.stats.list_pages += 1
            items.extend(page)
            rv = rv or page_rv
            if not cont:
                break
        changes = self._replace(items)
        self._rv = rv
        self.stats.lists += 1
        self.last_error = None
        self._backoff.reset()
        log.debug("Listed", extra={"resource": self.resource, "items": len(items), "rv": rv})
        if changes:
            for change in changes:
                self._notify(*change)
        self.synced.set()

    async def _watch(self) -> None:
        lo, hi = self.watch_timeout_s
        timeout_s = max(1, int(self._rng.uniform(lo, hi)))
        params = dict(self.params)
        params.update({"watch": "true", "resourceVersion": self._rv,
                       "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)})
        self.stats.watches += 1
        lines = self.client.watch_lines(self.path, params, self.watch_accept,
                                        timeout_s=timeout_s + 30.0)
        try:
            async with contextlib.aclosing(lines):
                async for line in lines:
                    self._apply(line)
        except KubeApiError as e:
            if e.gone:  # an HTTP 410 rather than an ERROR event
                raise _Gone(e.message) from None
            raise

    def _apply(self, line: bytes) -> None:
        ev = _EVENT_DECODER.decode(line)
        kind = ev.type
        if kind == "ADDED" or kind == "MODIFIED":
            value, rv = self._decode_object(ev.object)
            key = self._key(value)
            old = self._get(key)
            self.stats.events += 1
            if old is None or old != value:
                self._put(key, value)
                self._notify("ADDED" if old is None else "MODIFIED", old, value)
        elif kind == "DELETED":
            value, rv = self._decode_object(ev.object)
            old = self._pop(self._key(value))
            self.stats.events += 1
            if old is not None:
                self._notify("DELETED", old, None)
        elif kind == "BOOKMARK":
            rv = _RV_DECODER.decode(ev.object).metadata.resourceVersion
            self.stats.bookmarks += 1
        elif kind == "ERROR":
            status = _STATUS_DECODER.decode(ev.object)
            if status.code == 410 or status.reason in ("Expired", "Gone"):
                raise _Gone(status.message)
            raise KubeApiError(status.code, status.reason, status.message, self.path)
        else:
            log.debug("Ignoring watch event", extra={"resource": self.resource, "type": kind})
            return
        if rv:
            self._rv = rv

    def _notify(self, kind: str, old: V | None, new: V | None) -> None:
        for fn in self._listeners:
            try:
                fn(kind, old, new)
            except Exception:
                log.exception("Informer listener failed", extra={"resource": self.resource})


# ------------------------------------------------------------------------ label sets


class _LabelSets:
    """Shares equal label sets between objects, keyed by their JSON bytes (the apiserver writes
    label maps with sorted keys, so equal maps have equal bytes): a hit costs no decoding. Keys
    and values are interned. Sets no object uses any more are swept out as the table grows."""

    _decoder: Final = msgspec.json.Decoder(dict[str, str] | None)

    def __init__(self) -> None:
        self._sets: dict[bytes, Labels] = {}
        self._sweep_at = 1024

    def get(self, raw: msgspec.Raw) -> Labels:
        key = bytes(raw)
        found = self._sets.get(key)
        if found is not None:
            return found
        if not key or key == b"null" or key == b"{}":
            return EMPTY_LABELS
        decoded = self._decoder.decode(key) or {}
        intern = sys.intern
        labels = Labels({intern(k): intern(v) for k, v in decoded.items()})
        if len(self._sets) >= self._sweep_at:
            self._sweep()
        self._sets[key] = labels
        return labels

    def _sweep(self) -> None:
        # a set only this table refers to (2: the table and getrefcount's argument) is unused
        sets = self._sets
        for key in list(sets):
            if sys.getrefcount(sets[key]) <= 2:
                del sets[key]
        self._sweep_at = max(1024, 2 * len(sets))

    def __len__(self) -> int:
        return len(self._sets)


def _freeze_labels(labels: Mapping[str, str] | None) -> Labels:
    if not labels:
        return EMPTY_LABELS
    intern = sys.intern
    return Labels({intern(k): intern(v) for k, v in labels.items()})


# ------------------------------------------------------------------------ nodes


class _NodeMeta(msgspec.Struct):
    name: str = ""
    resourceVersion: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _Address(msgspec.Struct):
    type: str = ""
    address: str = ""


class _KubeletEndpoint(msgspec.Struct):
    Port: int = 0


class _DaemonEndpoints(msgspec.Struct):
    kubeletEndpoint: _KubeletEndpoint | None = None


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _NodeStatus(msgspec.Struct):
    addresses: list[_Address] | None = None
    daemonEndpoints: _DaemonEndpoints | None = None
    conditions: list[_Condition] | None = None
    allocatable: dict[str, str] | None = None


class _Node(msgspec.Struct):
    metadata: _NodeMeta = msgspec.field(default_factory=_NodeMeta)
    status: _NodeStatus = msgspec.field(default_factory=_NodeStatus)


class _NodeList(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[_Node] | None = None


_NODE_DECODER: Final = msgspec.json.Decoder(_Node)
_NODE_LIST_DECODER: Final = msgspec.json.Decoder(_NodeList)


def _node_info(node: _Node) -> NodeInfo:
    meta, status = node.metadata, node.status
    intern = sys.intern
    port = 0
    if status.daemonEndpoints is not None and status.daemonEndpoints.kubeletEndpoint is not None:
        port = status.daemonEndpoints.kubeletEndpoint.Port
    ready = False
    for cond in status.conditions or ():
        if cond.type == "Ready":  # the first Ready condition decides (GetNodeCondition)
            ready = cond.status == "True"
            break
    allocatable = status.allocatable or {}
    return NodeInfo(
        name=meta.name,
        labels=_freeze_labels(meta.labels),
        addresses=tuple((intern(a.type), a.address) for a in status.addresses or ()),
        kubelet_port=port,
        ready=ready,
        metrics_path=(meta.annotations or {}).get(RESOURCE_METRICS_PATH_ANNOTATION, ""),
        allocatable_cpu=allocatable.get("cpu", ""),
        allocatable_memory=allocatable.get("memory", ""),
    )


def decode_node(body: bytes) -> NodeInfo:
    """A v1.Node JSON document as :class:`NodeInfo` (fields not needed are skipped)."""
    return _node_info(_NODE_DECODER.decode(body))


class NodeInformer(Informer[str, NodeInfo]):
    """Every Node as :class:`NodeInfo` (full v1.Node list/watch, decoded to what is used)."""

    resource = "nodes"

    def __init__(self, client: KubeClient, *, label_selector: str = "", **kw: Any) -> None:
        params = {"labelSelector": label_selector} if label_selector else {}
        super().__init__(client, "/api/v1/nodes", params=params, **kw)
        self._nodes: dict[str, NodeInfo] = {}
        self._sorted: list[NodeInfo] | None = None

    def _decode_page(self, body: bytes) -> tuple[list[NodeInfo], str, str]:
        page = _NODE_LIST_DECODER.decode(body)
        items = [_node_info(n) for n in page.items or ()]
        return items, page.metadata.resourceVersion, page.metadata.continue_

    def _decode_object(self, raw: msgspec.Raw) -> tuple[NodeInfo, str]:
        node = _NODE_DECODER.decode(raw)
        return _node_info(node), node.metadata.resourceVersion

    def _key(self, value: NodeInfo) -> str:
        return value.name

    def _get(self, key: str) -> NodeInfo | None:
        return self._nodes.get(key)

    def _put(self, key: str, value: NodeInfo) -> None:
        self._nodes[key] = value
        self._sorted = None

    def _pop(self, key: str) -> NodeInfo | None:
        self._sorted = None
        return self._nodes.pop(key, None)

    def _replace(self, items: list[NodeInfo]) -> list[tuple[str, NodeInfo | None,
                                                           NodeInfo | None]] | None:
        old = self._nodes
        new: dict[str, NodeInfo] = {}
        for node in items:
            prev = old.get(node.name)
            new[node.name] = prev if prev is not None and prev == node else node
        self._nodes = new
        self._sorted = None
        return _diff(old, new) if self._listeners else None

    def __len__(self) -> int:
        return len(self._nodes)

    # ---------------------------------------------------------------- read API

    def nodes(self) -> list[NodeInfo]:
        """Every node, sorted by name (a new list; the sort is cached until a change)."""
        if self._sorted is None:
            self._sorted = sorted(self._nodes.values(), key=attrgetter("name"))
        return list(self._sorted)

    def node(self, name: str) -> NodeInfo | None:
        return self._nodes.get(name)


def _diff(old: Mapping[Any, V], new: Mapping[Any, V]) -> list[tuple[str, V | None, V | None]]:
    out: list[tuple[str, V | None, V | None]] = []
    for key, value in old.items():
        if key not in new:
            out.append(("DELETED", value, None))
    for key, value in new.items():
        prev = old.get(key)
        if prev is None:
            out.append(("ADDED", None, value))
        elif prev is not value:
            out.append(("MODIFIED", prev, value))
    return out


# ------------------------------------------------------------------------ pods


class _PodMeta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    resourceVersion: str = ""
    labels: msgspec.Raw = msgspec.Raw()


class _PartialPod(msgspec.Struct):
    metadata: _PodMeta = msgspec.field(default_factory=_PodMeta)


class _PartialPodList(msgspec.Struct):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[_PartialPod] | None = None


_POD_DECODER: Final = msgspec.json.Decoder(_PartialPod)
_POD_LIST_DECODER: Final = msgspec.json.Decoder(_PartialPodList)


class PodInformer(Informer[tuple[str, str], PodInfo]):
    """Running pods as :class:`PodInfo`, from metadata-only lists and watches
    (``PartialObjectMetadata``, ``fieldSelector=status.phase=Running``), indexed by namespace.

    A pod leaving the Running phase arrives as DELETED (the field selector no longer matches)
    and disappears. Pods with equal labels share one :class:`Labels`; namespace names and
    label keys and values are interned.
    """

    resource = "pods"

    def __init__(self, client: KubeClient, **kw: Any) -> None:
        super().__init__(client, "/api/v1/pods", params={"fieldSelector": "status.phase=Running"},
                         list_accept=PARTIAL_OBJECT_METADATA_LIST,
                         watch_accept=PARTIAL_OBJECT_METADATA, **kw)
        self._by_ns: dict[str, dict[str, PodInfo]] = {}
        self._count = 0
        self._label_sets = _LabelSets()

    def _pod_info(self, meta: _PodMeta) -> PodInfo:
        return PodInfo(sys.intern(meta.namespace), meta.name, self._label_sets.get(meta.labels))

    def _decode_page(self, body: bytes) -> tuple[list[PodInfo], str, str]:
        page = _POD_LIST_DECODER.decode(body)
        pod_info = self._pod_info
        items = [pod_info(p.metadata) for p in page.items or ()]
        return items, page.metadata.resourceVersion, page.metadata.continue_

    def _decode_object(self, raw: msgspec.Raw) -> tuple[PodInfo, str]:
        meta = _POD_DECODER.decode(raw).metadata
        return self._pod_info(meta), meta.resourceVersion

    def _key(self, value: PodInfo) -> tuple[str, str]:
        return value.namespace, value.name

    def _get(self, key: tuple[str, str]) -> PodInfo | None:
        pods = self._by_ns.get(key[0])
        return None if pods is None else pods.get(key[1])

    def _put(self, key: tuple[str, str], value: PodInfo) -> None:
        pods = self._by_ns.get(key[0])
        if pods is None:
            pods = self._by_ns[key[0]] = {}
        if key[1] not in pods:
            self._count += 1
        pods[key[1]] = value

    def _pop(self, key: tuple[str, str]) -> PodInfo | None:
        pods = self._by_ns.get(key[0])
        if pods is None:
            return None
        old = pods.pop(key[1], None)
        if old is not None:
            self._count -= 1
            if not pods:
                del self._by_ns[key[0]]
        return old

    def _replace(self, items: list[PodInfo]) -> list[tuple[str, PodInfo | None,
                                                          PodInfo | None]] | None:
        old = self._by_ns
        new: dict[str, dict[str, PodInfo]] = {}
        count = 0
        for pod in items:
            pods = new.get(pod.namespace)
            if pods is None:
                pods = new[pod.namespace] = {}
            prev_ns = old.get(pod.namespace)
            prev = None if prev_ns is None else prev_ns.get(pod.name)
            if pod.name not in pods:
                count += 1
            # keep the old object when nothing changed (it may be frozen out of the GC's way)
            pods[pod.name] = prev if prev is not None and prev == pod else pod
        self._by_ns = new
        self._count = count
        if not self._listeners:
            return None
        flat_old = {(p.namespace, p.name): p for d in old.values() for p in d.values()}
        flat_new = {(p.namespace, p.name): p for d in new.values() for p in d.values()}
        return _diff(flat_old, flat_new)

    def __len__(self) -> int:
        return self._count

    # ---------------------------------------------------------------- read API

    def pods_in(self, namespace: str | None) -> list[PodInfo]:
        """The Running pods of ``namespace`` (None: all namespaces), O(k).

        The order is unspecified: namespaces and, within one, pods in the order the cache got
        them (the last list's order, which is the apiserver's namespace/name order, then the
        order watch events added them). Sort if you need an order.
        """
        if namespace is None:
            return [p for pods in self._by_ns.values() for p in pods.values()]
        pods = self._by_ns.get(namespace)
        return [] if pods is None else list(pods.values())

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        pods = self._by_ns.get(namespace)
        return None if pods is None else pods.get(name)

    def namespaces(self) -> list[str]:
        """Namespaces with at least one Running pod (unordered)."""
        return list(self._by_ns)

    @property
    def label_sets(self) -> int:
        """Distinct label sets held (shared between pods)."""
        return len(self._label_sets)


# ============================================================================ cluster state


class ClusterState:
    """The kube client and both informers: what the scraper and the API server read.

    ``await start()`` starts the Node and Pod informers; ``await wait_synced(timeout)`` waits for
    both first lists (the server must not serve before, SPEC §2.1); ``await stop()`` stops them
    and closes the client. With ``gc_freeze=True`` the collector is run once and everything
    alive is moved to the permanent generation (``gc.freeze()``) right after the first sync,
    so later collections do not walk the big, stable cache (the server should pass True).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        gc_freeze: bool = False,
        on_node_change: Listener[NodeInfo] | None = None,
        on_pod_change: Listener[PodInfo] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout_s: tuple[float, float] = (300.0, 600.0),
        backoff_initial_s: float = 0.8,
        backoff_max_s: float = 30.0,
        request_timeout_s: float = 60.0,
    ) -> None:
        self.config = config
        self.client = KubeClient(config, request_timeout_s=request_timeout_s)
        kw: dict[str, Any] = {"page_size": page_size, "watch_timeout_s": watch_timeout_s,
                              "backoff_initial_s": backoff_initial_s,
                              "backoff_max_s": backoff_max_s}
        self.node_informer = NodeInformer(self.client, **kw)
        self.pod_informer = PodInformer(self.client, **kw)
        if on_node_change is not None:
            self.node_informer.add_listener(on_node_change)
        if on_pod_change is not None:
            self.pod_informer.add_listener(on_pod_change)
        self.gc_freeze = gc_freeze
        self.gc_frozen = False
        self._after_sync: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ClusterState:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.node_informer.start()
        self.pod_informer.start()
        if self._after_sync is None:
            self._after_sync = asyncio.get_running_loop().create_task(self._on_synced())

    async def _on_synced(self) -> None:
        await self.node_informer.synced.wait()
        await self.pod_informer.synced.wait()
        log.info("Caches synced", extra={"nodes": len(self.node_informer),
                                         "pods": len(self.pod_informer)})
        if self.gc_freeze and not self.gc_frozen:
            gc.collect()
            gc.freeze()
            self.gc_frozen = True

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for both informers' first lists; False when ``timeout`` seconds pass first."""
        if self._after_sync is None:
            raise RuntimeError("ClusterState.start() was not called")
        try:
            await asyncio.wait_for(asyncio.shield(self._after_sync), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def synced(self) -> bool:
        return self.node_informer.synced.is_set() and self.pod_informer.synced.is_set()

    async def stop(self) -> None:
        task, self._after_sync = self._after_sync, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.node_informer.stop()
        await self.pod_informer.stop()
        await self.client.close()

    # ---------------------------------------------------------------- read API

    def nodes(self) -> list[NodeInfo]:
        """Every node, sorted by name."""
        return self.node_informer.nodes()

    def node(self, name: str) -> NodeInfo | None:
        return self.node_informer.node(name)

    def pods_in(self, namespace: str | None) -> list[PodInfo]:
        """Running pods of ``namespace`` (None: all), unordered (see PodInformer.pods_in)."""
        return self.pod_informer.pods_in(namespace)

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return self.pod_informer.pod(namespace, name)

    @property
    def node_count(self) -> int:
        return len(self.node_informer)

    @property
    def pod_count(self) -> int:
        return len(self.pod_informer)
