"""The pure-Python twin of the compiled decoder (``FASTMETRICS_NO_EXTENSIONS=1``).

Same signature, same results, same errors as ``_core.DecoderC``; the tests hold them equal.
A regular expression accepts well-formed sample lines; any line it rejects is re-read byte by
byte by ``_diagnose`` to name what is wrong and where, exactly as the compiled decoder does.
"""

from __future__ import annotations

import re
import threading
from typing import Final

import numpy as np

from . import _grammar as g
from ._batch import DecodedBatch, KeyRemap, KeyTable, NodePoint
from .errors import DecodeError, FastMetricsError, make_excerpt

__all__ = ["DecoderPy"]

_SAMPLE_RE: Final = re.compile(
    rb"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)"
    rb'(?:[ \t]*(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}))?'
    rb"[ \t]+([^ \t]+)(?:[ \t]+([^ \t]+))?[ \t]*",
    re.DOTALL,
)
_VALUE_RE: Final = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    rb"|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_DIGITS_RE: Final = re.compile(rb"[0-9]+")
_NAME_START: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_NAME_CHAR: Final = _NAME_START | frozenset(b"0123456789")
_WS: Final = frozenset(b" \t")
_HASH, _LBRACE = 0x23, 0x7B


def _skip_ws(body: bytes, i: int, eol: int) -> int:
    while i < eol and body[i] in _WS:
        i += 1
    return i


def _skip_token(body: bytes, i: int, eol: int) -> int:
    while i < eol and body[i] not in _WS:
        i += 1
    return i


def _skip_name(body: bytes, i: int, eol: int) -> int:
    while i < eol and body[i] in _NAME_CHAR:
        i += 1
    return i


def _check_timestamp(body: bytes, t: int, u: int) -> int:
    """Validate the timestamp token ``body[t:u]``; return its value in ms."""
    token = body[t:u]
    if _DIGITS_RE.fullmatch(token) is None:
        if token[:1] == b"-" and _DIGITS_RE.fullmatch(token, 1) is not None:
            raise g.GrammarError(g.R_NEGATIVE_TIMESTAMP, t)
        raise g.GrammarError(g.R_BAD_TIMESTAMP, t)
    ms = int(token)
    if ms > g.MAX_TIMESTAMP_MS:
        raise g.GrammarError(g.R_TIMESTAMP_RANGE, t)
    return ms


def _check_comment(body: bytes, i: int, eol: int) -> None:
    """Validate a ``#`` line at ``i``: HELP and TYPE lines have a grammar, others are free."""
    k = _skip_ws(body, i + 1, eol)
    if k == i + 1:
        return
    word = body[k : k + 4]
    # as Prometheus' lexer: HELP/TYPE only when followed by whitespace ("# HELP" alone is a
    # plain comment)
    if word not in (b"HELP", b"TYPE") or k + 4 >= eol or body[k + 4] not in _WS:
        return
    m = _skip_ws(body, k + 4, eol)
    if m >= eol or body[m] not in _NAME_START:
        raise g.GrammarError(g.R_HELP_NAME if word == b"HELP" else g.R_TYPE_NAME, m)
    n = _skip_name(body, m + 1, eol)
    if n < eol and body[n] not in _WS:
        raise g.GrammarError(g.R_METRIC_NAME, n)
    if word == b"HELP":
        return
    t = _skip_ws(body, n, eol)
    if t >= eol:
        raise g.GrammarError(g.R_TYPE_MISSING, t)
    u = _skip_token(body, t, eol)
    if body[t:u] not in g.METRIC_TYPES:
        raise g.GrammarError(g.R_TYPE_INVALID, t)
    w = _skip_ws(body, u, eol)
    if w < eol:
        raise g.GrammarError(g.R_TYPE_TRAILING, w)


