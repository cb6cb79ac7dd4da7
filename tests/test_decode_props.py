"""Property tests of the decoder (hypothesis).

1. Valid payloads: the compiled decoder, the Python twin and an oracle agree on every value.
   The oracle is ``prometheus_client.parser`` for the samples, and SPEC §3 applied here to them.
2. Any bytes (random, token soup, mutated valid payloads): C and Py give equal batches, or both
   raise ``DecodeError`` with the same reason, offset and line; nothing else is ever raised.
3. Reusing one decoder over a sequence of payloads gives what a fresh decoder gives each time
   (the label-block cache, its prediction and its compaction never change results).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fastmetrics import _grammar
from fastmetrics.decode import DecodedBatch, DecodeError, DecoderPy, NodePoint

DEFAULT_TS = 1_767_225_600_123_000_000
MAX_TS_MS = (2**63 - 1) // 1_000_000

NCPU = "node_cpu_usage_seconds_total"
NMEM = "node_memory_working_set_bytes"
CPU = "container_cpu_usage_seconds_total"
MEM = "container_memory_working_set_bytes"
START = "container_start_time_seconds"
CONTAINER_FAMILIES = (CPU, MEM, START)
OTHER_FAMILIES = (
    "container_swap_usage_bytes",
    "container_swap_limit_bytes",
    "container_memory_commit_bytes",
    "node_swap_usage_bytes",
    "pod_cpu_usage_seconds_total",
    "pod_memory_working_set_bytes",
    "resource_scrape_error",
    "scrape_error",
    "node_cpu_usage_seconds_totalx",
    "node_cpu_usage_seconds_tota",
    "xnode_memory_working_set_bytes",
    "container_cpu_usage_seconds_total_x",
    "container_memory_working_set_byte",
    "container_start_time_seconds:",
    "container_start_time",
)

SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------------------------
# Generators of valid Prometheus 0.0.4 text
# --------------------------------------------------------------------------------------------

# Generation is coarse on purpose: one "style" integer decides a line's whitespace and
# punctuation, so an example costs few draws and the suite stays fast.

LABEL_CHARS = st.sampled_from(
    [*"abcxyz-.09", "\\", '"', "\n", " ", "\t", "}", "{", ",", "=", "#", "é", "€", "😀", "\u2028"]
)
LABEL_VALUES = st.text(LABEL_CHARS, max_size=6)
EXTRA_LABEL_NAMES = ("extra", "a", "zone", "le", "id_1", "Pod", "namespaces", "podx")
EXTRA_LABELS = st.lists(st.tuples(st.sampled_from(EXTRA_LABEL_NAMES), LABEL_VALUES),
                        max_size=2, unique_by=lambda t: t[0])
METRIC_NAMES = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,24}", fullmatch=True)
STYLE = st.integers(0, 2**16 - 1)
WS_FORMS = (" ", " ", " ", "\t", "  ", " \t ")


def escape(value: str, lenient: bool = False) -> str:
    """Label-value escaping; ``lenient`` leaves a backslash bare where the parser keeps it
    verbatim anyway (before a byte that is not ``\\``, ``"``, ``n`` or a newline)."""
    out = []
    for i, ch in enumerate(value):
        if ch == "\\":
            nxt = value[i + 1 : i + 2]
            out.append("\\" if lenient and nxt and nxt not in '\\"n\n' else "\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        else:
            out.append(ch)
    return "".join(out)


def block_text(labels: list[tuple[str, str]], style: int, lenient: bool = False) -> str:
    """``{...}`` for ``labels`` in this order; ``style`` picks the optional whitespace."""
    eq = ("=", "=", " = ", "\t=")[style & 3]
    sep = (",", ",", ", ", " ,\t")[(style >> 2) & 3]
    inner = sep.join(f'{name}{eq}"{escape(value, lenient)}"' for name, value in labels)
    if labels and (style >> 4) & 7 == 0:
        inner += ","
    pad = ("", "", " ", "\t")[(style >> 7) & 3]
    before = " " if (style >> 9) & 7 == 0 else ""
    return f"{before}{{{pad}{inner}{pad}}}"


def permuted(items: list[Any], style: int) -> list[Any]:
    items = list(items)
    for i in range(len(items) - 1, 0, -1):  # Fisher-Yates driven by the style bits
        style, j = divmod(style, i + 1)
        items[i], items[j] = items[j], items[i]
    return items


def format_float(draw: st.DrawFn, v: float) -> str:
    fmt = draw(FLOAT_FORMATS)
    if fmt == "repr":
        return repr(v)
    if fmt == "go":  # strconv.FormatFloat(v, 'g', -1, 64)
        r = repr(v)
        if "e" in r:
            mant, exp = r.split("e")
            mant = mant.removesuffix(".0")
            return f"{mant}e{exp[0] if exp[0] in '+-' else '+'}{exp.lstrip('+-').zfill(2)}"
        return r.removesuffix(".0")
    if fmt == "dotless":  # ".5" and "5." forms
        r = f"{v:.6f}"
        return r.replace("0.", ".", 1) if r.startswith("0.") else r.split(".")[0] + "."
    return fmt % v


FLOAT_FORMATS = st.sampled_from(
    ["%f", "%e", "%E", "%.17g", "%g", "%.3f", "%.20e", "%.0f", "%.30f", "repr", "go", "dotless"]
)
SPECIAL_VALUES = st.sampled_from(
    ["+Inf", "-Inf", "NaN", "inf", "Infinity", "-infinity", "nan", "+inf", "-NaN", "INF", "0",
     "-0", "1", "-1"]
)
INTEGER_FORMS = st.sampled_from(["{}", "{}.", "{}.0", "{}e0", "{}E+00", "00{}", "+{}"])
ANY_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=1e7),
    st.floats(min_value=1e8, max_value=2e10),
    st.floats(min_value=-10, max_value=10),
    st.floats(min_value=0, max_value=1e-8),
    st.sampled_from([4.710169, 182.061236911, 8.2, 1.005, 1.7672200002499998e09, 1.253376e07,
                     1.8446744073709552e19, 9.223372036854776e09, 5e-324,
                     2.2250738585072014e-308, 1.7976931348623157e308, -1e-9, 1e100, -1e100]),
)
USAGE_FLOATS = st.one_of(
    st.floats(min_value=1.0, max_value=1e6),
    st.floats(min_value=1.0, max_value=1e12),
    st.sampled_from([4.710169, 182.061236911, 8.2, 1.005, 1.7672200002499998e09, 1.253376e07,
                     1.7671392055124e09, 48231.889013356]),
)
KIND = st.integers(0, 11)


