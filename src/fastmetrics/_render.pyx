# cython: language_level=3
"""The compiled kernels of the API's long lists (used by ``fastmetrics.api.render`` only).

A ``PodMetricsList`` is written in one pass over columns: the pods a snapshot serves, sorted by
namespace then name, with their usage strings formatted once per snapshot
(``api.render.PodTable``), plus one per-request list of the visible pods' label entries. The
body is sized exactly in a first pass and written straight into the ``bytes`` object in a
second; both passes run without the GIL and create no Python object per pod or container.

The helpers that read Python objects (``pack``, ``gather``, ``intern``, ``join``) hold the GIL,
but let it go every few thousand items. Measured with both threads on one core: while a
worker renders 150,000-pod lists back to back, a 1 ms timer on the event loop fires late by
p99 ~4 ms, at most ~6 ms (yielding the CPU at each release changed nothing measurable).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

import numpy as np

from fastmetrics import errors as _errors

cdef object FastMetricsError = _errors.FastMetricsError

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

cdef extern from *:
    """
    /* PodMetricsList (JSON): the fixed pieces */
    #define J_HEAD "{\\"kind\\":\\"PodMetricsList\\",\\"apiVersion\\":" \\
                   "\\"metrics.k8s.io/v1beta1\\",\\"metadata\\":{},\\"items\\":["
    #define J_TAIL "]}\\n"
    #define J_NAME "{\\"metadata\\":{\\"name\\":"
    #define J_NAMESPACE ",\\"namespace\\":"
    #define J_CREATED ",\\"creationTimestamp\\":"
    #define J_LABELS ",\\"labels\\":{"
    #define J_TIMESTAMP "},\\"timestamp\\":"
    #define J_NULL "null"
    #define J_WINDOW ",\\"window\\":\\""
    #define J_CONTAINERS "\\",\\"containers\\":["
    #define J_ITEM_END "]}"
    #define J_C_NAME "{\\"name\\":"
    #define J_C_CPU ",\\"usage\\":{\\"cpu\\":\\""
    #define J_C_MEMORY "\\",\\"memory\\":\\""
    #define J_C_END "\\"}}"
    #define J_U2028 "\\\\u202"
    #define J_U00 "\\\\u00"
    /* PodMetricsList (Kubernetes protobuf): magic, the envelope's TypeMeta and trailer,
       ListMeta, the ObjectMeta fields written between namespace and creationTimestamp
       (selfLink, uid, resourceVersion, generation), the usage map keys */
    #define P_MAGIC "k8s\\0"
    #define P_TYPE_META "\\x0a\\x16" "metrics.k8s.io/v1beta1" "\\x12\\x0e" "PodMetricsList"
    #define P_ENVELOPE_END "\\x1a\\x00\\x22\\x00"
    #define P_LIST_META "\\x0a\\x06\\x0a\\x00\\x12\\x00\\x1a\\x00"
    #define P_OBJECT_FIELDS "\\x22\\x00\\x2a\\x00\\x32\\x00\\x38\\x00"
    #define P_CPU_KEY "\\x0a\\x03" "cpu"
    #define P_MEMORY_KEY "\\x0a\\x06" "memory"
    /* their lengths (sizeof a literal counts its terminating NUL) */
    #define FM_L(lit) ((Py_ssize_t)(sizeof(lit) - 1))
    #define J_HEAD_LEN FM_L(J_HEAD)
    #define J_TAIL_LEN FM_L(J_TAIL)
    #define J_NAME_LEN FM_L(J_NAME)
    #define J_NAMESPACE_LEN FM_L(J_NAMESPACE)
    #define J_CREATED_LEN FM_L(J_CREATED)
    #define J_LABELS_LEN FM_L(J_LABELS)
    #define J_TIMESTAMP_LEN FM_L(J_TIMESTAMP)
    #define J_NULL_LEN FM_L(J_NULL)
    #define J_WINDOW_LEN FM_L(J_WINDOW)
    #define J_CONTAINERS_LEN FM_L(J_CONTAINERS)
    #define J_ITEM_END_LEN FM_L(J_ITEM_END)
    #define J_C_NAME_LEN FM_L(J_C_NAME)
    #define J_C_CPU_LEN FM_L(J_C_CPU)
    #define J_C_MEMORY_LEN FM_L(J_C_MEMORY)
    #define J_C_END_LEN FM_L(J_C_END)
    #define J_U2028_LEN FM_L(J_U2028)
    #define J_U00_LEN FM_L(J_U00)
    #define P_MAGIC_LEN FM_L(P_MAGIC)
    #define P_TYPE_META_LEN FM_L(P_TYPE_META)
    #define P_ENVELOPE_END_LEN FM_L(P_ENVELOPE_END)
    #define P_LIST_META_LEN FM_L(P_LIST_META)
    #define P_OBJECT_FIELDS_LEN FM_L(P_OBJECT_FIELDS)
    #define P_CPU_KEY_LEN FM_L(P_CPU_KEY)
    #define P_MEMORY_KEY_LEN FM_L(P_MEMORY_KEY)

    /* JSON string escapes, as orjson plus api.objects._go_fix write them:
       0 as is; 1 backslash + the character; 2 \\u00xx; 3 short escape (\\b \\t \\n \\f \\r);
       4 \\u00xx for < > & (Go's HTML-safe output) */
    static const unsigned char FM_ESC[256] = {
        2,2,2,2,2,2,2,2,3,3,3,2,3,3,2,2, 2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
        0,0,1,0,0,0,4,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,4,0,4,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    };
    static const char FM_HEX[] = "0123456789abcdef";
    static const char FM_SHORT[32] = {
        0,0,0,0,0,0,0,0,'b','t','n',0,'f','r',0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    };
    """
    const char* J_HEAD
    const char* J_TAIL
    const char* J_NAME
    const char* J_NAMESPACE
    const char* J_CREATED
    const char* J_LABELS
    const char* J_TIMESTAMP
    const char* J_NULL
    const char* J_WINDOW
    const char* J_CONTAINERS
    const char* J_ITEM_END
    const char* J_C_NAME
    const char* J_C_CPU
    const char* J_C_MEMORY
    const char* J_C_END
    const char* J_U2028
    const char* J_U00
    const char* P_MAGIC
    const char* P_TYPE_META
    const char* P_ENVELOPE_END
    const char* P_LIST_META
    const char* P_OBJECT_FIELDS
    const char* P_CPU_KEY
    const char* P_MEMORY_KEY
    Py_ssize_t J_HEAD_LEN
    Py_ssize_t J_TAIL_LEN
    Py_ssize_t J_NAME_LEN
    Py_ssize_t J_NAMESPACE_LEN
    Py_ssize_t J_CREATED_LEN
    Py_ssize_t J_LABELS_LEN
    Py_ssize_t J_TIMESTAMP_LEN
    Py_ssize_t J_NULL_LEN
    Py_ssize_t J_WINDOW_LEN
    Py_ssize_t J_CONTAINERS_LEN
    Py_ssize_t J_ITEM_END_LEN
    Py_ssize_t J_C_NAME_LEN
    Py_ssize_t J_C_CPU_LEN
    Py_ssize_t J_C_MEMORY_LEN
    Py_ssize_t J_C_END_LEN
    Py_ssize_t J_U2028_LEN
    Py_ssize_t J_U00_LEN
    Py_ssize_t P_MAGIC_LEN
    Py_ssize_t P_TYPE_META_LEN
    Py_ssize_t P_ENVELOPE_END_LEN
    Py_ssize_t P_LIST_META_LEN
    Py_ssize_t P_OBJECT_FIELDS_LEN
    Py_ssize_t P_CPU_KEY_LEN
    Py_ssize_t P_MEMORY_KEY_LEN
    const unsigned char* FM_ESC
    const char* FM_HEX
    const char* FM_SHORT

# How many items a GIL-holding loop handles before it lets other threads run (a few
# hundred microseconds' worth).
cdef enum:
    GIL_SLICE = 4096


# ============================================================================ the writer
# A W writes at buf + pos or, with buf NULL, only counts: the sizing pass and the writing pass
# run the same code, so they cannot disagree.

cdef struct W:
    char* buf
    Py_ssize_t pos


cdef inline void w_put(W* w, const char* s, Py_ssize_t n) noexcept nogil:
    if w.buf != NULL:
        memcpy(w.buf + w.pos, s, n)
    w.pos += n


cdef inline void w_byte(W* w, char c) noexcept nogil:
    if w.buf != NULL:
        w.buf[w.pos] = c
    w.pos += 1


cdef inline int varint_len(uint64_t v) noexcept nogil:
    cdef int n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline void w_varint(W* w, uint64_t v) noexcept nogil:
    if w.buf == NULL:
        w.pos += varint_len(v)
        return
    while v >= 0x80:
        w.buf[w.pos] = <char>((v & 0x7F) | 0x80)
        w.pos += 1
        v >>= 7
    w.buf[w.pos] = <char>v
    w.pos += 1


cdef inline Py_ssize_t ld_len(Py_ssize_t n) noexcept nogil:
    # the size of a length-delimited field with a one-byte tag and n bytes of payload
    return 1 + varint_len(<uint64_t>n) + n


# ============================================================================ JSON strings

cdef inline Py_ssize_t plain_run(const uint8_t* s, Py_ssize_t n) noexcept nogil:
    # the leading bytes that need no escaping (0xE2 may start U+2028 or U+2029)
    cdef Py_ssize_t i = 0
    while i < n and FM_ESC[s[i]] == 0 and s[i] != 0xE2:
        i += 1
    return i


cdef void w_json_str(W* w, const uint8_t* s, Py_ssize_t n) noexcept nogil:
    # the JSON literal of the UTF-8 string s (quotes included)
    cdef Py_ssize_t i = 0, run
    cdef uint8_t c, e
    w_byte(w, b'"')
    while True:
        run = plain_run(s + i, n - i)
        w_put(w, <const char*>(s + i), run)
        i += run
        if i >= n:
            break
        c = s[i]
        e = FM_ESC[c]
        if c == 0xE2:
            if i + 2 < n and s[i + 1] == 0x80 and (s[i + 2] == 0xA8 or s[i + 2] == 0xA9):
                w_put(w, J_U2028, J_U2028_LEN)
                w_byte(w, b'8' if s[i + 2] == 0xA8 else b'9')
                i += 3
                continue
            w_byte(w, <char>c)
        elif e == 1:
            w_byte(w, b'\\')
            w_byte(w, <char>c)
        elif e == 3:
            w_byte(w, b'\\')
            w_byte(w, FM_SHORT[c])
        else:
            w_put(w, J_U00, J_U00_LEN)
            w_byte(w, FM_HEX[c >> 4])
            w_byte(w, FM_HEX[c & 15])
        i += 1
    w_byte(w, b'"')


# ============================================================================ label entries

cdef int read_varint(const uint8_t* b, Py_ssize_t n, Py_ssize_t* pos, uint64_t* out) \
        noexcept nogil:
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef uint8_t c
    while pos[0] < n and shift < 64:
        c = b[pos[0]]
        pos[0] += 1
        v |= (<uint64_t>(c & 0x7F)) << shift
        if c < 0x80:
            out[0] = v
            return 0
        shift += 7
    return -1


cdef int read_field(const uint8_t* b, Py_ssize_t n, Py_ssize_t* pos, uint8_t tag,
                    const uint8_t** s, Py_ssize_t* sn) noexcept nogil:
    # one length-delimited field with the one-byte tag ``tag``; -1 when it is not there
    cdef uint64_t ln
    if pos[0] >= n or b[pos[0]] != tag:
        return -1
    pos[0] += 1
    if read_varint(b, n, pos, &ln) < 0 or ln > <uint64_t>(n - pos[0]):
        return -1
    s[0] = b + pos[0]
    sn[0] = <Py_ssize_t>ln
    pos[0] += <Py_ssize_t>ln
    return 0


cdef int w_labels_json(W* w, const uint8_t* b, Py_ssize_t n) noexcept nogil:
    # ``,"labels":{"k":"v",...}`` from ObjectMeta's label entries (field 11 of the protobuf
    # message, keys sorted), nothing for none; -1 when the entries are malformed
    cdef Py_ssize_t pos = 0, epos, en, kn, vn
    cdef const uint8_t* entry
    cdef const uint8_t* k
    cdef const uint8_t* v
    if n == 0:
        return 0
    w_put(w, J_LABELS, J_LABELS_LEN)
    while pos < n:
        if read_field(b, n, &pos, 0x5A, &entry, &en) < 0:
            return -1
        epos = 0
        if read_field(entry, en, &epos, 0x0A, &k, &kn) < 0:
            return -1
        if read_field(entry, en, &epos, 0x12, &v, &vn) < 0 or epos != en:
            return -1
        w_json_str(w, k, kn)
        w_byte(w, b':')
        w_json_str(w, v, vn)
        if pos < n:
            w_byte(w, b',')
    w_byte(w, b'}')
    return 0


# ============================================================================ the columns

cdef struct Cols:
    Py_ssize_t n
    const int32_t* ns_id
    const char* ns_buf
    const int64_t* ns_off
    const char* name_buf
    const int64_t* name_off
    const int64_t* timestamp_ns
    const int64_t* window_ns
    const char* ts_buf
    const int64_t* ts_off
    const char* win_buf
    const int64_t* win_off
    const int64_t* container_off
    const int32_t* cname_id
    const char* cname_buf
    const int64_t* cname_off
    const char* cpu_buf
    const int64_t* cpu_off
    const char* mem_buf
    const int64_t* mem_off
    # per pod (request): label entries, length -1 when the pod is not listed
    const char** blob
    Py_ssize_t* blob_len


cdef class _Table:
    """The columns of an ``api.render.PodTable``, checked, as C pointers (and the objects
    that own them, kept alive while the kernels run)."""

    cdef Cols c
    cdef object keep

    def __cinit__(self, table):
        cdef const int32_t[::1] ns_id = table.ns_id
        cdef const int64_t[::1] ns_off = table.ns_off
        cdef const int64_t[::1] name_off = table.name_off
        cdef const int64_t[::1] timestamp_ns = table.timestamp_ns
        cdef const int64_t[::1] window_ns = table.window_ns
        cdef const int64_t[::1] ts_off = table.ts_off
        cdef const int64_t[::1] win_off = table.win_off
        cdef const int64_t[::1] container_off = table.container_off
        cdef const int32_t[::1] cname_id = table.cname_id
        cdef const int64_t[::1] cname_off = table.cname_off
        cdef const int64_t[::1] cpu_off = table.cpu_off
        cdef const int64_t[::1] mem_off = table.mem_off
        cdef bytes ns_buf = table.ns_buf
        cdef bytes name_buf = table.name_buf
        cdef bytes ts_buf = table.ts_buf
        cdef bytes win_buf = table.win_buf
        cdef bytes cname_buf = table.cname_buf
        cdef bytes cpu_buf = table.cpu_buf
        cdef bytes mem_buf = table.mem_buf
        cdef Py_ssize_t n = ns_id.shape[0], rows = cname_id.shape[0]
        cdef Py_ssize_t k = ns_off.shape[0] - 1, m = cname_off.shape[0] - 1
        cdef Py_ssize_t i
        if (timestamp_ns.shape[0] != n or window_ns.shape[0] != n or name_off.shape[0] != n + 1
                or ts_off.shape[0] != n + 1 or win_off.shape[0] != n + 1
                or container_off.shape[0] != n + 1 or cpu_off.shape[0] != rows + 1
                or mem_off.shape[0] != rows + 1 or k < 0 or m < 0):
            raise FastMetricsError("pod table: column lengths disagree")
        for name, off, buf in (("ns", ns_off, ns_buf), ("name", name_off, name_buf),
                               ("ts", ts_off, ts_buf), ("win", win_off, win_buf),
                               ("cname", cname_off, cname_buf), ("cpu", cpu_off, cpu_buf),
                               ("mem", mem_off, mem_buf)):
            _check_offsets(off, len(buf), name)
        _check_offsets(container_off, rows, "container")
        for i in range(n):
            if ns_id[i] < 0 or ns_id[i] >= k:
                raise FastMetricsError(f"pod table: namespace id out of range at pod {i}")
        for i in range(rows):
            if cname_id[i] < 0 or cname_id[i] >= m:
                raise FastMetricsError(f"pod table: container name id out of range at row {i}")
        self.keep = (ns_id, ns_off, name_off, timestamp_ns, window_ns, ts_off, win_off,
                     container_off, cname_id, cname_off, cpu_off, mem_off, ns_buf, name_buf,
                     ts_buf, win_buf, cname_buf, cpu_buf, mem_buf)
        self.c.n = n
        self.c.ns_id = &ns_id[0] if n else NULL
        self.c.ns_off = &ns_off[0]
        self.c.ns_buf = PyBytes_AS_STRING(ns_buf)
        self.c.name_off = &name_off[0]
        self.c.name_buf = PyBytes_AS_STRING(name_buf)
        self.c.timestamp_ns = &timestamp_ns[0] if n else NULL
        self.c.window_ns = &window_ns[0] if n else NULL
        self.c.ts_off = &ts_off[0]
        self.c.ts_buf = PyBytes_AS_STRING(ts_buf)
        self.c.win_off = &win_off[0]
        self.c.win_buf = PyBytes_AS_STRING(win_buf)
        self.c.container_off = &container_off[0]
        self.c.cname_id = &cname_id[0] if rows else NULL
        self.c.cname_off = &cname_off[0]
        self.c.cname_buf = PyBytes_AS_STRING(cname_buf)
        self.c.cpu_off = &cpu_off[0]
        self.c.cpu_buf = PyBytes_AS_STRING(cpu_buf)
        self.c.mem_off = &mem_off[0]
        self.c.mem_buf = PyBytes_AS_STRING(mem_buf)
        self.c.blob = NULL
        self.c.blob_len = NULL

    def __dealloc__(self):
        free(self.c.blob)
        free(self.c.blob_len)

    cdef int set_blobs(self, list blobs) except -1:
        cdef Py_ssize_t n = self.c.n, j
        cdef object b
        if PyList_GET_SIZE(blobs) != n:
            raise FastMetricsError(f"label entries: {PyList_GET_SIZE(blobs)} for {n} pods")
        self.c.blob = <const char**>malloc((n + 1) * sizeof(char*))
        self.c.blob_len = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
        if self.c.blob == NULL or self.c.blob_len == NULL:
            raise MemoryError()
        for j in range(n):
            b = <object>PyList_GET_ITEM(blobs, j)
            if b is None:
                self.c.blob[j] = NULL
                self.c.blob_len[j] = -1
            elif type(b) is bytes:
                self.c.blob[j] = PyBytes_AS_STRING(b)
                self.c.blob_len[j] = PyBytes_GET_SIZE(b)
            else:
                raise FastMetricsError(f"label entries of pod {j}: bytes or None expected, "
                                       f"not {type(b).__name__}")
        self.keep = (self.keep, blobs)
        return 0


def _check_offsets(const int64_t[::1] off, Py_ssize_t size, str what):
    cdef Py_ssize_t i, n = off.shape[0]
    cdef bint bad = n < 1 or off[0] != 0 or off[n - 1] > size
    with nogil:
        for i in range(1, n):
            if off[i] < off[i - 1]:
                bad = True
                break
    if bad:
        raise FastMetricsError(f"pod table: {what} offsets are not within their buffer")


# ============================================================================ JSON


cdef int w_pod_json(W* w, const Cols* c, Py_ssize_t j, const char* created,
                    Py_ssize_t created_len) noexcept nogil:
    cdef Py_ssize_t a = c.container_off[j], b = c.container_off[j + 1], r
    cdef int32_t k = c.ns_id[j], nm
    w_put(w, J_NAME, J_NAME_LEN)
    w_json_str(w, <const uint8_t*>(c.name_buf + c.name_off[j]),
               c.name_off[j + 1] - c.name_off[j])
    w_put(w, J_NAMESPACE, J_NAMESPACE_LEN)
    w_json_str(w, <const uint8_t*>(c.ns_buf + c.ns_off[k]), c.ns_off[k + 1] - c.ns_off[k])
    w_put(w, J_CREATED, J_CREATED_LEN)
    w_put(w, created, created_len)
    if w_labels_json(w, <const uint8_t*>c.blob[j], c.blob_len[j]) < 0:
        return -1
    w_put(w, J_TIMESTAMP, J_TIMESTAMP_LEN)
    if b > a:
        w_byte(w, b'"')
        w_put(w, c.ts_buf + c.ts_off[j], c.ts_off[j + 1] - c.ts_off[j])
        w_byte(w, b'"')
    else:
        w_put(w, J_NULL, J_NULL_LEN)
    w_put(w, J_WINDOW, J_WINDOW_LEN)
    w_put(w, c.win_buf + c.win_off[j], c.win_off[j + 1] - c.win_off[j])
    w_put(w, J_CONTAINERS, J_CONTAINERS_LEN)
    for r in range(a, b):
        if r > a:
            w_byte(w, b',')
        nm = c.cname_id[r]
        w_put(w, J_C_NAME, J_C_NAME_LEN)
        w_json_str(w, <const uint8_t*>(c.cname_buf + c.cname_off[nm]),
                   c.cname_off[nm + 1] - c.cname_off[nm])
        w_put(w, J_C_CPU, J_C_CPU_LEN)
        w_put(w, c.cpu_buf + c.cpu_off[r], c.cpu_off[r + 1] - c.cpu_off[r])
        w_put(w, J_C_MEMORY, J_C_MEMORY_LEN)
        w_put(w, c.mem_buf + c.mem_off[r], c.mem_off[r + 1] - c.mem_off[r])
        w_put(w, J_C_END, J_C_END_LEN)
    w_put(w, J_ITEM_END, J_ITEM_END_LEN)
    return 0


cdef Py_ssize_t w_list_json(W* w, const Cols* c, const char* created,
                            Py_ssize_t created_len) noexcept nogil:
    # the whole body; the pod at which the label entries were malformed, else -1
    cdef Py_ssize_t j
    cdef bint first = True
    w_put(w, J_HEAD, J_HEAD_LEN)
    for j in range(c.n):
        if c.blob_len[j] < 0:
            continue
        if not first:
            w_byte(w, b',')
        first = False
        if w_pod_json(w, c, j, created, created_len) < 0:
            return j
    w_put(w, J_TAIL, J_TAIL_LEN)
    return -1


def pod_list_json(table, list blobs, bytes created):
    """A ``PodMetricsList`` JSON body (with its trailing newline).

    Parameters
    ----------
    table : api.render.PodTable
        The served pods in namespace/name order, with their usage strings.
    blobs : list of (bytes or None)
        Per pod of the table: its labels as protobuf ObjectMeta entries (``b""`` for none),
        or None when the pod is not in the list.
    created : bytes
        The JSON literal of ``creationTimestamp`` (the request time, quotes included).

    Returns
    -------
    bytes
    """
    cdef _Table t = _Table(table)
    t.set_blobs(blobs)
    cdef W w
    cdef Py_ssize_t bad, total
    cdef const char* cr = PyBytes_AS_STRING(created)
    cdef Py_ssize_t cn = PyBytes_GET_SIZE(created)
    w.buf = NULL
    w.pos = 0
    with nogil:
        bad = w_list_json(&w, &t.c, cr, cn)
    if bad >= 0:
        raise FastMetricsError(f"label entries of pod {bad} are malformed")
    total = w.pos
    out = PyBytes_FromStringAndSize(NULL, total)
    w.buf = PyBytes_AS_STRING(out)
    w.pos = 0
    with nogil:
        w_list_json(&w, &t.c, cr, cn)
    if w.pos != total:  # pragma: no cover  (the two passes run the same code)
        raise FastMetricsError("pod list: sizing and writing disagree")
    return out


# ============================================================================ protobuf


cdef inline Py_ssize_t usage_entry_len(Py_ssize_t key_len, Py_ssize_t q) noexcept nogil:
    # map<string, Quantity> entry: key field + value field (Quantity{string 1})
    return ld_len(key_len + ld_len(ld_len(q)))


cdef inline void w_usage_entry(W* w, const char* key, Py_ssize_t key_len, const char* q,
                               Py_ssize_t qn) noexcept nogil:
    w_byte(w, b'\x12')
    w_varint(w, <uint64_t>(key_len + ld_len(ld_len(qn))))
    w_put(w, key, key_len)
    w_byte(w, b'\x12')
    w_varint(w, <uint64_t>ld_len(qn))
    w_byte(w, b'\x0a')
    w_varint(w, <uint64_t>qn)
    w_put(w, q, qn)


cdef inline void split_time(int64_t t, int64_t* sec, int64_t* nanos) noexcept nogil:
    # floor division, as Python's divmod
    sec[0] = t // 1000000000
    nanos[0] = t % 1000000000
    if nanos[0] < 0:
        nanos[0] += 1000000000
        sec[0] -= 1


cdef inline Py_ssize_t time_len(int64_t t) noexcept nogil:
    cdef int64_t sec, nanos
    split_time(t, &sec, &nanos)
    return 2 + varint_len(<uint64_t>sec) + varint_len(<uint64_t>nanos)


cdef Py_ssize_t pod_pb_sizes(const Cols* c, Py_ssize_t j, Py_ssize_t created_len,
                             Py_ssize_t* meta_len) noexcept nogil:
    # the ObjectMeta's size and (returned) the PodMetrics message's size
    cdef int32_t k = c.ns_id[j], nm
    cdef Py_ssize_t a = c.container_off[j], b = c.container_off[j + 1], r, size, cont
    meta_len[0] = (ld_len(c.name_off[j + 1] - c.name_off[j]) + 2
                   + ld_len(c.ns_off[k + 1] - c.ns_off[k]) + P_OBJECT_FIELDS_LEN
                   + created_len + c.blob_len[j])
    size = ld_len(meta_len[0])
    size += ld_len(time_len(c.timestamp_ns[j])) if b > a else 2
    size += ld_len(1 + varint_len(<uint64_t>c.window_ns[j]))
    for r in range(a, b):
        nm = c.cname_id[r]
        cont = (ld_len(c.cname_off[nm + 1] - c.cname_off[nm])
                + usage_entry_len(P_CPU_KEY_LEN, c.cpu_off[r + 1] - c.cpu_off[r])
                + usage_entry_len(P_MEMORY_KEY_LEN, c.mem_off[r + 1] - c.mem_off[r]))
        size += ld_len(cont)
    return size


cdef void w_pod_pb(W* w, const Cols* c, Py_ssize_t j, const char* created,
                   Py_ssize_t created_len) noexcept nogil:
    cdef int32_t k = c.ns_id[j], nm
    cdef Py_ssize_t a = c.container_off[j], b = c.container_off[j + 1], r, meta_len, size
    cdef Py_ssize_t ln, cl, ml
    cdef int64_t sec, nanos
    size = pod_pb_sizes(c, j, created_len, &meta_len)
    w_byte(w, b'\x12')  # PodMetricsList.items
    w_varint(w, <uint64_t>size)
    w_byte(w, b'\x0a')  # metadata
    w_varint(w, <uint64_t>meta_len)
    ln = c.name_off[j + 1] - c.name_off[j]
    w_byte(w, b'\x0a')
    w_varint(w, <uint64_t>ln)
    w_put(w, c.name_buf + c.name_off[j], ln)
    w_byte(w, b'\x12')  # generateName ""
    w_byte(w, b'\x00')
    ln = c.ns_off[k + 1] - c.ns_off[k]
    w_byte(w, b'\x1a')
    w_varint(w, <uint64_t>ln)
    w_put(w, c.ns_buf + c.ns_off[k], ln)
    w_put(w, P_OBJECT_FIELDS, P_OBJECT_FIELDS_LEN)
    w_put(w, created, created_len)
    w_put(w, c.blob[j], c.blob_len[j])
    w_byte(w, b'\x12')  # timestamp
    if b > a:
        split_time(c.timestamp_ns[j], &sec, &nanos)
        w_varint(w, <uint64_t>time_len(c.timestamp_ns[j]))
        w_byte(w, b'\x08')
        w_varint(w, <uint64_t>sec)
        w_byte(w, b'\x10')
        w_varint(w, <uint64_t>nanos)
    else:
        w_byte(w, b'\x00')
    w_byte(w, b'\x1a')  # window
    w_varint(w, <uint64_t>(1 + varint_len(<uint64_t>c.window_ns[j])))
    w_byte(w, b'\x08')
    w_varint(w, <uint64_t>c.window_ns[j])
    for r in range(a, b):
        nm = c.cname_id[r]
        ln = c.cname_off[nm + 1] - c.cname_off[nm]
        cl = c.cpu_off[r + 1] - c.cpu_off[r]
        ml = c.mem_off[r + 1] - c.mem_off[r]
        w_byte(w, b'\x22')  # containers
        w_varint(w, <uint64_t>(ld_len(ln) + usage_entry_len(P_CPU_KEY_LEN, cl)
                               + usage_entry_len(P_MEMORY_KEY_LEN, ml)))
        w_byte(w, b'\x0a')
        w_varint(w, <uint64_t>ln)
        w_put(w, c.cname_buf + c.cname_off[nm], ln)
        w_usage_entry(w, P_CPU_KEY, P_CPU_KEY_LEN, c.cpu_buf + c.cpu_off[r], cl)
        w_usage_entry(w, P_MEMORY_KEY, P_MEMORY_KEY_LEN, c.mem_buf + c.mem_off[r], ml)


cdef Py_ssize_t list_pb_raw_len(const Cols* c, Py_ssize_t created_len) noexcept nogil:
    cdef Py_ssize_t j, meta_len, raw = P_LIST_META_LEN
    for j in range(c.n):
        if c.blob_len[j] >= 0:
            raw += ld_len(pod_pb_sizes(c, j, created_len, &meta_len))
    return raw


cdef void w_list_pb(W* w, const Cols* c, Py_ssize_t raw_len, const char* created,
                    Py_ssize_t created_len) noexcept nogil:
    cdef Py_ssize_t j
    w_put(w, P_MAGIC, P_MAGIC_LEN)
    w_byte(w, b'\x0a')
    w_varint(w, <uint64_t>P_TYPE_META_LEN)
    w_put(w, P_TYPE_META, P_TYPE_META_LEN)
    w_byte(w, b'\x12')
    w_varint(w, <uint64_t>raw_len)
    w_put(w, P_LIST_META, P_LIST_META_LEN)
    for j in range(c.n):
        if c.blob_len[j] >= 0:
            w_pod_pb(w, c, j, created, created_len)
    w_put(w, P_ENVELOPE_END, P_ENVELOPE_END_LEN)


cdef int check_blobs(const Cols* c) noexcept nogil:
    # the first pod whose label entries are malformed, or -1
    cdef W w
    cdef Py_ssize_t j
    w.buf = NULL
    w.pos = 0
    for j in range(c.n):
        if c.blob_len[j] > 0 and w_labels_json(&w, <const uint8_t*>c.blob[j],
                                               c.blob_len[j]) < 0:
            return <int>j
    return -1


def pod_list_protobuf(table, list blobs, bytes created):
    """A ``PodMetricsList`` Kubernetes protobuf body (``k8s\\x00`` + ``runtime.Unknown``).

    Parameters
    ----------
    table : api.render.PodTable
        The served pods in namespace/name order, with their usage strings.
    blobs : list of (bytes or None)
        Per pod of the table: its labels as protobuf ObjectMeta entries (``b""`` for none),
        or None when the pod is not in the list.
    created : bytes
        ObjectMeta's ``creationTimestamp`` field as encoded (tag 8, length, ``metav1.Time``).

    Returns
    -------
    bytes
    """
    cdef _Table t = _Table(table)
    t.set_blobs(blobs)
    cdef W w
    cdef Py_ssize_t raw, total
    cdef int bad
    cdef const char* cr = PyBytes_AS_STRING(created)
    cdef Py_ssize_t cn = PyBytes_GET_SIZE(created)
    with nogil:
        bad = check_blobs(&t.c)
        raw = list_pb_raw_len(&t.c, cn)
    if bad >= 0:
        raise FastMetricsError(f"label entries of pod {bad} are malformed")
    w.buf = NULL
    w.pos = 0
    with nogil:
        w_list_pb(&w, &t.c, raw, cr, cn)
    total = w.pos
    out = PyBytes_FromStringAndSize(NULL, total)
    w.buf = PyBytes_AS_STRING(out)
    w.pos = 0
    with nogil:
        w_list_pb(&w, &t.c, raw, cr, cn)
    if w.pos != total:  # pragma: no cover  (the two passes run the same code)
        raise FastMetricsError("pod list: sizing and writing disagree")
    return out


# ============================================================================ building a table


def pack(strings):
    """The strings' UTF-8 back to back, and ``n + 1`` int64 offsets.

    Raises ``UnicodeEncodeError`` for a string that has no UTF-8 form (a lone surrogate).
    """
    cdef list lst = list(strings)  # our own: the GIL is let go between slices
    cdef Py_ssize_t n = PyList_GET_SIZE(lst), i, size, total = 0
    cdef const char* p
    off_a = np.empty(n + 1, np.int64)
    cdef int64_t[::1] off = off_a
    off[0] = 0
    for i in range(n):
        item = <object>PyList_GET_ITEM(lst, i)
        if type(item) is not str:
            raise FastMetricsError(f"pack: item {i} is {type(item).__name__}, not str")
        PyUnicode_AsUTF8AndSize(item, &size)
        total += size
        off[i + 1] = total
        if i % GIL_SLICE == GIL_SLICE - 1:
            with nogil:
                pass
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* buf = PyBytes_AS_STRING(out)
    for i in range(n):
        item = <object>PyList_GET_ITEM(lst, i)
        p = PyUnicode_AsUTF8AndSize(item, &size)
        if off[i] + size != off[i + 1]:  # the list changed under us
            raise FastMetricsError("pack: the strings changed while packed")
        memcpy(buf + off[i], p, size)
    return out, off_a


cdef inline list _row_list(list lists, int32_t o):
    if o < 0 or o >= PyList_GET_SIZE(lists):
        raise FastMetricsError(f"list index {o} out of range")
    cur = <object>PyList_GET_ITEM(lists, o)
    if type(cur) is not list:
        raise FastMetricsError(f"lists[{o}] is {type(cur).__name__}, not list")
    return <list>cur


def gather(lists, const int32_t[::1] outer, const int32_t[::1] inner):
    """``[lists[outer[i]][inner[i]] for i in range(n)]`` (each of ``lists`` a list)."""
    cdef list ls = list(lists)
    cdef Py_ssize_t n = outer.shape[0], i
    cdef int32_t o, last = -1, k
    cdef list cur = None
    if inner.shape[0] != n:
        raise FastMetricsError("gather: outer and inner differ in length")
    cdef list out = [None] * n
    for i in range(n):
        o = outer[i]
        if o != last:
            cur = _row_list(ls, o)
            last = o
        k = inner[i]
        if k < 0 or k >= PyList_GET_SIZE(cur):
            raise FastMetricsError(f"gather: index {k} out of range for lists[{o}]")
        out[i] = <object>PyList_GET_ITEM(cur, k)
        if i % GIL_SLICE == GIL_SLICE - 1:
            with nogil:
                pass
    return out


def intern(lists, const int32_t[::1] outer, const int32_t[::1] inner):
    """Ids of ``lists[outer[i]][inner[i]]`` into the distinct values (in order of first
    appearance): ``(int32 ids, values)``."""
    cdef list ls = list(lists)
    cdef Py_ssize_t n = outer.shape[0], i
    cdef int32_t o, last = -1, k, cur_id = -1
    cdef list cur = None
    cdef dict seen = {}
    cdef list values = []
    cdef PyObject* hit
    cdef PyObject* ptr
    # the ids of recently seen objects, by address (strings repeat: c0, c1, c0, c1, ...);
    # every object in it is pinned (alive, its address its own) until we return
    cdef list pinned = []
    cdef uintptr_t cache_key[256]
    cdef int32_t cache_id[256]
    cdef Py_ssize_t slot
    memset(cache_key, 0, sizeof(cache_key))
    if inner.shape[0] != n:
        raise FastMetricsError("intern: outer and inner differ in length")
    ids_a = np.empty(n, np.int32)
    cdef int32_t[::1] ids = ids_a
    for i in range(n):
        o = outer[i]
        if o != last:
            cur = _row_list(ls, o)
            last = o
        k = inner[i]
        if k < 0 or k >= PyList_GET_SIZE(cur):
            raise FastMetricsError(f"intern: index {k} out of range for lists[{o}]")
        ptr = PyList_GET_ITEM(cur, k)
        slot = <Py_ssize_t>((<uintptr_t>ptr >> 4) & 255)
        if cache_key[slot] == <uintptr_t>ptr:
            cur_id = cache_id[slot]
        else:
            item = <object>ptr
            hit = PyDict_GetItem(seen, item)
            if hit == NULL:
                cur_id = <int32_t>PyList_GET_SIZE(values)
                seen[item] = cur_id
                values.append(item)
            else:
                cur_id = <int32_t><object>hit
            pinned.append(item)
            cache_key[slot] = <uintptr_t>ptr
            cache_id[slot] = cur_id
        ids[i] = cur_id
        if i % GIL_SLICE == GIL_SLICE - 1:
            with nogil:
                pass
    return ids_a, values


cdef inline int key_cmp(const int32_t* ns, const char* buf, const int64_t* off, int32_t a,
                        int32_t b) noexcept nogil:
    cdef int64_t la, lb
    cdef int c
    if ns[a] != ns[b]:
        return -1 if ns[a] < ns[b] else 1
    la = off[a + 1] - off[a]
    lb = off[b + 1] - off[b]
    c = memcmp(buf + off[a], buf + off[b], <size_t>(la if la < lb else lb))
    if c != 0:
        return c
    return (la > lb) - (la < lb)


cdef void merge_sort(int32_t* v, int32_t* tmp, Py_ssize_t n, const int32_t* ns, const char* buf,
                     const int64_t* off) noexcept nogil:
    # stable, bottom-up, runs of 16 sorted by insertion first
    cdef Py_ssize_t lo, hi, i, j, k, mid, width
    cdef int32_t x
    cdef int32_t* src = v
    cdef int32_t* dst = tmp
    cdef int32_t* sw
    for lo in range(0, n, 16):
        hi = lo + 16 if lo + 16 < n else n
        for i in range(lo + 1, hi):
            x = v[i]
            j = i
            while j > lo and key_cmp(ns, buf, off, v[j - 1], x) > 0:
                v[j] = v[j - 1]
                j -= 1
            v[j] = x
    width = 16
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width if lo + width < n else n
            hi = lo + 2 * width if lo + 2 * width < n else n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if key_cmp(ns, buf, off, src[j], src[i]) < 0:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        sw = src
        src = dst
        dst = sw
        width *= 2
    if src != v:
        memcpy(v, src, n * sizeof(int32_t))


def sort_pods(const int32_t[::1] ns_rank, bytes name_buf, const int64_t[::1] name_off):
    """The order of pods by (namespace rank, name's UTF-8 bytes): an int32 permutation
    (stable). ``name_off`` has ``n + 1`` offsets into ``name_buf``."""
    cdef Py_ssize_t n = ns_rank.shape[0]
    if name_off.shape[0] != n + 1:
        raise FastMetricsError("sort_pods: name offsets must number pods + 1")
    _check_offsets(name_off, len(name_buf), "name")
    order_a = np.arange(n, dtype=np.int32)
    cdef int32_t[::1] order = order_a
    if n < 2:
        return order_a
    cdef int32_t* tmp = <int32_t*>malloc(n * sizeof(int32_t))
    if tmp == NULL:
        raise MemoryError()
    cdef const char* buf = PyBytes_AS_STRING(name_buf)
    try:
        with nogil:
            merge_sort(&order[0], tmp, n, &ns_rank[0], buf, &name_off[0])
    finally:
        free(tmp)
    return order_a


# ============================================================================ the join


cdef inline uint64_t name_hash(int32_t ns, const uint8_t* s, Py_ssize_t n) noexcept nogil:
    # FNV-1a over the name, seeded with the namespace id
    cdef uint64_t h = 1469598103934665603ULL ^ (<uint64_t>ns * 0x9E3779B97F4A7C15ULL)
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ s[i]) * 1099511628211ULL
    return h ^ (h >> 29)


cdef class NameIndex:
    """The position of each pod of a table by (namespace id, name): an open-addressing hash
    table over the table's packed names (one int32 slot per entry, no Python object per pod).

    Parameters
    ----------
    ns_id : int32 array
        Per pod, its namespace id.
    name_buf, name_off : bytes, int64 array
        The pods' names (UTF-8) and ``n + 1`` offsets.
    """

    cdef int32_t* slots  # position + 1, 0 for an empty slot
    cdef Py_ssize_t mask
    cdef Py_ssize_t n
    cdef const int32_t* ns_id
    cdef const char* buf
    cdef const int64_t* off
    cdef object keep

    def __cinit__(self, ns_id, bytes name_buf, name_off):
        cdef const int32_t[::1] ns = ns_id
        cdef const int64_t[::1] off = name_off
        cdef Py_ssize_t n = ns.shape[0], cap = 16, j, s
        cdef Py_ssize_t dup = -1
        if off.shape[0] != n + 1:
            raise FastMetricsError("name index: name offsets must number pods + 1")
        _check_offsets(off, len(name_buf), "name")
        while cap < 2 * n:
            cap <<= 1
        self.slots = <int32_t*>calloc(cap, sizeof(int32_t))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = cap - 1
        self.n = n
        self.keep = (ns, off, name_buf)
        self.ns_id = &ns[0] if n else NULL
        self.buf = PyBytes_AS_STRING(name_buf)
        self.off = &off[0]
        with nogil:
            for j in range(n):
                s = self._probe(self.ns_id[j], <const uint8_t*>(self.buf + self.off[j]),
                                self.off[j + 1] - self.off[j])
                if self.slots[s] != 0:
                    dup = j
                    break
                self.slots[s] = <int32_t>(j + 1)
        if dup >= 0:
            raise FastMetricsError(f"name index: pod {dup} appears twice")

    def __dealloc__(self):
        free(self.slots)

    def __len__(self):
        return self.n

    cdef inline Py_ssize_t _probe(self, int32_t ns, const uint8_t* name,
                                  Py_ssize_t ln) noexcept nogil:
        # the slot holding (ns, name), or the empty slot where it would go
        cdef Py_ssize_t s = <Py_ssize_t>(name_hash(ns, name, ln) & <uint64_t>self.mask)
        cdef int32_t j
        while True:
            j = self.slots[s] - 1
            if j < 0:
                return s
            if (self.ns_id[j] == ns and self.off[j + 1] - self.off[j] == ln
                    and memcmp(self.buf + self.off[j], name, <size_t>ln) == 0):
                return s
            s = (s + 1) & self.mask

    cdef inline Py_ssize_t find(self, int32_t ns, const char* name,
                                Py_ssize_t ln) noexcept nogil:
        return self.slots[self._probe(ns, <const uint8_t*>name, ln)] - 1

    def position(self, int32_t namespace_id, str name):
        """The position of (``namespace_id``, ``name``), or -1."""
        cdef Py_ssize_t ln
        cdef const char* p
        try:
            p = PyUnicode_AsUTF8AndSize(name, &ln)
        except UnicodeEncodeError:
            return -1  # not UTF-8, so not in the table
        return self.find(namespace_id, p, ln)


cdef inline Py_ssize_t _slot(uintptr_t key, Py_ssize_t mask) noexcept nogil:
    return <Py_ssize_t>(((key >> 4) * <uintptr_t>0x9E3779B97F4A7C15ULL) >> 20) & mask


def join(candidates, dict ns_index, NameIndex index, Py_ssize_t n, blob_of):
    """Place the candidate pods in the table: ``(blobs, mask)``.

    ``ns_index`` maps a namespace to its id and ``index`` (namespace id, name) to a position
    in the table (of ``n`` pods). For every candidate (``namespace``, ``name``, ``labels``
    attributes) found there, ``blobs[j]`` is ``blob_of(labels)`` (called once per distinct
    labels object) and ``mask[j]`` is 1; the other positions hold None and 0. A candidate not
    in the table is not listed.
    """
    cdef list cand = list(candidates)  # our own: the GIL is let go between slices
    cdef Py_ssize_t count = PyList_GET_SIZE(cand), i, j, s, cap = 16, used = 0, ln
    cdef list blobs = [None] * n
    cdef list keep = []
    mask_a = np.zeros(n, np.uint8)
    cdef uint8_t[::1] mask = mask_a
    cdef object last_ns = None, labels, blob, name
    cdef PyObject* hit
    cdef int32_t ns_id = -1
    cdef const char* p
    cdef uintptr_t key
    if len(index) != n:
        raise FastMetricsError(f"join: the index has {len(index)} pods, not {n}")
    while cap < 2 * count and cap < (1 << 20):
        cap <<= 1
    cdef uintptr_t* keys = <uintptr_t*>calloc(cap, sizeof(uintptr_t))
    cdef PyObject** vals = <PyObject**>calloc(cap, sizeof(PyObject*))
    try:
        if keys == NULL or vals == NULL:
            raise MemoryError()
        for i in range(count):
            if i % GIL_SLICE == GIL_SLICE - 1:
                with nogil:
                    pass
            pod = <object>PyList_GET_ITEM(cand, i)
            ns = pod.namespace
            if ns is not last_ns:
                last_ns = ns
                hit = PyDict_GetItem(ns_index, ns)
                ns_id = -1 if hit == NULL else <int32_t><object>hit
            if ns_id < 0:
                continue
            name = pod.name
            if type(name) is not str:
                raise FastMetricsError(f"join: candidate {i}'s name is not a str")
            try:
                p = PyUnicode_AsUTF8AndSize(name, &ln)
            except UnicodeEncodeError:
                continue  # not UTF-8, so not in the table
            j = index.find(ns_id, p, ln)
            if j < 0:
                continue
            labels = pod.labels
            key = <uintptr_t><PyObject*>labels
            s = _slot(key, cap - 1)
            while keys[s] != 0 and keys[s] != key:
                s = (s + 1) & (cap - 1)
            if keys[s] == key:
                blob = <object>vals[s]
            else:
                blob = blob_of(labels)
                if type(blob) is not bytes:
                    raise FastMetricsError(
                        f"join: blob_of returned {type(blob).__name__}, not bytes")
                keep.append((labels, blob))  # both alive (and ids unique) until we return
                if used < cap // 2:
                    keys[s] = key
                    vals[s] = <PyObject*>blob
                    used += 1
            blobs[j] = blob
            mask[j] = 1
    finally:
        free(keys)
        free(vals)
    return blobs, mask_a


def take_packed(bytes buf, const int64_t[::1] off, const int32_t[::1] order):
    """Packed strings ``buf``/``off`` in the order ``order``: a new ``(bytes, offsets)``."""
    cdef Py_ssize_t n = order.shape[0], k = off.shape[0] - 1, i, total = 0
    cdef int32_t j
    if k < 0:
        raise FastMetricsError("take_packed: offsets must number strings + 1")
    _check_offsets(off, len(buf), "packed")
    for i in range(n):
        j = order[i]
        if j < 0 or j >= k:
            raise FastMetricsError(f"take_packed: index {j} out of range for {k} strings")
        total += off[j + 1] - off[j]
    out_off_a = np.empty(n + 1, np.int64)
    cdef int64_t[::1] out_off = out_off_a
    out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* dst = PyBytes_AS_STRING(out)
    cdef const char* src = PyBytes_AS_STRING(buf)
    cdef int64_t pos = 0
    with nogil:
        out_off[0] = 0
        for i in range(n):
            j = order[i]
            memcpy(dst + pos, src + off[j], <size_t>(off[j + 1] - off[j]))
            pos += off[j + 1] - off[j]
            out_off[i + 1] = pos
    return out, out_off_a
