# cython: language_level=3
"""The compiled kernels of fastmetrics.

``DecoderC`` turns a kubelet ``/metrics/resource`` body (Prometheus text 0.0.4) into numpy
columns. The byte scanner runs without the GIL and creates no Python object per sample: label
blocks are interned in a hash table owned by the decoder, and a block seen in the previous
payload of the same node is recognised by one ``memcmp`` against a predicted entry. Only a label
block never seen before leaves the kernel: it is parsed and interned by
``_grammar.parse_label_block`` (shared with the Python twin), then the kernel resumes.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

cimport numpy as cnp

import numpy as np

from fastmetrics import _grammar
from fastmetrics import errors as _errors
from fastmetrics._batch import DecodedBatch, KeyRemap, KeyTable, NodePoint

cnp.import_array()

cdef object DecodeError = _errors.DecodeError
cdef object FastMetricsError = _errors.FastMetricsError
cdef object GrammarError = _grammar.GrammarError
cdef object REASONS = _grammar.REASONS
cdef object parse_label_block = _grammar.parse_label_block
cdef object make_excerpt = _errors.make_excerpt
cdef object default_timestamp_arg = _grammar.default_timestamp_arg
cdef object DECODER_IN_USE = _grammar.DECODER_IN_USE
cdef object key_compaction_threshold = _grammar.key_compaction_threshold

cdef extern from *:
    """
    #include <locale.h>
    #include <stdlib.h>
    #ifndef FM_DEBUG
    #define FM_DEBUG 0
    #endif
    /* strtod that ignores the process locale (a decimal comma must never be accepted) */
    static locale_t fm_c_locale = (locale_t)0;
    static double fm_strtod(const char *s) {
        if (fm_c_locale == (locale_t)0) fm_c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        return strtod_l(s, NULL, fm_c_locale);
    }
    """
    int FM_DEBUG
    double fm_strtod(const char *s) nogil

# Family codes (same values as _grammar.SERIES_*).
cdef enum:
    SERIES_OTHER = 0
    SERIES_NODE_CPU = 1
    SERIES_NODE_MEMORY = 2
    SERIES_CONTAINER_CPU = 3
    SERIES_CONTAINER_MEMORY = 4
    SERIES_CONTAINER_START = 5

# Error codes: indices into _grammar.REASONS.
cdef enum:
    ERR_NONE = 0
    ERR_METRIC_NAME = 1
    ERR_MISSING_VALUE = 2
    ERR_BAD_VALUE = 3
    ERR_NEGATIVE_TIMESTAMP = 4
    ERR_BAD_TIMESTAMP = 5
    ERR_TIMESTAMP_RANGE = 6
    ERR_TRAILING = 7
    ERR_VALUE_SEPARATOR = 8
    ERR_HELP_NAME = 9
    ERR_TYPE_NAME = 10
    ERR_TYPE_MISSING = 11
    ERR_TYPE_INVALID = 12
    ERR_TYPE_TRAILING = 13

# What the kernel stopped for.
cdef enum:
    RUN_DONE = 0
    RUN_ERROR = 1
    RUN_MISS = 2

cdef enum:
    START_TOKEN_MAX = 23

# Largest millisecond timestamp whose nanosecond value fits in int64: (2**63 - 1) // 10**6.
cdef uint64_t MAX_TIMESTAMP_MS = 9223372036854ULL

# One interned label block: the bytes from '{' to '}' inclusive, stored in the arena.
cdef struct Entry:
    uint64_t hash
    int64_t offset
    int32_t length
    int32_t key          # container key id, or -1 when namespace/pod/container is missing
    int32_t next         # the entry that followed this one last time (prediction), or -1
    int32_t used_gen     # the decode generation that last used this entry
    int64_t start_ns     # cached conversion of the last container_start_time_seconds value
    uint8_t start_len    # length of start_token; 0 = nothing cached
    char start_token[START_TOKEN_MAX]

cdef uint8_t NAME_START[256]
cdef uint8_t NAME_CHAR[256]
cdef double POW10[23]


cdef void _init_tables() noexcept:
    cdef int c
    memset(NAME_START, 0, 256)
    memset(NAME_CHAR, 0, 256)
    for c in range(256):
        if (c >= 97 and c <= 122) or (c >= 65 and c <= 90) or c == 95 or c == 58:
            NAME_START[c] = 1
            NAME_CHAR[c] = 1
        elif c >= 48 and c <= 57:
            NAME_CHAR[c] = 1
    POW10[0] = 1.0
    for c in range(1, 23):
        POW10[c] = POW10[c - 1] * 10.0   # exact up to 1e22


_init_tables()


cdef inline bint is_ws(uint8_t c) noexcept nogil:
    return c == 32 or c == 9


cdef inline Py_ssize_t skip_ws(const uint8_t* b, Py_ssize_t i, Py_ssize_t eol) noexcept nogil:
    while i < eol and (b[i] == 32 or b[i] == 9):
        i += 1
    return i


cdef inline Py_ssize_t skip_token(const uint8_t* b, Py_ssize_t i, Py_ssize_t eol) noexcept nogil:
    while i < eol and b[i] != 32 and b[i] != 9:
        i += 1
    return i


cdef inline Py_ssize_t skip_name(const uint8_t* b, Py_ssize_t i, Py_ssize_t eol) noexcept nogil:
    while i < eol and NAME_CHAR[b[i]]:
        i += 1
    return i


cdef inline int series_of(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # Dispatch on the name's length first, then one memcmp (exact-name match, SPEC §3.2).
    if n == 28:
        if memcmp(p, b"node_cpu_usage_seconds_total", 28) == 0:
            return SERIES_NODE_CPU
        if memcmp(p, b"container_start_time_seconds", 28) == 0:
            return SERIES_CONTAINER_START
    elif n == 29:
        if memcmp(p, b"node_memory_working_set_bytes", 29) == 0:
            return SERIES_NODE_MEMORY
    elif n == 33:
        if memcmp(p, b"container_cpu_usage_seconds_total", 33) == 0:
            return SERIES_CONTAINER_CPU
    elif n == 34:
        if memcmp(p, b"container_memory_working_set_bytes", 34) == 0:
            return SERIES_CONTAINER_MEMORY
    return SERIES_OTHER


cdef inline bint lower_is(const uint8_t* p, const char* word, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if (p[i] | 0x20) != <uint8_t>word[i]:
            return False
    return True


cdef int parse_value(const uint8_t* p, Py_ssize_t n, double* out) noexcept nogil:
    """Parse a sample value token (Go ParseFloat's decimal and special forms); -1 if invalid."""
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef uint64_t mant = 0
    cdef int ndigits = 0      # significant digits accumulated in mant
    cdef int exp10 = 0
    cdef int exp_val = 0
    cdef bint exp_neg = False
    cdef bint any_digit = False
    cdef bint inexact = False
    cdef double d
    cdef char small[64]
    cdef char* buf
    if n > 0 and (p[0] == 43 or p[0] == 45):   # '+' '-'
        neg = p[0] == 45
        i = 1
    if i < n and (p[i] | 0x20) >= 97 and (p[i] | 0x20) <= 122:
        if n - i == 3 and lower_is(p + i, b"inf", 3):
            out[0] = -1e308 * 1e308 if neg else 1e308 * 1e308
            return 0
        if n - i == 8 and lower_is(p + i, b"infinity", 8):
            out[0] = -1e308 * 1e308 if neg else 1e308 * 1e308
            return 0
        if n - i == 3 and lower_is(p + i, b"nan", 3):
            d = 1e308 * 1e308
            out[0] = d - d
            return 0
        return -1
    while i < n and p[i] >= 48 and p[i] <= 57:
        any_digit = True
        if mant == 0 and p[i] == 48:
            pass
        elif ndigits < 19:
            mant = mant * 10 + (p[i] - 48)
            ndigits += 1
        else:
            exp10 += 1
            inexact = True
        i += 1
    if i < n and p[i] == 46:   # '.'
        i += 1
        while i < n and p[i] >= 48 and p[i] <= 57:
            any_digit = True
            if mant == 0 and p[i] == 48:
                exp10 -= 1
            elif ndigits < 19:
                mant = mant * 10 + (p[i] - 48)
                ndigits += 1
                exp10 -= 1
            else:
                inexact = True
            i += 1
    if not any_digit:
        return -1
    if i < n and (p[i] | 0x20) == 101:   # 'e'
        i += 1
        if i < n and (p[i] == 43 or p[i] == 45):
            exp_neg = p[i] == 45
            i += 1
        if i >= n or p[i] < 48 or p[i] > 57:
            return -1
        while i < n and p[i] >= 48 and p[i] <= 57:
            if exp_val < 100000:
                exp_val = exp_val * 10 + (p[i] - 48)
            i += 1
        exp10 += -exp_val if exp_neg else exp_val
    if i != n:
        return -1
    if mant == 0:
        out[0] = -0.0 if neg else 0.0
        return 0
    # Clinger's fast path: exact when the mantissa and the power of ten are exact doubles.
    if not inexact and mant <= 9007199254740992ULL and exp10 >= -22 and exp10 <= 22:
        d = <double>mant
        if exp10 >= 0:
            d = d * POW10[exp10]
        else:
            d = d / POW10[-exp10]
        out[0] = -d if neg else d
        return 0
    # Correctly rounded fallback on a NUL-terminated copy of the token.
    if n < 64:
        memcpy(small, p, n)
        small[n] = 0
        out[0] = fm_strtod(small)
        return 0
    buf = <char*>malloc(n + 1)
    if buf == NULL:
        return -2
    memcpy(buf, p, n)
    buf[n] = 0
    out[0] = fm_strtod(buf)
    free(buf)
    return 0


cdef inline uint64_t cpu_from_seconds(double v) noexcept nogil:
    # Go's uint64(v * 1e9); 0 (entity dropped) for negative, NaN, infinite or >= 2**64.
    cdef double x = v * 1e9
    if x >= 0.0 and x < 18446744073709551616.0:
        return <uint64_t>x
    return 0


cdef inline uint64_t uint64_from_float(double v) noexcept nogil:
    if v >= 0.0 and v < 18446744073709551616.0:
        return <uint64_t>v
    return 0


cdef inline int64_t start_ns_from_seconds(double v) noexcept nogil:
    cdef double x = v * 1e9
    if x >= -9223372036854775808.0 and x < 9223372036854775808.0:
        return <int64_t>x
    return 0


cdef inline uint64_t hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # FNV-1a; only used on prediction misses.
    cdef uint64_t h = 14695981039346656037ULL
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * 1099511628211ULL
    return h


cdef class DecoderC:
    """Decodes one node's kubelet ``/metrics/resource`` bodies into columns (compiled).

    Keep one decoder per node and call :meth:`decode` on every scrape. Label blocks are interned
    in ``keys`` (a :class:`fastmetrics.KeyTable`); a body whose label bytes are unchanged since
    the previous call is decoded without creating any Python object per series.
    """

    cdef readonly object keys
    # interned label blocks
    cdef Entry* entries
    cdef Py_ssize_t n_entries, cap_entries
    cdef uint8_t* arena
    cdef Py_ssize_t arena_len, arena_cap
    cdef int32_t* table            # open addressing, entry index or -1
    cdef Py_ssize_t table_mask
    cdef int32_t gen
    cdef Py_ssize_t live_entries
    # per-key / per-pod scratch (reset after every decode)
    cdef int32_t* slot_of_key
    cdef int32_t* pod_of_key
    cdef Py_ssize_t cap_keys, n_keys
    cdef uint8_t* pod_bad
    cdef Py_ssize_t cap_pods
    # rows of the payload being decoded
    cdef int32_t* row_key
    cdef int64_t* row_ts
    cdef int64_t* row_start
    cdef uint64_t* row_cpu
    cdef uint64_t* row_mem
    cdef Py_ssize_t n_rows, cap_rows
    # parse state (the kernel is resumable after a label-block miss)
    cdef const uint8_t* buf
    cdef Py_ssize_t buf_len, pos
    cdef int32_t last_entry
    cdef int64_t default_ts
    cdef bint node_seen
    cdef int64_t node_ts
    cdef uint64_t node_cpu, node_mem
    cdef Py_ssize_t skipped
    cdef int err_code
    cdef Py_ssize_t err_offset
    cdef Py_ssize_t miss_start, miss_end, miss_eol
    cdef uint64_t miss_hash
    cdef bint busy                 # a decode is running (the kernel runs without the GIL)
    cdef object pending_remap      # KeyRemap for the next batch after a key compaction

    def __cinit__(self):
        self.keys = KeyTable()
        self.entries = NULL
        self.arena = NULL
        self.table = NULL
        self.slot_of_key = NULL
        self.pod_of_key = NULL
        self.pod_bad = NULL
        self.row_key = NULL
        self.row_ts = NULL
        self.row_start = NULL
        self.row_cpu = NULL
        self.row_mem = NULL
        self.last_entry = -1
        self.pending_remap = None
        self._alloc_table(1024)
        self._grow_rows(256)

    def __dealloc__(self):
        free(self.entries)
        free(self.arena)
        free(self.table)
        free(self.slot_of_key)
        free(self.pod_of_key)
        free(self.pod_bad)
        free(self.row_key)
        free(self.row_ts)
        free(self.row_start)
        free(self.row_cpu)
        free(self.row_mem)

    # ---------------------------------------------------------------- allocation helpers

    cdef void _alloc_table(self, Py_ssize_t size) except *:
        cdef int32_t* t = <int32_t*>malloc(size * sizeof(int32_t))
        if t == NULL:
            raise MemoryError()
        memset(t, 0xFF, size * sizeof(int32_t))
        free(self.table)
        self.table = t
        self.table_mask = size - 1

    cdef void _grow_rows(self, Py_ssize_t cap) except *:
        cdef void* p
        p = realloc(self.row_key, cap * sizeof(int32_t))
        if p == NULL:
            raise MemoryError()
        self.row_key = <int32_t*>p
        p = realloc(self.row_ts, cap * sizeof(int64_t))
        if p == NULL:
            raise MemoryError()
        self.row_ts = <int64_t*>p
        p = realloc(self.row_start, cap * sizeof(int64_t))
        if p == NULL:
            raise MemoryError()
        self.row_start = <int64_t*>p
        p = realloc(self.row_cpu, cap * sizeof(uint64_t))
        if p == NULL:
            raise MemoryError()
        self.row_cpu = <uint64_t*>p
        p = realloc(self.row_mem, cap * sizeof(uint64_t))
        if p == NULL:
            raise MemoryError()
        self.row_mem = <uint64_t*>p
        self.cap_rows = cap

    cdef void _sync_keys(self) except *:
        # Mirror new keys of the KeyTable into the C arrays the kernel reads.
        cdef Py_ssize_t n = len(self.keys)
        cdef Py_ssize_t npods = self.keys.pod_count
        cdef Py_ssize_t cap, i
        cdef void* p
        cdef list pod_of_key
        if n > self.cap_keys:
            cap = max(n, 2 * self.cap_keys, 64)
            p = realloc(self.slot_of_key, cap * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self.slot_of_key = <int32_t*>p
            p = realloc(self.pod_of_key, cap * sizeof(int32_t))
            if p == NULL:
                raise MemoryError()
            self.pod_of_key = <int32_t*>p
            for i in range(self.cap_keys, cap):
                self.slot_of_key[i] = -1
            self.cap_keys = cap
        if n > self.n_keys:
            pod_of_key = self.keys.pod_of_key
            for i in range(self.n_keys, n):
                self.pod_of_key[i] = pod_of_key[i]
            self.n_keys = n
        if npods > self.cap_pods:
            cap = max(npods, 2 * self.cap_pods, 64)
            p = realloc(self.pod_bad, cap * sizeof(uint8_t))
            if p == NULL:
                raise MemoryError()
            self.pod_bad = <uint8_t*>p
            memset(self.pod_bad + self.cap_pods, 0, cap - self.cap_pods)
            self.cap_pods = cap

    cdef int32_t _insert_entry(self, const uint8_t* p, Py_ssize_t n, uint64_t h,
                               int32_t key) except -2:
        cdef Py_ssize_t cap, slot
        cdef void* q
        cdef Entry* e
        if self.n_entries == self.cap_entries:
            cap = max(64, 2 * self.cap_entries)
            q = realloc(self.entries, cap * sizeof(Entry))
            if q == NULL:
                raise MemoryError()
            self.entries = <Entry*>q
            self.cap_entries = cap
        if self.arena_len + n > self.arena_cap:
            cap = max(4096, 2 * self.arena_cap, self.arena_len + n)
            q = realloc(self.arena, cap)
            if q == NULL:
                raise MemoryError()
            self.arena = <uint8_t*>q
            self.arena_cap = cap
        if 2 * (self.n_entries + 1) > self.table_mask + 1:
            self._rehash(2 * (self.table_mask + 1))
        e = &self.entries[self.n_entries]
        e.hash = h
        e.offset = self.arena_len
        e.length = <int32_t>n
        e.key = key
        e.next = -1
        e.used_gen = -1
        e.start_len = 0
        e.start_ns = 0
        memcpy(self.arena + self.arena_len, p, n)
        self.arena_len += n
        slot = h & self.table_mask
        while self.table[slot] >= 0:
            slot = (slot + 1) & self.table_mask
        self.table[slot] = <int32_t>self.n_entries
        self.n_entries += 1
        return <int32_t>(self.n_entries - 1)

    cdef void _rehash(self, Py_ssize_t size) except *:
        cdef Py_ssize_t i, slot
        self._alloc_table(size)
        for i in range(self.n_entries):
            slot = self.entries[i].hash & self.table_mask
            while self.table[slot] >= 0:
                slot = (slot + 1) & self.table_mask
            self.table[slot] = <int32_t>i

    cdef void _compact(self) except *:
        # Keep only the label blocks used by the last decode (the node's current pods).
        cdef Py_ssize_t i, j = 0, arena_len = 0
        cdef Entry* e
        for i in range(self.n_entries):
            e = &self.entries[i]
            if e.used_gen != self.gen:
                continue
            memmove(self.arena + arena_len, self.arena + e.offset, e.length)
            self.entries[j] = e[0]
            self.entries[j].offset = arena_len
            self.entries[j].next = -1
            arena_len += e.length
            j += 1
        self.n_entries = j
        self.arena_len = arena_len
        self.last_entry = -1
        self._rehash(self.table_mask + 1)

    # ---------------------------------------------------------------- the kernel

    cdef inline int32_t _lookup(self, const uint8_t* p, Py_ssize_t n, uint64_t h) noexcept nogil:
        cdef Py_ssize_t slot = h & self.table_mask
        cdef int32_t idx
        cdef Entry* e
        while True:
            idx = self.table[slot]
            if idx < 0:
                return -1
            e = &self.entries[idx]
            if e.hash == h and e.length == n and memcmp(self.arena + e.offset, p, n) == 0:
                return idx
            slot = (slot + 1) & self.table_mask

    cdef inline int _error(self, int code, Py_ssize_t offset) noexcept nogil:
        self.err_code = code
        self.err_offset = offset
        return RUN_ERROR

    cdef int _check_comment(self, Py_ssize_t i, Py_ssize_t eol) noexcept nogil:
        # '#' at i. HELP and TYPE lines have a grammar; any other comment is free text.
        cdef const uint8_t* b = self.buf
        cdef Py_ssize_t k, m, nn, t, u, w
        cdef bint is_help
        k = skip_ws(b, i + 1, eol)
        if k == i + 1 or eol - k < 4:
            return RUN_DONE
        if memcmp(b + k, b"HELP", 4) == 0:
            is_help = True
        elif memcmp(b + k, b"TYPE", 4) == 0:
            is_help = False
        else:
            return RUN_DONE
        # as Prometheus' lexer: HELP/TYPE only when followed by whitespace ("# HELP" alone is a
        # plain comment)
        if k + 4 >= eol or not is_ws(b[k + 4]):
            return RUN_DONE
        m = skip_ws(b, k + 4, eol)
        if m >= eol or not NAME_START[b[m]]:
            return self._error(ERR_HELP_NAME if is_help else ERR_TYPE_NAME, m)
        nn = skip_name(b, m + 1, eol)
        if nn < eol and not is_ws(b[nn]):
            return self._error(ERR_METRIC_NAME, nn)
        if is_help:
            return RUN_DONE
        t = skip_ws(b, nn, eol)
        if t >= eol:
            return self._error(ERR_TYPE_MISSING, t)
        u = skip_token(b, t, eol)
        if not ((u - t == 7 and (memcmp(b + t, b"counter", 7) == 0
                                 or memcmp(b + t, b"summary", 7) == 0
                                 or memcmp(b + t, b"untyped", 7) == 0))
                or (u - t == 5 and memcmp(b + t, b"gauge", 5) == 0)
                or (u - t == 9 and memcmp(b + t, b"histogram", 9) == 0)):
            return self._error(ERR_TYPE_INVALID, t)
        w = skip_ws(b, u, eol)
        if w < eol:
            return self._error(ERR_TYPE_TRAILING, w)
        return RUN_DONE

    cdef Py_ssize_t _row(self, int32_t key) noexcept nogil:
        # The row of key in this payload, created on first appearance; -1 if out of memory.
        cdef Py_ssize_t r = self.slot_of_key[key]
        if r >= 0:
            return r
        if self.n_rows == self.cap_rows:
            return -1
        r = self.n_rows
        self.n_rows += 1
        self.slot_of_key[key] = <int32_t>r
        self.row_key[r] = key
        self.row_ts[r] = 0
        self.row_start[r] = 0
        self.row_cpu[r] = 0
        self.row_mem[r] = 0
        return r

    cdef int _run(self) noexcept nogil:
        """Scan lines from self.pos; stop at the end, at an error, or at an unknown label block."""
        cdef const uint8_t* b = self.buf
        cdef Py_ssize_t n = self.buf_len
        cdef Py_ssize_t pos = self.pos
        cdef Py_ssize_t line_start, nl, eol, i, j, k, m, v, t, u, w, r
        cdef const uint8_t* hit
        cdef int series, rc
        cdef int32_t e_idx, pred, key
        cdef Entry* e
        cdef double value
        cdef int64_t ts
        cdef uint64_t ms, h
        cdef bint inq, start_cached
        while pos < n:
            line_start = pos
            hit = <const uint8_t*>memchr(b + pos, 10, n - pos)
            nl = (hit - b) if hit != NULL else n
            eol = nl
            if eol > line_start and b[eol - 1] == 13:
                eol -= 1
            pos = nl + 1
            i = line_start
            while i < eol and (b[i] == 32 or b[i] == 9):
                i += 1
            if i >= eol:
                continue
            if b[i] == 35:   # '#'
                if self._check_comment(i, eol) != RUN_DONE:
                    return RUN_ERROR
                continue
            # ---- metric name
            if not NAME_START[b[i]]:
                return self._error(ERR_METRIC_NAME, i)
            j = skip_name(b, i + 1, eol)
            series = series_of(b + i, j - i)
            k = j
            while k < eol and (b[k] == 32 or b[k] == 9):
                k += 1
            key = -1
            # ---- label block
            if k < eol and b[k] == 123:   # '{'
                e_idx = -1
                pred = self.entries[self.last_entry].next if self.last_entry >= 0 else -1
                if pred >= 0:
                    e = &self.entries[pred]
                    if e.length <= eol - k and memcmp(self.arena + e.offset, b + k, e.length) == 0:
                        e_idx = pred
                if e_idx < 0:
                    # find the candidate end: the first '}' outside a quoted value
                    m = k + 1
                    inq = False
                    while m < eol:
                        if inq:
                            if b[m] == 92:   # backslash
                                m += 1
                            elif b[m] == 34:
                                inq = False
                        elif b[m] == 34:
                            inq = True
                        elif b[m] == 125:
                            break
                        m += 1
                    if m < eol:
                        h = hash_bytes(b + k, m + 1 - k)
                        e_idx = self._lookup(b + k, m + 1 - k, h)
                    else:
                        h = 0
                    if e_idx < 0:
                        self.pos = line_start
                        self.miss_start = k
                        self.miss_end = m + 1 if m < eol else -1
                        self.miss_eol = eol
                        self.miss_hash = h
                        return RUN_MISS
                    if self.last_entry >= 0:
                        self.entries[self.last_entry].next = e_idx
                e = &self.entries[e_idx]
                if e.used_gen != self.gen:
                    e.used_gen = self.gen
                    self.live_entries += 1
                self.last_entry = e_idx
                key = e.key
                k += e.length
                if k < eol and not is_ws(b[k]):
                    return self._error(ERR_VALUE_SEPARATOR, k)
            elif k == j and j < eol:
                return self._error(ERR_METRIC_NAME, j)
            # ---- value
            m = k
            while m < eol and (b[m] == 32 or b[m] == 9):
                m += 1
            if m >= eol:
                return self._error(ERR_MISSING_VALUE, m)
            v = skip_token(b, m, eol)
            start_cached = False
            if series == SERIES_CONTAINER_START and key >= 0:
                # start times repeat on every scrape: reuse the last conversion when the
                # value bytes are the same (they were validated when first seen)
                e = &self.entries[self.last_entry]
                start_cached = (e.start_len != 0 and e.start_len == v - m
                                and memcmp(e.start_token, b + m, v - m) == 0)
            if not start_cached:
                rc = parse_value(b + m, v - m, &value)
                if rc != 0:
                    return self._error(ERR_BAD_VALUE if rc == -1 else -1, m)
            # ---- timestamp
            ts = self.default_ts
            t = skip_ws(b, v, eol)
            if t < eol:
                u = t
                ms = 0
                while u < eol and b[u] >= 48 and b[u] <= 57:
                    if ms <= MAX_TIMESTAMP_MS:
                        ms = ms * 10 + (b[u] - 48)
                    u += 1
                if u == t or (u < eol and not is_ws(b[u])):
                    if b[t] == 45:   # '-'
                        u = t + 1
                        while u < eol and b[u] >= 48 and b[u] <= 57:
                            u += 1
                        if u > t + 1 and (u == eol or is_ws(b[u])):
                            return self._error(ERR_NEGATIVE_TIMESTAMP, t)
                    return self._error(ERR_BAD_TIMESTAMP, t)
                if ms > MAX_TIMESTAMP_MS:
                    return self._error(ERR_TIMESTAMP_RANGE, t)
                w = skip_ws(b, u, eol)
                if w < eol:
                    return self._error(ERR_TRAILING, w)
                ts = <int64_t>ms * 1000000
            if start_cached:
                r = self._row(key)
                if r < 0:
                    return self._error(-1, m)
                self.row_start[r] = self.entries[self.last_entry].start_ns
                continue
            if series == SERIES_OTHER:
                continue
            if series == SERIES_NODE_CPU:
                self.node_seen = True
                self.node_ts = ts
                self.node_cpu = cpu_from_seconds(value)
                continue
            if series == SERIES_NODE_MEMORY:
                self.node_seen = True
                self.node_ts = ts
                self.node_mem = uint64_from_float(value)
                continue
            if key < 0:
                self.skipped += 1
                continue
            r = self._row(key)
            if r < 0:
                return self._error(-1, m)
            if series == SERIES_CONTAINER_CPU:
                self.row_ts[r] = ts
                self.row_cpu[r] = cpu_from_seconds(value)
            elif series == SERIES_CONTAINER_MEMORY:
                self.row_ts[r] = ts
                self.row_mem[r] = uint64_from_float(value)
            else:
                self.row_start[r] = start_ns_from_seconds(value)
                e = &self.entries[self.last_entry]
                if v - m <= START_TOKEN_MAX:
                    memcpy(e.start_token, b + m, v - m)
                    e.start_len = <uint8_t>(v - m)
                    e.start_ns = self.row_start[r]
        self.pos = pos
        return RUN_DONE

    # ---------------------------------------------------------------- Python entry point

    def decode(self, body, default_timestamp_ns, /):
        """Decode one kubelet ``/metrics/resource`` body into columns.

        Parameters
        ----------
        body : bytes
            The HTTP response body (Prometheus text format 0.0.4).
        default_timestamp_ns : int
            Time given to samples without a timestamp: ns since the Unix epoch (metrics-server
            uses the request time truncated to milliseconds).

        Returns
        -------
        DecodedBatch
            The node point and the container columns of every pod kept (SPEC §3.3).

        Raises
        ------
        DecodeError
            The body is not valid exposition text; names the byte offset, line and excerpt.
        """
        cdef bytes data = body if type(body) is bytes else bytes(body)
        cdef int64_t default_ts = default_timestamp_arg(default_timestamp_ns)
        # The kernel releases the GIL, so a second thread could enter while one decodes and
        # corrupt the decoder's buffers: refuse instead (checked and set with the GIL held).
        if self.busy:
            raise FastMetricsError(DECODER_IN_USE)
        self.busy = True
        try:
            return self._decode(data, default_ts)
        finally:
            self.busy = False

    cdef object _decode(self, bytes data, int64_t default_ts):
        cdef int rc
        cdef Py_ssize_t i
        self.buf = <const uint8_t*>PyBytes_AS_STRING(data)
        self.buf_len = PyBytes_GET_SIZE(data)
        self.pos = 0
        self.default_ts = default_ts
        self.node_seen = False
        self.node_ts = 0
        self.node_cpu = 0
        self.node_mem = 0
        self.skipped = 0
        self.n_rows = 0
        self.last_entry = -1
        self.live_entries = 0
        self.gen += 1
        if self.gen < 0:
            self.gen = 0
        try:
            while True:
                # rows can never outnumber the keys known when the run starts
                if self.cap_rows < self.n_keys:
                    self._grow_rows(max(self.n_keys, 2 * self.cap_rows))
                with nogil:
                    rc = self._run()
                if rc == RUN_DONE:
                    break
                if rc == RUN_ERROR:
                    self._raise_error(data)
                self._intern_block(data)
            batch = self._make_batch()
        finally:
            for i in range(self.n_rows):
                self.slot_of_key[self.row_key[i]] = -1
            self.n_rows = 0
            self.buf = NULL
        self.pending_remap = None  # delivered with this batch
        if not self._compact_keys() and self.n_entries > 4 * self.live_entries + 256:
            self._compact()
        return batch

    cdef bint _compact_keys(self) except -1:
        # Key ids of pods gone from the node are never reused: when they outnumber the keys of
        # the payload just decoded, the KeyTable is replaced by a compacted copy (a published
        # snapshot keeps reading the old one) and the next batch carries the remap.
        cdef Py_ssize_t i, used = 0
        cdef int32_t k
        cdef uint8_t* mark
        cdef list live
        if self.n_keys == 0:
            return False
        mark = <uint8_t*>calloc(self.n_keys, 1)
        if mark == NULL:
            raise MemoryError()
        try:
            for i in range(self.n_entries):
                k = self.entries[i].key
                if self.entries[i].used_gen == self.gen and k >= 0 and not mark[k]:
                    mark[k] = 1
                    used += 1
            if self.n_keys <= key_compaction_threshold(used):
                return False
            live = [i for i in range(self.n_keys) if mark[i]]
        finally:
            free(mark)
        table, key_map = self.keys.compacted(live)
        cdef const int32_t[::1] m = key_map
        self.pending_remap = KeyRemap(self.keys, key_map)
        self.keys = table
        self._compact()  # keeps the label blocks of this payload: exactly the live keys
        for i in range(self.n_entries):
            k = self.entries[i].key
            if k >= 0:
                self.entries[i].key = m[k]
        self.n_keys = 0  # mirror every key of the new table again
        self._sync_keys()
        return True

    cdef void _raise_error(self, bytes data) except *:
        if self.err_code < 0:
            raise MemoryError()
        lineno = data.count(b"\n", 0, self.err_offset) + 1
        raise DecodeError(REASONS[self.err_code], offset=self.err_offset, lineno=lineno,
                          excerpt=make_excerpt(data, self.err_offset))

    cdef void _intern_block(self, bytes data) except *:
        # A label block not seen before: parse it with the shared Python parser, intern it.
        cdef Py_ssize_t start = self.miss_start
        cdef int32_t idx
        try:
            end, key = parse_label_block(data, start, self.miss_eol, self.keys)
        except GrammarError as exc:
            offset = exc.offset
            raise DecodeError(exc.args[0], offset=offset,
                              lineno=data.count(b"\n", 0, offset) + 1,
                              excerpt=make_excerpt(data, offset)) from None
        if end != self.miss_end:
            raise FastMetricsError(
                "fastmetrics bug: label block scanners disagree at byte %d" % start)
        self._sync_keys()
        idx = self._insert_entry(self.buf + start, end - start, self.miss_hash, key)
        if self.last_entry >= 0:
            self.entries[self.last_entry].next = idx

    cdef object _make_batch(self):
        cdef Py_ssize_t i, n_kept = 0, dropped = 0
        cdef int32_t pod
        cdef cnp.npy_intp dims[1]
        # a pod with any container whose cpu or memory is 0 is dropped whole (SPEC §3.3)
        for i in range(self.n_rows):
            if self.row_cpu[i] == 0 or self.row_mem[i] == 0:
                pod = self.pod_of_key[self.row_key[i]]
                if not self.pod_bad[pod]:
                    self.pod_bad[pod] = 1
                    dropped += 1
        for i in range(self.n_rows):
            if not self.pod_bad[self.pod_of_key[self.row_key[i]]]:
                n_kept += 1
        dims[0] = n_kept
        key_id = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT32, 0)
        pod_id = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT32, 0)
        timestamp_ns = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        start_time_ns = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        cpu = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT64, 0)
        mem = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT64, 0)
        cdef int32_t* o_key = <int32_t*>cnp.PyArray_DATA(key_id)
        cdef int32_t* o_pod = <int32_t*>cnp.PyArray_DATA(pod_id)
        cdef int64_t* o_ts = <int64_t*>cnp.PyArray_DATA(timestamp_ns)
        cdef int64_t* o_start = <int64_t*>cnp.PyArray_DATA(start_time_ns)
        cdef uint64_t* o_cpu = <uint64_t*>cnp.PyArray_DATA(cpu)
        cdef uint64_t* o_mem = <uint64_t*>cnp.PyArray_DATA(mem)
        cdef Py_ssize_t j = 0
        cdef int32_t key
        for i in range(self.n_rows):
            key = self.row_key[i]
            pod = self.pod_of_key[key]
            if self.pod_bad[pod]:
                continue
            o_key[j] = key
            o_pod[j] = pod
            o_ts[j] = self.row_ts[i]
            o_start[j] = self.row_start[i]
            o_cpu[j] = self.row_cpu[i]
            o_mem[j] = self.row_mem[i]
            j += 1
        for i in range(self.n_rows):
            self.pod_bad[self.pod_of_key[self.row_key[i]]] = 0
        node = None
        if self.node_seen and self.node_cpu != 0 and self.node_mem != 0:
            node = NodePoint(self.node_ts, self.node_cpu, self.node_mem)
        return DecodedBatch(node, key_id, pod_id, timestamp_ns, start_time_ns, cpu, mem,
                            self.keys, dropped, self.skipped, self.pending_remap)