@st.composite
def value_token(draw: st.DrawFn) -> str:
    """Any valid value: specials, zero, negative, huge, tiny, in any float format."""
    kind = draw(KIND)
    if kind == 0:
        return draw(SPECIAL_VALUES)
    if kind in (1, 2):  # non-negative integers and their float forms
        return draw(INTEGER_FORMS).format(draw(st.integers(0, 10**10)))
    if kind == 3:
        return str(draw(st.integers(-(10**30), 10**30)))
    return format_float(draw, draw(ANY_FLOATS))


@st.composite
def usage_token(draw: st.DrawFn) -> str:
    """A value a healthy kubelet sends (cpu seconds, bytes, start seconds): > 1, any format."""
    if draw(KIND) <= 2:
        return str(draw(st.integers(1, 10**15)))
    return format_float(draw, draw(USAGE_FLOATS))


TIMESTAMPS = st.one_of(
    st.none(),
    st.none(),
    st.integers(0, MAX_TS_MS),
    st.integers(1_600_000_000_000, 1_800_000_000_000),
    st.sampled_from([0, MAX_TS_MS]),
)


@st.composite
def sample_text(draw: st.DrawFn, series: str, value: str) -> str:
    style = draw(STYLE)
    ms = draw(TIMESTAMPS)
    stamp = ""
    if ms is not None:
        stamp = WS_FORMS[(style >> 3) % 6] + ("00" if style & 0x40 else "") + str(ms)
    lead = ("", "", "", "", " ", "\t ")[(style >> 7) % 6]
    trail = ("", "", "", "", " ", "\t")[(style >> 10) % 6]
    return f"{lead}{series}{WS_FORMS[style % 6]}{value}{stamp}{trail}"


