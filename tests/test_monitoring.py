"""The server's own Prometheus metrics (SPEC §7, §10.5 bucket helper).

The exposition is parsed with prometheus_client's parser (the oracle for the text format) and
compared with the families, types, HELP texts and buckets SPEC §7 lists.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fastmetrics.monitoring import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    FRESHNESS_BUCKETS,
    ServerMetrics,
    exponential_buckets,
    go_float,
    tick_buckets,
)
from fastmetrics.sim.exposition import format_go_float

SPEC_FRESHNESS = [
    1, 1.364, 1.8604960000000004, 2.5377165440000007, 3.4614453660160014, 4.721411479245826,
    6.440005257691307, 8.784167171490942, 11.981604021913647, 16.342907885890217,
    22.291726356354257, 30.405914750067208, 41.47366771909167, 56.57008276884105,
    77.16159289669919, 105.2484127110977, 143.55883493793726, 195.81425085534644,
    267.09063816669254, 364.31163045936864,
]

FAMILIES = {
    # name: (type, HELP)
    "metrics_server_api_metric_freshness_seconds": (
        "histogram", "[ALPHA] Freshness of metrics exported"),
    "metrics_server_kubelet_request_duration_seconds": (
        "histogram", "[ALPHA] Duration of requests to Kubelet API in seconds"),
    "metrics_server_kubelet_request_total": (
        "counter", "[ALPHA] Number of requests sent to Kubelet API"),
    "metrics_server_kubelet_last_request_time_seconds": (
        "gauge",
        "[ALPHA] Time of last request performed to Kubelet API since unix epoch in seconds"),
    "metrics_server_manager_tick_duration_seconds": (
        "histogram", "[ALPHA] The total time spent collecting and storing metrics in seconds."),
    "metrics_server_storage_points": ("gauge", "[ALPHA] Number of metrics points stored."),
}


def headers(text: str) -> dict[str, tuple[str, str]]:
    """Family name -> (TYPE, HELP), read from the raw comment lines."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, help_text = line.split(" ", 3)
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            _, _, name, type_ = line.split(" ")
            types[name] = type_
    assert helps.keys() == types.keys()
    return {name: (types[name], helps[name]) for name in helps}


