"""The ``fastmetrics`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

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
    for name, help_ in (
        ("demo", "run a simulated cluster (apiserver + kubelets) and print kubectl commands"),
        ("sim", "run the simulated cluster for tests and benchmarks (see --ready-file)"),
    ):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--nodes", type=_positive_int, default=None,
                        help="number of nodes (default 3)")
        sp.add_argument("--pods-per-node", type=_non_negative_int, default=None,
                        help="pods per node (default 10)")
        sp.add_argument("--containers-per-pod", type=_positive_int, default=None,
                        help="containers per pod (default 2)")
        sp.add_argument("--shape", type=Path, default=None, metavar="FILE",
                        help="a YAML file with the cluster shape (flags override it)")
        sp.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                        help="where certificates and kubeconfigs go (default: a temporary "
                             "directory removed at exit)")
        sp.add_argument("--stats-interval", type=float, default=10.0, metavar="SECONDS",
                        help="how often kubelet stats refresh (default 10)")
        sp.add_argument("--api-port", type=_port, default=0,
                        help="apiserver port on 127.0.0.1 (default: a free one)")
        sp.add_argument("--kubelet-port", type=_port, default=0,
                        help="kubelet port on every node address (default: a free one)")
        if name == "sim":
            sp.add_argument("--ready-file", type=Path, default=None, metavar="FILE",
                            help="write a JSON description (URLs, kubeconfigs, tokens) here "
                                 "once serving")
    dec = sub.add_parser(
        "decode",
        help="decode a kubelet /metrics/resource body (a file, or - for stdin) and print it",
    )
    dec.add_argument("file", help="path of the body, or - to read standard input")
    return parser


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return value


def _cmd_sim(args: argparse.Namespace, demo: bool) -> int:
    from .sim.model import ClusterShape
    from .sim.run import run_simulator

    try:
        shape = ClusterShape.from_yaml(args.shape) if args.shape else ClusterShape()
        overrides = {
            k: v
            for k, v in (
                ("nodes", args.nodes),
                ("pods_per_node", args.pods_per_node),
                ("containers_per_pod", args.containers_per_pod),
            )
            if v is not None
        }
        if overrides:
            shape = dataclasses.replace(shape, **overrides)
    except (OSError, ValueError) as e:
        print(f"fastmetrics {args.command}: {e}", file=sys.stderr)
        return 2
    if not args.stats_interval >= 0:
        print(f"fastmetrics {args.command}: --stats-interval must be >= 0", file=sys.stderr)
        return 2
    return run_simulator(
        shape, workdir=args.workdir, ready_file=getattr(args, "ready_file", None), demo=demo,
        stats_interval_s=args.stats_interval, api_port=args.api_port,
        kubelet_port=args.kubelet_port,
    )


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


SUBCOMMANDS = frozenset({"demo", "sim", "decode"})


def _server_help() -> str:
    from .options import FLAGS

    flags = "\n".join(f"  {f.display} ({f.kind})" for f in FLAGS)
    return (
        "usage: fastmetrics [flags]            run the server (metrics-server's flags)\n"
        "       fastmetrics demo|sim|decode ... (see fastmetrics COMMAND --help)\n\n"
        f"Flags (as metrics-server's; see its documentation for their meaning):\n{flags}\n"
    )


def _cmd_server(argv: list[str]) -> int:
    """``fastmetrics [flags]``: metrics-server's command line."""
    from .errors import ConfigError
    from .options import parse_args, validate

    try:
        options = parse_args(argv)
    except ConfigError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    if options.help:
        print(_server_help())
        return 0
    if options.show_version:
        print(f"fastmetrics {__version__} ({_implementation()})")
        return 0
    errors = validate(options)
    if errors:
        for error in errors:
            print(f"Error: {error}", file=sys.stderr)
        return 2
    if options.args:
        print(f"Warning: ignoring positional arguments {list(options.args)} (as metrics-server "
              "does); a flag value must be given as --flag=value", file=sys.stderr)
    from .run import run_server

    return run_server(options)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in SUBCOMMANDS and args_list[0] != "--version"):
        return _cmd_server(args_list)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "decode":
        return _cmd_decode(args.file)
    if args.command in ("demo", "sim"):
        return _cmd_sim(args, demo=args.command == "demo")
    parser.print_help()
    return 0