# ==================================================================== the store kernels

# Row status after the read-time checks (same values as _store_py.STATUS_*).
cdef enum:
    STATUS_NO_PREV = 0
    STATUS_OK = 1
    STATUS_START_DECREASED = 2
    STATUS_CPU_DECREASED = 3

cdef int64_t FRESH_MIN_AGE_NS = 10000000000LL


cdef inline uint64_t rate_nanocores(int64_t ts, uint64_t cpu, int64_t prev_ts,
                                    uint64_t prev_cpu) noexcept nogil:
    # Go: uint64(float64(last.cpu - prev.cpu) / window.Seconds()); saturated for absurd input
    cdef int64_t w = ts - prev_ts
    cdef double seconds = <double>(w // 1000000000) + <double>(w % 1000000000) / 1e9
    cdef double rate = <double>(cpu - prev_cpu) / seconds
    if rate < 18446744073709551616.0:
        return <uint64_t>rate
    return 18446744073709551615ULL


def cpu_rate(const int64_t[::1] last_ts, const uint64_t[::1] last_cpu,
             const int64_t[::1] prev_ts, const uint64_t[::1] prev_cpu):
    """Nanocores and windows exactly as metrics-server computes them.

    Parameters
    ----------
    last_ts, prev_ts : int64 arrays
        Sample times in ns; ``last_ts > prev_ts`` elementwise.
    last_cpu, prev_cpu : uint64 arrays
        Cumulative CPU in ns of CPU time; ``last_cpu >= prev_cpu`` elementwise.

    Returns
    -------
    (uint64 array, int64 array)
        ``uint64(float64(dcpu) / window.Seconds())`` per element (saturated at 2**64-1), and
        the window in ns.
    """
    cdef Py_ssize_t n = last_ts.shape[0], i
    if last_cpu.shape[0] != n or prev_ts.shape[0] != n or prev_cpu.shape[0] != n:
        raise FastMetricsError("cpu_rate: columns of different lengths")
    out = np.empty(n, np.uint64)
    win = np.empty(n, np.int64)
    cdef uint64_t[::1] o = out
    cdef int64_t[::1] w = win
    with nogil:
        for i in range(n):
            o[i] = rate_nanocores(last_ts[i], last_cpu[i], prev_ts[i], prev_cpu[i])
            w[i] = last_ts[i] - prev_ts[i]
    return out, win


def store_containers(tuple new, const int64_t[::1] new_off, const int32_t[::1] old_slot,
                     tuple old, const int64_t[::1] old_off, tuple old_prev,
                     int64_t resolution_ns, Py_ssize_t max_keys):
    """One tick of the container store rule (SPEC §4.2) and the read-time rates (§4.3).

    Parameters
    ----------
    new, old : tuple of arrays
        ``(key_id int32, timestamp_ns int64, start_time_ns int64, cpu uint64, memory uint64)``;
        the rows of node ``i`` are ``new_off[i]:new_off[i+1]`` (``old_off`` likewise).
    old_slot : int32 array
        Per new node, its index among the old nodes, or -1 when it has no usable history.
    old_prev : tuple of arrays
        ``(has_prev uint8, timestamp_ns, start_time_ns, cpu, memory)`` aligned with ``old``.
    resolution_ns : int
        ``--metric-resolution``: the upper bound of the fresh-container age window.
    max_keys : int
        One more than the largest key id in ``new`` (scratch size for realignment).

    Returns
    -------
    (prev, status, cpu_rate, window)
        The new prev columns aligned with ``new``; per row the status after the read-time
        checks (0 no baseline, 1 ok, 2 start time decreased, 3 cumulative CPU decreased), the
        rate in nanocores and the window in ns (0 unless ok).
    """
    cdef const int32_t[::1] key = new[0]
    cdef const int64_t[::1] ts = new[1]
    cdef const int64_t[::1] start = new[2]
    cdef const uint64_t[::1] cpu = new[3]
    cdef const uint64_t[::1] mem = new[4]
    cdef const int32_t[::1] o_key = old[0]
    cdef const int64_t[::1] o_ts = old[1]
    cdef const int64_t[::1] o_start = old[2]
    cdef const uint64_t[::1] o_cpu = old[3]
    cdef const uint64_t[::1] o_mem = old[4]
    cdef const uint8_t[::1] p_has = old_prev[0]
    cdef const int64_t[::1] p_ts = old_prev[1]
    cdef const int64_t[::1] p_start = old_prev[2]
    cdef const uint64_t[::1] p_cpu = old_prev[3]
    cdef const uint64_t[::1] p_mem = old_prev[4]
    cdef Py_ssize_t n_rows = key.shape[0], n_old = o_key.shape[0]
    cdef Py_ssize_t n_nodes = old_slot.shape[0], n_old_nodes = old_off.shape[0] - 1
    cdef Py_ssize_t i, r, a, b, oa = 0, ob = 0, orow
    cdef int32_t s, k
    cdef bint same = False, bad = False
    cdef int64_t age, lts
    cdef uint8_t has
    if (ts.shape[0] != n_rows or start.shape[0] != n_rows or cpu.shape[0] != n_rows
            or mem.shape[0] != n_rows or new_off.shape[0] != n_nodes + 1
            or new_off[0] != 0 or new_off[n_nodes] != n_rows
            or o_ts.shape[0] != n_old or o_start.shape[0] != n_old or o_cpu.shape[0] != n_old
            or o_mem.shape[0] != n_old or p_has.shape[0] != n_old or p_ts.shape[0] != n_old
            or p_start.shape[0] != n_old or p_cpu.shape[0] != n_old or p_mem.shape[0] != n_old
            or n_old_nodes < 0 or old_off[0] != 0 or old_off[n_old_nodes] != n_old):
        raise FastMetricsError("store_containers: inconsistent column shapes")
    for i in range(n_nodes):
        if new_off[i] > new_off[i + 1] or old_slot[i] >= n_old_nodes:
            raise FastMetricsError("store_containers: bad node offsets or slots")
    for i in range(n_old_nodes):
        if old_off[i] > old_off[i + 1]:
            raise FastMetricsError("store_containers: bad old node offsets")
    out_has_a = np.empty(n_rows, np.uint8)
    out_ts_a = np.empty(n_rows, np.int64)
    out_start_a = np.empty(n_rows, np.int64)
    out_cpu_a = np.empty(n_rows, np.uint64)
    out_mem_a = np.empty(n_rows, np.uint64)
    status_a = np.empty(n_rows, np.uint8)
    rate_a = np.empty(n_rows, np.uint64)
    window_a = np.empty(n_rows, np.int64)
    cdef uint8_t[::1] out_has = out_has_a
    cdef int64_t[::1] out_ts = out_ts_a
    cdef int64_t[::1] out_start = out_start_a
    cdef uint64_t[::1] out_cpu = out_cpu_a
    cdef uint64_t[::1] out_mem = out_mem_a
    cdef uint8_t[::1] status = status_a
    cdef uint64_t[::1] rate = rate_a
    cdef int64_t[::1] window = window_a
    cdef int32_t* scratch = <int32_t*>malloc(max(max_keys, 1) * sizeof(int32_t))
    if scratch == NULL:
        raise MemoryError()
    memset(scratch, 0xFF, max(max_keys, 1) * sizeof(int32_t))
    try:
        with nogil:
            for i in range(n_nodes):
                a = new_off[i]
                b = new_off[i + 1]
                s = old_slot[i]
                if s >= 0:
                    oa = old_off[s]
                    ob = old_off[s + 1]
                    # the common case: the node reports the same containers in the same order
                    same = (ob - oa == b - a) and memcmp(&o_key[oa] if ob > oa else NULL,
                                                         &key[a] if b > a else NULL,
                                                         (b - a) * sizeof(int32_t)) == 0
                    if not same:
                        for r in range(oa, ob):
                            k = o_key[r]
                            if k < 0 or k >= max_keys:
                                bad = True
                                break
                            scratch[k] = <int32_t>r
                        if bad:
                            break
                for r in range(a, b):
                    k = key[r]
                    if k < 0 or k >= max_keys:
                        bad = True
                        break
                    orow = -1
                    if s >= 0:
                        orow = oa + (r - a) if same else scratch[k]
                    # the pod rule, the fresh-container branch first
                    has = 1
                    age = ts[r] - start[r]
                    if (start[r] != 0 and start[r] < ts[r] and age < resolution_ns
                            and age >= FRESH_MIN_AGE_NS):
                        out_ts[r] = start[r]
                        out_start[r] = start[r]
                        out_cpu[r] = 0
                        out_mem[r] = mem[r]
                    elif orow >= 0 and start[r] < o_ts[orow]:
                        lts = o_ts[orow]
                        if ts[r] > lts:
                            out_ts[r] = lts
                            out_start[r] = o_start[orow]
                            out_cpu[r] = o_cpu[orow]
                            out_mem[r] = o_mem[orow]
                        elif p_has[orow] and p_ts[orow] < ts[r]:
                            out_ts[r] = p_ts[orow]
                            out_start[r] = p_start[orow]
                            out_cpu[r] = p_cpu[orow]
                            out_mem[r] = p_mem[orow]
                        else:
                            has = 0
                    else:
                        has = 0
                    out_has[r] = has
                    rate[r] = 0
                    window[r] = 0
                    if not has:
                        out_ts[r] = 0
                        out_start[r] = 0
                        out_cpu[r] = 0
                        out_mem[r] = 0
                        status[r] = STATUS_NO_PREV
                    elif start[r] < out_start[r]:
                        status[r] = STATUS_START_DECREASED
                    elif cpu[r] < out_cpu[r]:
                        status[r] = STATUS_CPU_DECREASED
                    else:
                        status[r] = STATUS_OK
                        rate[r] = rate_nanocores(ts[r], cpu[r], out_ts[r], out_cpu[r])
                        window[r] = ts[r] - out_ts[r]
                if bad:
                    break
                if s >= 0 and not same:
                    for r in range(oa, ob):
                        scratch[o_key[r]] = -1
    finally:
        free(scratch)
    if bad:
        raise FastMetricsError("store_containers: a key id is outside [0, max_keys)")
    return ((out_has_a, out_ts_a, out_start_a, out_cpu_a, out_mem_a), status_a, rate_a,
            window_a)


def group_pods(const int32_t[::1] pod_id, const int64_t[::1] new_off,
               const int64_t[::1] pod_base, const uint8_t[::1] has_prev,
               const uint8_t[::1] status, const int64_t[::1] ts, const int64_t[::1] window):
    """Group container rows by pod; each pod's validity and time info (SPEC §4.3).

    Pod ``p`` of node ``i`` is global pod ``pod_base[i] + p``. Returns ``order`` (int32: rows
    sorted by global pod, stable), ``pod_off`` (int64: pod ``k``'s rows are
    ``order[pod_off[k]:pod_off[k+1]]``), ``pod_node`` and ``pod_local`` (int32), ``pod_valid``
    (uint8: every container has a baseline), ``pod_ts`` and ``pod_window`` (int64: those of the
    earliest container with a rate; ``pod_ts`` is -1 when no container has one).
    """
    cdef Py_ssize_t n_rows = pod_id.shape[0], n_nodes = new_off.shape[0] - 1
    cdef Py_ssize_t i, r, k, n_pods = 0, total
    if (n_nodes < 0 or pod_base.shape[0] != n_nodes + 1 or new_off[0] != 0
            or new_off[n_nodes] != n_rows or has_prev.shape[0] != n_rows
            or status.shape[0] != n_rows or ts.shape[0] != n_rows
            or window.shape[0] != n_rows or pod_base[0] != 0):
        raise FastMetricsError("group_pods: inconsistent column shapes")
    for i in range(n_nodes):
        if new_off[i] > new_off[i + 1] or pod_base[i] > pod_base[i + 1]:
            raise FastMetricsError("group_pods: bad offsets")
        for r in range(new_off[i], new_off[i + 1]):
            if pod_id[r] < 0 or pod_id[r] >= pod_base[i + 1] - pod_base[i]:
                raise FastMetricsError("group_pods: a pod id is outside its node's range")
    total = pod_base[n_nodes]
    cdef int64_t* start_of = <int64_t*>calloc(total + 1, sizeof(int64_t))
    if start_of == NULL:
        raise MemoryError()
    order_a = np.empty(n_rows, np.int32)
    cdef int32_t[::1] order = order_a
    try:
        with nogil:
            # counting sort by global pod id: stable, O(rows + pods)
            for i in range(n_nodes):
                for r in range(new_off[i], new_off[i + 1]):
                    start_of[pod_base[i] + pod_id[r] + 1] += 1
            for k in range(total):
                if start_of[k + 1]:
                    n_pods += 1
                start_of[k + 1] += start_of[k]
        pod_off_a = np.empty(n_pods + 1, np.int64)
        pod_node_a = np.empty(n_pods, np.int32)
        pod_local_a = np.empty(n_pods, np.int32)
        pod_valid_a = np.empty(n_pods, np.uint8)
        pod_ts_a = np.empty(n_pods, np.int64)
        pod_window_a = np.empty(n_pods, np.int64)
        _group_fill(pod_id, new_off, pod_base, has_prev, status, ts, window, start_of, order,
                    pod_off_a, pod_node_a, pod_local_a, pod_valid_a, pod_ts_a, pod_window_a)
    finally:
        free(start_of)
    return order_a, pod_off_a, pod_node_a, pod_local_a, pod_valid_a, pod_ts_a, pod_window_a


cdef void _group_fill(const int32_t[::1] pod_id, const int64_t[::1] new_off,
                      const int64_t[::1] pod_base, const uint8_t[::1] has_prev,
                      const uint8_t[::1] status, const int64_t[::1] ts,
                      const int64_t[::1] window, int64_t* start_of, int32_t[::1] order,
                      int64_t[::1] pod_off, int32_t[::1] pod_node, int32_t[::1] pod_local,
                      uint8_t[::1] pod_valid, int64_t[::1] pod_ts,
                      int64_t[::1] pod_window) noexcept nogil:
    cdef Py_ssize_t n_nodes = new_off.shape[0] - 1, i, r, j, p = 0
    cdef int64_t g, lo, hi, best
    cdef uint8_t valid
    cdef bint found
    for i in range(n_nodes):
        for r in range(new_off[i], new_off[i + 1]):
            g = pod_base[i] + pod_id[r]
            order[start_of[g]] = <int32_t>r
            start_of[g] += 1
    # start_of[g] now holds the end of pod g's rows; walk pods in global order
    pod_off[0] = 0
    for i in range(n_nodes):
        for g in range(pod_base[i], pod_base[i + 1]):
            hi = start_of[g]
            lo = pod_off[p]
            if hi == lo:
                continue
            valid = 1
            best = -1
            found = False
            pod_window[p] = 0
            for j in range(lo, hi):
                r = order[j]
                if not has_prev[r]:
                    valid = 0
                # a flag, not best < 0: any int64 timestamp may be the earliest (as the twin)
                if status[r] == STATUS_OK and (not found or ts[r] < best):
                    best = ts[r]
                    found = True
                    pod_window[p] = window[r]
            pod_node[p] = <int32_t>i
            pod_local[p] = <int32_t>(g - pod_base[i])
            pod_valid[p] = valid
            pod_ts[p] = best
            pod_off[p + 1] = hi
            p += 1


# ==================================================================== Kubernetes formatting

cdef const char* DECIMAL_SUFFIX[10]
DECIMAL_SUFFIX[:] = [b"n", b"u", b"m", b"", b"k", b"M", b"G", b"T", b"P", b"E"]
cdef const char* BINARY_SUFFIX[7]
BINARY_SUFFIX[:] = [b"", b"Ki", b"Mi", b"Gi", b"Ti", b"Pi", b"Ei"]

cdef enum:
    FORMAT_CPU = 0
    FORMAT_MEMORY = 1
    FORMAT_WINDOW = 2
    FORMAT_TIMESTAMP = 3
    FORMAT_MAX_LEN = 32


cdef inline Py_ssize_t fmt_uint(char* out, uint64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n


cdef inline Py_ssize_t fmt_suffix(char* out, const char* s) noexcept nogil:
    cdef Py_ssize_t n = 0
    while s[n] != 0:
        out[n] = s[n]
        n += 1
    return n


cdef Py_ssize_t fmt_decimal_si(char* out, uint64_t value, int exponent) noexcept nogil:
    # Quantity.AsCanonicalBytes for value > 0: strip trailing zeros into the exponent, then
    # lower the exponent to a multiple of three (value x10 or x100; never overflows uint64
    # because the result equals the input)
    cdef int r
    cdef Py_ssize_t n
    while value % 10 == 0:
        value //= 10
        exponent += 1
    r = exponent % 3
    if r < 0:
        r += 3
    if r == 1:
        value *= 10
    elif r == 2:
        value *= 100
    exponent -= r
    n = fmt_uint(out, value)
    return n + fmt_suffix(out + n, DECIMAL_SUFFIX[(exponent + 9) // 3])


cdef inline uint64_t quantity_value(uint64_t v) noexcept nogil:
    # metrics-server's uint64Quantity loses a digit above MaxInt64
    if v > 9223372036854775807ULL:
        return v // 10 * 10
    return v


cdef Py_ssize_t fmt_cpu(char* out, uint64_t nanocores) noexcept nogil:
    cdef uint64_t v = quantity_value(nanocores)
    if v == 0:
        out[0] = 48
        return 1
    return fmt_decimal_si(out, v, -9)


cdef Py_ssize_t fmt_memory(char* out, uint64_t nbytes) noexcept nogil:
    cdef uint64_t v = quantity_value(nbytes)
    cdef int k = 0
    cdef Py_ssize_t n
    if v == 0:
        out[0] = 48
        return 1
    if v < 1024:
        return fmt_decimal_si(out, v, 0)
    while v % 1024 == 0 and k < 6:
        v //= 1024
        k += 1
    n = fmt_uint(out, v)
    return n + fmt_suffix(out + n, BINARY_SUFFIX[k])


cdef Py_ssize_t fmt_frac(char* buf, Py_ssize_t w, uint64_t* v, int prec) noexcept nogil:
    # Go's fmtFrac, writing backwards into buf ending at w: ".123" without trailing zeros
    cdef bint printed = False
    cdef int _
    cdef uint64_t digit
    for _ in range(prec):
        digit = v[0] % 10
        printed = printed or digit != 0
        if printed:
            w -= 1
            buf[w] = <char>(48 + digit)
        v[0] //= 10
    if printed:
        w -= 1
        buf[w] = 46
    return w


cdef Py_ssize_t fmt_int_back(char* buf, Py_ssize_t w, uint64_t v) noexcept nogil:
    if v == 0:
        w -= 1
        buf[w] = 48
        return w
    while v > 0:
        w -= 1
        buf[w] = <char>(48 + v % 10)
        v //= 10
    return w


cdef Py_ssize_t fmt_window(char* out, int64_t d) noexcept nogil:
    # Go's time.Duration.String()
    cdef char buf[32]
    cdef Py_ssize_t w = 32, n
    cdef bint neg = d < 0
    cdef uint64_t u = <uint64_t>d
    if neg:
        u = 0 - u
    if u < 1000000000ULL:
        w -= 1
        buf[w] = 115   # 's'
        if u == 0:
            out[0] = 48
            out[1] = 115
            return 2
        if u < 1000ULL:
            w -= 1
            buf[w] = 110   # 'n'
            w = fmt_int_back(buf, w, u)
        elif u < 1000000ULL:
            w -= 2
            buf[w] = <char>0xC2   # U+00B5 MICRO SIGN in UTF-8
            buf[w + 1] = <char>0xB5
            w = fmt_frac(buf, w, &u, 3)
            w = fmt_int_back(buf, w, u)
        else:
            w -= 1
            buf[w] = 109   # 'm'
            w = fmt_frac(buf, w, &u, 6)
            w = fmt_int_back(buf, w, u)
    else:
        w -= 1
        buf[w] = 115
        w = fmt_frac(buf, w, &u, 9)
        w = fmt_int_back(buf, w, u % 60)
        u //= 60
        if u > 0:
            w -= 1
            buf[w] = 109
            w = fmt_int_back(buf, w, u % 60)
            u //= 60
            if u > 0:
                w -= 1
                buf[w] = 104   # 'h'
                w = fmt_int_back(buf, w, u)
    if neg:
        w -= 1
        buf[w] = 45
    n = 32 - w
    memcpy(out, buf + w, n)
    return n


cdef inline void put2(char* out, int64_t v) noexcept nogil:
    out[0] = <char>(48 + v // 10)
    out[1] = <char>(48 + v % 10)


cdef Py_ssize_t fmt_timestamp(char* out, int64_t ns) noexcept nogil:
    # RFC 3339 UTC, whole seconds, truncated toward the past
    cdef int64_t secs = ns // 1000000000
    cdef int64_t days, rem, z, era, doe, yoe, y, doy, mp, d, m
    if ns % 1000000000 < 0:
        secs -= 1
    days = secs // 86400
    rem = secs % 86400
    if rem < 0:
        rem += 86400
        days -= 1
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    put2(out, y // 100)
    put2(out + 2, y % 100)
    out[4] = 45
    put2(out + 5, m)
    out[7] = 45
    put2(out + 8, d)
    out[10] = 84   # 'T'
    put2(out + 11, rem // 3600)
    out[13] = 58
    put2(out + 14, rem // 60 % 60)
    out[16] = 58
    put2(out + 17, rem % 60)
    out[19] = 90   # 'Z'
    return 20


def format_cpu(uint64_t nanocores):
    """Canonical Quantity string of a CPU usage in nanocores (DecimalSI, scale -9)."""
    cdef char buf[FORMAT_MAX_LEN]
    cdef Py_ssize_t n = fmt_cpu(buf, nanocores)
    return buf[:n].decode("ascii")


def format_memory(uint64_t nbytes):
    """Canonical Quantity string of a memory usage in bytes (BinarySI; DecimalSI < 1024)."""
    cdef char buf[FORMAT_MAX_LEN]
    cdef Py_ssize_t n = fmt_memory(buf, nbytes)
    return buf[:n].decode("ascii")


def format_window(int64_t ns):
    """Go ``time.Duration(ns).String()``."""
    cdef char buf[FORMAT_MAX_LEN]
    cdef Py_ssize_t n = fmt_window(buf, ns)
    return buf[:n].decode("utf-8")


def format_timestamp(int64_t ns):
    """RFC 3339 UTC with whole seconds (truncated), e.g. ``2026-01-01T00:00:12Z``."""
    cdef char buf[FORMAT_MAX_LEN]
    cdef Py_ssize_t n = fmt_timestamp(buf, ns)
    return buf[:n].decode("ascii")


def format_column(values, int kind):
    """Format a whole column into one buffer, without a Python object per value.

    Parameters
    ----------
    values : uint64 array (kind 0 cpu, 1 memory) or int64 array (2 window, 3 timestamp)
    kind : int
        0 ``format_cpu``, 1 ``format_memory``, 2 ``format_window``, 3 ``format_timestamp``.

    Returns
    -------
    (bytes, int64 array)
        The UTF-8 strings back to back, and ``n + 1`` offsets: value ``i`` is
        ``buf[off[i]:off[i+1]]``.
    """
    cdef const uint64_t[::1] u
    cdef const int64_t[::1] s
    cdef Py_ssize_t n, i, pos = 0
    if kind == FORMAT_CPU or kind == FORMAT_MEMORY:
        u = values
        n = u.shape[0]
    elif kind == FORMAT_WINDOW or kind == FORMAT_TIMESTAMP:
        s = values
        n = s.shape[0]
    else:
        raise FastMetricsError("format_column: unknown kind %d" % kind)
    cdef char* buf = <char*>malloc(n * FORMAT_MAX_LEN + 1)
    if buf == NULL:
        raise MemoryError()
    off_a = np.empty(n + 1, np.int64)
    cdef int64_t[::1] off = off_a
    try:
        with nogil:
            off[0] = 0
            for i in range(n):
                if kind == FORMAT_CPU:
                    pos += fmt_cpu(buf + pos, u[i])
                elif kind == FORMAT_MEMORY:
                    pos += fmt_memory(buf + pos, u[i])
                elif kind == FORMAT_WINDOW:
                    pos += fmt_window(buf + pos, s[i])
                else:
                    pos += fmt_timestamp(buf + pos, s[i])
                off[i + 1] = pos
        out = buf[:pos]
    finally:
        free(buf)
    return out, off_a