def samples(text: str) -> dict[str, list[Sample]]:
    """Family name (as written in # TYPE) -> its samples, parsed by prometheus_client."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = list(family.samples)
    return out


def value(fam: list[Sample], name: str, **labels: str) -> float:
    for s in fam:
        if s.name == name and s.labels == labels:
            return float(s.value)
    raise KeyError((name, labels))


def full_metrics() -> ServerMetrics:
    m = ServerMetrics(15)
    m.observe_requests(["n2", "n1"], [0.004, 0.3], [True, False], [1.7e9, 1.7e9 + 1])
    m.observe_tick(1.5)
    m.observe_freshness([0.5, 3.0, 20.0])
    m.set_storage_points(2, 40)
    return m


# --------------------------------------------------------------------------------------------
# Families, types, HELP
# --------------------------------------------------------------------------------------------


def test_exactly_the_six_families_with_help_and_types() -> None:
    text = full_metrics().render().decode()
    found = {k: v for k, v in headers(text).items() if k.startswith("metrics_server_")}
    assert found == FAMILIES
    parsed = samples(text)
    assert {k for k in parsed if k.startswith("metrics_server_")} == set(FAMILIES)
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_families_sorted_and_series_sorted() -> None:
    text = full_metrics().render().decode()
    names = [n for n in headers(text) if n.startswith("metrics_server_")]
    assert names == sorted(names)
    parsed = samples(text)
    nodes = [s.labels["node"] for s in parsed["metrics_server_kubelet_last_request_time_seconds"]]
    assert nodes == ["n1", "n2"]


def test_process_families() -> None:
    text = ServerMetrics(15).render().decode()
    hdr = headers(text)
    for name, type_ in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
    ]:
        assert hdr[name][0] == type_, name
        assert not hdr[name][1].startswith("[ALPHA]")
    parsed = samples(text)
    assert value(parsed["process_resident_memory_bytes"], "process_resident_memory_bytes") > 1e6
    start = value(parsed["process_start_time_seconds"], "process_start_time_seconds")
    assert time.time() - 3600 * 24 * 365 < start <= time.time() + 1
    open_fds = value(parsed["process_open_fds"], "process_open_fds")
    assert 3 <= open_fds <= len(os.listdir("/proc/self/fd")) + 8
    assert value(parsed["process_cpu_seconds_total"], "process_cpu_seconds_total") > 0
    assert "process_" not in ServerMetrics(15, process=False).render().decode()


def test_empty_registry() -> None:
    """Before anything happened: only the unlabelled histograms (with zero counts)."""
    text = ServerMetrics(60, process=False).render().decode()
    assert set(headers(text)) == {"metrics_server_api_metric_freshness_seconds",
                                  "metrics_server_manager_tick_duration_seconds"}
    parsed = samples(text)
    tick = parsed["metrics_server_manager_tick_duration_seconds"]
    assert value(tick, "metrics_server_manager_tick_duration_seconds_count") == 0
    assert value(tick, "metrics_server_manager_tick_duration_seconds_sum") == 0


def test_storage_points_only_after_first_store() -> None:
    m = ServerMetrics(15, process=False)
    m.observe_tick(0.1)
    assert "metrics_server_storage_points" not in m.render().decode()
    m.set_storage_points(0, 0)
    parsed = samples(m.render().decode())
    fam = parsed["metrics_server_storage_points"]
    assert value(fam, "metrics_server_storage_points", type="node") == 0
    m.set_storage_points(5000, 300_000)
    text = m.render().decode()
    assert 'metrics_server_storage_points{type="node"} 5000\n' in text
    assert 'metrics_server_storage_points{type="container"} 300000\n' in text


def test_request_total_series_appear_when_first_counted() -> None:
    m = ServerMetrics(15, process=False)
    m.observe_requests(["a"], [0.01], [True], [1.0])
    text = m.render().decode()
    assert 'metrics_server_kubelet_request_total{success="true"} 1\n' in text
    assert 'success="false"' not in text
    m.observe_requests(["a", "b"], [0.01, 0.02], [False, True], [2.0, 2.0])
    fam = samples(m.render().decode())["metrics_server_kubelet_request_total"]
    assert value(fam, "metrics_server_kubelet_request_total", success="true") == 2
    assert value(fam, "metrics_server_kubelet_request_total", success="false") == 1
    assert m.request_count(True) == 2 and m.request_count(False) == 1


# --------------------------------------------------------------------------------------------
# Buckets
# --------------------------------------------------------------------------------------------


def bucket_bounds(fam: list[Sample], name: str, **labels: str) -> list[float]:
    return [float(s.labels["le"]) for s in fam
            if s.name == name + "_bucket" and {k: v for k, v in s.labels.items() if k != "le"}
            == labels]


def test_freshness_buckets_exact() -> None:
    assert list(FRESHNESS_BUCKETS) == SPEC_FRESHNESS  # exact float equality
    assert exponential_buckets(1, 1.364, 20) == FRESHNESS_BUCKETS
    text = ServerMetrics(15, process=False).render().decode()
    for b in SPEC_FRESHNESS:
        # le is written with Go's shortest formatting: the same digits as the SPEC's list
        assert f'metrics_server_api_metric_freshness_seconds_bucket{{le="{go_float(b)}"}}' in text
    assert 'le="1.8604960000000004"' in text and 'le="364.31163045936864"' in text
    fam = samples(text)["metrics_server_api_metric_freshness_seconds"]
    assert bucket_bounds(fam, "metrics_server_api_metric_freshness_seconds") == \
        [*SPEC_FRESHNESS, math.inf]


def test_request_duration_buckets_are_prometheus_defaults() -> None:
    assert DEFAULT_BUCKETS == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    fam = samples(full_metrics().render().decode())[
        "metrics_server_kubelet_request_duration_seconds"]
    assert bucket_bounds(fam, "metrics_server_kubelet_request_duration_seconds", node="n1") == \
        [*DEFAULT_BUCKETS, math.inf]


@pytest.mark.parametrize(
    ("resolution_s", "expected"),
    [
        (15, [*DEFAULT_BUCKETS, 12.5, 15, 22.5, 30]),
        (60, [*DEFAULT_BUCKETS, 35, 60, 90, 120]),
        (10, list(DEFAULT_BUCKETS)),
        (5, list(DEFAULT_BUCKETS)),  # 5 is a default bucket already
        (3, [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 3, 5, 10]),
        (0.007, list(DEFAULT_BUCKETS)),  # within 0.005 of a neighbour: not inserted
        (2.503, list(DEFAULT_BUCKETS)),
        (0.0001, list(DEFAULT_BUCKETS)),
    ],
)
def test_tick_buckets(resolution_s: float, expected: list[float]) -> None:
    assert list(tick_buckets(resolution_s)) == expected


@pytest.mark.parametrize(("timeout_s", "must_contain"), [(15, [15, 30]), (5, [5]), (10, [10])])
def test_bucket_helper_vectors(timeout_s: float, must_contain: list[float]) -> None:
    """SPEC §10.5: strictly increasing and containing the resolution (and 2 R above 10 s)."""
    b = tick_buckets(timeout_s)
    assert all(x < y for x, y in itertools.pairwise(b))
    for v in must_contain:
        assert v in b


def test_tick_histogram_uses_resolution_buckets() -> None:
    m = ServerMetrics(15, process=False)
    for d in (0.3, 11.0, 16.0, 40.0):
        m.observe_tick(d)
    fam = samples(m.render().decode())["metrics_server_manager_tick_duration_seconds"]
    name = "metrics_server_manager_tick_duration_seconds"
    assert bucket_bounds(fam, name) == [*tick_buckets(15), math.inf]
    assert value(fam, name + "_bucket", le="0.5") == 1
    assert value(fam, name + "_bucket", le="12.5") == 2
    assert value(fam, name + "_bucket", le="22.5") == 3
    assert value(fam, name + "_bucket", le="30") == 3
    assert value(fam, name + "_bucket", le="+Inf") == 4
    assert value(fam, name + "_sum") == pytest.approx(67.3)
    assert value(fam, name + "_count") == 4
    assert m.tick_count == 4


def test_bucket_upper_bounds_are_inclusive() -> None:
    m = ServerMetrics(15, process=False)
    m.observe_requests(["n"], [1.0], [True], [0.0])  # exactly on a bound: counted in le="1"
    m.observe_freshness([1.364])
    text = m.render().decode()
    assert 'metrics_server_kubelet_request_duration_seconds_bucket{node="n",le="0.5"} 0\n' in text
    assert 'metrics_server_kubelet_request_duration_seconds_bucket{node="n",le="1"} 1\n' in text
    assert 'metrics_server_api_metric_freshness_seconds_bucket{le="1"} 0\n' in text
    assert 'metrics_server_api_metric_freshness_seconds_bucket{le="1.364"} 1\n' in text


# --------------------------------------------------------------------------------------------
# Per-node series
# --------------------------------------------------------------------------------------------


def test_per_node_series_accumulate_and_are_never_deleted() -> None:
    m = ServerMetrics(15, process=False)
    m.observe_requests(["a", "b", "c"], [0.003, 0.2, 7.0], [True, True, False],
                       [1_700_000_000.0, 1_700_000_001.0, 1_700_000_002.9])
    m.observe_requests(["a"], [0.02], [True], [1_700_000_015.0])  # b and c are gone
    parsed = samples(m.render().decode())
    dur = parsed["metrics_server_kubelet_request_duration_seconds"]
    name = "metrics_server_kubelet_request_duration_seconds"
    assert value(dur, name + "_count", node="a") == 2
    assert value(dur, name + "_sum", node="a") == pytest.approx(0.023)
    assert value(dur, name + "_bucket", node="a", le="0.005") == 1
    assert value(dur, name + "_bucket", node="a", le="0.025") == 2
    assert value(dur, name + "_bucket", node="c", le="5") == 0
    assert value(dur, name + "_bucket", node="c", le="10") == 1
    assert value(dur, name + "_count", node="b") == 1
    last = parsed["metrics_server_kubelet_last_request_time_seconds"]
    lname = "metrics_server_kubelet_last_request_time_seconds"
    assert value(last, lname, node="a") == 1_700_000_015
    assert value(last, lname, node="b") == 1_700_000_001
    assert value(last, lname, node="c") == 1_700_000_002  # whole seconds, like Go's Unix()
    text = m.render().decode()
    assert f'{lname}{{node="a"}} 1.700000015e+09\n' in text  # Go float formatting


def test_node_label_escaping_round_trips() -> None:
    m = ServerMetrics(15, process=False)
    weird = 'we"ird\\node\nname'
    m.observe_requests([weird], [0.1], [True], [5.0])
    parsed = samples(m.render().decode())
    last = parsed["metrics_server_kubelet_last_request_time_seconds"]
    assert [s.labels["node"] for s in last] == [weird]


def test_observe_requests_validates_lengths() -> None:
    m = ServerMetrics(15, process=False)
    with pytest.raises(ValueError, match="one entry per node"):
        m.observe_requests(["a", "b"], [0.1], [True], [1.0])
    m.observe_requests([], [], [], [])
    assert "request_total" not in m.render().decode()


def test_freshness_observations() -> None:
    m = ServerMetrics(15, process=False)
    m.observe_freshness(np.array([0.2, 1.0, 5.0, 400.0]))
    m.observe_freshness([])
    m.observe_freshness(np.array([[2.0]]))
    fam = samples(m.render().decode())["metrics_server_api_metric_freshness_seconds"]
    name = "metrics_server_api_metric_freshness_seconds"
    assert value(fam, name + "_count") == 5
    assert value(fam, name + "_sum") == pytest.approx(408.2)
    assert value(fam, name + "_bucket", le="1") == 2
    assert value(fam, name + "_bucket", le="2.5377165440000007") == 3
    assert value(fam, name + "_bucket", le="364.31163045936864") == 4
    assert value(fam, name + "_bucket", le="+Inf") == 5


def test_large_counts_use_go_formatting() -> None:
    m = ServerMetrics(15, process=False)
    for _ in range(3):
        m.observe_freshness(np.full(500_000, 0.5))
    text = m.render().decode()
    assert 'metrics_server_api_metric_freshness_seconds_bucket{le="1"} 1.5e+06\n' in text
    assert "metrics_server_api_metric_freshness_seconds_count 1.5e+06\n" in text


def test_five_thousand_nodes_render() -> None:
    """5,000 nodes' series render (the timing is in bench, not here) and parse."""
    m = ServerMetrics(15, process=False)
    names = [f"sim-node-{i:05d}" for i in range(5000)]
    rng = np.random.default_rng(1)
    for tick in range(3):
        m.observe_requests(names, rng.exponential(0.02, 5000), rng.random(5000) > 0.01,
                           np.full(5000, 1.7e9 + 15 * tick))
    body = m.render()
    text = body.decode()
    assert text.count("\n") > 5000 * 15
    parsed = samples(text)
    dur = parsed["metrics_server_kubelet_request_duration_seconds"]
    assert len(dur) == 5000 * (len(DEFAULT_BUCKETS) + 1 + 2)
    assert value(dur, "metrics_server_kubelet_request_duration_seconds_count",
                 node="sim-node-04999") == 3
    assert m.request_count(True) + m.request_count(False) == 15000