Identity = tuple[str, str, str, bool]  # namespace, pod, container, lenient escaping


@st.composite
def container_series(draw: st.DrawFn, name: str, ident: Identity, drop_label: bool) -> str:
    ns, pod, container, lenient = ident
    style = draw(STYLE)
    labels = [("namespace", ns), ("pod", pod), ("container", container)]
    if drop_label and style % 13 == 0:
        del labels[(style >> 4) % 3]
    labels += draw(EXTRA_LABELS)
    return name + block_text(permuted(labels, style >> 7), draw(STYLE), lenient)


@st.composite
def node_series(draw: st.DrawFn, name: str) -> str:
    style = draw(STYLE)
    if style % 5 == 0:
        return name + block_text(draw(EXTRA_LABELS), style >> 3)
    return name


@st.composite
def sample_line(draw: st.DrawFn, identities: list[Identity]) -> str:
    """Any sample: a used family (any value), pod_*, swap, unknown names."""
    kind = draw(KIND)
    if kind <= 6:  # a container family
        name = draw(st.sampled_from(CONTAINER_FAMILIES + OTHER_FAMILIES[:3]))
        series = draw(container_series(name, draw(st.sampled_from(identities)), True))
    elif kind <= 8:  # the node
        series = draw(node_series(draw(st.sampled_from([NCPU, NMEM]))))
    else:  # anything else
        series = draw(st.one_of(st.sampled_from(OTHER_FAMILIES), METRIC_NAMES))
        if kind == 9:
            series += block_text(draw(EXTRA_LABELS), draw(STYLE))
    value = draw(value_token() if draw(KIND) <= 3 else usage_token())
    return draw(sample_text(series, value))


COMMENT_TEXT = st.text(st.sampled_from([*"abcXYZ 019[]{}()-_.:,;=#\t", "é"]), max_size=30)
COMMENT_NAMES = st.one_of(
    st.sampled_from((*CONTAINER_FAMILIES, NCPU, NMEM, *OTHER_FAMILIES)), METRIC_NAMES
)
METRIC_TYPES = ("gauge", "untyped", "summary", "histogram", "counter")


@st.composite
def comment_line(draw: st.DrawFn) -> str:
    style = draw(STYLE)
    kind = style % 5
    ws = WS_FORMS[(style >> 3) % 6]
    ws2 = WS_FORMS[(style >> 6) % 6]
    if kind == 0:  # free text (the alphabet cannot spell HELP or TYPE)
        return ("#", "# ", "#\t")[(style >> 9) % 3] + draw(COMMENT_TEXT)
    if kind == 1:
        name = draw(COMMENT_NAMES)
        if style & 0x200:
            return f"# HELP {name}"
        return f"#{ws}HELP{ws2}{name}{ws}{draw(COMMENT_TEXT)}"
    if kind == 2:
        name = draw(COMMENT_NAMES)
        typ = METRIC_TYPES[(style >> 9) % 5]
        if typ == "counter" and (not name.endswith("_total") or name == "_total"):
            typ = "gauge"  # prometheus_client renames the samples of such counters
        end = ("", " ", "\t", "")[(style >> 12) % 4]
        return f"#{ws}TYPE{ws2}{name}{ws}{typ}{end}"
    if kind == 3:
        return ("", " ", "\t", "  \t ")[(style >> 9) % 4]
    return f"#HELP{draw(COMMENT_TEXT)}"


