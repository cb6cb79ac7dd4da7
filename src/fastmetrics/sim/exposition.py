"""Byte-faithful rendering of a kubelet's ``/metrics/resource`` body (SPEC §1.2-§1.4).

The kubelet serves this endpoint through prometheus client_golang's text writer (format 0.0.4),
so everything here mirrors that writer: families sorted by name, samples sorted by label values,
label names written sorted, values printed with Go's ``strconv.FormatFloat(v, 'g', -1, 64)``
plus the writer's hard-coded special cases, and integer millisecond timestamps.

Besides the renderer, :func:`realistic_node` produces deterministic, realistic-looking sample data
for one node, used by the simulated kubelets and by benchmarks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "K8S_ALPHABET",
    "ContainerSample",
    "NodeSample",
    "PodSample",
    "escape_help",
    "escape_label_value",
    "format_go_float",
    "realistic_node",
    "render_resource_metrics",
]


# --------------------------------------------------------------------------------------------
# Go float formatting
# --------------------------------------------------------------------------------------------


def format_go_float(v: float) -> str:
    """Format ``v`` exactly like client_golang's text writer (``writeFloat``).

    That is Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` preceded by special cases for
    ``1``, ``0``, ``-1``, NaN and the infinities. Note that the writer tests ``f == 0``, which is
    also true for negative zero, so ``-0.0`` is written as ``0`` (plain ``FormatFloat`` would
    give ``-0``).

    Go's shortest formatting yields the shortest digit string that round-trips (the same digits
    as Python's ``repr``) and picks the exponent form iff the decimal exponent (``dp - 1``, the
    power of ten of the first digit) is < -4 or >= 6 -- ``eprec`` is fixed at 6 in shortest
    mode, independent of the number of digits. The exponent has a sign and at least two digits.
    """
    v = float(v)  # tolerate ints: repr(int) would have no exponent at all
    if v == 0.0:  # also -0.0
        return "0"
    if v == 1.0:
        return "1"
    if v == -1.0:
        return "-1"
    if v != v:
        return "NaN"
    if v == math.inf:
        return "+Inf"
    if v == -math.inf:
        return "-Inf"

    # Decompose repr (shortest round-trip digits) into a digit string and the decimal point
    # position ``dp`` (value = 0.<digits> * 10**dp), as Go's decimalSlice does.
    r = repr(v)
    sign = ""
    if r[0] == "-":
        sign = "-"
        r = r[1:]
    mantissa, is_exp, exp_text = r.partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    if is_exp:
        # repr's exponent form always has exactly one non-zero digit before the point.
        digits = int_part + frac_part
        dp = int(exp_text) + 1
    elif int_part != "0":
        digits = (int_part + frac_part).rstrip("0")  # drops repr's ".0" and integer zeros
        dp = len(int_part)
    else:
        significant = frac_part.lstrip("0")
        dp = len(significant) - len(frac_part)  # minus the number of leading zeros
        digits = significant

    exp = dp - 1
    if exp < -4 or exp >= 6:
        # %e: d[.ddd]e±dd
        head = digits[0] if len(digits) == 1 else f"{digits[0]}.{digits[1:]}"
        return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    # %f with exactly the digits needed.
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return f"{sign}{digits}{'0' * (dp - len(digits))}"
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


# --------------------------------------------------------------------------------------------
# Escaping
# --------------------------------------------------------------------------------------------


def escape_label_value(s: str) -> str:
    """Escape a label value: ``\\`` -> ``\\\\``, ``"`` -> ``\\"``, newline -> ``\\n``."""
    if "\\" in s or '"' in s or "\n" in s:
        return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def escape_help(s: str) -> str:
    """Escape HELP text: ``\\`` -> ``\\\\`` and newline -> ``\\n`` (quotes stay as they are)."""
    if "\\" in s or "\n" in s:
        return s.replace("\\", "\\\\").replace("\n", "\\n")
    return s


# --------------------------------------------------------------------------------------------
# Sample data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerSample:
    """One running container as reported by the kubelet at one instant.

    ``cpu_seconds`` is cumulative core-seconds (ns / 1e9), ``memory_bytes`` the working set,
    ``timestamp_ms`` the stats sample time (shared by cpu, memory and swap), and
    ``start_time_seconds`` the container start as Unix seconds (UnixNano / 1e9) or None.
    ``swap_bytes`` None means "no swap series" (e.g. Windows or pre-swap kubelets).
    """

    namespace: str
    pod: str
    container: str
    cpu_seconds: float
    memory_bytes: float
    timestamp_ms: int
    start_time_seconds: float | None
    swap_bytes: float | None = 0.0


@dataclass(frozen=True, slots=True)
class PodSample:
    """Pod-cgroup usage (includes the sandbox/pause overhead)."""

    namespace: str
    pod: str
    cpu_seconds: float
    memory_bytes: float
    timestamp_ms: int
    swap_bytes: float | None = 0.0


@dataclass(frozen=True, slots=True)
class NodeSample:
    """Node-level usage; one timestamp for cpu, memory and swap."""

    cpu_seconds: float
    memory_bytes: float
    timestamp_ms: int
    swap_bytes: float | None = 0.0


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_COUNTER = "counter"
_GAUGE = "gauge"

_SWAP_SUFFIX = " Reported only on non-windows systems"
_SCRAPE_ERROR_HELP = "1 if there was an error while getting container metrics, 0 otherwise"

# name -> (TYPE, HELP text after the stability tag, stability override or None)
# The swap families are [ALPHA] on every kubelet that has them.
_FAMILIES: dict[str, tuple[str, str, str | None]] = {
    "container_cpu_usage_seconds_total": (
        _COUNTER,
        "Cumulative cpu time consumed by the container in core-seconds",
        None,
    ),
    "container_memory_working_set_bytes": (
        _GAUGE,
        "Current working set of the container in bytes",
        None,
    ),
    "container_start_time_seconds": (
        _GAUGE,
        "Start time of the container since unix epoch in seconds",
        None,
    ),
    "container_swap_usage_bytes": (
        _GAUGE,
        "Current amount of the container swap usage in bytes." + _SWAP_SUFFIX,
        "ALPHA",
    ),
    "node_cpu_usage_seconds_total": (
        _COUNTER,
        "Cumulative cpu time consumed by the node in core-seconds",
        None,
    ),
    "node_memory_working_set_bytes": (
        _GAUGE,
        "Current working set of the node in bytes",
        None,
    ),
    "node_swap_usage_bytes": (
        _GAUGE,
        "Current swap usage of the node in bytes." + _SWAP_SUFFIX,
        "ALPHA",
    ),
    "pod_cpu_usage_seconds_total": (
        _COUNTER,
        "Cumulative cpu time consumed by the pod in core-seconds",
        None,
    ),
    "pod_memory_working_set_bytes": (
        _GAUGE,
        "Current working set of the pod in bytes",
        None,
    ),
    "pod_swap_usage_bytes": (
        _GAUGE,
        "Current amount of the pod swap usage in bytes." + _SWAP_SUFFIX,
        "ALPHA",
    ),
    "resource_scrape_error": (_GAUGE, _SCRAPE_ERROR_HELP, None),
    # Deprecated in 1.29 and hidden afterwards; always [ALPHA].
    "scrape_error": (_GAUGE, _SCRAPE_ERROR_HELP, "ALPHA"),
}


def _header(name: str, stability: str) -> str:
    kind, text, override = _FAMILIES[name]
    tag = override if override is not None else stability
    prefix = f"[{tag}] " if tag else ""
    return f"# HELP {name} {prefix}{escape_help(text)}\n# TYPE {name} {kind}\n"


def _seconds_to_ms(seconds: float) -> int:
    """Millisecond timestamp of a start time given as float Unix seconds.

    1.22-era kubelets stamped the start-time sample with ``StartTime.UnixNano() / 1e6``. The float
    seconds value is ``float64(UnixNano) / 1e9`` and can sit a few hundred ns below a whole
    millisecond (``1.7672200002499998e+09``), so round to microseconds first, then truncate.
    """
    return round(seconds * 1e6) // 1000


def render_resource_metrics(
    node: NodeSample | None,
    pods: Sequence[PodSample],
    containers: Sequence[ContainerSample],
    *,
    stability: str = "STABLE",
    scrape_error: int = 0,
    legacy_scrape_error: bool = False,
    start_time_timestamps: bool = False,
) -> bytes:
    """Render the exact ``/metrics/resource`` body a kubelet would serve.

    ``stability`` is the tag of the non-swap families ("STABLE" for >= 1.29, "ALPHA" before;
    an empty string omits the tag). ``scrape_error`` != 0 emits only the error gauge.
    ``legacy_scrape_error`` writes ``scrape_error`` (<= 1.28) instead of
    ``resource_scrape_error``. ``start_time_timestamps`` stamps start-time samples with the
    start time itself in ms (1.22-1.28 behaviour).
    """
    error_name = "scrape_error" if legacy_scrape_error else "resource_scrape_error"
    error_family = f"{_header(error_name, stability)}{error_name} {format_go_float(scrape_error)}\n"
    if scrape_error:
        # The summary provider failed: client_golang still serves the error gauge, nothing else.
        return error_family.encode()

    fmt = format_go_float
    esc = escape_label_value
    # family name -> rendered sample lines
    lines: dict[str, list[str]] = {}

    if containers:
        # Go sorts by label values in label-name order: container, namespace, pod; ties (which a
        # real kubelet never produces) by timestamp. Python's str order is code-point order,
        # which equals the byte order of the UTF-8 encodings that Go compares.
        ordered = sorted(
            containers, key=lambda c: (c.container, c.namespace, c.pod, c.timestamp_ms)
        )
        cpu: list[str] = []
        mem: list[str] = []
        start: list[str] = []
        swap: list[str] = []
        for c in ordered:
            labels = (
                f'{{container="{esc(c.container)}",namespace="{esc(c.namespace)}",'
                f'pod="{esc(c.pod)}"}} '
            )
            ts = f" {c.timestamp_ms}\n"
            cpu.append(f"container_cpu_usage_seconds_total{labels}{fmt(c.cpu_seconds)}{ts}")
            mem.append(f"container_memory_working_set_bytes{labels}{fmt(c.memory_bytes)}{ts}")
            st = c.start_time_seconds
            if st is not None and st > 0:
                st_ts = f" {_seconds_to_ms(st)}\n" if start_time_timestamps else "\n"
                start.append(f"container_start_time_seconds{labels}{fmt(st)}{st_ts}")
            if c.swap_bytes is not None:
                swap.append(f"container_swap_usage_bytes{labels}{fmt(c.swap_bytes)}{ts}")
        lines["container_cpu_usage_seconds_total"] = cpu
        lines["container_memory_working_set_bytes"] = mem
        lines["container_start_time_seconds"] = start
        lines["container_swap_usage_bytes"] = swap

    if node is not None:
        ts = f" {node.timestamp_ms}\n"
        lines["node_cpu_usage_seconds_total"] = [
            f"node_cpu_usage_seconds_total {fmt(node.cpu_seconds)}{ts}"
        ]
        lines["node_memory_working_set_bytes"] = [
            f"node_memory_working_set_bytes {fmt(node.memory_bytes)}{ts}"
        ]
        if node.swap_bytes is not None:
            lines["node_swap_usage_bytes"] = [f"node_swap_usage_bytes {fmt(node.swap_bytes)}{ts}"]

    if pods:
        ordered_pods = sorted(pods, key=lambda p: (p.namespace, p.pod, p.timestamp_ms))
        pcpu: list[str] = []
        pmem: list[str] = []
        pswap: list[str] = []
        for p in ordered_pods:
            labels = f'{{namespace="{esc(p.namespace)}",pod="{esc(p.pod)}"}} '
            ts = f" {p.timestamp_ms}\n"
            pcpu.append(f"pod_cpu_usage_seconds_total{labels}{fmt(p.cpu_seconds)}{ts}")
            pmem.append(f"pod_memory_working_set_bytes{labels}{fmt(p.memory_bytes)}{ts}")
            if p.swap_bytes is not None:
                pswap.append(f"pod_swap_usage_bytes{labels}{fmt(p.swap_bytes)}{ts}")
        lines["pod_cpu_usage_seconds_total"] = pcpu
        lines["pod_memory_working_set_bytes"] = pmem
        lines["pod_swap_usage_bytes"] = pswap

    parts: list[str] = []
    # Families sorted by name (all names are ASCII, so str order is byte order); the error
    # gauge sorts last under both of its names.
    for name in sorted(lines):
        family_lines = lines[name]
        if family_lines:  # client_golang drops families without samples
            parts.append(_header(name, stability))
            parts.extend(family_lines)
    parts.append(error_family)
    return "".join(parts).encode()


# --------------------------------------------------------------------------------------------
# Realistic sample data
# --------------------------------------------------------------------------------------------

# The alphabet Kubernetes uses for generated name suffixes (k8s.io/apimachinery rand.String).
K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_PAGE = 4096
_NS_PER_S = 1_000_000_000
_NS_PER_H = 3600 * _NS_PER_S

# DaemonSets: one pod per node, named <ds>-<5 chars>. (namespace, name, main container)
_DAEMONSETS: tuple[tuple[str, str, str], ...] = (
    ("kube-system", "kube-proxy", "kube-proxy"),
    ("kube-system", "ebs-csi-node", "ebs-plugin"),
    ("monitoring", "node-exporter", "node-exporter"),
    ("logging", "fluent-bit", "fluent-bit"),
)

# StatefulSets: pod anti-affinity puts at most one replica per node; the ordinal is the node
# index so the same StatefulSet never yields the same pod name on two nodes.
_STATEFULSETS: tuple[tuple[str, str, str], ...] = (
    ("default", "db", "postgres"),
    ("payments", "ledger-db", "postgres"),
    ("shop", "redis", "redis"),
    ("monitoring", "prometheus-k8s", "prometheus"),
    ("messaging", "kafka", "kafka"),
    ("search", "elasticsearch-data", "elasticsearch"),
)

# Deployments: many replicas per node, named <deploy>-<pod-template-hash>-<5 chars>.
_DEPLOYMENTS: tuple[tuple[str, str, str], ...] = (
    ("default", "web", "nginx"),
    ("default", "api", "app"),
    ("kube-system", "coredns", "coredns"),
    ("shop", "cart", "app"),
    ("shop", "orders", "app"),
    ("shop", "catalog", "app"),
    ("shop", "frontend", "nginx"),
    ("payments", "gateway", "app"),
    ("payments", "billing", "app"),
    ("payments", "fraud", "worker"),
    ("monitoring", "grafana", "grafana"),
    ("auth", "users", "app"),
    ("auth", "sso", "app"),
    ("search", "indexer", "worker"),
    ("search", "query", "app"),
    ("ingress", "haproxy", "haproxy"),
)

# Extra containers, picked per pod in random order.
_SIDECARS: tuple[str, ...] = ("istio-proxy", "log-shipper", "sidecar", "envoy", "proxy")


# rand.SafeEncodeString maps each byte b of its input to K8S_ALPHABET[b % 27]; applied to the
# decimal digits of a uint32 it yields only "4".."9", "b", "c", "d", "f".
_SAFE_DIGITS = str.maketrans({d: K8S_ALPHABET[ord(d) % len(K8S_ALPHABET)] for d in "0123456789"})


def _suffix(rng: random.Random, n: int) -> str:
    """A generated-name suffix (``rand.String(n)``), e.g. the ``q8r2n`` of a ReplicaSet pod."""
    return "".join(rng.choice(K8S_ALPHABET) for _ in range(n))


def _pod_template_hash(rng: random.Random) -> str:
    """A ``pod-template-hash``: SafeEncodeString of a uint32 FNV hash printed in decimal.

    Hence 10 characters for most hashes, 9 (or fewer) when the uint32 is below 1e9.
    """
    return str(rng.getrandbits(32)).translate(_SAFE_DIGITS)


def _container_names(rng: random.Random, main: str, count: int) -> list[str]:
    """``count`` distinct container names: the workload's main container, then sidecars."""
    sidecars = [name for name in _SIDECARS if name != main]
    rng.shuffle(sidecars)
    names = [main, *sidecars][:count]
    k = 1
    while len(names) < count:
        names.append(f"sidecar-{k}")
        k += 1
    return names


def realistic_node(
    node_index: int, pods: int, containers_per_pod: int, now_ms: int, seed: int
) -> tuple[NodeSample, list[PodSample], list[ContainerSample]]:
    """Deterministic, realistic-looking samples for one node (``random.Random(seed + node_index)``).

    Every pod has exactly ``containers_per_pod`` running containers with non-zero CPU and memory
    and a start time a few hours to a few days ago; cpu values are nanosecond counters / 1e9,
    memory is page-aligned, timestamps lie within the second before ``now_ms``. Pod usage is the
    sum of its containers plus sandbox overhead; node usage is the sum of its pods plus system
    usage. Pod names are unique within the node; replicas of one Deployment share the
    pod-template hash across nodes (derived from ``seed`` and the Deployment).
    """
    rng = random.Random(seed + node_index)
    now_ns = now_ms * 1_000_000

    used_names: set[tuple[str, str]] = set()
    free_statefulsets = list(_STATEFULSETS)
    template_hashes: dict[tuple[str, str], str] = {}

    pod_samples: list[PodSample] = []
    container_samples: list[ContainerSample] = []
    total_pod_cpu_ns = 0
    total_pod_mem = 0
    oldest_start_ns = now_ns

    for i in range(pods):
        # Choose the workload and a pod name unique on this node.
        while True:
            if i < len(_DAEMONSETS):
                namespace, workload, main = _DAEMONSETS[i]
                name = f"{workload}-{_suffix(rng, 5)}"
            elif free_statefulsets and rng.random() < 0.08:
                namespace, workload, main = free_statefulsets.pop(
                    rng.randrange(len(free_statefulsets))
                )
                name = f"{workload}-{node_index}"
            else:
                namespace, workload, main = rng.choice(_DEPLOYMENTS)
                key = (namespace, workload)
                if key not in template_hashes:
                    hash_rng = random.Random(f"{seed}:{namespace}/{workload}")
                    template_hashes[key] = _pod_template_hash(hash_rng)
                name = f"{workload}-{template_hashes[key]}-{_suffix(rng, 5)}"
            if (namespace, name) not in used_names:
                used_names.add((namespace, name))
                break

        pod_start_ns = now_ns - rng.randint(_NS_PER_H, 96 * _NS_PER_H)
        oldest_start_ns = min(oldest_start_ns, pod_start_ns)
        # A busy main container and lighter sidecars (cores, working-set pages).
        main_rate = min(max(rng.lognormvariate(math.log(0.03), 1.2), 0.0005), 2.0)
        main_pages = min(max(int(rng.lognormvariate(math.log(16384), 1.0)), 256), 1 << 20)

        pod_cpu_ns = rng.randint(200_000, 5_000_000)  # sandbox (pause) overhead
        pod_mem = rng.randint(60, 90) * _PAGE
        pod_ts = 0
        for j, container in enumerate(_container_names(rng, main, containers_per_pod)):
            start_ns = pod_start_ns + rng.randint(0, 3 * _NS_PER_S)
            rate = main_rate if j == 0 else main_rate * rng.uniform(0.02, 0.3)
            pages = main_pages if j == 0 else max(int(main_pages * rng.uniform(0.05, 0.4)), 128)
            cpu_ns = int((now_ns - start_ns) * rate) + rng.randint(1, 999_999)
            mem = pages * _PAGE
            ts = now_ms - rng.randint(0, 999)
            container_samples.append(
                ContainerSample(
                    namespace=namespace,
                    pod=name,
                    container=container,
                    cpu_seconds=cpu_ns / _NS_PER_S,
                    memory_bytes=float(mem),
                    timestamp_ms=ts,
                    start_time_seconds=start_ns / _NS_PER_S,
                )
            )
            pod_cpu_ns += cpu_ns
            pod_mem += mem
            pod_ts = max(pod_ts, ts)
        if containers_per_pod <= 0:
            pod_ts = now_ms - rng.randint(0, 999)
        pod_samples.append(
            PodSample(
                namespace=namespace,
                pod=name,
                cpu_seconds=pod_cpu_ns / _NS_PER_S,
                memory_bytes=float(pod_mem),
                timestamp_ms=pod_ts,
            )
        )
        total_pod_cpu_ns += pod_cpu_ns
        total_pod_mem += pod_mem

    uptime_ns = (now_ns - oldest_start_ns) + rng.randint(_NS_PER_H, 24 * _NS_PER_H)
    node_cpu_ns = total_pod_cpu_ns + int(uptime_ns * rng.uniform(0.05, 0.3))
    node_mem = total_pod_mem + rng.randint(300 * 256, 900 * 256) * _PAGE  # 300-900 MiB system
    node = NodeSample(
        cpu_seconds=node_cpu_ns / _NS_PER_S,
        memory_bytes=float(node_mem),
        timestamp_ms=now_ms - rng.randint(0, 999),
    )
    return node, pod_samples, container_samples
