"""The ``fastmetrics`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__


def _implementation() -> str:
    from .decode import Decoder, DecoderC

    if DecoderC is not None and Decoder is DecoderC:
        return "compiled core"
    return "pure-Python core"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmetrics",
        description=(
            "A drop-in replacement for Kubernetes metrics-server: scrapes kubelets' "
            "/metrics/resource and serves metrics.k8s.io/v1beta1."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"fastmetrics {__version__} ({_implementation()})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    dec = sub.add_parser(
        "decode",
        help="decode a kubelet /metrics/resource body (a file, or - for stdin) and print it",
    )
    dec.add_argument("file", help="path of the body, or - to read standard input")
    return parser


def _cmd_decode(path: str) -> int:
    import time

    from .decode import decode
    from .errors import DecodeError

    try:
        if path == "-":
            body = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                body = f.read()
    except OSError as e:
        print(f"fastmetrics decode: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 1
    now_ns = time.time_ns() // 1_000_000 * 1_000_000
    try:
        batch = decode(body, default_timestamp_ns=now_ns)
    except DecodeError as e:
        print(f"fastmetrics decode: {path}: {e}", file=sys.stderr)
        return 1
    if batch.node is None:
        print("node: (incomplete: missing or zero cpu/memory)")
    else:
        n = batch.node
        print(
            f"node: timestamp_ns={n.timestamp_ns} cpu_nanocore_seconds={n.cpu_nanocore_seconds}"
            f" memory_bytes={n.memory_bytes}"
        )
    for ns, pod, container, ts, start, cpu, mem in batch.containers():
        print(
            f"{ns}/{pod}/{container}: timestamp_ns={ts} start_time_ns={start}"
            f" cpu_nanocore_seconds={cpu} memory_bytes={mem}"
        )
    print(
        f"{len(batch)} containers, {batch.dropped_pods} pods dropped,"
        f" {batch.skipped_samples} samples skipped"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "decode":
        return _cmd_decode(args.file)
    parser.print_help()
    return 0
