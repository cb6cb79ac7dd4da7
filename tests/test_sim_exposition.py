"""Tests for the kubelet ``/metrics/resource`` renderer of the cluster simulator."""

from __future__ import annotations

import math
import re
import struct
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fastmetrics.sim.exposition import (
    K8S_ALPHABET,
    ContainerSample,
    NodeSample,
    PodSample,
    escape_help,
    escape_label_value,
    format_go_float,
    realistic_node,
    render_resource_metrics,
)

# --------------------------------------------------------------------------------------------
# SPEC §1.4 payloads, copied verbatim.
# --------------------------------------------------------------------------------------------

EXAMPLE_A = b"""\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="coredns",namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 182.061236911 1767225614129
container_cpu_usage_seconds_total{container="log-shipper",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 3.26057 1767225613210
container_cpu_usage_seconds_total{container="nginx",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 41.675770002 1767225613199
container_cpu_usage_seconds_total{container="postgres",namespace="default",pod="db-0"} 913.00455021 1767225613512
container_cpu_usage_seconds_total{container="proxy",namespace="default",pod="db-0"} 0.060012 1767225613520
container_cpu_usage_seconds_total{container="worker",namespace="default",pod="batch-job-7kq4t"} 11.562004 1767225613800
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="coredns",namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 1.3697024e+07 1767225614129
container_memory_working_set_bytes{container="log-shipper",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 9.437184e+06 1767225613210
container_memory_working_set_bytes{container="nginx",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 2.5427968e+07 1767225613199
container_memory_working_set_bytes{container="postgres",namespace="default",pod="db-0"} 2.6845184e+08 1767225613512
container_memory_working_set_bytes{container="proxy",namespace="default",pod="db-0"} 1.8874368e+07 1767225613520
container_memory_working_set_bytes{container="worker",namespace="default",pod="batch-job-7kq4t"} 1.053696e+08 1767225613800
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="coredns",namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 1.7671392055124e+09
container_start_time_seconds{container="log-shipper",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 1.7672200011e+09
container_start_time_seconds{container="nginx",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 1.7672200002499998e+09
container_start_time_seconds{container="postgres",namespace="default",pod="db-0"} 1.7671e+09
container_start_time_seconds{container="proxy",namespace="default",pod="db-0"} 1.76722560852e+09
container_start_time_seconds{container="worker",namespace="default",pod="batch-job-7kq4t"} 1.7672256014e+09
# HELP container_swap_usage_bytes [ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems
# TYPE container_swap_usage_bytes gauge
container_swap_usage_bytes{container="coredns",namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 0 1767225614129
container_swap_usage_bytes{container="log-shipper",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 0 1767225613210
container_swap_usage_bytes{container="nginx",namespace="default",pod="web-5d4f8c7b9-q8r2n"} 0 1767225613199
container_swap_usage_bytes{container="postgres",namespace="default",pod="db-0"} 0 1767225613512
container_swap_usage_bytes{container="proxy",namespace="default",pod="db-0"} 0 1767225613520
container_swap_usage_bytes{container="worker",namespace="default",pod="batch-job-7kq4t"} 0 1767225613800
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 48231.889013356 1767225612944
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.72152832e+09 1767225612944
# HELP node_swap_usage_bytes [ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems
# TYPE node_swap_usage_bytes gauge
node_swap_usage_bytes 0 1767225612944
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="batch-job-7kq4t"} 11.563204 1767225613800
pod_cpu_usage_seconds_total{namespace="default",pod="db-0"} 913.06576221 1767225613520
pod_cpu_usage_seconds_total{namespace="default",pod="web-5d4f8c7b9-q8r2n"} 44.937540002 1767225613210
pod_cpu_usage_seconds_total{namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 182.062436911 1767225614129
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="batch-job-7kq4t"} 1.05652224e+08 1767225613800
pod_memory_working_set_bytes{namespace="default",pod="db-0"} 2.87608832e+08 1767225613520
pod_memory_working_set_bytes{namespace="default",pod="web-5d4f8c7b9-q8r2n"} 3.5147776e+07 1767225613210
pod_memory_working_set_bytes{namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 1.3979648e+07 1767225614129
# HELP pod_swap_usage_bytes [ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems
# TYPE pod_swap_usage_bytes gauge
pod_swap_usage_bytes{namespace="default",pod="batch-job-7kq4t"} 0 1767225613800
pod_swap_usage_bytes{namespace="default",pod="db-0"} 0 1767225613520
pod_swap_usage_bytes{namespace="default",pod="web-5d4f8c7b9-q8r2n"} 0 1767225613210
pod_swap_usage_bytes{namespace="kube-system",pod="coredns-7db6d8ff4d-x2k9p"} 0 1767225614129
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"""  # noqa: E501