@st.composite
def identity_pool(draw: st.DrawFn) -> list[Identity]:
    namespaces = draw(st.lists(LABEL_VALUES, min_size=1, max_size=3, unique=True))
    pods = draw(st.lists(LABEL_VALUES, min_size=1, max_size=4, unique=True))
    containers = draw(st.lists(LABEL_VALUES, min_size=1, max_size=3, unique=True))
    idents = draw(st.lists(
        st.tuples(st.sampled_from(namespaces), st.sampled_from(pods), st.sampled_from(containers)),
        min_size=1, max_size=8, unique=True))
    lenient = draw(st.booleans())  # one writer per payload, like a real kubelet
    return [(*ident, lenient) for ident in idents]


@st.composite
def payload_lines(draw: st.DrawFn) -> list[str]:
    """A healthy core (node + complete containers) with any other lines mixed in."""
    identities = draw(identity_pool())
    style = draw(STYLE)
    lines = []
    if style % 5:
        for name in (NCPU, NMEM) if style & 8 else (NMEM, NCPU):
            lines.append(draw(sample_text(draw(node_series(name)), draw(usage_token()))))
    for i, ident in enumerate(identities):
        bits = style >> (4 + i % 12)
        if bits % 6:
            for name in (CPU, MEM, START) if bits & 1 else (CPU, MEM):
                series = draw(container_series(name, ident, False))
                lines.append(draw(sample_text(series, draw(usage_token()))))
    noise = draw(st.lists(st.one_of(sample_line(identities), comment_line()), max_size=25))
    for ln in noise:
        lines.insert(draw(st.integers(0, len(lines))), ln)
    return lines


EOLS = st.sampled_from(["\n", "\n", "\n", "\r\n"])


@st.composite
def render(draw: st.DrawFn, lines: list[str]) -> bytes:
    eol = draw(EOLS)
    style = draw(STYLE)
    out = []
    for i, ln in enumerate(lines):  # mostly one line-end style, sometimes mixed
        out.append(ln + ("\r\n" if (style >> (i % 16)) & 1 and style % 3 == 0 else eol))
    text = "".join(out)
    if text and style % 5 == 0:
        text = text.rstrip("\n").removesuffix("\r")
    return text.encode()


valid_payloads = payload_lines().flatmap(render)


# --------------------------------------------------------------------------------------------
# The oracle: prometheus_client's samples + SPEC §3 rules written out here
# --------------------------------------------------------------------------------------------


class Model(NamedTuple):
    node: NodePoint | None
    rows: list[tuple[str, str, str, int, int, int, int]]
    dropped_pods: int
    skipped_samples: int


def go_cpu(v: float) -> int:
    x = v * 1e9
    return int(x) if 0.0 <= x < 18446744073709551616.0 else 0


def go_uint64(v: float) -> int:
    return int(v) if 0.0 <= v < 18446744073709551616.0 else 0


def go_start(v: float) -> int:
    x = v * 1e9
    return int(x) if -9223372036854775808.0 <= x < 9223372036854775808.0 else 0


def sample_ts_ns(ts: Any, default_ts: int) -> int:
    if ts is None:
        return default_ts
    if hasattr(ts, "sec"):  # prometheus_client.samples.Timestamp
        return int(ts.sec) * 1_000_000_000 + int(ts.nsec)
    ms = round(float(ts) * 1000)  # the text parser gives float seconds = ms / 1000
    assert ms >= 0
    return ms * 1_000_000


