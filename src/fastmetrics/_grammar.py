"""What both decoders share: family names, error reasons, and the label-block parser.

The label-block parser runs only when a decoder meets label bytes it has not seen before
(the first scrape of a node, a new pod); both the compiled decoder and its Python twin call it,
so label grammar, unescaping and interning are defined once.
"""

from __future__ import annotations

import operator
from typing import Final

from ._batch import KeyTable

# Kubelet series fastmetrics uses (SPEC §3.2); matched by exact name.
NODE_CPU_USAGE_SECONDS_TOTAL: Final = b"node_cpu_usage_seconds_total"
NODE_MEMORY_WORKING_SET_BYTES: Final = b"node_memory_working_set_bytes"
CONTAINER_CPU_USAGE_SECONDS_TOTAL: Final = b"container_cpu_usage_seconds_total"
CONTAINER_MEMORY_WORKING_SET_BYTES: Final = b"container_memory_working_set_bytes"
CONTAINER_START_TIME_SECONDS: Final = b"container_start_time_seconds"

# Family codes; must match the SERIES_* enum in _core.pyx.
SERIES_OTHER: Final = 0
SERIES_NODE_CPU: Final = 1
SERIES_NODE_MEMORY: Final = 2
SERIES_CONTAINER_CPU: Final = 3
SERIES_CONTAINER_MEMORY: Final = 4
SERIES_CONTAINER_START: Final = 5

FAMILIES: Final[dict[bytes, int]] = {
    NODE_CPU_USAGE_SECONDS_TOTAL: SERIES_NODE_CPU,
    NODE_MEMORY_WORKING_SET_BYTES: SERIES_NODE_MEMORY,
    CONTAINER_CPU_USAGE_SECONDS_TOTAL: SERIES_CONTAINER_CPU,
    CONTAINER_MEMORY_WORKING_SET_BYTES: SERIES_CONTAINER_MEMORY,
    CONTAINER_START_TIME_SECONDS: SERIES_CONTAINER_START,
}

METRIC_TYPES: Final = frozenset({b"counter", b"gauge", b"histogram", b"summary", b"untyped"})

# Raised (as FastMetricsError) when a decoder is entered by a second thread while decoding.
DECODER_IN_USE: Final = "this decoder is already decoding in another thread; use one per thread"

# Largest millisecond timestamp whose nanosecond value fits in int64.
MAX_TIMESTAMP_MS: Final = (2**63 - 1) // 1_000_000

# Error reasons, indexed by the ERR_* codes of _core.pyx (0 is "no error").
REASONS: Final[tuple[str, ...]] = (
    "",
    "invalid metric name",
    "missing sample value",
    "invalid sample value",
    "negative timestamp",
    "invalid timestamp",
    "timestamp out of range",
    "unexpected text after the timestamp",
    "expected whitespace before the sample value",
    "expected a metric name after HELP",
    "expected a metric name after TYPE",
    "expected a metric type",
    "invalid metric type",
    "unexpected text after the metric type",
    "expected a label name or '}'",
    "expected '=' after the label name",
    "expected '\"' to open the label value",
    "unterminated label value",
    "expected ',' or '}' after the label value",
    "label value is not valid UTF-8",
)
(
    _,
    R_METRIC_NAME,
    R_MISSING_VALUE,
    R_BAD_VALUE,
    R_NEGATIVE_TIMESTAMP,
    R_BAD_TIMESTAMP,
    R_TIMESTAMP_RANGE,
    R_TRAILING,
    R_VALUE_SEPARATOR,
    R_HELP_NAME,
    R_TYPE_NAME,
    R_TYPE_MISSING,
    R_TYPE_INVALID,
    R_TYPE_TRAILING,
    R_LABEL_NAME,
    R_LABEL_EQUALS,
    R_LABEL_QUOTE,
    R_LABEL_UNTERMINATED,
    R_LABEL_SEPARATOR,
    R_LABEL_UTF8,
) = range(len(REASONS))


class GrammarError(Exception):
    """Internal: a grammar violation at ``offset``; decoders turn it into ``DecodeError``."""

    def __init__(self, code: int, offset: int) -> None:
        super().__init__(REASONS[code], offset)
        self.code = code
        self.offset = offset


_LABEL_START: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_LABEL_CHAR: Final = _LABEL_START | frozenset(b"0123456789")
_WS: Final = frozenset(b" \t")
_SPACE, _TAB, _BACKSLASH, _QUOTE = 0x20, 0x09, 0x5C, 0x22
_LBRACE, _RBRACE, _EQUALS, _COMMA = 0x7B, 0x7D, 0x3D, 0x2C