EXAMPLE_B = b"""\
# HELP container_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="shop",pod="cart-6f7d9c-8xk2l"} 812.449120338 1650974210337
container_cpu_usage_seconds_total{container="migrate",namespace="shop",pod="cart-6f7d9c-8xk2l"} 0 1650974211902
container_cpu_usage_seconds_total{container="redis",namespace="shop",pod="session-0"} 95.1013 1650974209874
# HELP container_memory_working_set_bytes [ALPHA] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="shop",pod="cart-6f7d9c-8xk2l"} 1.34217728e+08 1650974210337
container_memory_working_set_bytes{container="migrate",namespace="shop",pod="cart-6f7d9c-8xk2l"} 0 1650974211902
container_memory_working_set_bytes{container="redis",namespace="shop",pod="session-0"} 3.3554432e+07 1650974209874
# HELP container_start_time_seconds [ALPHA] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="shop",pod="cart-6f7d9c-8xk2l"} 1.6509601e+09 1650960100000
container_start_time_seconds{container="migrate",namespace="shop",pod="cart-6f7d9c-8xk2l"} 1.650960042e+09 1650960042000
container_start_time_seconds{container="redis",namespace="shop",pod="session-0"} 1.6509e+09 1650900000000
# HELP node_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 264310.92077313 1650974205113
# HELP node_memory_working_set_bytes [ALPHA] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 6.421028864e+09 1650974205113
# HELP pod_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="shop",pod="cart-6f7d9c-8xk2l"} 813.112773402 1650974210337
pod_cpu_usage_seconds_total{namespace="shop",pod="session-0"} 95.2031 1650974209874
# HELP pod_memory_working_set_bytes [ALPHA] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="shop",pod="cart-6f7d9c-8xk2l"} 1.3460275e+08 1650974210337
pod_memory_working_set_bytes{namespace="shop",pod="session-0"} 3.3832e+07 1650974209874
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"""  # noqa: E501


EXAMPLE_C = b"""\
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 1
"""  # noqa: E501


# --------------------------------------------------------------------------------------------
# format_go_float
# --------------------------------------------------------------------------------------------