def oracle(body: bytes, default_ts: int) -> Model:
    node_seen = False
    node_ts = node_cpu = node_mem = 0
    rows: dict[tuple[str, str, str], list[int]] = {}
    skipped = 0
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:  # sample names: family names lose "_total" on counters
            if s.name not in (NCPU, NMEM, CPU, MEM, START):
                continue
            ts = sample_ts_ns(s.timestamp, default_ts)
            v = float(s.value)
            if s.name == NCPU:
                node_seen, node_ts, node_cpu = True, ts, go_cpu(v)
                continue
            if s.name == NMEM:
                node_seen, node_ts, node_mem = True, ts, go_uint64(v)
                continue
            labels = s.labels
            if not all(k in labels for k in ("namespace", "pod", "container")):
                skipped += 1
                continue
            r = rows.setdefault((labels["namespace"], labels["pod"], labels["container"]),
                                [0, 0, 0, 0])
            if s.name == CPU:
                r[0], r[2] = ts, go_cpu(v)
            elif s.name == MEM:
                r[0], r[3] = ts, go_uint64(v)
            else:
                r[1] = go_start(v)  # the start time's own timestamp is ignored
    bad = {ident[:2] for ident, r in rows.items() if r[2] == 0 or r[3] == 0}
    kept = [(*ident, *r) for ident, r in rows.items() if ident[:2] not in bad]
    node = NodePoint(node_ts, node_cpu, node_mem) if node_seen and node_cpu and node_mem else None
    return Model(node, kept, len(bad), skipped)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Comparing outcomes
# --------------------------------------------------------------------------------------------

COLUMNS = ("key_id", "pod_id", "timestamp_ns", "start_time_ns", "cpu_nanocore_seconds",
           "memory_bytes")


def run(decoder: DecoderPy, body: bytes) -> DecodedBatch | DecodeError:
    try:
        return decoder.decode(body, DEFAULT_TS)
    except DecodeError as e:
        return e
    except Exception as e:  # the property: nothing else ever escapes
        pytest.fail(f"{type(decoder).__name__} raised {type(e).__name__}: {e!r} on {body!r}")


def check_consistent(batch: DecodedBatch) -> None:
    keys = batch.keys
    assert len(set(batch.key_id.tolist())) == len(batch)
    for k, p in zip(batch.key_id.tolist(), batch.pod_id.tolist(), strict=True):
        assert keys.pod_of_key[k] == p


def assert_same_outcome(a: DecodedBatch | DecodeError, b: DecodedBatch | DecodeError,
                        *, same_ids: bool = True) -> None:
    if isinstance(a, DecodeError) or isinstance(b, DecodeError):
        assert isinstance(a, DecodeError), (a, b)
        assert isinstance(b, DecodeError), (a, b)
        assert (a.reason, a.offset, a.lineno) == (b.reason, b.offset, b.lineno)
        assert (a.excerpt, str(a)) == (b.excerpt, str(b))
        return
    check_consistent(a)
    check_consistent(b)
    assert a.node == b.node
    if same_ids:
        for name in COLUMNS:
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype, name
            assert np.array_equal(x, y), name
    assert a.containers() == b.containers()
    assert a.dropped_pods == b.dropped_pods
    assert a.skipped_samples == b.skipped_samples


def assert_same_keys(a: DecoderPy, b: DecoderPy) -> None:
    ka, kb = a.keys, b.keys
    assert (ka.namespace, ka.pod, ka.container, ka.pod_of_key) == (
        kb.namespace, kb.pod, kb.container, kb.pod_of_key)


# --------------------------------------------------------------------------------------------
# 1. valid payloads: decoder == oracle (both implementations)
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(body=valid_payloads)
@example(body=b"")
@example(body=b'container_cpu_usage_seconds_total{container="c",namespace="n",pod="p"} 1e-9\n'
              b'container_memory_working_set_bytes{container="c",namespace="n",pod="p"} 1 0\n')
@example(body=b'node_cpu_usage_seconds_total 1\r\nnode_memory_working_set_bytes 1 0\r\n')
def test_valid_payload_matches_oracle(decoder_cls: type[DecoderPy], body: bytes) -> None:
    expect = oracle(body, DEFAULT_TS)
    batch = run(decoder_cls(), body)
    assert isinstance(batch, DecodedBatch), batch
    check_consistent(batch)
    assert batch.node == expect.node
    assert batch.containers() == expect.rows
    assert batch.dropped_pods == expect.dropped_pods
    assert batch.skipped_samples == expect.skipped_samples


