"""Type-checked by mypy --strict (tests/test__sourcecode.py); never run.

It pins what crosses the compiled boundary of the list renderers (``_render.pyi``) as callers
see it, and that the pure-Python twin offers the same signatures.
"""

from collections.abc import Mapping
from typing import assert_type

import numpy as np
import numpy.typing as npt

from fastmetrics import _render
from fastmetrics.api import _render_py

buf, off = _render.pack(["a", "b"])
assert_type(buf, bytes)
assert_type(off, npt.NDArray[np.int64])
ns = np.zeros(2, np.int32)
order = _render.sort_pods(ns, buf, off)
assert_type(order, npt.NDArray[np.int32])
assert_type(_render.take_packed(buf, off, order), tuple[bytes, npt.NDArray[np.int64]])
assert_type(_render.gather([["x"]], ns, ns), list[str])
ids, values = _render.intern([["x"]], ns, ns)
assert_type(ids, npt.NDArray[np.int32])
assert_type(values, list[str])
index = _render.NameIndex(ns, buf, off)
assert_type(index.position(0, "a"), int)


def blob_of(labels: Mapping[str, str]) -> bytes:
    return b""


blobs, mask = _render.join([], {"ns": 0}, index, 2, blob_of)
assert_type(blobs, list[bytes | None])
assert_type(mask, npt.NDArray[np.uint8])
assert_type(_render.pod_list_json(object(), blobs, b'"t"'), bytes)
assert_type(_render.pod_list_protobuf(object(), blobs, b""), bytes)

py_index = _render_py.NameIndex(ns, buf, off)
assert_type(_render_py.join([], {"ns": 0}, py_index, 2, blob_of), tuple[list[bytes | None],
                                                                       npt.NDArray[np.uint8]])
assert_type(_render_py.pack(["a"]), tuple[bytes, npt.NDArray[np.int64]])
assert_type(_render_py.sort_pods(ns, buf, off), npt.NDArray[np.int32])