def _diagnose(body: bytes, i: int, eol: int, keys: KeyTable) -> None:
    """Re-read a sample line the fast path rejected, byte by byte, and raise what is wrong."""
    if body[i] not in _NAME_START:
        raise g.GrammarError(g.R_METRIC_NAME, i)
    j = _skip_name(body, i + 1, eol)
    k = _skip_ws(body, j, eol)
    if k < eol and body[k] == _LBRACE:
        k, _ = g.parse_label_block(body, k, eol, keys)
        if k < eol and body[k] not in _WS:
            raise g.GrammarError(g.R_VALUE_SEPARATOR, k)
    elif k == j and j < eol:
        raise g.GrammarError(g.R_METRIC_NAME, j)
    m = _skip_ws(body, k, eol)
    if m >= eol:
        raise g.GrammarError(g.R_MISSING_VALUE, m)
    v = _skip_token(body, m, eol)
    if _VALUE_RE.fullmatch(body, m, v) is None:
        raise g.GrammarError(g.R_BAD_VALUE, m)
    t = _skip_ws(body, v, eol)
    if t < eol:
        u = _skip_token(body, t, eol)
        _check_timestamp(body, t, u)
        w = _skip_ws(body, u, eol)
        if w < eol:
            raise g.GrammarError(g.R_TRAILING, w)
    raise AssertionError("fastmetrics bug: a sample line was rejected but no error was found")