@SETTINGS
@given(token=value_token())
def test_value_token_matches_python_float(decoder_cls: type[DecoderPy], token: str) -> None:
    v = float(token)
    body = (f'container_cpu_usage_seconds_total{{container="c",namespace="n",pod="p"}} 1\n'
            f'container_memory_working_set_bytes{{container="c",namespace="n",pod="p"}} 1\n'
            f'container_start_time_seconds{{container="c",namespace="n",pod="p"}} {token}\n'
            f"node_cpu_usage_seconds_total {token}\nnode_memory_working_set_bytes {token}\n")
    batch = run(decoder_cls(), body.encode())
    assert isinstance(batch, DecodedBatch), batch
    assert batch.start_time_ns.tolist() == [go_start(v)]
    cpu, mem = go_cpu(v), go_uint64(v)
    assert batch.node == (NodePoint(DEFAULT_TS, cpu, mem) if cpu and mem else None)


# --------------------------------------------------------------------------------------------
# 2. any bytes: C == Py, a batch or a DecodeError, never anything else
# --------------------------------------------------------------------------------------------

INTERESTING = [
    b"{", b"}", b'"', b"\\", b"=", b",", b" ", b"\t", b"\n", b"\r", b"\r\n", b"#", b"# HELP ",
    b"# TYPE ", b" gauge", b"-", b"+", b".", b"e", b"E", b"0", b"9", b"NaN", b"Inf", b"\xff",
    b"\xc3", b"\xed\xa0\x80", b"\x00", b"_total", b"container=", b'pod="', b"9" * 20, b"a", b":",
]

TOKENS = st.sampled_from([
    *INTERESTING, b"node_cpu_usage_seconds_total", b"node_memory_working_set_bytes",
    b"container_cpu_usage_seconds_total", b"container_memory_working_set_bytes",
    b"container_start_time_seconds", b"foo", b'container="c"', b'namespace="n"', b'pod="p"',
    b"1", b"1.5e+09", b"-1", b"1767225600000", b"-5", b"\\n", b'\\"', b"\\\\", b"counter",
    b"HELP", b"TYPE",
])
token_soup = st.lists(TOKENS, max_size=60).map(b"".join)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(valid_payloads))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(body)))
        if op == 0 and body:
            pos = min(pos, len(body) - 1)
            body[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            extra = st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=3))
            body[pos:pos] = draw(extra)
        elif op == 2:
            del body[pos : pos + draw(st.integers(1, 8))]
        elif op == 3:
            body[pos : pos + 1] = draw(st.sampled_from(INTERESTING))
        else:
            end = draw(st.integers(pos, len(body)))
            body[pos:pos] = body[pos:end]
    return bytes(body)


def assert_c_equals_py(decoder_c: type[DecoderPy], body: bytes) -> None:
    c_dec, py_dec = decoder_c(), DecoderPy()
    c_out, py_out = run(c_dec, body), run(py_dec, body)
    assert_same_outcome(c_out, py_out)
    assert_same_keys(c_dec, py_dec)
    if isinstance(c_out, DecodeError):
        assert c_out.reason in _grammar.REASONS[1:]
        assert 0 <= c_out.offset <= len(body)
        assert c_out.lineno == body.count(b"\n", 0, c_out.offset) + 1


@settings(SETTINGS, max_examples=1000)
@given(body=st.binary(max_size=300))
@example(body=b"a{b=\"\\")
@example(body=b"\xff")
def test_c_equals_py_arbitrary_bytes(decoder_c: type[DecoderPy], body: bytes) -> None:
    assert_c_equals_py(decoder_c, body)