# --------------------------------------------------------------------------------------------
# Go float formatting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v", "text"),
    [
        (0.0, "0"), (-0.0, "0"), (1.0, "1"), (-1.0, "-1"), (0.005, "0.005"), (12.5, "12.5"),
        (1e6, "1e+06"), (1234567.0, "1.234567e+06"), (123456.0, "123456"),
        (-62135596800.0, "-6.21355968e+10"), (1.7e9, "1.7e+09"), (0.0001, "0.0001"),
        (0.00001, "1e-05"), (1.5e-7, "1.5e-07"), (1e21, "1e+21"), (1.8604960000000004,
                                                                 "1.8604960000000004"),
        (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
    ],
)
def test_go_float(v: float, text: str) -> None:
    assert go_float(v) == text


def test_go_float_matches_reference(rand: random.Random) -> None:
    for _ in range(20_000):
        kind = rand.randrange(4)
        if kind == 0:
            v = rand.uniform(-1e4, 1e4)
        elif kind == 1:
            v = math.copysign(10 ** rand.uniform(-30, 30), rand.random() - 0.5)
        elif kind == 2:
            v = float(rand.randrange(10**13))
        else:
            v = rand.randrange(-1000, 1000) / 64
        assert go_float(v) == format_go_float(v), (v, rand)