class DecoderPy:
    """Decodes one node's kubelet ``/metrics/resource`` bodies into columns (pure Python).

    Keep one decoder per node and call ``decode`` on every scrape: label blocks seen before map
    to their interned ids without being parsed again.
    """

    def __init__(self) -> None:
        self.keys = KeyTable()
        self._blocks: dict[bytes, int] = {}
        self._live: set[bytes] = set()
        self._lock = threading.Lock()
        self._pending_remap: KeyRemap | None = None

    def decode(self, body: bytes, default_timestamp_ns: int, /) -> DecodedBatch:
        """Decode ``body``; samples without a timestamp get ``default_timestamp_ns``.

        Raises ``DecodeError`` (naming the byte offset, the line and the bad line) when the body
        is not Prometheus 0.0.4 text; the whole body is rejected then.
        """
        if not isinstance(body, bytes):
            body = bytes(body)
        default_timestamp_ns = g.default_timestamp_arg(default_timestamp_ns)
        # same contract as the compiled decoder: one decode at a time per decoder
        if not self._lock.acquire(blocking=False):
            raise FastMetricsError(g.DECODER_IN_USE)
        try:
            return self._decode(body, default_timestamp_ns)
        except g.GrammarError as e:
            lineno = body.count(b"\n", 0, e.offset) + 1
            raise DecodeError(
                g.REASONS[e.code],
                offset=e.offset,
                lineno=lineno,
                excerpt=make_excerpt(body, e.offset),
            ) from None
        finally:
            self._lock.release()

    def _decode(self, body: bytes, default_ts: int) -> DecodedBatch:
        keys = self.keys
        blocks = self._blocks
        live: set[bytes] = set()
        families = g.FAMILIES
        node_seen = False
        node_ts = node_cpu = node_mem = 0
        # per key id: [timestamp_ns, start_ns, cpu, mem]; dict order = first appearance
        rows: dict[int, list[int]] = {}
        skipped = 0
        n = len(body)
        pos = 0
        while pos < n:
            nl = body.find(b"\n", pos)
            if nl < 0:
                nl = n
            eol = nl - 1 if nl > pos and body[nl - 1] == 0x0D else nl
            line_start = pos
            pos = nl + 1
            i = _skip_ws(body, line_start, eol)
            if i >= eol:
                continue
            if body[i] == _HASH:
                _check_comment(body, i, eol)
                continue
            m = _SAMPLE_RE.fullmatch(body, line_start, eol)
            if m is None:
                _diagnose(body, i, eol, keys)
                continue  # pragma: no cover  (_diagnose always raises)
            name, block, value_tok, ts_tok = m.group(1, 2, 3, 4)
            key_id = -1
            if block is not None:
                key_id_or_none = blocks.get(block)
                if key_id_or_none is None:
                    bstart = m.start(2)
                    end, key_id = g.parse_label_block(body, bstart, eol, keys)
                    if end != m.end(2):  # pragma: no cover  (the two scanners agree)
                        raise AssertionError("fastmetrics bug: label block end mismatch")
                    blocks[block] = key_id
                else:
                    key_id = key_id_or_none
                live.add(block)
            if _VALUE_RE.fullmatch(value_tok) is None:
                # the regex may have split the line differently from the grammar (say a
                # label block with no value after it): let the byte-wise reader decide
                _diagnose(body, i, eol, keys)
            if ts_tok is not None:
                ts = _check_timestamp(body, m.start(4), m.end(4)) * 1_000_000
            else:
                ts = default_ts
            series = families.get(name, g.SERIES_OTHER)
            if series == g.SERIES_OTHER:
                continue
            value = float(value_tok)
            if series == g.SERIES_NODE_CPU:
                node_seen, node_ts, node_cpu = True, ts, g.cpu_from_seconds(value)
            elif series == g.SERIES_NODE_MEMORY:
                node_seen, node_ts, node_mem = True, ts, g.uint64_from_float(value)
            elif key_id < 0:
                skipped += 1
            else:
                row = rows.get(key_id)
                if row is None:
                    row = rows[key_id] = [0, 0, 0, 0]
                if series == g.SERIES_CONTAINER_CPU:
                    row[0] = ts
                    row[2] = g.cpu_from_seconds(value)
                elif series == g.SERIES_CONTAINER_MEMORY:
                    row[0] = ts
                    row[3] = g.uint64_from_float(value)
                else:
                    row[1] = g.start_ns_from_seconds(value)
        batch = self._batch(rows, node_seen, node_ts, node_cpu, node_mem, skipped)
        self._pending_remap = None  # delivered with this batch
        if not self._compact_keys(live):
            self._forget_unused(live)
        return batch

    def _forget_unused(self, live: set[bytes]) -> None:
        # Drop cached label blocks of pods gone from the node, so the cache tracks the node.
        if len(self._blocks) > 4 * len(live) + 256:
            self._blocks = {b: k for b, k in self._blocks.items() if b in live}

    def _compact_keys(self, live: set[bytes]) -> bool:
        # Key ids of pods gone from the node are never reused: when they outnumber the live
        # ones, the table is replaced by a compacted copy (the same rule as the compiled
        # decoder). The next batch carries the remap so that the store keeps every history.
        blocks = self._blocks
        used = {k for k in (blocks[b] for b in live) if k >= 0}
        if len(self.keys) <= g.key_compaction_threshold(len(used)):
            return False
        table, key_map = self.keys.compacted(used)
        self._pending_remap = KeyRemap(self.keys, key_map)
        self.keys = table
        self._blocks = {b: (int(key_map[k]) if k >= 0 else -1)
                        for b, k in blocks.items() if b in live}
        return True

    def _batch(
        self,
        rows: dict[int, list[int]],
        node_seen: bool,
        node_ts: int,
        node_cpu: int,
        node_mem: int,
        skipped: int,
    ) -> DecodedBatch:
        pod_of_key = self.keys.pod_of_key
        bad_pods = {pod_of_key[k] for k, r in rows.items() if r[2] == 0 or r[3] == 0}
        kept = [(k, r) for k, r in rows.items() if pod_of_key[k] not in bad_pods]
        node = None
        if node_seen and node_cpu != 0 and node_mem != 0:
            node = NodePoint(node_ts, node_cpu, node_mem)
        return DecodedBatch(
            node=node,
            key_id=np.array([k for k, _ in kept], dtype=np.int32),
            pod_id=np.array([pod_of_key[k] for k, _ in kept], dtype=np.int32),
            timestamp_ns=np.array([r[0] for _, r in kept], dtype=np.int64),
            start_time_ns=np.array([r[1] for _, r in kept], dtype=np.int64),
            cpu_nanocore_seconds=np.array([r[2] for _, r in kept], dtype=np.uint64),
            memory_bytes=np.array([r[3] for _, r in kept], dtype=np.uint64),
            keys=self.keys,
            dropped_pods=len(bad_pods),
            skipped_samples=skipped,
            key_remap=self._pending_remap,
        )