@settings(SETTINGS, max_examples=1000)
@given(body=token_soup)
def test_c_equals_py_token_soup(decoder_c: type[DecoderPy], body: bytes) -> None:
    assert_c_equals_py(decoder_c, body)


@settings(SETTINGS, max_examples=600)
@given(body=mutated_payloads())
def test_c_equals_py_mutated_payloads(decoder_c: type[DecoderPy], body: bytes) -> None:
    assert_c_equals_py(decoder_c, body)


@SETTINGS
@given(body=valid_payloads)
def test_c_equals_py_valid_payloads(decoder_c: type[DecoderPy], body: bytes) -> None:
    assert_c_equals_py(decoder_c, body)


# --------------------------------------------------------------------------------------------
# 3. a reused decoder == a fresh decoder, over sequences of related payloads
# --------------------------------------------------------------------------------------------


def bulk_payload(n: int, seed: int) -> bytes:
    """Many distinct label blocks: enough to make both decoders forget cached blocks later."""
    out = []
    for i in range(n):
        labels = f'container="c{i % 4}",namespace="ns{seed % 3}",pod="bulk-{seed}-{i}"'
        out.append(f"{CPU}{{{labels}}} {i + 1}.5 {1000 + i}\n{MEM}{{{labels}}} {i + 7}\n")
    return "".join(out).encode()


@st.composite
def payload_sequences(draw: st.DrawFn) -> list[bytes]:
    base = draw(payload_lines())
    seq = []
    for _ in range(draw(st.integers(2, 6))):
        step = draw(st.integers(0, 8))
        if step == 0:
            lines = base  # the same payload again
        elif step == 1:
            lines = draw(st.permutations(base))
        elif step == 2:  # lines dropped (pods gone) and kept
            lines = [ln for ln in base if draw(st.integers(0, 3))]
        elif step == 3:  # new lines (new pods) inserted among the old
            lines = list(base)
            for ln in draw(payload_lines()):
                lines.insert(draw(st.integers(0, len(lines))), ln)
        elif step == 4:
            lines = draw(payload_lines())
            base = lines
        elif step == 5:
            seq.append(bulk_payload(draw(st.integers(260, 400)), draw(st.integers(0, 5))))
            continue
        elif step == 6:  # the same series with new values and timestamps
            rnd = draw(st.randoms(use_true_random=False))
            lines = []
            for ln in base:
                cut = ln.rfind("}") + 1
                tail = "".join(rnd.choice("0123456789") if ch.isdigit() and rnd.random() < 0.5
                               else ch for ch in ln[cut:])
                lines.append(ln[:cut] + tail)
        else:
            seq.append(draw(mutated_payloads()))
            continue
        seq.append(draw(render(lines)))
    return seq


@settings(SETTINGS, max_examples=200)
@given(seq=payload_sequences())
def test_reused_decoder_equals_fresh(decoder_cls: type[DecoderPy], seq: list[bytes]) -> None:
    reused = decoder_cls()
    ids: dict[tuple[str, str, str], int] = {}
    for body in seq:
        got = run(reused, body)
        assert_same_outcome(got, run(decoder_cls(), body), same_ids=False)
        if isinstance(got, DecodedBatch):
            if got.key_remap is not None:  # the table was compacted: ids move as remapped
                key_map = got.key_remap.key_map.tolist()
                ids = {ident: key_map[k] for ident, k in ids.items() if key_map[k] >= 0}
            for k in got.key_id.tolist():  # an identity keeps its id (up to a remap)
                assert ids.setdefault(got.keys.key(k), k) == k


@settings(SETTINGS, max_examples=200)
@given(seq=payload_sequences())
def test_reused_c_equals_reused_py(decoder_c: type[DecoderPy], seq: list[bytes]) -> None:
    c_dec, py_dec = decoder_c(), DecoderPy()
    for body in seq:
        assert_same_outcome(run(c_dec, body), run(py_dec, body))
        assert_same_keys(c_dec, py_dec)
