"""Kubernetes string formats: Quantity, Duration, RFC 3339 (SPEC §5.2, §5.6, §10.3, §10.4).

Tables of known Kubernetes outputs, run against both implementations (the compiled formatters of
``fastmetrics._core`` and the pure-Python ``fastmetrics.api._format_py``), then properties: the
column formatter equals the scalar one, the two implementations agree, and independent oracles
(parse the string back, ``datetime``) accept every output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastmetrics._ext import NO_EXTENSIONS
from fastmetrics.api import _format_py
from fastmetrics.api import format as api_format
from fastmetrics.api.format import (
    FORMAT_CPU,
    FORMAT_MEMORY,
    FORMAT_TIMESTAMP,
    FORMAT_WINDOW,
    add_quantities,
)

try:
    from fastmetrics import _core
except ImportError:  # pragma: no cover  (a pure-Python install)
    _core = None  # type: ignore[assignment]

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
MAX_UINT64 = 2**64 - 1
SEC = 1_000_000_000
MS = 1_000_000
KI, MI, GI = 1 << 10, 1 << 20, 1 << 30
S = 1_767_225_600 * SEC  # 2026-01-01T00:00:00Z


def _compiled() -> SimpleNamespace:
    if _core is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires it")
        pytest.skip("fastmetrics._core is not built (pure-Python install)")
    return SimpleNamespace(
        format_cpu=_core.format_cpu,
        format_memory=_core.format_memory,
        format_window=_core.format_window,
        format_timestamp=_core.format_timestamp,
        format_column=_core.format_column,
    )


PY = SimpleNamespace(
    format_cpu=_format_py.format_cpu,
    format_memory=_format_py.format_memory,
    format_window=_format_py.format_window,
    format_timestamp=_format_py.format_timestamp,
    format_column=api_format._format_column_py,
)


@pytest.fixture(scope="module", params=["c", "py"])
def fmt(request: pytest.FixtureRequest) -> SimpleNamespace:
    """The compiled (``c``) or pure-Python (``py``) formatters."""
    return _compiled() if request.param == "c" else PY


def scalar(impl: SimpleNamespace, kind: int) -> Callable[[int], str]:
    return (impl.format_cpu, impl.format_memory, impl.format_window, impl.format_timestamp)[kind]


# --------------------------------------------------------------------------------- the tables

CPU = [
    # SPEC §5.2
    (51_234_567, "51234567n"),
    (20_000, "20u"),
    (12_000_000, "12m"),
    (500_000_000, "500m"),
    (1_500_000_000, "1500m"),
    (2_000_000_000, "2"),
    (10_000_000_000, "10"),
    (1, "1n"),
    (0, "0"),
    # SPEC §10.3, §10.4, §5.3
    (1_000_000_000, "1"),
    (2_500_000_000, "2500m"),
    (5_000_000_000, "5"),
    (10_000_000, "10m"),
    (20_000_000, "20m"),
    (1_221_459_987, "1221459987n"),
    (932_419_677, "932419677n"),
    (50_914_735, "50914735n"),
    (3_004_005, "3004005n"),
    (3_815_336, "3815336n"),
    # the exponent lowered to a multiple of three
    (10, "10n"),
    (100, "100n"),
    (1_000, "1u"),
    (10_000, "10u"),
    (100_000, "100u"),
    (1_000_000, "1m"),
    (1_010_000, "1010u"),
    (100_000_000, "100m"),
    (1_000_000_000_000, "1k"),
    (1_500_000_000_000, "1500"),
    (10**15, "1M"),
    (10**18, "1G"),
    (123 * 10**15, "123M"),
    (10**19, "10G"),
    # uint64 edges: above MaxInt64 uint64Quantity keeps val/10 at scale+1 (a digit is lost)
    (MAX_INT64 - 100, "9223372036854775707n"),
    (MAX_INT64 - 10, "9223372036854775797n"),
    (MAX_INT64, "9223372036854775807n"),
    (MAX_INT64 + 1, "9223372036854775800n"),
    (MAX_INT64 + 10, "9223372036854775810n"),  # MaxInt64/10+1 at scale 1
    (MAX_INT64 + 20, "9223372036854775820n"),  # MaxInt64/10+2 at scale 1
    (MAX_UINT64, "18446744073709551610n"),
]

MEMORY = [
    # SPEC §5.2
    (12_533_760, "12240Ki"),
    (1_616_273_408, "1578392Ki"),
    (5 * MI, "5Mi"),
    (GI, "1Gi"),
    (1500, "1500"),
    (5000, "5000"),
    (1000, "1k"),
    (600, "600"),
    (0, "0"),
    # SPEC §10.3, §10.4, §5.3
    (3 * MI, "3Mi"),
    (2 * MI, "2Mi"),
    (4 * MI, "4Mi"),
    (15 * MI, "15Mi"),
    (25 * MI, "25Mi"),
    (1_721_528_320, "1681180Ki"),
    (105_369_600, "102900Ki"),
    (25_427_968, "24832Ki"),
    (9_437_184, "9Mi"),
    (13_697_024, "13376Ki"),
    # below 1024: DecimalSI
    (1, "1"),
    (10, "10"),
    (100, "100"),
    (999, "999"),
    (1020, "1020"),
    (1023, "1023"),
    # from 1024: BinarySI, divided by 1024 while divisible
    (1024, "1Ki"),
    (1025, "1025"),
    (2000, "2000"),
    (2048, "2Ki"),
    (1000 * KI, "1000Ki"),
    (1023 * MI, "1023Mi"),
    (1024 * MI, "1Gi"),
    (2**40, "1Ti"),
    (2**50, "1Pi"),
    (2**60, "1Ei"),
    (2**62, "4Ei"),
    (3 * 2**61, "6Ei"),
    (2**63 - KI, "9007199254740991Ki"),
    (MAX_INT64, "9223372036854775807"),
    # uint64 edges: a digit lost above MaxInt64, then BinarySI of what is left
    (MAX_INT64 + 1, "9223372036854775800"),
    (MAX_INT64 + 10, "9223372036854775810"),
    (MAX_INT64 + 20, "9223372036854775820"),
    (10**19, "9765625000000000Ki"),
    (10 * 2**60 + 5, "10Ei"),
    (15 * 2**60, "15Ei"),
    (MAX_UINT64, "18446744073709551610"),
]

WINDOW = [
    # SPEC §5.2, §5.3, §10.3, §10.4
    (15_013 * MS, "15.013s"),
    (14_977 * MS, "14.977s"),
    (15_025 * MS, "15.025s"),
    (12_400 * MS, "12.4s"),
    (60 * SEC, "1m0s"),
    (60_250 * MS, "1m0.25s"),
    (3600 * SEC, "1h0m0s"),
    (750 * MS, "750ms"),
    (1000, "1µs"),
    (2000, "2µs"),
    (3000, "3µs"),
    (500, "500ns"),
    (0, "0s"),
    (MAX_INT64, "2562047h47m16.854775807s"),
    (10 * SEC, "10s"),
    (5 * SEC, "5s"),
    (10 * MS, "10ms"),
    # Go's Duration.String() around the unit boundaries
    (1, "1ns"),
    (999, "999ns"),
    (1001, "1.001µs"),
    (1500, "1.5µs"),
    (999_999, "999.999µs"),
    (MS, "1ms"),
    (1_500_000, "1.5ms"),
    (999_999_999, "999.999999ms"),
    (SEC, "1s"),
    (SEC + 1, "1.000000001s"),
    (59 * SEC + 999 * MS, "59.999s"),
    (61 * SEC, "1m1s"),
    (90 * 60 * SEC, "1h30m0s"),
    (3661 * SEC + 500 * MS, "1h1m1.5s"),
    (100 * 3600 * SEC, "100h0m0s"),
    (-SEC, "-1s"),
    (-1500, "-1.5µs"),
    (-1, "-1ns"),
    (MIN_INT64, "-2562047h47m16.854775808s"),
]

TIMESTAMP = [
    # RFC 3339 UTC, whole seconds, truncated (never rounded)
    (S, "2026-01-01T00:00:00Z"),
    (S + 999_999_999, "2026-01-01T00:00:00Z"),
    (1_767_225_612_944 * MS, "2026-01-01T00:00:12Z"),
    (1_767_225_613_800 * MS, "2026-01-01T00:00:13Z"),
    (1_767_225_614_129 * MS, "2026-01-01T00:00:14Z"),
    (1_633_253_809_720 * MS, "2021-10-03T09:36:49Z"),
    (1_633_253_812_125 * MS, "2021-10-03T09:36:52Z"),
    (1_650_974_205_113 * MS, "2022-04-26T11:56:45Z"),
    (3_392_867_227 * SEC, "2077-07-07T07:07:07Z"),
    (S - 1, "2025-12-31T23:59:59Z"),
    # 1970 and before: truncation goes toward the past
    (0, "1970-01-01T00:00:00Z"),
    (1, "1970-01-01T00:00:00Z"),
    (SEC - 1, "1970-01-01T00:00:00Z"),
    (-1, "1969-12-31T23:59:59Z"),
    (-SEC, "1969-12-31T23:59:59Z"),
    (-SEC - 1, "1969-12-31T23:59:58Z"),
    (-86_400 * SEC, "1969-12-31T00:00:00Z"),
    (-2_208_988_800 * SEC, "1900-01-01T00:00:00Z"),
    # calendar edges
    (951_782_400 * SEC, "2000-02-29T00:00:00Z"),
    (-2_203_891_201 * SEC, "1900-02-28T23:59:59Z"),
    (-2_203_891_200 * SEC, "1900-03-01T00:00:00Z"),
    (1_709_164_800 * SEC, "2024-02-29T00:00:00Z"),
    (4_107_542_399 * SEC, "2100-02-28T23:59:59Z"),
    (4_107_542_400 * SEC, "2100-03-01T00:00:00Z"),
    (MAX_INT64, "2262-04-11T23:47:16Z"),
    (MIN_INT64, "1677-09-21T00:12:43Z"),
]


@pytest.mark.parametrize(("value", "want"), CPU)
def test_cpu(fmt: SimpleNamespace, value: int, want: str) -> None:
    assert fmt.format_cpu(value) == want


@pytest.mark.parametrize(("value", "want"), MEMORY)
def test_memory(fmt: SimpleNamespace, value: int, want: str) -> None:
    assert fmt.format_memory(value) == want


@pytest.mark.parametrize(("value", "want"), WINDOW)
def test_window(fmt: SimpleNamespace, value: int, want: str) -> None:
    assert fmt.format_window(value) == want


@pytest.mark.parametrize(("value", "want"), TIMESTAMP)
def test_timestamp(fmt: SimpleNamespace, value: int, want: str) -> None:
    assert fmt.format_timestamp(value) == want


def test_micro_sign_is_u00b5(fmt: SimpleNamespace) -> None:
    assert fmt.format_window(1000) == "1\u00b5s"
    assert fmt.format_window(1000).encode() == b"1\xc2\xb5s"


@pytest.mark.parametrize("value", [-1, MAX_UINT64 + 1, 2**70])
def test_quantities_reject_values_outside_uint64(fmt: SimpleNamespace, value: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        fmt.format_cpu(value)
    with pytest.raises((ValueError, OverflowError)):
        fmt.format_memory(value)


@pytest.mark.parametrize("value", [MIN_INT64 - 1, MAX_INT64 + 1])
def test_window_rejects_values_outside_int64(fmt: SimpleNamespace, value: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        fmt.format_window(value)


@pytest.mark.parametrize(
    ("kind", "table"),
    [
        (FORMAT_CPU, CPU),
        (FORMAT_MEMORY, MEMORY),
        (FORMAT_WINDOW, WINDOW),
        (FORMAT_TIMESTAMP, TIMESTAMP),
    ],
)
def test_format_column_tables(
    fmt: SimpleNamespace, kind: int, table: list[tuple[int, str]]
) -> None:
    dtype = np.uint64 if kind in (FORMAT_CPU, FORMAT_MEMORY) else np.int64
    values = np.array([v for v, _ in table], dtype)
    buf, off = fmt.format_column(values, kind)
    assert isinstance(buf, bytes)
    assert off.dtype == np.int64 and off.shape == (len(table) + 1,) and off[0] == 0
    assert [buf[off[i] : off[i + 1]].decode() for i in range(len(table))] == [w for _, w in table]
    assert off[-1] == len(buf)


@pytest.mark.parametrize("kind", [FORMAT_CPU, FORMAT_MEMORY, FORMAT_WINDOW, FORMAT_TIMESTAMP])
def test_format_column_empty(fmt: SimpleNamespace, kind: int) -> None:
    dtype = np.uint64 if kind in (FORMAT_CPU, FORMAT_MEMORY) else np.int64
    buf, off = fmt.format_column(np.zeros(0, dtype), kind)
    assert buf == b""
    assert off.tolist() == [0]


def test_facade_is_one_of_the_two() -> None:
    # fastmetrics.api.format binds the compiled formatters unless FASTMETRICS_NO_EXTENSIONS=1
    if NO_EXTENSIONS or _core is None:
        assert api_format.format_cpu is _format_py.format_cpu
        assert api_format.format_column is api_format._format_column_py
    else:
        assert api_format.format_cpu is _core.format_cpu
        assert api_format.format_column is _core.format_column


# --------------------------------------------------------- SPEC §5.6 / §10.4: Table sums


@pytest.mark.parametrize(
    ("cpu", "memory", "want"),
    [
        # pod1: container A with cpu 10m only, container B with memory 5Mi only
        ([10_000_000, 0], [0, 5 * MI], ("10m", "5Mi")),
        # pod2, pod3
        ([10_000_000, 10_000_000], [10 * MI, 5 * MI], ("20m", "15Mi")),
        ([20_000_000], [20 * MI, 5 * MI], ("20m", "25Mi")),
        # node rows: one value each
        ([10_000_000], [5 * MI], ("10m", "5Mi")),
        ([1_000_000_000], [0], ("1", "0")),
        # sums change the canonical unit
        ([500_000_000, 500_000_000], [KI, KI], ("1", "2Ki")),
        ([333_333_333, 333_333_333, 333_333_334], [KI, 1000], ("1", "2024")),
        ([999, 1], [512, 512], ("1u", "1Ki")),
        ([51_234_567, 3_004_005], [25_427_968, 9_437_184], ("54238572n", "34048Ki")),
        ([], [], ("0", "0")),
    ],
)
def test_table_sums(
    fmt: SimpleNamespace, cpu: list[int], memory: list[int], want: tuple[str, str]
) -> None:
    total_cpu = add_quantities(np.array(cpu, np.uint64))
    total_memory = add_quantities(np.array(memory, np.uint64))
    assert (fmt.format_cpu(total_cpu), fmt.format_memory(total_memory)) == want


def test_table_sums_are_exact_beyond_int64() -> None:
    values = np.array([MAX_INT64, MAX_INT64, 10], np.uint64)
    assert add_quantities(values) == 2 * MAX_INT64 + 10


@pytest.mark.parametrize(("ns", "want"), [(1000, "1µs"), (2000, "2µs"), (3000, "3µs")])
def test_table_window_cells(fmt: SimpleNamespace, ns: int, want: str) -> None:
    assert fmt.format_window(ns) == want


# ------------------------------------------------------------------------- the oracles

_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BIN = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_QUANTITY = re.compile(r"^(0|[1-9][0-9]*)([numkMGTPE]|[KMGTPE]i)?$")


def quantity_value(v: int) -> int:
    """What metrics-server's uint64Quantity keeps of ``v`` (a digit lost above MaxInt64)."""
    return v if v <= MAX_INT64 else v // 10 * 10


