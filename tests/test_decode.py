"""The kubelet ``/metrics/resource`` decoder, table-driven (SPEC §1.2-1.4, §3, §10.2).

Every case runs against both implementations (the ``decoder_cls`` fixture: ``py`` and ``c``).
A case is a body and either the expected batch or the expected ``DecodeError`` (reason, byte
offset, line). Values are written out as literal integers: the conversions are Go's
``uint64(v * 1e9)`` / ``uint64(v)`` / ``int64(v * 1e9)`` on the parsed float64.
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import fastmetrics
from fastmetrics import _grammar
from fastmetrics.decode import DecodedBatch, DecodeError, DecoderPy, NodePoint
from fastmetrics.errors import FastMetricsError

DATA = Path(__file__).parent / "data" / "kubelet"

DEFAULT_TS = 3_392_867_227_000_000_000  # 2077-07-07T07:07:07Z, the default time of SPEC §10.2
MS = 1_000_000  # ns per ms

NCPU = "node_cpu_usage_seconds_total"
NMEM = "node_memory_working_set_bytes"
CPU = "container_cpu_usage_seconds_total"
MEM = "container_memory_working_set_bytes"
START = "container_start_time_seconds"

Row = tuple[str, str, str, int, int, int, int]  # as DecodedBatch.containers() returns


class Expect(NamedTuple):
    node: NodePoint | None = None
    rows: tuple[Row, ...] = ()
    dropped_pods: int = 0
    skipped_samples: int = 0


EMPTY = Expect()


def line(name: str, value: str, ts: int | None = None, block: str | None = None) -> bytes:
    """One sample line; ``block`` is the label text between the braces, verbatim."""
    series = name if block is None else f"{name}{{{block}}}"
    stamp = "" if ts is None else f" {ts}"
    return f"{series} {value}{stamp}\n".encode()


def c(
    name: str,
    value: str,
    ts: int | None = None,
    *,
    ns: str = "ns",
    pod: str = "p",
    container: str = "c",
) -> bytes:
    """A container sample line with kubelet label order."""
    return line(name, value, ts, f'container="{container}",namespace="{ns}",pod="{pod}"')


def row(
    *,
    ns: str = "ns",
    pod: str = "p",
    container: str = "c",
    ts: int = DEFAULT_TS,
    start: int = 0,
    cpu: int,
    mem: int,
) -> Row:
    return (ns, pod, container, ts, start, cpu, mem)


def decode(decoder_cls: type[DecoderPy], body: bytes, ts: int = DEFAULT_TS) -> DecodedBatch:
    return decoder_cls().decode(body, ts)


def check_batch_shape(batch: DecodedBatch) -> None:
    """The column contract of ``DecodedBatch``, whatever the values."""
    assert isinstance(batch, DecodedBatch)
    n = len(batch)
    for column, dtype in (
        (batch.key_id, np.int32),
        (batch.pod_id, np.int32),
        (batch.timestamp_ns, np.int64),
        (batch.start_time_ns, np.int64),
        (batch.cpu_nanocore_seconds, np.uint64),
        (batch.memory_bytes, np.uint64),
    ):
        assert isinstance(column, np.ndarray)
        assert column.dtype == dtype
        assert column.shape == (n,)
    keys = batch.keys
    for k, p in zip(batch.key_id.tolist(), batch.pod_id.tolist(), strict=True):
        assert 0 <= k < len(keys)
        assert keys.pod_of_key[k] == p
        assert keys.pod_key(p) == keys.key(k)[:2]
    assert len(set(batch.key_id.tolist())) == n  # one row per container
    if batch.node is not None:
        assert isinstance(batch.node, NodePoint)
        assert all(type(x) is int for x in batch.node)


def assert_batch(batch: DecodedBatch, expect: Expect) -> None:
    check_batch_shape(batch)
    assert batch.node == expect.node
    assert batch.containers() == list(expect.rows)
    assert batch.dropped_pods == expect.dropped_pods
    assert batch.skipped_samples == expect.skipped_samples


# --------------------------------------------------------------------------------------------
# SPEC §10.2 (metrics-server decode_test.go), node "node1"
# --------------------------------------------------------------------------------------------

COREDNS = {"ns": "kube-system", "pod": "coredns-558bd4d5db-4dpjz", "container": "coredns"}
T_COREDNS = 1633253812125  # 2021-10-03T09:36:52.125Z
T_NODE = 1633253809720  # 2021-10-03T09:36:49.720Z
START_COREDNS = 1_633_252_712_000_000_000  # 2021-10-03T09:18:32Z

CPU_10_2 = c(CPU, "4.710169", T_COREDNS, **COREDNS)
MEM_10_2 = c(MEM, "1.253376e+07", T_COREDNS, **COREDNS)
START_10_2 = c(START, "1.633252712e+09", 1633252712000, **COREDNS)
NCPU_10_2 = line(NCPU, "357.35491", T_NODE)
NMEM_10_2 = line(NMEM, "1.616273408e+09", T_NODE)

FULL_10_2 = b"".join(
    [
        b"# HELP container_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the"
        b" container in core-seconds\n",
        b"# TYPE container_cpu_usage_seconds_total counter\n",
        CPU_10_2,
        b"# HELP container_memory_working_set_bytes [ALPHA] Current working set of the container"
        b" in bytes\n",
        b"# TYPE container_memory_working_set_bytes gauge\n",
        MEM_10_2,
        b"# HELP container_start_time_seconds [ALPHA] Start time of the container since unix"
        b" epoch in seconds\n",
        b"# TYPE container_start_time_seconds gauge\n",
        START_10_2,
        b"# HELP node_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the node in"
        b" core-seconds\n",
        b"# TYPE node_cpu_usage_seconds_total counter\n",
        NCPU_10_2,
        b"# HELP node_memory_working_set_bytes [ALPHA] Current working set of the node in bytes\n",
        b"# TYPE node_memory_working_set_bytes gauge\n",
        NMEM_10_2,
        b"# HELP pod_cpu_usage_seconds_total [ALPHA] Cumulative cpu time consumed by the pod in"
        b" core-seconds\n",
        b"# TYPE pod_cpu_usage_seconds_total counter\n",
        line("pod_cpu_usage_seconds_total", "4.756", T_COREDNS,
             'namespace="kube-system",pod="coredns-558bd4d5db-4dpjz"'),
        b"# HELP pod_memory_working_set_bytes [ALPHA] Current working set of the pod in bytes\n",
        b"# TYPE pod_memory_working_set_bytes gauge\n",
        line("pod_memory_working_set_bytes", "1.2984320e+07", T_COREDNS,
             'namespace="kube-system",pod="coredns-558bd4d5db-4dpjz"'),
        b"# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics,"
        b" 0 otherwise\n",
        b"# TYPE scrape_error gauge\n",
        b"scrape_error 0\n",
    ]
)


def _strip_timestamps(body: bytes) -> bytes:
    out = []
    for ln in body.splitlines(keepends=True):
        parts = ln.split()
        if ln.startswith(b"#") or len(parts) < 3:
            out.append(ln)
        else:
            out.append(b" ".join(parts[:2]) + b"\n")
    return b"".join(out)


NODE1 = NodePoint(T_NODE * MS, 357_354_910_000, 1_616_273_408)
ROW_COREDNS = row(**COREDNS, ts=T_COREDNS * MS, start=START_COREDNS, cpu=4_710_169_000,
                  mem=12_533_760)

SPEC_10_2 = [
    pytest.param(FULL_10_2, Expect(NODE1, (ROW_COREDNS,)), id="full-kubelet-sample"),
    pytest.param(
        _strip_timestamps(FULL_10_2),
        Expect(
            NodePoint(DEFAULT_TS, 357_354_910_000, 1_616_273_408),
            (row(**COREDNS, start=START_COREDNS, cpu=4_710_169_000, mem=12_533_760),),
        ),
        id="no-timestamps-use-default",
    ),
    pytest.param(CPU_10_2 + MEM_10_2 + START_10_2, Expect(None, (ROW_COREDNS,)),
                 id="only-container-lines"),
    pytest.param(MEM_10_2, Expect(dropped_pods=1), id="container-memory-only"),
    pytest.param(c(CPU, "0", T_COREDNS, **COREDNS) + MEM_10_2, Expect(dropped_pods=1),
                 id="container-cpu-0"),
    pytest.param(CPU_10_2, Expect(dropped_pods=1), id="container-cpu-only"),
    pytest.param(CPU_10_2 + c(MEM, "0", T_COREDNS, **COREDNS), Expect(dropped_pods=1),
                 id="container-memory-0"),
    pytest.param(NCPU_10_2 + NMEM_10_2, Expect(NODE1), id="node-only"),
    pytest.param(NMEM_10_2, EMPTY, id="node-memory-only"),
    pytest.param(line(NCPU, "0", T_NODE) + NMEM_10_2, EMPTY, id="node-cpu-0"),
    pytest.param(NCPU_10_2, EMPTY, id="node-cpu-only"),
    pytest.param(NCPU_10_2 + line(NMEM, "0", T_NODE), EMPTY, id="node-memory-0"),
]


@pytest.mark.parametrize(("body", "expect"), SPEC_10_2)
def test_spec_10_2(decoder_cls: type[DecoderPy], body: bytes, expect: Expect) -> None:
    assert_batch(decode(decoder_cls, body), expect)


def test_spec_10_2_negative_start_timestamp(decoder_cls: type[DecoderPy]) -> None:
    bad = c(START, "-6.7953645788713455e+09", -62135596800000, **COREDNS)
    body = START_10_2 + bad
    with pytest.raises(DecodeError) as info:
        decode(decoder_cls, body)
    assert info.value.reason == "negative timestamp"
    assert info.value.offset == body.index(b"-62135596800000")
    assert info.value.lineno == 2


@pytest.mark.parametrize("fmt", ["%f", "%e", "%E"])
@pytest.mark.parametrize("ts", [None, 0, 1633253812125, 9223372036854])
def test_spec_10_2_fuzz_formats_never_fail(
    decoder_cls: type[DecoderPy], fmt: str, ts: int | None
) -> None:
    # decode_test.go fuzzes cpu/mem/start printed with %f/%e/%E and any timestamp >= 0
    for v in (0.0, 1e100, -1e100, -1e-9, 4.710169, 1.633252712e9):
        token = fmt % v
        body = (c(CPU, token, ts, **COREDNS) + c(MEM, token, ts, **COREDNS)
                + c(START, token, ts, **COREDNS) + line(NCPU, token, ts) + line(NMEM, token, ts))
        batch = decode(decoder_cls, body)
        check_batch_shape(batch)
        ok = go_cpu(float(token)) != 0 and go_uint64(float(token)) != 0
        assert (batch.node is not None) == ok
        assert len(batch) == int(ok)
        assert batch.dropped_pods == int(not ok)


def test_spec_10_2_seventy_pods(decoder_cls: type[DecoderPy]) -> None:
    # client test: a 70-pod kind-cluster payload decodes to 1 node and 70 pods
    pods = [(f"ns-{i % 5}", f"pod-{i:02d}", ["app"] if i % 3 else ["app", "sidecar"])
            for i in range(70)]
    body = b""
    for family, value in ((CPU, "1.5"), (MEM, "1.048576e+06"), (START, "1.7e+09")):
        body += f"# HELP {family} [STABLE] x\n# TYPE {family} gauge\n".encode()
        for ns, pod, containers in pods:
            for name in containers:
                ts = None if family == START else 1633253812125
                body += c(family, value, ts, ns=ns, pod=pod, container=name)
    body += NCPU_10_2 + NMEM_10_2 + b"resource_scrape_error 0\n"
    batch = decode(decoder_cls, body)
    check_batch_shape(batch)
    assert batch.node == NODE1
    assert len(set(batch.pod_id.tolist())) == 70
    assert len(batch) == sum(len(p[2]) for p in pods)
    assert set(batch.cpu_nanocore_seconds.tolist()) == {1_500_000_000}
    assert set(batch.memory_bytes.tolist()) == {1_048_576}
    assert set(batch.start_time_ns.tolist()) == {1_700_000_000_000_000_000}


# --------------------------------------------------------------------------------------------
# SPEC §1.4 examples
# --------------------------------------------------------------------------------------------

EXAMPLE_A_ROWS: tuple[Row, ...] = (
    ("kube-system", "coredns-7db6d8ff4d-x2k9p", "coredns", 1767225614129 * MS,
     1767139205512399872, 182_061_236_911, 13_697_024),
    ("default", "web-5d4f8c7b9-q8r2n", "log-shipper", 1767225613210 * MS,
     1767220001100000000, 3_260_570_000, 9_437_184),
    ("default", "web-5d4f8c7b9-q8r2n", "nginx", 1767225613199 * MS,
     1767220000249999872, 41_675_770_002, 25_427_968),
    ("default", "db-0", "postgres", 1767225613512 * MS,
     1767100000000000000, 913_004_550_210, 268_451_840),
    ("default", "db-0", "proxy", 1767225613520 * MS,
     1767225608520000000, 60_012_000, 18_874_368),
    ("default", "batch-job-7kq4t", "worker", 1767225613800 * MS,
     1767225601400000000, 11_562_004_000, 105_369_600),
)
EXAMPLE_A = Expect(NodePoint(1767225612944 * MS, 48_231_889_013_356, 1_721_528_320),
                   EXAMPLE_A_ROWS)


def read_example(name: str) -> bytes:
    return (DATA / f"example_{name}.txt").read_bytes()


def test_example_a(decoder_cls: type[DecoderPy]) -> None:
    assert_batch(decode(decoder_cls, read_example("a")), EXAMPLE_A)


def test_example_b(decoder_cls: type[DecoderPy]) -> None:
    # cart-6f7d9c-8xk2l is dropped whole: its finished init container reports cpu 0, memory 0
    expect = Expect(
        NodePoint(1650974205113 * MS, 264_310_920_773_130, 6_421_028_864),
        (("shop", "session-0", "redis", 1650974209874 * MS, 1_650_900_000_000_000_000,
          95_101_300_000, 33_554_432),),
        dropped_pods=1,
    )
    assert_batch(decode(decoder_cls, read_example("b")), expect)


def test_example_b_prime_negative_timestamp_fails_the_node(decoder_cls: type[DecoderPy]) -> None:
    body = read_example("b")
    good = (b'container_start_time_seconds{container="migrate",namespace="shop",'
            b'pod="cart-6f7d9c-8xk2l"} 1.650960042e+09 1650960042000')
    bad = (b'container_start_time_seconds{container="migrate",namespace="shop",'
           b'pod="cart-6f7d9c-8xk2l"} -6.7953645788713455e+09 -62135596800000')
    assert body.count(good) == 1
    body = body.replace(good, bad)
    with pytest.raises(DecodeError) as info:
        decode(decoder_cls, body)
    e = info.value
    assert (e.reason, e.offset, e.lineno) == (
        "negative timestamp", body.index(b"-62135596800000"), 14)
    assert f"(byte {e.offset}, line 14)" in str(e)


def test_example_c_scrape_error_only(decoder_cls: type[DecoderPy]) -> None:
    body = (
        b"# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container"
        b" metrics, 0 otherwise\n"
        b"# TYPE resource_scrape_error gauge\n"
        b"resource_scrape_error 1\n"
    )
    assert_batch(decode(decoder_cls, body), EMPTY)


EXAMPLE_D_NODE = NodePoint(DEFAULT_TS, 1_500_250_000_000, 2_147_483_648)


def test_example_d(decoder_cls: type[DecoderPy]) -> None:
    # edge/api-0 is dropped (container "helper" has only a start time). Unlike metrics-server,
    # which keys the pod by the raw bytes up to the first quote ("q\"), we unescape: q"uote.
    expect = Expect(
        EXAMPLE_D_NODE,
        (("odd", 'q"uote', "app", DEFAULT_TS, 0, 1_000_000_000, 4096),),
        dropped_pods=1,
    )
    assert_batch(decode(decoder_cls, read_example("d")), expect)


def test_example_d_duplicate_resolves_to_later_value(decoder_cls: type[DecoderPy]) -> None:
    helper = b'container_start_time_seconds{container="helper",namespace="edge",pod="api-0"}'
    body = b"".join(ln for ln in read_example("d").splitlines(keepends=True)
                    if not ln.startswith(helper))
    expect = Expect(
        EXAMPLE_D_NODE,
        (
            ("edge", "api-0", "main", DEFAULT_TS, 0, 12_750_000_000, 52_428_800),
            ("odd", 'q"uote', "app", DEFAULT_TS, 0, 1_000_000_000, 4096),
        ),
    )
    assert_batch(decode(decoder_cls, body), expect)


# --------------------------------------------------------------------------------------------
# SPEC §3.2-3.3, one rule per case
# --------------------------------------------------------------------------------------------

GOOD = c(CPU, "1") + c(MEM, "2")  # container ns/p/c with cpu 1 s and 2 bytes
GOOD_ROW = row(cpu=1_000_000_000, mem=2)
NODE = line(NCPU, "3") + line(NMEM, "4")
NODE_POINT = NodePoint(DEFAULT_TS, 3_000_000_000, 4)

RULES = [
    # --- which families are used, exact names
    pytest.param(b"", EMPTY, id="empty-body"),
    pytest.param(NODE + GOOD, Expect(NODE_POINT, (GOOD_ROW,)), id="node-and-container"),
    pytest.param(
        NODE + GOOD + b"node_cpu_usage_seconds_totalx 5\n"
        + b"xnode_memory_working_set_bytes 5\n"
        + b"node_cpu_usage_seconds_tota 5\n"
        + c("container_cpu_usage_seconds_total_x", "9")
        + c("container_memory_working_set_bytes2", "9")
        + c("container_start_time_second", "9")
        + c("xcontainer_start_time_seconds", "9")
        + c("container_cpu_usage_seconds", "9"),
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="exact-name-match-only",
    ),
    pytest.param(
        NODE + GOOD
        + c("container_swap_usage_bytes", "0") + c("container_swap_limit_bytes", "7")
        + c("container_memory_commit_bytes", "0") + line("node_swap_usage_bytes", "0")
        + line("node_memory_commit_bytes", "0")
        + line("pod_cpu_usage_seconds_total", "0", None, 'namespace="ns",pod="p"')
        + line("pod_memory_working_set_bytes", "0", None, 'namespace="ns",pod="p"')
        + line("pod_swap_usage_bytes", "0", None, 'namespace="ns",pod="p"')
        + b"resource_scrape_error 1\nscrape_error 1\n"
        + c("container_memory_usage_bytes", "0") + line("unknown_family", "NaN", 5)
        + line("unknown_family", "1", None, 'a="b"'),
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="other-families-ignored",
    ),
    pytest.param(
        line(NCPU, "3", None, 'pod="p",namespace="ns",container="c"')
        + line(NMEM, "4", None, "") + GOOD,
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="labels-on-node-samples-ignored",
    ),
    # --- unit conversions (Go uint64(float) truncates)
    pytest.param(
        line(NCPU, "357.35491") + line(NMEM, "1.616273408e+09")
        + c(CPU, "4.710169") + c(MEM, "1.253376e+07"),
        Expect(NodePoint(DEFAULT_TS, 357_354_910_000, 1_616_273_408),
               (row(cpu=4_710_169_000, mem=12_533_760),)),
        id="conversions",
    ),
    pytest.param(
        c(CPU, "8.2") + c(MEM, "1234.99"),
        Expect(None, (row(cpu=8_199_999_999, mem=1234),)),
        id="truncation-toward-zero",
    ),
    pytest.param(
        line(NCPU, "0.0000000009") + line(NMEM, "4"), EMPTY,
        id="node-cpu-below-1ns-truncates-to-0",
    ),
    pytest.param(c(CPU, "1e-10") + c(MEM, "4"), Expect(dropped_pods=1),
                 id="container-cpu-below-1ns-truncates-to-0"),
    pytest.param(c(CPU, "1") + c(MEM, "0.99"), Expect(dropped_pods=1),
                 id="container-memory-below-1-truncates-to-0"),
    # --- last line wins
    pytest.param(
        c(CPU, "1", 1000) + c(MEM, "2", 1000) + c(CPU, "5", 1000) + c(MEM, "6", 1000),
        Expect(None, (row(ts=1000 * MS, cpu=5_000_000_000, mem=6),)),
        id="duplicate-samples-later-wins",
    ),
    pytest.param(
        c(CPU, "1", 1000) + c(MEM, "2", 2000),
        Expect(None, (row(ts=2000 * MS, cpu=1_000_000_000, mem=2),)),
        id="container-ts-from-memory-after-cpu",
    ),
    pytest.param(
        c(MEM, "2", 2000) + c(CPU, "1", 1000),
        Expect(None, (row(ts=1000 * MS, cpu=1_000_000_000, mem=2),)),
        id="container-ts-from-cpu-after-memory",
    ),
    pytest.param(
        c(CPU, "1", 1000) + c(MEM, "2"),
        Expect(None, (row(ts=DEFAULT_TS, cpu=1_000_000_000, mem=2),)),
        id="container-ts-default-when-last-line-has-none",
    ),
    pytest.param(
        line(NCPU, "3", 1000) + line(NMEM, "4", 2000),
        Expect(NodePoint(2000 * MS, 3_000_000_000, 4)),
        id="node-ts-from-memory-after-cpu",
    ),
    pytest.param(
        line(NMEM, "4", 2000) + line(NCPU, "3", 1000),
        Expect(NodePoint(1000 * MS, 3_000_000_000, 4)),
        id="node-ts-from-cpu-after-memory",
    ),
    pytest.param(
        line(NCPU, "3", 1000) + line(NMEM, "4", 2000) + line(NCPU, "7", 1500),
        Expect(NodePoint(1500 * MS, 7_000_000_000, 4)),
        id="node-duplicate-later-wins",
    ),
    pytest.param(
        c(CPU, "1", 1000) + c(MEM, "2", 1000) + c(START, "5", 9999) + c(START, "6", 1),
        Expect(None, (row(ts=1000 * MS, start=6_000_000_000, cpu=1_000_000_000, mem=2),)),
        id="start-time-ts-ignored-later-start-wins",
    ),
    # --- default timestamp, explicit 0, maximum
    pytest.param(
        line(NCPU, "3") + line(NMEM, "4") + c(CPU, "1") + c(MEM, "2"),
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="default-timestamp",
    ),
    pytest.param(
        line(NCPU, "3", 0) + line(NMEM, "4", 0) + c(CPU, "1", 0) + c(MEM, "2", 0),
        Expect(NodePoint(0, 3_000_000_000, 4), (row(ts=0, cpu=1_000_000_000, mem=2),)),
        id="explicit-timestamp-0-kept",
    ),
    pytest.param(
        line(NCPU, "3", 9223372036854) + line(NMEM, "4", 9223372036854),
        Expect(NodePoint(9_223_372_036_854_000_000, 3_000_000_000, 4)),
        id="largest-timestamp",
    ),
    pytest.param(
        line(NCPU, "3", 0) + b"node_memory_working_set_bytes 4 0000000000001\n",
        Expect(NodePoint(1 * MS, 3_000_000_000, 4)),
        id="timestamp-leading-zeros",
    ),
    # --- label order, extra labels, whitespace in blocks
    pytest.param(
        line(CPU, "1", None, 'pod="p",namespace="ns",container="c",extra="x"')
        + line(MEM, "2", None, 'a="1",namespace="ns",b="}",container="c",pod="p",z=""'),
        Expect(None, (GOOD_ROW,)),
        id="label-order-and-extra-labels",
    ),
    pytest.param(
        line(CPU, "1", None, ' pod = "p" ,\tnamespace="ns",container="c", ')
        + CPU.encode() + b' {container="c",namespace="ns",pod="p"}\t2 \n'
        + line(MEM, "2", None, 'container="c",namespace="ns",pod="p",'),
        Expect(None, (row(cpu=2_000_000_000, mem=2),)),
        id="whitespace-and-trailing-comma-in-label-block",
    ),
    # --- escaped label values are unescaped
    pytest.param(
        line(CPU, "1", None, r'container="c\\d",namespace="n\ns",pod="q\"uote"')
        + line(MEM, "2", None, r'pod="q\"uote",container="c\\d",namespace="n\ns"'),
        Expect(None, (row(ns="n\ns", pod='q"uote', container="c\\d", cpu=1_000_000_000,
                          mem=2),)),
        id="escaped-label-values",
    ),
    pytest.param(
        line(CPU, "1", None, r'container="a\tb\\",namespace="ns",pod="p\\\"x"')
        + line(MEM, "2", None, r'container="a\tb\\",namespace="ns",pod="p\\\"x"'),
        Expect(None, (row(pod='p\\"x', container="a\\tb\\", cpu=1_000_000_000, mem=2),)),
        id="unknown-escape-kept-verbatim",
    ),
    pytest.param(
        line(CPU, "1", None, 'container="c",namespace="ns",pod="a b,c=d}{"')
        + line(MEM, "2", None, 'container="c",namespace="ns",pod="a b,c=d}{"')
        + line(CPU, "1", None, 'container="ü€😀",namespace="ns",pod="p"')
        + line(MEM, "2", None, 'container="ü€😀",namespace="ns",pod="p"'),
        Expect(None, (row(pod="a b,c=d}{", cpu=1_000_000_000, mem=2),
                      row(container="ü€😀", cpu=1_000_000_000, mem=2))),
        id="special-characters-and-utf8-in-values",
    ),
    pytest.param(
        line(CPU, "1", None, 'container="",namespace="",pod=""')
        + line(MEM, "2", None, 'container="",namespace="",pod=""'),
        Expect(None, (row(ns="", pod="", container="", cpu=1_000_000_000, mem=2),)),
        id="empty-label-values-are-an-identity",
    ),
    # --- node validation (pods are kept when the node is dropped)
    pytest.param(line(NCPU, "3") + GOOD, Expect(None, (GOOD_ROW,)), id="node-cpu-only-pods-kept"),
    pytest.param(line(NMEM, "4") + GOOD, Expect(None, (GOOD_ROW,)), id="node-mem-only-pods-kept"),
    pytest.param(line(NCPU, "0") + line(NMEM, "4") + GOOD, Expect(None, (GOOD_ROW,)),
                 id="node-cpu-0-pods-kept"),
    pytest.param(line(NCPU, "3") + line(NMEM, "0") + GOOD, Expect(None, (GOOD_ROW,)),
                 id="node-mem-0-pods-kept"),
    # --- pod validation: one bad container drops the whole pod; dropped_pods counts pods
    pytest.param(
        GOOD + c(CPU, "1", container="side") + c(MEM, "0", container="side"),
        Expect(dropped_pods=1), id="container-mem-0-drops-pod",
    ),
    pytest.param(
        GOOD + c(CPU, "0", container="side") + c(MEM, "5", container="side"),
        Expect(dropped_pods=1), id="container-cpu-0-drops-pod",
    ),
    pytest.param(GOOD + c(START, "1.7e9", container="init"), Expect(dropped_pods=1),
                 id="start-time-only-container-drops-pod"),
    pytest.param(GOOD + c(CPU, "1", container="x"), Expect(dropped_pods=1),
                 id="cpu-only-container-drops-pod"),
    pytest.param(GOOD + c(MEM, "1", container="x"), Expect(dropped_pods=1),
                 id="mem-only-container-drops-pod"),
    pytest.param(c(START, "0"), Expect(dropped_pods=1), id="all-zero-container-drops-pod"),
    pytest.param(
        GOOD + c(CPU, "0", container="x") + c(MEM, "0", container="y")
        + c(CPU, "1", pod="q") + c(MEM, "0", pod="q")
        + c(CPU, "1", pod="p", ns="other") + c(MEM, "1", pod="p", ns="other"),
        Expect(None, (row(ns="other", cpu=1_000_000_000, mem=1),), dropped_pods=2),
        id="dropped-pods-counts-pods",
    ),
    pytest.param(
        NODE + c(CPU, "1", pod="a") + c(MEM, "1", pod="a") + c(CPU, "0", pod="b")
        + c(MEM, "1", pod="b") + c(CPU, "2", pod="c") + c(MEM, "2", pod="c"),
        Expect(NODE_POINT, (row(pod="a", cpu=1_000_000_000, mem=1),
                            row(pod="c", cpu=2_000_000_000, mem=2)), dropped_pods=1),
        id="other-pods-kept-in-order-of-appearance",
    ),
    pytest.param(
        c(CPU, "0") + c(MEM, "2") + c(CPU, "1"),
        Expect(None, (GOOD_ROW,)),
        id="zero-overwritten-by-later-line-is-fine",
    ),
    # --- non-finite and negative values drop the entity, no crash
    pytest.param(line(NCPU, "NaN") + line(NMEM, "4") + GOOD, Expect(None, (GOOD_ROW,)),
                 id="node-cpu-nan"),
    pytest.param(line(NCPU, "3") + line(NMEM, "+Inf") + GOOD, Expect(None, (GOOD_ROW,)),
                 id="node-mem-inf"),
    pytest.param(line(NCPU, "-1") + line(NMEM, "4"), EMPTY, id="node-cpu-negative"),
    pytest.param(line(NCPU, "3") + line(NMEM, "-Inf"), EMPTY, id="node-mem-negative-inf"),
    pytest.param(NODE + c(CPU, "NaN") + c(MEM, "2"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-cpu-nan"),
    pytest.param(NODE + c(CPU, "+Inf") + c(MEM, "2"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-cpu-inf"),
    pytest.param(NODE + c(CPU, "1") + c(MEM, "-Inf"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-mem-negative-inf"),
    pytest.param(NODE + c(CPU, "-0.5") + c(MEM, "2"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-cpu-negative"),
    pytest.param(NODE + c(CPU, "1") + c(MEM, "-2"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-mem-negative"),
    pytest.param(NODE + c(CPU, "1") + c(MEM, "-0"), Expect(NODE_POINT, dropped_pods=1),
                 id="container-mem-negative-zero"),
    pytest.param(NODE + c(CPU, "1") + c(MEM, "1.8446744073709552e19"),
                 Expect(NODE_POINT, dropped_pods=1), id="container-mem-2-to-the-64"),
    pytest.param(NODE + c(CPU, "2e10") + c(MEM, "2"),
                 Expect(NODE_POINT, dropped_pods=1), id="container-cpu-ns-beyond-uint64"),
    pytest.param(GOOD + c(START, "NaN"), Expect(None, (GOOD_ROW,)), id="start-nan-is-0"),
    pytest.param(GOOD + c(START, "+Inf"), Expect(None, (GOOD_ROW,)), id="start-inf-is-0"),
    pytest.param(GOOD + c(START, "-Inf"), Expect(None, (GOOD_ROW,)), id="start-neg-inf-is-0"),
    pytest.param(GOOD + c(START, "1e300"), Expect(None, (GOOD_ROW,)), id="start-huge-is-0"),
    pytest.param(
        GOOD + c(START, "-1.5"),
        Expect(None, (row(start=-1_500_000_000, cpu=1_000_000_000, mem=2),)),
        id="start-negative-kept",
    ),
    # --- container series missing a label: the sample is skipped and counted
    pytest.param(
        GOOD
        + line(CPU, "5", None, 'container="c",namespace="ns"')
        + line(MEM, "5", None, 'container="c",pod="p"')
        + line(START, "5", None, 'namespace="ns",pod="p"')
        + line(CPU, "5")
        + line(MEM, "5", None, "")
        + line(CPU, "5", None, 'Container="c",namespace="ns",pod="p"')
        + line(CPU, "5", None, 'podx="p",namespace="ns",container="c"'),
        Expect(None, (GOOD_ROW,), skipped_samples=7),
        id="missing-labels-skipped",
    ),
    pytest.param(
        line(CPU, "5", None, 'container="c",namespace="ns"') + line(NCPU, "1")
        + line("pod_cpu_usage_seconds_total", "1", None, 'namespace="ns",pod="p"'),
        Expect(skipped_samples=1),
        id="only-container-families-count-as-skipped",
    ),
    # --- exposition format
    pytest.param(
        b"# HELP node_cpu_usage_seconds_total [STABLE] help with \\\\ and \\n and {\"}\n"
        b"# TYPE node_cpu_usage_seconds_total counter\n"
        b"# HELP x\n# HELP x \n#HELP\n#\n#  \n# TYPEx garbage\n# HELPER 1\n"
        b"# just a comment \xff\xfe with {\"unbalanced\n"
        b"   # indented comment\n"
        b"# TYPE a gauge\n# TYPE b histogram\n# TYPE c summary\n# TYPE d untyped\n"
        b"#\tTYPE e counter\t\n"
        + NODE + GOOD,
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="comments-help-type",
    ),
    pytest.param(
        b"\n\n   \n\t\n" + line(NCPU, "3") + b" \t \n\n" + line(NMEM, "4") + b"\n" + GOOD
        + b"\n \n",
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="blank-and-whitespace-only-lines",
    ),
    pytest.param(
        (b"# HELP h x\n" + NODE + c(CPU, "1", 5) + c(MEM, "2")).replace(b"\n", b"\r\n")
        + b"\r\n",
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="crlf-line-ends",
    ),
    pytest.param(NODE + GOOD.rstrip(b"\n"), Expect(NODE_POINT, (GOOD_ROW,)),
                 id="no-trailing-newline"),
    pytest.param(NODE + GOOD.rstrip(b"\n") + b"\r", Expect(NODE_POINT, (GOOD_ROW,)),
                 id="no-trailing-newline-cr"),
    pytest.param(
        NODE + c(CPU, "1", 7000).replace(b" 7000", b" \t 7000 \t")
        + b"\t " + c(MEM, "2", 7000).replace(b"} ", b"}\t\t"),
        Expect(NODE_POINT, (row(ts=7000 * MS, cpu=1_000_000_000, mem=2),)),
        id="tabs-and-extra-spaces",
    ),
    pytest.param(
        line(NCPU, "1.5e+09") + line(NMEM, "1E3") + c(CPU, ".5") + c(MEM, "5."),
        Expect(NodePoint(DEFAULT_TS, 1_500_000_000_000_000_000, 1000),
               (row(cpu=500_000_000, mem=5),)),
        id="float-forms",
    ),
    pytest.param(
        line(NCPU, "+3") + line(NMEM, "0004e0") + c(CPU, "1.0E-0") + c(MEM, "2e+0"),
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="float-forms-signs-and-zeros",
    ),
    pytest.param(
        line("a", "+Inf") + line("a", "-Inf") + line("a", "NaN") + line("a", "inf")
        + line("a", "Infinity") + line("a", "-infinity") + line("a", "nan") + line("a", "-NaN")
        + line("a", "+iNf") + NODE + GOOD,
        Expect(NODE_POINT, (GOOD_ROW,)),
        id="special-float-forms",
    ),
]


@pytest.mark.parametrize(("body", "expect"), RULES)
def test_rules(decoder_cls: type[DecoderPy], body: bytes, expect: Expect) -> None:
    assert_batch(decode(decoder_cls, body), expect)


# --------------------------------------------------------------------------------------------
# Value tokens: conversions match Python's float() and Go's integer conversions
# --------------------------------------------------------------------------------------------

TWO_64 = 2**64
TWO_63 = 2**63


def go_cpu(v: float) -> int:
    x = v * 1e9
    return int(x) if 0 <= x < TWO_64 else 0


def go_uint64(v: float) -> int:
    return int(v) if 0 <= v < TWO_64 else 0


def go_start(v: float) -> int:
    x = v * 1e9
    return int(x) if -TWO_63 <= x < TWO_63 else 0


PI = "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899863"

VALUE_TOKENS = [
    "4.710169", "182.061236911", "1.253376e+07", "8.2", "1.005", "0.060012",
    "1.7672200002499998e+09", "1.7671392055124e+09", "48231.889013356", "1.72152832e+09",
    "9007199254740993", "9007199254740993.0", "9007199254740995", "18446744073709549568",
    "18446744073709551615",
    "18446744073709551616", "9223372036854775807", "1e19", "1.8446744073709551e19",
    "2.2250738585072011e-308", "4.9e-324", "2.4703282292062328e-324", "1.7976931348623157e308",
    "1.7976931348623159e308", "1e309", "1e-400", "123456789012345678901234567890",
    "0.1", "0.3", "1e22", "1e23", "9.999999999999999e22", "123456789e-30", "1e-22", "1e-23",
    "0.000001", "1e-9", "1.9e-9", "0.0000000019", "1.0000000000000002", "0.9999999999999999",
    "1.00000000000000011102230246251565404236316680908203125",
    "1.00000000000000011102230246251565404236316680908203126",
    "00000000000000000000000000000000000000000000000000000000000000012.5",
    "12.50000000000000000000000000000000000000000000000000000000000000000000",
    "0." + "0" * 100 + "1",
    "0." + "0" * 100 + "1e+110",
    "1" + "0" * 80 + "e-71",
    "." + "0" * 120 + "5e121",
    "1e99999999999", "1e-99999999999", "0e99999999999",
    *(PI[:n] for n in (20, 21, 22, 23, 24, 25, 62, 63, 64, 65, 66, 80)),
    *(PI[:n] + "e+05" for n in (59, 60, 61, 62)),
]


@pytest.mark.parametrize("token", VALUE_TOKENS, ids=lambda t: t if len(t) < 30 else f"len{len(t)}")
def test_value_token_matches_python_float(decoder_cls: type[DecoderPy], token: str) -> None:
    v = float(token)
    cpu, mem, start = go_cpu(v), go_uint64(v), go_start(v)
    body = (c(CPU, token, 1) + c(MEM, token, 1) + c(START, token)
            + c(CPU, token, 1, container="x") + c(MEM, "1", 1, container="x")
            + c(START, token, None, container="x") + line(NCPU, token) + line(NMEM, token))
    batch = decode(decoder_cls, body)
    check_batch_shape(batch)
    expect_node = NodePoint(DEFAULT_TS, cpu, mem) if cpu and mem else None
    assert batch.node == expect_node
    if cpu and mem:
        assert batch.containers() == [
            row(ts=MS, start=start, cpu=cpu, mem=mem),
            row(container="x", ts=MS, start=start, cpu=cpu, mem=1),
        ]
    else:
        assert len(batch) == 0
        assert batch.dropped_pods == 1
    # the start time alone, kept in a good pod
    batch = decode(decoder_cls, GOOD + c(START, token))
    assert batch.containers() == [row(start=start, cpu=1_000_000_000, mem=2)]


CONVERSIONS = [
    # (family, token, expected integer in the batch)
    (CPU, "4.710169", 4_710_169_000),
    (CPU, "182.061236911", 182_061_236_911),
    (CPU, "8.2", 8_199_999_999),
    (CPU, "1.005", 1_004_999_999),
    (CPU, ".5", 500_000_000),
    (CPU, "0.0000000019", 1),
    (CPU, "1e10", 10_000_000_000_000_000_000),
    (CPU, "0." + "0" * 100 + "1e+101", 1_000_000_000),
    (CPU, PI[:70], 3_141_592_653),
    (MEM, "1.253376e+07", 12_533_760),
    (MEM, "1.5e+09", 1_500_000_000),
    (MEM, "1E3", 1000),
    (MEM, "5.", 5),
    (MEM, "9007199254740993", 9_007_199_254_740_992),
    (MEM, "18446744073709549568", 18_446_744_073_709_549_568),
    (MEM, "0." + "0" * 100 + "1e+110", 1_000_000_000),
    (START, "1.7672200002499998e+09", 1_767_220_000_249_999_872),
    (START, "1.633252712e+09", 1_633_252_712_000_000_000),
    (START, "9.2233720368547748e9", 9_223_372_036_854_774_784),
    (START, "9.2233720368547758e9", 0),
    (START, "-9.2233720368547758e9", -9_223_372_036_854_775_808),
    (START, "NaN", 0),
    (START, "0." + "0" * 100 + "1", 0),
]


@pytest.mark.parametrize(("family", "token", "expected"), CONVERSIONS)
def test_conversion_literals(
    decoder_cls: type[DecoderPy], family: str, token: str, expected: int
) -> None:
    body = b"".join(c(f, token if f == family else "1") for f in (CPU, MEM, START))
    (got,) = decode(decoder_cls, body).containers()
    index = {START: 4, CPU: 5, MEM: 6}[family]
    assert got[index] == expected


def test_long_value_token(decoder_cls: type[DecoderPy]) -> None:
    token = "0." + "0" * 100 + "1"
    assert len(token) > 64
    body = c(CPU, "1") + c(MEM, "2") + c(START, token) + line(NMEM, token) + line(NCPU, "1")
    batch = decode(decoder_cls, body)
    assert batch.containers() == [GOOD_ROW]
    assert batch.node is None  # 1e-101 bytes truncates to 0
    big = "1" + "0" * 100
    batch = decode(decoder_cls, line(NMEM, big) + line(NCPU, "1"))
    assert batch.node is None  # 1e100 bytes does not fit in uint64


# --------------------------------------------------------------------------------------------
# Grammar errors: reason, byte offset and line
# --------------------------------------------------------------------------------------------

R = _grammar.REASONS
TWO_LINES = b"node_cpu_usage_seconds_total 1\n"  # 31 bytes; line 2 starts at offset 31

ERRORS = [
    # invalid metric name
    pytest.param(b"1foo 1\n", R[_grammar.R_METRIC_NAME], 0, 1, id="name-starts-with-digit"),
    pytest.param(b"foo-bar 1\n", R[_grammar.R_METRIC_NAME], 3, 1, id="name-bad-char"),
    pytest.param(b'  {a="b"} 1\n', R[_grammar.R_METRIC_NAME], 2, 1, id="no-name"),
    pytest.param(b"\xc3\xa9 1\n", R[_grammar.R_METRIC_NAME], 0, 1, id="name-non-ascii"),
    pytest.param(b"# HELP foo{x} doc\n", R[_grammar.R_METRIC_NAME], 10, 1, id="help-name-bad"),
    pytest.param(b"# TYPE foo.bar gauge\n", R[_grammar.R_METRIC_NAME], 10, 1,
                 id="type-name-bad"),
    # missing sample value
    pytest.param(b"foo\n", R[_grammar.R_MISSING_VALUE], 3, 1, id="no-value"),
    pytest.param(b"foo   \n", R[_grammar.R_MISSING_VALUE], 6, 1, id="no-value-trailing-ws"),
    pytest.param(b'foo{a="b"}\n', R[_grammar.R_MISSING_VALUE], 10, 1, id="no-value-after-block"),
    pytest.param(b"foo{}", R[_grammar.R_MISSING_VALUE], 5, 1, id="no-value-at-eof"),
    pytest.param(TWO_LINES + b"foo \r\n", R[_grammar.R_MISSING_VALUE], 35, 2, id="no-value-crlf"),
    # invalid sample value
    pytest.param(b"foo abc\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-word"),
    pytest.param(b"foo 1.2.3\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-two-dots"),
    pytest.param(b"foo 1e\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-empty-exponent"),
    pytest.param(b"foo 1e+\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-signed-empty-exponent"),
    pytest.param(b"foo .\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-dot"),
    pytest.param(b"foo -\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-sign"),
    pytest.param(b"foo --1\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-double-sign"),
    pytest.param(b"foo 0x10\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-hex"),
    pytest.param(b"foo 1,5\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-decimal-comma"),
    pytest.param(b"foo 1_000\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-underscore"),
    pytest.param(b"foo infinit\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-infinit"),
    pytest.param(b"foo nan1\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-nan1"),
    pytest.param(b"foo e5\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-exponent-only"),
    pytest.param(b'foo{a="b"} 1{\n', R[_grammar.R_BAD_VALUE], 11, 1, id="value-brace"),
    pytest.param(b'foo {a="b"}\t\tx 1\n', R[_grammar.R_BAD_VALUE], 13, 1,
                 id="value-after-tabs"),
    pytest.param(TWO_LINES + c(CPU, "1.2.3"), R[_grammar.R_BAD_VALUE],
                 31 + len(c(CPU, "1")) - 2, 2, id="value-bad-on-container-line"),
    pytest.param(b"foo 1\xa0\n", R[_grammar.R_BAD_VALUE], 4, 1, id="value-nbsp"),
    # negative timestamp
    pytest.param(b"foo 1 -5\n", R[_grammar.R_NEGATIVE_TIMESTAMP], 6, 1, id="ts-negative"),
    pytest.param(TWO_LINES + c(START, "-6.7953645788713455e+09", -62135596800000),
                 R[_grammar.R_NEGATIVE_TIMESTAMP],
                 31 + len(c(START, "-6.7953645788713455e+09")), 2, id="ts-negative-go-zero"),
    # invalid timestamp
    pytest.param(b"foo 1 1.5\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-float"),
    pytest.param(b"foo 1 1e3\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-exponent"),
    pytest.param(b"foo 1 12a\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-letter"),
    pytest.param(b"foo 1 -\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-minus"),
    pytest.param(b"foo 1 -1x\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-minus-garbage"),
    pytest.param(b"foo 1 +5\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-plus"),
    pytest.param(b"foo 1 NaN\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-nan"),
    pytest.param(b"foo 1 5\r5\n", R[_grammar.R_BAD_TIMESTAMP], 6, 1, id="ts-inner-cr"),
    # timestamp out of range
    pytest.param(b"foo 1 9223372036855\n", R[_grammar.R_TIMESTAMP_RANGE], 6, 1, id="ts-max+1"),
    pytest.param(b"foo 1 " + b"9" * 40 + b"\n", R[_grammar.R_TIMESTAMP_RANGE], 6, 1,
                 id="ts-40-digits"),
    pytest.param(b"foo 1 18446744073709551617\n", R[_grammar.R_TIMESTAMP_RANGE], 6, 1,
                 id="ts-beyond-uint64"),
    # unexpected text after the timestamp
    pytest.param(b"foo 1 2 3\n", R[_grammar.R_TRAILING], 8, 1, id="trailing-token"),
    pytest.param(b"foo 1 2 \t# comment\n", R[_grammar.R_TRAILING], 9, 1,
                 id="trailing-comment"),
    pytest.param(b"foo 1 2 x 3\r\n", R[_grammar.R_TRAILING], 8, 1, id="trailing-crlf"),
    # expected whitespace before the sample value
    pytest.param(b'foo{a="b"}1\n', R[_grammar.R_VALUE_SEPARATOR], 10, 1, id="no-space-after-block"),
    pytest.param(b'foo{a="b"}{c="d"} 1\n', R[_grammar.R_VALUE_SEPARATOR], 10, 1,
                 id="two-blocks"),
    # HELP / TYPE
    pytest.param(b"# HELP \n", R[_grammar.R_HELP_NAME], 7, 1, id="help-no-name-ws"),
    pytest.param(b"# HELP 1x doc\n", R[_grammar.R_HELP_NAME], 7, 1, id="help-name-digit"),
    pytest.param(b"# TYPE \n", R[_grammar.R_TYPE_NAME], 7, 1, id="type-no-name"),
    pytest.param(b"#  TYPE  {x} gauge\n", R[_grammar.R_TYPE_NAME], 9, 1, id="type-name-brace"),
    pytest.param(b"# TYPE foo\n", R[_grammar.R_TYPE_MISSING], 10, 1, id="type-missing"),
    pytest.param(b"# TYPE foo \t \r\n", R[_grammar.R_TYPE_MISSING], 13, 1,
                 id="type-missing-ws-crlf"),
    pytest.param(b"# TYPE foo Counter\n", R[_grammar.R_TYPE_INVALID], 11, 1, id="type-case"),
    pytest.param(b"# TYPE foo gauges\n", R[_grammar.R_TYPE_INVALID], 11, 1, id="type-gauges"),
    pytest.param(b"# TYPE foo gaugehistogram\n", R[_grammar.R_TYPE_INVALID], 11, 1,
                 id="type-gaugehistogram"),
    pytest.param(b"# TYPE foo gauge x\n", R[_grammar.R_TYPE_TRAILING], 17, 1,
                 id="type-trailing"),
    pytest.param(b"# TYPE foo gauge\tgauge \n", R[_grammar.R_TYPE_TRAILING], 17, 1,
                 id="type-trailing-tab"),
    # label block
    pytest.param(b'foo{1="x"} 1\n', R[_grammar.R_LABEL_NAME], 4, 1, id="label-name-digit"),
    pytest.param(b"foo{,} 1\n", R[_grammar.R_LABEL_NAME], 4, 1, id="label-leading-comma"),
    pytest.param(b'foo{a="b",,} 1\n', R[_grammar.R_LABEL_NAME], 10, 1, id="label-double-comma"),
    pytest.param(b"foo{\n", R[_grammar.R_LABEL_NAME], 4, 1, id="label-block-open-at-eol"),
    pytest.param(b'foo{a:b="c"} 1\n', R[_grammar.R_LABEL_EQUALS], 5, 1, id="label-name-colon"),
    pytest.param(b"foo{a} 1\n", R[_grammar.R_LABEL_EQUALS], 5, 1, id="label-no-equals"),
    pytest.param(b"foo{a b} 1\n", R[_grammar.R_LABEL_EQUALS], 6, 1, id="label-space-no-equals"),
    pytest.param(b"foo{a=b} 1\n", R[_grammar.R_LABEL_QUOTE], 6, 1, id="label-unquoted"),
    pytest.param(b"foo{a='b'} 1\n", R[_grammar.R_LABEL_QUOTE], 6, 1, id="label-single-quote"),
    pytest.param(b"foo{a=} 1\n", R[_grammar.R_LABEL_QUOTE], 6, 1, id="label-empty-value"),
    pytest.param(b'foo{a="b} 1\n', R[_grammar.R_LABEL_UNTERMINATED], 11, 1,
                 id="label-unterminated"),
    pytest.param(b'foo{a="b\\"} 1\r\n', R[_grammar.R_LABEL_UNTERMINATED], 13, 1,
                 id="label-escaped-quote-unterminated"),
    pytest.param(b'foo{a="b\\', R[_grammar.R_LABEL_UNTERMINATED], 9, 1,
                 id="label-trailing-backslash-at-eof"),
    pytest.param(b'foo{a="b\\\nfoo 1\n', R[_grammar.R_LABEL_UNTERMINATED], 9, 1,
                 id="label-backslash-before-newline"),
    pytest.param(b'foo{a="b" c="d"} 1\n', R[_grammar.R_LABEL_SEPARATOR], 10, 1,
                 id="label-no-comma"),
    pytest.param(b'foo{a="b";c="d"} 1\n', R[_grammar.R_LABEL_SEPARATOR], 9, 1,
                 id="label-semicolon"),
    pytest.param(b'foo{a="b"', R[_grammar.R_LABEL_SEPARATOR], 9, 1, id="label-block-not-closed"),
    pytest.param(b'foo{a="\xff"} 1\n', R[_grammar.R_LABEL_UTF8], 7, 1, id="label-not-utf8"),
    pytest.param(TWO_LINES + b'foo{a="ok",b="x\xc3"} 1\n', R[_grammar.R_LABEL_UTF8], 31 + 14,
                 2, id="label-truncated-utf8"),
    pytest.param(b'foo{a="\\\xed\xa0\x80"} 1\n', R[_grammar.R_LABEL_UTF8], 7, 1,
                 id="label-surrogate-utf8"),
    # errors come from the first bad line, on any line
    pytest.param(TWO_LINES * 3 + b"\n# c\nfoo 1 -1\nbar x\n", R[_grammar.R_NEGATIVE_TIMESTAMP],
                 93 + 1 + 4 + 6, 6, id="first-error-wins"),
    pytest.param(GOOD + GOOD + b"x y\n", R[_grammar.R_BAD_VALUE], 2 * len(GOOD) + 2, 5,
                 id="error-after-cached-blocks"),
]


def check_excerpt(body: bytes, e: DecodeError) -> None:
    """The excerpt is the bad line and a caret under the offending byte."""
    text, caret = e.excerpt.split("\n")
    assert text.startswith("  ")
    assert caret.strip() == "^"
    line_start = body.rfind(b"\n", 0, e.offset) + 1
    nl = body.find(b"\n", e.offset)
    raw = body[line_start : len(body) if nl < 0 else nl]
    if len(raw) <= 60 and raw.isascii():
        assert text == "  " + raw.decode().replace("\r", "\\r").replace("\t", " ")
        before = body[line_start : e.offset].decode().replace("\r", "\\r")
        assert caret == "  " + " " * len(before) + "^"


@pytest.mark.parametrize(("body", "reason", "offset", "lineno"), ERRORS)
def test_errors(
    decoder_cls: type[DecoderPy], body: bytes, reason: str, offset: int, lineno: int
) -> None:
    with pytest.raises(DecodeError) as info:
        decode(decoder_cls, body)
    e = info.value
    assert type(e) is DecodeError
    assert isinstance(e, ValueError)
    assert isinstance(e, FastMetricsError)
    assert (e.reason, e.offset, e.lineno) == (reason, offset, lineno)
    assert e.lineno == body.count(b"\n", 0, e.offset) + 1
    head = f"kubelet metrics malformed: {reason} (byte {offset}, line {lineno})\n"
    assert str(e).startswith(head)
    assert str(e).endswith(e.excerpt)
    check_excerpt(body, e)
    assert e.__cause__ is None
    assert e.__context__ is None or e.__suppress_context__  # no internal exception leaks


def test_every_reason_is_covered() -> None:
    covered = {p.values[1] for p in ERRORS}
    assert covered == set(R[1:])


def test_error_excerpt_exact(decoder_cls: type[DecoderPy]) -> None:
    body = TWO_LINES + b"foo\t1 -5\r\nbar 1\n"
    with pytest.raises(DecodeError) as info:
        decode(decoder_cls, body)
    e = info.value
    assert (e.offset, e.lineno) == (37, 2)
    assert e.excerpt == "  foo 1 -5\\r\n        ^"
    assert str(e) == (
        "kubelet metrics malformed: negative timestamp (byte 37, line 2)\n"
        "  foo 1 -5\\r\n"
        "        ^"
    )


def test_error_excerpt_long_line(decoder_cls: type[DecoderPy]) -> None:
    body = b"foo_" + b"a" * 300 + b" 1 2 x" + b" y" * 100 + b"\n"
    with pytest.raises(DecodeError) as info:
        decode(decoder_cls, body)
    e = info.value
    assert (e.reason, e.offset) == ("unexpected text after the timestamp", 309)
    text, caret = e.excerpt.split("\n")
    assert text.startswith("  ...") and text.endswith("...")
    assert len(text) <= 2 + 3 + 120 + 3
    assert text[caret.index("^")] == "x"


NASTY = [
    b"\x00", b"\r", b"\r\n\r\n", b"{", b'"', b"}", b"#", b"# ", b"#\r\n", b"\xff\xfe", b"\n" * 5,
    b"  \t  ", b"a", b"a{", b'a{b="', b'a{b="\\', b"a 1 ", b"a 1 1 ", b"a\x00 1", b"a 1\x00",
    b"a 1 1\x00", b"\x0b", b"a\x0b1", b"a{}1", b"a{} 1 1", b'a{b=""} 1', b"a{b=\"\"}\r1",
    b"# HELP a\x00", b"# TYPE a gauge\x00", b"\r\r\n", b"a \r1", b"a 1\r\r\n",
    b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1 1 1',
    b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"',
    b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"}',
    b"node_cpu_usage_seconds_total",
    b"node_cpu_usage_seconds_total ",
    b"node_cpu_usage_seconds_total 1e",
]


@pytest.mark.parametrize("body", NASTY, ids=repr)
def test_nasty_inputs_give_a_batch_or_decode_error(
    decoder_cls: type[DecoderPy], body: bytes
) -> None:
    try:
        batch = decode(decoder_cls, body)
    except DecodeError as e:
        assert 0 <= e.offset <= len(body)
        assert e.reason in R[1:]
        check_excerpt(body, e)
    else:
        check_batch_shape(batch)


# --------------------------------------------------------------------------------------------
# The API around decode
# --------------------------------------------------------------------------------------------


def test_module_level_decode() -> None:
    batch = fastmetrics.decode(FULL_10_2, default_timestamp_ns=DEFAULT_TS)
    assert_batch(batch, Expect(NODE1, (ROW_COREDNS,)))
    batch = fastmetrics.decode(NODE + GOOD, default_timestamp_ns=123)
    assert batch.node == NodePoint(123, 3_000_000_000, 4)
    assert batch.containers() == [row(ts=123, cpu=1_000_000_000, mem=2)]
    with pytest.raises(TypeError):
        fastmetrics.decode(NODE, 123)  # type: ignore[misc]
    with pytest.raises(DecodeError):
        fastmetrics.decode(b"x y", default_timestamp_ns=0)


def test_decoder_is_one_of_the_two() -> None:
    from fastmetrics.decode import Decoder, DecoderC

    assert Decoder in (DecoderPy, DecoderC)
    assert fastmetrics.Decoder is Decoder


@pytest.mark.parametrize("ts", [1.5, 1e18, "5", None, b"1", np.float64(1.0)])
def test_default_timestamp_must_be_an_int(decoder_cls: type[DecoderPy], ts: object) -> None:
    with pytest.raises(TypeError):
        decoder_cls().decode(NODE + GOOD, ts)  # type: ignore[arg-type]


@pytest.mark.parametrize("ts", [2**63, -(2**63) - 1, 2**64])
def test_default_timestamp_must_fit_int64(decoder_cls: type[DecoderPy], ts: int) -> None:
    with pytest.raises(OverflowError):
        decoder_cls().decode(NODE + GOOD, ts)


@pytest.mark.parametrize("ts", [0, -1, 2**63 - 1, -(2**63), np.int64(7), True])
def test_default_timestamp_int_like(decoder_cls: type[DecoderPy], ts: int) -> None:
    batch = decoder_cls().decode(NODE + GOOD, ts)
    assert batch.node is not None
    assert batch.node.timestamp_ns == int(ts)
    assert type(batch.node.timestamp_ns) is int
    assert batch.timestamp_ns.tolist() == [int(ts)]


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b))])
def test_body_types(decoder_cls: type[DecoderPy], wrap: object) -> None:
    batch = decoder_cls().decode(wrap(FULL_10_2), DEFAULT_TS)  # type: ignore[operator]
    assert_batch(batch, Expect(NODE1, (ROW_COREDNS,)))


def test_body_str_is_rejected(decoder_cls: type[DecoderPy]) -> None:
    with pytest.raises(TypeError):
        decoder_cls().decode(FULL_10_2.decode(), DEFAULT_TS)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Reusing a decoder: interned keys, the label-block cache and its prediction
# --------------------------------------------------------------------------------------------


def snapshot(batch: DecodedBatch) -> tuple[object, ...]:
    return (
        batch.node,
        batch.key_id.tolist(),
        batch.pod_id.tolist(),
        batch.containers(),
        batch.dropped_pods,
        batch.skipped_samples,
    )


def test_reuse_same_body_gives_same_result(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    body = read_example("a")
    first = decoder.decode(body, DEFAULT_TS)
    n_keys, n_pods = len(decoder.keys), decoder.keys.pod_count
    assert (n_keys, n_pods) == (6, 4)
    first_snapshot = snapshot(first)
    for _ in range(3):
        again = decoder.decode(body, DEFAULT_TS)
        assert snapshot(again) == first_snapshot
        assert (len(decoder.keys), decoder.keys.pod_count) == (n_keys, n_pods)
        assert again.keys is decoder.keys is first.keys
    assert snapshot(first) == first_snapshot  # earlier batches are not mutated
    assert_batch(first, EXAMPLE_A)


def _example_a_first_scrape() -> bytes:
    # SPEC §1.4: the scrape 15 s before Example A (batch-job absent, proxy started earlier)
    containers = [
        ("kube-system", "coredns-7db6d8ff4d-x2k9p", "coredns", "182.003911482", "1.3631488e+07",
         1767225599104, "1.7671392055124e+09"),
        ("default", "web-5d4f8c7b9-q8r2n", "log-shipper", "3.21557", "9.437184e+06",
         1767225598230, "1.7672200011e+09"),
        ("default", "web-5d4f8c7b9-q8r2n", "nginx", "40.913220001", "2.5165824e+07",
         1767225598222, "1.7672200002499998e+09"),
        ("default", "db-0", "postgres", "911.20455021", "2.68447744e+08", 1767225598498,
         "1.7671e+09"),
        ("default", "db-0", "proxy", "12.00734", "2.097152e+07", 1767225598501,
         "1.76709999e+09"),
    ]
    body = b""
    for family, index in ((CPU, 3), (MEM, 4), (START, 6)):
        for ctr in containers:
            ns, pod, name = ctr[:3]
            ts = None if family == START else ctr[5]
            body += c(family, str(ctr[index]), ts, ns=ns, pod=pod, container=name)
    return (body + line(NCPU, "48213.551234567", 1767225597931)
            + line(NMEM, "1.718063104e+09", 1767225597931))


def test_reuse_new_pod_gets_new_id_old_ids_stay(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    first = decoder.decode(_example_a_first_scrape(), DEFAULT_TS)
    assert first.node == NodePoint(1767225597931 * MS, 48_213_551_234_567, 1_718_063_104)
    assert [r[:3] for r in first.containers()] == [r[:3] for r in EXAMPLE_A_ROWS[:5]]
    assert first.containers()[4][4] == 1_767_099_990_000_000_000  # proxy's first start
    ids = {decoder.keys.key(k): k for k in first.key_id.tolist()}
    assert sorted(ids.values()) == [0, 1, 2, 3, 4]
    assert decoder.keys.pod_count == 3

    second = decoder.decode(read_example("a"), DEFAULT_TS)
    assert_batch(second, EXAMPLE_A)
    for k in second.key_id.tolist():
        ident = decoder.keys.key(k)
        if ident[1] == "batch-job-7kq4t":
            assert k == 5
        else:
            assert ids[ident] == k
    assert second.pod_id.tolist()[-1] == 3
    assert (len(decoder.keys), decoder.keys.pod_count) == (6, 4)
    # and back: the pod disappears, its id stays reserved
    third = decoder.decode(_example_a_first_scrape(), DEFAULT_TS)
    assert snapshot(third) == snapshot(first)
    assert len(decoder.keys) == 6


def test_reuse_label_order_change_same_identity(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    a = decoder.decode(GOOD, DEFAULT_TS)
    other = (line(MEM, "2", None, 'pod="p",container="c",namespace="ns"')
             + line(CPU, "1", None, 'namespace="ns", pod="p",container="c"'))
    b = decoder.decode(other, DEFAULT_TS)
    assert snapshot(a) == snapshot(b)
    assert len(decoder.keys) == 1


def test_reuse_after_error(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    body = read_example("a")
    good = snapshot(decoder.decode(body, DEFAULT_TS))
    lines = body.splitlines(keepends=True)
    for cut in (3, 10, 30, len(lines) - 1):
        bad = b"".join(lines[:cut]) + b"broken{ 1\n" + b"".join(lines[cut:])
        with pytest.raises(DecodeError):
            decoder.decode(bad, DEFAULT_TS)
        assert snapshot(decoder.decode(body, DEFAULT_TS)) == good
    # an error on a line whose label block is new: the key is interned, results unaffected
    with pytest.raises(DecodeError):
        decoder.decode(c(CPU, "x", pod="new"), DEFAULT_TS)
    assert snapshot(decoder.decode(body, DEFAULT_TS)) == good


def test_reuse_reordered_lines(decoder_cls: type[DecoderPy], rand: random.Random) -> None:
    body = read_example("a")
    decoder = decoder_cls()
    decoder.decode(body, DEFAULT_TS)
    samples = [ln for ln in body.splitlines(keepends=True) if not ln.startswith(b"#")]
    for _ in range(5):
        rand.shuffle(samples)
        shuffled = b"".join(samples)
        fresh = decoder_cls().decode(shuffled, DEFAULT_TS)
        got = snapshot(decoder.decode(shuffled, DEFAULT_TS))
        assert (got[0], *got[3:]) == (fresh.node, *snapshot(fresh)[3:]), rand


def test_reuse_start_time_cache(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()

    def start_of(token: str, ts: str = "") -> int:
        body = GOOD + line(START, token, None, 'container="c",namespace="ns",pod="p"').replace(
            b"\n", ts.encode() + b"\n")
        (r,) = decoder.decode(body, DEFAULT_TS).containers()
        return r[4]

    assert start_of("1.7e9") == 1_700_000_000_000_000_000
    assert start_of("1.7e9") == 1_700_000_000_000_000_000
    assert start_of("1.8e9") == 1_800_000_000_000_000_000
    assert start_of("1.7e9", " 5") == 1_700_000_000_000_000_000
    long23 = "1." + "0" * 19 + "e9"  # 23 bytes: the longest token the C decoder caches
    long24 = "1.8" + "0" * 19 + "e9"
    assert (len(long23), len(long24)) == (23, 24)
    for token in (long23, long23, long24, long24, long23, "NaN", "NaN", long23):
        assert start_of(token) == go_start(float(token))
    # a cached token on a line with a bad timestamp is still an error
    with pytest.raises(DecodeError) as info:
        start_of(long23, " -1")
    assert info.value.reason == "negative timestamp"
    with pytest.raises(DecodeError) as info:
        start_of(long23, " 1 2")
    assert info.value.reason == "unexpected text after the timestamp"
    # the same start token for another container, and a container sharing no cache
    body = (GOOD + c(START, "1.7e9") + c(CPU, "1", container="d") + c(MEM, "1", container="d")
            + c(START, "1.7e9", container="d"))
    for _ in range(2):
        assert [r[4] for r in decoder.decode(body, DEFAULT_TS).containers()] == [
            1_700_000_000_000_000_000, 1_700_000_000_000_000_000]
    # a start-time line whose label block lacks a label is skipped, cached or not
    body = GOOD + line(START, "1.7e9", None, 'container="c",namespace="ns"')
    for _ in range(2):
        batch = decoder.decode(body, DEFAULT_TS)
        assert batch.skipped_samples == 1
        assert batch.containers() == [GOOD_ROW]


def test_one_decoder_shared_by_threads(decoder_cls: type[DecoderPy]) -> None:
    # the compiled kernel runs without the GIL: a second thread entering the same decoder must
    # be refused (it used to corrupt the decoder's buffers and abort the process)
    decoder = decoder_cls()
    small, big = read_example("a"), _many_pods(3000)
    expected = {id(small): decoder_cls().decode(small, DEFAULT_TS).containers(),
                id(big): decoder_cls().decode(big, DEFAULT_TS).containers()}
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []
    refused = [0]

    def work(body: bytes, n: int) -> None:
        barrier.wait()
        for _ in range(n):
            try:
                got = decoder.decode(body, DEFAULT_TS).containers()
            except FastMetricsError as e:
                if type(e) is not FastMetricsError or str(e) != _grammar.DECODER_IN_USE:
                    failures.append(e)
                refused[0] += 1
            except BaseException as e:  # reported below
                failures.append(e)
            else:
                if got != expected[id(body)]:
                    failures.append(AssertionError("wrong result under concurrency"))

    threads = [threading.Thread(target=work, args=(small, 200)),
               threading.Thread(target=work, args=(big, 10))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert decoder.decode(small, DEFAULT_TS).containers() == expected[id(small)]


def _many_pods(n: int, value: str = "1") -> bytes:
    return b"".join(
        c(CPU, value, 1000, pod=f"pod-{i}", container=f"c{i % 3}")
        + c(MEM, value, 1000, pod=f"pod-{i}", container=f"c{i % 3}")
        for i in range(n)
    )


def test_reuse_cache_shrinks_and_regrows(decoder_cls: type[DecoderPy]) -> None:
    decoder = decoder_cls()
    big = _many_pods(1500)
    first = snapshot(decoder.decode(big, DEFAULT_TS))
    assert len(first[3]) == 1500  # type: ignore[arg-type]
    small = _many_pods(2, "2")
    for _ in range(3):  # the cache forgets the 1500 label blocks
        batch = decoder.decode(small, DEFAULT_TS)
        assert batch.key_id.tolist() == [0, 1]
        assert [r[5] for r in batch.containers()] == [2_000_000_000] * 2
    assert snapshot(decoder.decode(big, DEFAULT_TS)) == first
    assert len(decoder.keys) == 1500


def test_many_pods_random_label_order(decoder_cls: type[DecoderPy], rand: random.Random) -> None:
    lines: list[tuple[tuple[str, str, str], bytes]] = []
    expected: dict[tuple[str, str, str], Row] = {}
    for i in range(300):
        ident = (f"ns{i % 7}", f"pod-{i // 3}", f"c{i}")
        cpu_s, mem = rand.randrange(1, 10**6) / 1000, rand.randrange(1, 10**9)
        ts = rand.randrange(0, 2 * 10**12)
        expected[ident] = (*ident, ts * MS, 0, go_cpu(cpu_s), mem)
        for family, value in ((CPU, repr(cpu_s)), (MEM, str(mem))):
            labels = [f'namespace="{ident[0]}"', f'pod="{ident[1]}"', f'container="{ident[2]}"',
                      'extra="e"']
            rand.shuffle(labels)
            lines.append((ident, line(family, value, ts, ",".join(labels))))
    rand.shuffle(lines)
    order = dict.fromkeys(ident for ident, _ in lines)  # first appearance
    batch = decode(decoder_cls, b"".join(ln for _, ln in lines))
    check_batch_shape(batch)
    assert batch.containers() == [expected[ident] for ident in order], rand


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_label_order_all_permutations(decoder_cls: type[DecoderPy], perm: tuple[int, ...]) -> None:
    labels = ['namespace="ns"', 'pod="p"', 'container="c"', 'x="y"']
    block = ",".join(labels[i] for i in perm)
    body = line(CPU, "1", None, block) + line(MEM, "2", None, block)
    assert_batch(decode(decoder_cls, body), Expect(None, (GOOD_ROW,)))


# --------------------------------------------------------------------------------------------
# python -m fastmetrics decode FILE
# --------------------------------------------------------------------------------------------


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastmetrics", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_decode_prints_rows() -> None:
    proc = run_cli("decode", str(DATA / "example_b.txt"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out == [
        "node: timestamp_ns=1650974205113000000 cpu_nanocore_seconds=264310920773130"
        " memory_bytes=6421028864",
        "shop/session-0/redis: timestamp_ns=1650974209874000000"
        " start_time_ns=1650900000000000000 cpu_nanocore_seconds=95101300000"
        " memory_bytes=33554432",
        "1 containers, 1 pods dropped, 0 samples skipped",
    ]


def test_cli_decode_stdin_incomplete_node() -> None:
    proc = run_cli("decode", "-", stdin=GOOD)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "node: (incomplete: missing or zero cpu/memory)"
    assert lines[1].startswith("ns/p/c: timestamp_ns=")
    assert lines[1].endswith(" start_time_ns=0 cpu_nanocore_seconds=1000000000 memory_bytes=2")
    assert lines[2] == "1 containers, 0 pods dropped, 0 samples skipped"


def test_cli_decode_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(TWO_LINES + b"foo 1 -5\n")
    proc = run_cli("decode", str(bad))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"fastmetrics decode: {bad}: kubelet metrics malformed: negative timestamp"
        " (byte 37, line 2)\n  foo 1 -5\n        ^\n"
    )


def test_cli_decode_missing_file(tmp_path: Path) -> None:
    proc = run_cli("decode", str(tmp_path / "nope.txt"))
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr


def test_math_sanity() -> None:
    # the helpers above follow Go: NaN and infinities convert to 0 here
    assert go_cpu(math.nan) == go_cpu(math.inf) == go_uint64(-math.inf) == go_start(math.nan) == 0


@pytest.mark.parametrize("body", [b"# HELP\n", b"# TYPE\n", b"# HELP", b"# TYPE\r\n"])
def test_help_or_type_alone_is_a_comment(decoder_cls: type, body: bytes) -> None:
    """As in Prometheus' lexer, HELP/TYPE start metadata only when whitespace follows."""
    batch = decoder_cls().decode(body, 1)
    assert batch.node is None and len(batch) == 0