def _skip_ws(body: bytes, i: int, eol: int) -> int:
    while i < eol and body[i] in _WS:
        i += 1
    return i


def _unescape(raw: bytes) -> bytes:
    """Prometheus label-value escapes: ``\\\\``, ``\\"``, ``\\n``; others are kept verbatim."""
    if _BACKSLASH not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == _BACKSLASH and i + 1 < n:
            nxt = raw[i + 1]
            if nxt in (_BACKSLASH, _QUOTE):
                out.append(nxt)
            elif nxt == 0x6E:  # 'n'
                out.append(0x0A)
            else:
                out += raw[i : i + 2]
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


def parse_label_block(body: bytes, start: int, eol: int, keys: KeyTable) -> tuple[int, int]:
    """Parse the label block at ``body[start] == '{'`` (the line ends at ``eol``).

    Returns ``(end, key_id)``: ``end`` is the offset just past the closing ``}``; ``key_id``
    the interned id of the (namespace, pod, container) labels, or -1 when one is missing.
    Raises ``GrammarError`` at the first byte that breaks the grammar.
    """
    found: dict[bytes, str] = {}
    i = _skip_ws(body, start + 1, eol)
    while True:
        if i >= eol or body[i] not in _LABEL_START:
            if i < eol and body[i] == _RBRACE:
                i += 1
                break
            raise GrammarError(R_LABEL_NAME, i)
        j = i + 1
        while j < eol and body[j] in _LABEL_CHAR:
            j += 1
        name = body[i:j]
        i = _skip_ws(body, j, eol)
        if i >= eol or body[i] != _EQUALS:
            raise GrammarError(R_LABEL_EQUALS, i)
        i = _skip_ws(body, i + 1, eol)
        if i >= eol or body[i] != _QUOTE:
            raise GrammarError(R_LABEL_QUOTE, i)
        i += 1
        vstart = i
        while i < eol:
            c = body[i]
            if c == _BACKSLASH:
                i += 2
            elif c == _QUOTE:
                break
            else:
                i += 1
        if i >= eol:
            raise GrammarError(R_LABEL_UNTERMINATED, eol)
        raw = body[vstart:i]
        try:
            value = _unescape(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise GrammarError(R_LABEL_UTF8, vstart) from None
        if name == b"namespace" or name == b"pod" or name == b"container":
            found[name] = value
        i = _skip_ws(body, i + 1, eol)
        if i < eol and body[i] == _COMMA:
            i = _skip_ws(body, i + 1, eol)
            if i < eol and body[i] == _RBRACE:
                i += 1
                break
            continue
        if i < eol and body[i] == _RBRACE:
            i += 1
            break
        raise GrammarError(R_LABEL_SEPARATOR, i)
    if len(found) == 3:
        key_id, _pod_id = keys.intern(found[b"namespace"], found[b"pod"], found[b"container"])
        return i, key_id
    return i, -1


def key_compaction_threshold(used_keys: int) -> int:
    """A decoder replaces its key table by a compacted copy when the table holds more keys than
    this, ``used_keys`` being the keys of the payload just decoded (both decoders)."""
    return 2 * used_keys + 64


def default_timestamp_arg(ts: object) -> int:
    """Check ``default_timestamp_ns``: an int (or ``__index__``) that fits in int64; no floats."""
    try:
        value = operator.index(ts)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"default_timestamp_ns must be an int, not {type(ts).__name__}"
        ) from None
    if not -(2**63) <= value < 2**63:
        raise OverflowError(f"default_timestamp_ns {value} does not fit in int64")
    return value


def cpu_from_seconds(v: float) -> int:
    """``uint64(v * 1e9)`` as Go computes it; 0 for negative, non-finite or too large values."""
    x = v * 1e9
    if x >= 0.0 and x < 18446744073709551616.0:
        return int(x)
    return 0


def uint64_from_float(v: float) -> int:
    """``uint64(v)`` truncating; 0 for negative, non-finite or too large values."""
    if v >= 0.0 and v < 18446744073709551616.0:
        return int(v)
    return 0


def start_ns_from_seconds(v: float) -> int:
    """``int64(v * 1e9)``; 0 ("not reported") for non-finite or out-of-range values."""
    x = v * 1e9
    if x >= -9223372036854775808.0 and x < 9223372036854775808.0:
        return int(x)
    return 0