def check_cpu_string(value: int, text: str) -> None:
    m = _QUANTITY.match(text)
    assert m, text
    mantissa, suffix = int(m.group(1)), m.group(2) or ""
    assert suffix in _SI, text
    assert Decimal(mantissa).scaleb(_SI[suffix]) == Decimal(quantity_value(value)).scaleb(-9)
    if mantissa:
        assert mantissa % 1000 != 0, text  # canonical: no larger suffix would do
    else:
        assert text == "0"


def check_memory_string(value: int, text: str) -> None:
    m = _QUANTITY.match(text)
    assert m, text
    mantissa, suffix = int(m.group(1)), m.group(2) or ""
    v = quantity_value(value)
    if v < 1024:
        assert suffix in _SI, text  # DecimalSI below 1024
        assert Decimal(mantissa).scaleb(_SI[suffix]) == v
        return
    assert suffix == "" or suffix in _BIN, text
    assert mantissa * 1024 ** _BIN.get(suffix, 0) == v
    assert mantissa % 1024 != 0, text


_WINDOW = re.compile(
    r"^(-?)(?:(?:(\d+)h)?(?:(\d+)m)?(\d+)(?:\.(\d*[1-9]))?s|(\d+)(?:\.(\d*[1-9]))?(ms|µs|ns))$"
)


