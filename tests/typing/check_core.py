"""Type-checked by mypy --strict (tests/test__sourcecode.py); never run.

It pins what crosses the compiled boundary (``_core.pyi``) as callers see it.
"""

from typing import assert_type

import numpy as np
import numpy.typing as npt

from fastmetrics import _core
from fastmetrics._batch import DecodedBatch, KeyTable, NodePoint

decoder = _core.DecoderC()
batch = decoder.decode(b"", 0)
assert_type(batch, DecodedBatch)
assert_type(decoder.keys, KeyTable)
assert_type(batch.node, NodePoint | None)
assert_type(batch.key_id, npt.NDArray[np.int32])
assert_type(batch.timestamp_ns, npt.NDArray[np.int64])
assert_type(batch.cpu_nanocore_seconds, npt.NDArray[np.uint64])

rate, window = _core.cpu_rate(batch.timestamp_ns, batch.cpu_nanocore_seconds,
                              batch.timestamp_ns, batch.cpu_nanocore_seconds)
assert_type(rate, npt.NDArray[np.uint64])
assert_type(window, npt.NDArray[np.int64])
assert_type(_core.format_cpu(1), str)
buf, offsets = _core.format_column(rate, 0)
assert_type(buf, bytes)
assert_type(offsets, npt.NDArray[np.int64])