GO_FLOAT_TABLE: list[tuple[float, str]] = [
    # client_golang writeFloat special cases
    (0.0, "0"),
    (-0.0, "0"),  # writeFloat tests f == 0, which negative zero satisfies
    (1.0, "1"),
    (-1.0, "-1"),
    (math.nan, "NaN"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    # SPEC examples
    (13697024.0, "1.3697024e+07"),
    (182.061236911, "182.061236911"),
    (1767139205.5124, "1.7671392055124e+09"),
    (1767220000250000000 / 1e9, "1.7672200002499998e+09"),
    (0.060012, "0.060012"),
    (268451840.0, "2.6845184e+08"),
    (12533760.0, "1.253376e+07"),
    (782336.0, "782336"),
    (9437184.0, "9.437184e+06"),
    (1721528320.0, "1.72152832e+09"),
    (48231.889013356, "48231.889013356"),
    (-6.7953645788713455e09, "-6.7953645788713455e+09"),
    # the fixed/exponent boundary: decimal exponent < -4 or >= 6
    (123456.0, "123456"),
    (999999.0, "999999"),
    (999999.5, "999999.5"),
    (1e6, "1e+06"),
    (1000001.0, "1.000001e+06"),
    (1234567.0, "1.234567e+06"),
    (608863452348.1149, "6.088634523481149e+11"),
    (0.0001, "0.0001"),
    (0.000123, "0.000123"),
    (0.00001, "1e-05"),
    (0.000015, "1.5e-05"),
    (-0.000015, "-1.5e-05"),
    (1e-7, "1e-07"),
    # plain fixed notation
    (2.0, "2"),
    (-2.5, "-2.5"),
    (100.0, "100"),
    (0.1, "0.1"),
    (0.30000000000000004, "0.30000000000000004"),
    (3.26057, "3.26057"),
    # where Python's repr switches notation (exponent >= 16) but Go already has
    (1e15, "1e+15"),
    (1e16, "1e+16"),
    (1.5e16, "1.5e+16"),
    (1e21, "1e+21"),
    (123456789012345680.0, "1.2345678901234568e+17"),
    # extremes: three-digit exponents, subnormals
    (1e100, "1e+100"),
    (1e-100, "1e-100"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (-1.7976931348623157e308, "-1.7976931348623157e+308"),
    (2.2250738585072014e-308, "2.2250738585072014e-308"),
    (5e-324, "5e-324"),
    (1e-320, "1e-320"),
]


@pytest.mark.parametrize(("value", "expected"), GO_FLOAT_TABLE)
def test_format_go_float_table(value: float, expected: str) -> None:
    assert format_go_float(value) == expected


def test_format_go_float_accepts_ints() -> None:
    assert format_go_float(25427968) == "2.5427968e+07"
    assert format_go_float(4096) == "4096"
    assert format_go_float(0) == "0"


def _reference_go_g(x: float) -> str:
    """Independent model of Go's FormatFloat(x, 'g', -1, 64) built on Decimal (finite, non-zero)."""
    sign, digit_tuple, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    exp = exponent + len(digits) - 1  # power of ten of the leading digit
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return prefix + format(Decimal(digits).scaleb(exponent), "f")


_GO_FLOAT_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\d(?:\.\d+)?e[+-]\d{2,3})")
finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@given(finite_floats)
@example(0.1)
@example(1e22)
@example(123456.789)
@example(9.999999999999999e5)
@settings(max_examples=2000)
def test_format_go_float_round_trips(x: float) -> None:
    out = format_go_float(x)
    assert float(out) == x
    assert _GO_FLOAT_RE.fullmatch(out), out
    if x in (0.0, 1.0, -1.0):
        return
    assert out == _reference_go_g(x)
    # Same (shortest) significant digits as repr.
    assert _significant_digits(out) == _significant_digits(repr(x))


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
@settings(max_examples=500)
def test_format_go_float_any_bit_pattern(bits: int) -> None:
    x = struct.unpack("<d", struct.pack("<Q", bits))[0]
    out = format_go_float(x)
    if math.isnan(x):
        assert out == "NaN"
    else:
        assert float(out) == x


def _significant_digits(text: str) -> str:
    mantissa = text.lstrip("-").split("e")[0]
    return mantissa.replace(".", "").strip("0")


# --------------------------------------------------------------------------------------------
# escaping
# --------------------------------------------------------------------------------------------


def test_escape_label_value() -> None:
    assert escape_label_value("plain-value") == "plain-value"
    assert escape_label_value('q"uote') == 'q\\"uote'
    assert escape_label_value("back\\slash") == "back\\\\slash"
    assert escape_label_value("two\nlines") == "two\\nlines"
    assert escape_label_value('\\"\n') == '\\\\\\"\\n'
    assert escape_label_value("tab\there") == "tab\there"


def test_escape_help() -> None:
    assert escape_help('say "hi"') == 'say "hi"'
    assert escape_help("a\\b\nc") == "a\\\\b\\nc"


# --------------------------------------------------------------------------------------------
# render_resource_metrics
# --------------------------------------------------------------------------------------------


def _example_a_input() -> tuple[NodeSample, list[PodSample], list[ContainerSample]]:
    web = "web-5d4f8c7b9-q8r2n"
    coredns = "coredns-7db6d8ff4d-x2k9p"
    job = "batch-job-7kq4t"
    # Deliberately unsorted: the renderer must order them like client_golang.
    containers = [
        ContainerSample(
            "default",
            web,
            "nginx",
            41.675770002,
            25427968.0,
            1767225613199,
            1767220000250000000 / 1e9,  # float64(UnixNano) / 1e9, as the kubelet computes it
        ),
        ContainerSample(
            "default", "db-0", "proxy", 0.060012, 18874368.0, 1767225613520, 1767225608.52
        ),
        ContainerSample(
            "default", job, "worker", 11.562004, 105369600.0, 1767225613800, 1767225601.4
        ),
        ContainerSample(
            "kube-system",
            coredns,
            "coredns",
            182.061236911,
            13697024.0,
            1767225614129,
            1767139205.5124,
        ),
        ContainerSample(
            "default", "db-0", "postgres", 913.00455021, 268451840.0, 1767225613512, 1767100000.0
        ),
        ContainerSample(
            "default", web, "log-shipper", 3.26057, 9437184.0, 1767225613210, 1767220001.1
        ),
    ]
    pods = [
        PodSample("kube-system", coredns, 182.062436911, 13979648.0, 1767225614129),
        PodSample("default", web, 44.937540002, 35147776.0, 1767225613210),
        PodSample("default", "db-0", 913.06576221, 287608832.0, 1767225613520),
        PodSample("default", job, 11.563204, 105652224.0, 1767225613800),
    ]
    node = NodeSample(48231.889013356, 1721528320.0, 1767225612944)
    return node, pods, containers


def test_example_a_byte_exact() -> None:
    node, pods, containers = _example_a_input()
    assert render_resource_metrics(node, pods, containers) == EXAMPLE_A


def test_example_a_input_order_irrelevant() -> None:
    node, pods, containers = _example_a_input()
    body = render_resource_metrics(node, pods[::-1], containers[::-1])
    assert body == EXAMPLE_A


def test_example_b_byte_exact() -> None:
    cart = "cart-6f7d9c-8xk2l"
    containers = [
        ContainerSample(
            "shop",
            "session-0",
            "redis",
            95.1013,
            33554432.0,
            1650974209874,
            1650900000.0,
            swap_bytes=None,
        ),
        ContainerSample(
            "shop", cart, "migrate", 0.0, 0.0, 1650974211902, 1650960042.0, swap_bytes=None
        ),
        ContainerSample(
            "shop",
            cart,
            "app",
            812.449120338,
            134217728.0,
            1650974210337,
            1650960100.0,
            swap_bytes=None,
        ),
    ]
    pods = [
        PodSample("shop", "session-0", 95.2031, 33832000.0, 1650974209874, swap_bytes=None),
        PodSample("shop", cart, 813.112773402, 134602750.0, 1650974210337, swap_bytes=None),
    ]
    node = NodeSample(264310.92077313, 6421028864.0, 1650974205113, swap_bytes=None)
    body = render_resource_metrics(
        node,
        pods,
        containers,
        stability="ALPHA",
        legacy_scrape_error=True,
        start_time_timestamps=True,
    )
    assert body == EXAMPLE_B


def test_example_c_scrape_error_only() -> None:
    assert render_resource_metrics(None, [], [], scrape_error=1) == EXAMPLE_C
    # Whatever stats are passed in, a failed collection emits only the error gauge.
    node, pods, containers = _example_a_input()
    assert render_resource_metrics(node, pods, containers, scrape_error=1) == EXAMPLE_C


def test_empty_collection_emits_only_error_gauge() -> None:
    assert render_resource_metrics(None, [], []) == EXAMPLE_C.replace(b" 1\n", b" 0\n")
    legacy = render_resource_metrics(None, [], [], stability="ALPHA", legacy_scrape_error=True)
    assert legacy == (
        b"# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics,"
        b" 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n"
    )


def test_start_time_skipped_when_missing_or_not_positive() -> None:
    containers = [
        ContainerSample("ns", "p", "a", 1.5, 4096.0, 1000, None),
        ContainerSample("ns", "p", "b", 1.5, 4096.0, 1000, 0.0),
        ContainerSample("ns", "p", "c", 1.5, 4096.0, 1000, -6.7953645788713455e09),
        ContainerSample("ns", "p", "d", 1.5, 4096.0, 1000, 1767225601.4),
    ]
    text = render_resource_metrics(None, [], containers).decode()
    start_lines = [line for line in text.splitlines() if line.startswith("container_start")]
    assert start_lines == [
        'container_start_time_seconds{container="d",namespace="ns",pod="p"} 1.7672256014e+09'
    ]
    assert text.count("container_cpu_usage_seconds_total{") == 4


def test_no_start_time_family_when_no_start_times() -> None:
    containers = [ContainerSample("ns", "p", "a", 1.5, 4096.0, 1000, None, swap_bytes=None)]
    text = render_resource_metrics(None, [], containers).decode()
    assert "container_start_time_seconds" not in text
    assert "swap" not in text
    assert "node_" not in text
    assert "pod_" not in text


def test_start_time_timestamp_rounding() -> None:
    # float64(UnixNano)/1e9 lands just below the whole millisecond; the stamp must not.
    start = 1767220000250000000 / 1e9
    assert repr(start) == "1767220000.2499998"
    containers = [ContainerSample("ns", "p", "c", 1.0, 1.0, 1, start, swap_bytes=None)]
    body = render_resource_metrics(None, [], containers, start_time_timestamps=True)
    assert b"} 1.7672200002499998e+09 1767220000250\n" in body


def test_swap_only_where_reported() -> None:
    containers = [
        ContainerSample("ns", "p", "a", 2.5, 8192.0, 7, None, swap_bytes=None),
        ContainerSample("ns", "p", "b", 2.5, 8192.0, 8, None, swap_bytes=12288.0),
    ]
    pods = [PodSample("ns", "p", 5.0, 16384.0, 8, swap_bytes=None)]
    node = NodeSample(10.0, 65536.0, 9, swap_bytes=1048576.0)
    text = render_resource_metrics(node, pods, containers).decode()
    swap = [line for line in text.splitlines() if "swap" in line and not line.startswith("#")]
    assert swap == [
        'container_swap_usage_bytes{container="b",namespace="ns",pod="p"} 12288 8',
        "node_swap_usage_bytes 1.048576e+06 9",
    ]


def test_sorting_is_go_byte_order_and_labels_are_escaped() -> None:
    names = ["zeta", "Zeta", "alpha", "été", "a-b", "a_b", "a.b", "a"]
    containers = [
        ContainerSample("ns", f"pod-{i}", name, 1.25, 4096.0, 100 + i, None, swap_bytes=None)
        for i, name in enumerate(names)
    ]
    containers.append(
        ContainerSample('n"s', "p\\q\nr", "alpha", 1.25, 4096.0, 1, None, swap_bytes=None)
    )
    text = render_resource_metrics(None, [], containers).decode()
    cpu = [line for line in text.splitlines() if line.startswith("container_cpu")]
    got = [
        re.match(r'container_cpu_usage_seconds_total\{container="([^"]*)"', line) for line in cpu
    ]
    order = [m.group(1) for m in got if m]
    expected = sorted([*names, "alpha"], key=lambda s: s.encode())
    assert order == expected
    assert order[:4] == ["Zeta", "a", "a-b", "a.b"]
    # the two "alpha" rows are ordered by namespace: 'n"s' < 'ns'
    assert (
        'container_cpu_usage_seconds_total{container="alpha",namespace="n\\"s",'
        'pod="p\\\\q\\nr"} 1.25 1'
    ) in cpu
    assert cpu.index(
        'container_cpu_usage_seconds_total{container="alpha",namespace="n\\"s",'
        'pod="p\\\\q\\nr"} 1.25 1'
    ) + 1 == cpu.index(
        'container_cpu_usage_seconds_total{container="alpha",namespace="ns",pod="pod-2"} 1.25 102'
    )


def test_pod_families_sorted_by_namespace_then_pod() -> None:
    pods = [
        PodSample("b", "a", 1.5, 4096.0, 1),
        PodSample("a", "z", 1.5, 4096.0, 2),
        PodSample("a", "b", 1.5, 4096.0, 3),
    ]
    text = render_resource_metrics(None, pods, []).decode()
    cpu = [line for line in text.splitlines() if line.startswith("pod_cpu")]
    assert cpu == [
        'pod_cpu_usage_seconds_total{namespace="a",pod="b"} 1.5 3',
        'pod_cpu_usage_seconds_total{namespace="a",pod="z"} 1.5 2',
        'pod_cpu_usage_seconds_total{namespace="b",pod="a"} 1.5 1',
    ]


def test_families_sorted_and_headed() -> None:
    node, pods, containers = realistic_node(0, 5, 2, 1767225615000, 1)
    text = render_resource_metrics(node, pods, containers).decode()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names == types == sorted(names)
    assert len(names) == 11
    assert text.endswith("resource_scrape_error 0\n")


# --------------------------------------------------------------------------------------------
# realistic_node
# --------------------------------------------------------------------------------------------

NOW_MS = 1767225615000

# <deployment>-<pod-template-hash>-<suffix>; the hash is SafeEncodeString of decimal digits.
DEPLOYMENT_POD = re.compile(rf"[a-z][-a-z0-9]*-[4-9bcdf]{{9,10}}-[{K8S_ALPHABET}]{{5}}")
DAEMONSET_POD = re.compile(rf"[a-z][-a-z0-9]*-[{K8S_ALPHABET}]{{5}}")
STATEFULSET_POD = re.compile(r"[a-z][-a-z0-9]*-(0|[1-9][0-9]*)")


def test_realistic_payload_size() -> None:
    for node_index in range(3):
        node, pods, containers = realistic_node(node_index, 110, 2, NOW_MS, 42)
        assert len(pods) == 110
        assert len(containers) == 220
        size = len(render_resource_metrics(node, pods, containers))
        assert 125_000 <= size <= 145_000, size


def test_realistic_node_is_deterministic() -> None:
    first = render_resource_metrics(*realistic_node(3, 110, 2, NOW_MS, 7))
    second = render_resource_metrics(*realistic_node(3, 110, 2, NOW_MS, 7))
    assert first == second
    assert first != render_resource_metrics(*realistic_node(3, 110, 2, NOW_MS, 8))
    assert first != render_resource_metrics(*realistic_node(4, 110, 2, NOW_MS, 7))


def test_realistic_node_invariants() -> None:
    node, pods, containers = realistic_node(2, 110, 3, NOW_MS, 42)
    keys = [(p.namespace, p.pod) for p in pods]
    assert len(set(keys)) == len(keys)
    by_pod: dict[tuple[str, str], list[ContainerSample]] = {}
    for c in containers:
        by_pod.setdefault((c.namespace, c.pod), []).append(c)
        assert c.cpu_seconds > 0
        assert c.memory_bytes > 0 and c.memory_bytes % 4096 == 0
        assert NOW_MS - 1000 < c.timestamp_ms <= NOW_MS
        assert c.start_time_seconds is not None
        assert NOW_MS / 1000 - 100 * 3600 < c.start_time_seconds < NOW_MS / 1000 - 3600
    for p in pods:
        members = by_pod[(p.namespace, p.pod)]
        assert len({c.container for c in members}) == 3
        assert p.cpu_seconds > sum(c.cpu_seconds for c in members)
        assert p.memory_bytes > sum(c.memory_bytes for c in members)
        assert p.timestamp_ms == max(c.timestamp_ms for c in members)
        assert (
            DEPLOYMENT_POD.fullmatch(p.pod)
            or DAEMONSET_POD.fullmatch(p.pod)
            or STATEFULSET_POD.fullmatch(p.pod)
        ), p.pod
    assert node.cpu_seconds > sum(p.cpu_seconds for p in pods)
    assert node.memory_bytes > sum(p.memory_bytes for p in pods)
    assert sum(bool(DEPLOYMENT_POD.fullmatch(p.pod)) for p in pods) > 80
    assert {"kube-system", "default"} <= {p.namespace for p in pods}
    # cpu is a nanosecond counter / 1e9: many significant digits.
    assert any(len(repr(c.cpu_seconds).split(".")[1]) == 9 for c in containers)


def test_realistic_payload_parses_with_prometheus_client() -> None:
    node, pods, containers = realistic_node(1, 110, 2, NOW_MS, 42)
    text = render_resource_metrics(node, pods, containers).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client strips the _total suffix from counter family names.
    assert set(families) == {
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "container_swap_usage_bytes",
        "node_cpu_usage_seconds",
        "node_memory_working_set_bytes",
        "node_swap_usage_bytes",
        "pod_cpu_usage_seconds",
        "pod_memory_working_set_bytes",
        "pod_swap_usage_bytes",
        "resource_scrape_error",
    }
    total = sum(len(f.samples) for f in families.values())
    assert total == 4 * 220 + 3 * 110 + 3 + 1

    by_key = {(c.container, c.namespace, c.pod): c for c in containers}
    for sample in families["container_cpu_usage_seconds"].samples:
        c = by_key[(sample.labels["container"], sample.labels["namespace"], sample.labels["pod"])]
        assert sample.name == "container_cpu_usage_seconds_total"
        assert sample.value == c.cpu_seconds
        assert sample.timestamp == c.timestamp_ms / 1000
    for sample in families["container_memory_working_set_bytes"].samples:
        c = by_key[(sample.labels["container"], sample.labels["namespace"], sample.labels["pod"])]
        assert sample.value == c.memory_bytes
        assert sample.timestamp == c.timestamp_ms / 1000
    for sample in families["container_start_time_seconds"].samples:
        c = by_key[(sample.labels["container"], sample.labels["namespace"], sample.labels["pod"])]
        assert sample.value == c.start_time_seconds
        assert sample.timestamp is None
    pods_by_key = {(p.namespace, p.pod): p for p in pods}
    for sample in families["pod_cpu_usage_seconds"].samples:
        p = pods_by_key[(sample.labels["namespace"], sample.labels["pod"])]
        assert sample.value == p.cpu_seconds
        assert sample.timestamp == p.timestamp_ms / 1000
    for sample in families["pod_memory_working_set_bytes"].samples:
        p = pods_by_key[(sample.labels["namespace"], sample.labels["pod"])]
        assert sample.value == p.memory_bytes
    (node_cpu,) = families["node_cpu_usage_seconds"].samples
    assert node_cpu.value == node.cpu_seconds
    assert node_cpu.timestamp == node.timestamp_ms / 1000
    (node_mem,) = families["node_memory_working_set_bytes"].samples
    assert node_mem.value == node.memory_bytes
    (error,) = families["resource_scrape_error"].samples
    assert error.value == 0