def parse_window(text: str) -> int:
    m = _WINDOW.match(text)
    assert m, text
    sign, hours, minutes, secs, frac, small, small_frac, unit = m.groups()
    if secs is not None:
        if hours is not None:
            assert minutes is not None and int(minutes) < 60, text
        if minutes is not None:
            assert int(secs) < 60, text
        ns = (int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(secs)) * SEC
        ns += int((frac or "").ljust(9, "0") or 0)
        assert ns >= SEC, text
    else:
        scale = {"ms": MS, "µs": 1000, "ns": 1}[unit]
        ns = int(small) * scale + int((small_frac or "").ljust(len(str(scale)) - 1, "0") or 0)
        assert ns < SEC and (unit == "ns") == (ns < 1000) and (unit == "µs") == (1000 <= ns < MS)
        assert unit != "ns" or small_frac is None
    return -ns if sign else ns


def rfc3339(ns: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ns // SEC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_oracles_accept_the_tables() -> None:
    for value, want in CPU:
        check_cpu_string(value, want)
    for value, want in MEMORY:
        check_memory_string(value, want)
    for value, want in WINDOW:
        if value != 0:
            assert parse_window(want) == value
    for value, want in TIMESTAMP:
        assert rfc3339(value) == want


# ---------------------------------------------------------------------------- properties

uint64s = st.one_of(
    st.integers(0, MAX_UINT64),
    st.integers(0, 10**12),
    st.builds(lambda m, e: m * 10**e, st.integers(1, 999), st.integers(0, 16)),
    st.builds(lambda m, e: m * 1024**e, st.integers(1, 1500), st.integers(0, 6)).filter(
        lambda v: v <= MAX_UINT64
    ),
    st.integers(MAX_INT64 - 1000, MAX_INT64 + 1000),
)
int64s = st.one_of(
    st.integers(MIN_INT64, MAX_INT64),
    st.integers(-(10**13), 10**13),
    st.builds(lambda m, e: m * 10**e, st.integers(-999, 999), st.integers(0, 16)).filter(
        lambda v: MIN_INT64 <= v <= MAX_INT64
    ),
    st.integers(0, 10**18).map(lambda v: S + v - 10**17),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(uint64s, max_size=30), st.lists(int64s, max_size=30))
def test_format_column_equals_scalar(unsigned: list[int], signed: list[int]) -> None:
    impls = [PY] + ([] if _core is None else [_compiled()])
    for impl in impls:
        for kind, values in (
            (FORMAT_CPU, np.array(unsigned, np.uint64)),
            (FORMAT_MEMORY, np.array(unsigned, np.uint64)),
            (FORMAT_WINDOW, np.array(signed, np.int64)),
            (FORMAT_TIMESTAMP, np.array(signed, np.int64)),
        ):
            buf, off = impl.format_column(values, kind)
            one = scalar(impl, kind)
            assert [buf[off[i] : off[i + 1]].decode() for i in range(len(values))] == [
                one(int(v)) for v in values.tolist()
            ]
            assert off[-1] == len(buf)


@settings(max_examples=300, deadline=None)
@given(uint64s, int64s)
@example(MAX_INT64 + 10, MAX_INT64)
@example(MAX_UINT64, MIN_INT64)
@example(0, 0)
def test_compiled_and_python_agree_and_oracles_hold(unsigned: int, signed: int) -> None:
    cpu, memory = _format_py.format_cpu(unsigned), _format_py.format_memory(unsigned)
    window, timestamp = _format_py.format_window(signed), _format_py.format_timestamp(signed)
    check_cpu_string(unsigned, cpu)
    check_memory_string(unsigned, memory)
    if signed != 0:
        assert parse_window(window) == signed
    else:
        assert window == "0s"
    assert timestamp == rfc3339(signed)
    if _core is None:
        if os.environ.get("CI") == "true":
            pytest.fail("fastmetrics._core is not built, but CI=true requires it")
        return
    assert _core.format_cpu(unsigned) == cpu
    assert _core.format_memory(unsigned) == memory
    assert _core.format_window(signed) == window
    assert _core.format_timestamp(signed) == timestamp
