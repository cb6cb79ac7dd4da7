"""The quick benchmark guard run by CI: ratios measured side by side, so noise cannot flake it.

Fails (exit 1) when the compiled decoder is less than 20x faster than prometheus_client's
parser on the same 110-pod payload in the same run.
"""

from __future__ import annotations

import sys

from fastmetrics.decode import DecoderC

from .benchmarks.bench_decode import TimeDecode
from .timing import best_per_call

DECODE_MIN_RATIO = 20.0


def main() -> int:
    if DecoderC is None:
        print("bench.quick: the compiled extension is not built", file=sys.stderr)
        return 1
    failures = []
    pods = 110
    b = TimeDecode()
    b.setup(pods)
    size = len(b.body)
    t = best_per_call(
        {
            "c": lambda: b.time_decode_c(pods),
            "py": lambda: b.time_decode_py(pods),
            "prometheus_client": lambda: b.time_prometheus_client(pods),
        },
        rounds=7,
    )
    ratio = t["prometheus_client"] / t["c"]
    print(f"decode {pods} pods x 2 containers, {size / 1000:.1f} KB payload:")
    for name, s in t.items():
        print(f"  {name:>18}: {s * 1e6:9.1f} us/payload  {size / s / 1e6:8.1f} MB/s")
    print(f"  compiled / prometheus_client: {ratio:.1f}x (guard: >= {DECODE_MIN_RATIO:.0f}x)")
    if ratio < DECODE_MIN_RATIO:
        failures.append(f"decode ratio {ratio:.1f}x < {DECODE_MIN_RATIO:.0f}x")
    if failures:
        print("bench.quick: FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    print("bench.quick: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
