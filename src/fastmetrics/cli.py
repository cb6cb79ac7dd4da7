"""The ``fastmetrics`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .options import Options


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


# --help: metrics-server's flag sections, each flag with its type, what it does and its default
_HELP_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Metrics server flags", ("kubeconfig", "metric-resolution", "version")),
    ("Kubelet client flags", (
        "deprecated-kubelet-completely-insecure", "kubelet-certificate-authority",
        "kubelet-client-certificate", "kubelet-client-key", "kubelet-insecure-tls",
        "kubelet-port", "kubelet-preferred-address-types", "kubelet-request-timeout",
        "kubelet-use-node-status-port", "node-selector")),
    ("Apiserver secure serving flags", (
        "bind-address", "cert-dir", "disable-http2-serving", "http2-max-streams-per-connection",
        "permit-address-sharing", "permit-port-sharing", "secure-port", "tls-cert-file",
        "tls-cipher-suites", "tls-curve-preferences", "tls-min-version", "tls-private-key-file",
        "tls-sni-cert-key")),
    ("Apiserver authentication flags", (
        "authentication-kubeconfig", "authentication-skip-lookup",
        "authentication-token-webhook-cache-ttl", "authentication-tolerate-lookup-failure",
        "client-ca-file", "requestheader-allowed-names", "requestheader-client-ca-file",
        "requestheader-extra-headers-prefix", "requestheader-group-headers",
        "requestheader-uid-headers", "requestheader-username-headers")),
    ("Apiserver authorization flags", (
        "authorization-always-allow-paths", "authorization-kubeconfig",
        "authorization-webhook-cache-authorized-ttl",
        "authorization-webhook-cache-unauthorized-ttl")),
    ("Logging flags", (
        "v", "logging-format", "vmodule", "log-flush-frequency", "log-json-info-buffer-size",
        "log-json-split-stream", "log-text-info-buffer-size", "log-text-split-stream")),
)

_HELP_TEXT: dict[str, str] = {
    "kubeconfig": "kubeconfig for the apiserver and the kubelets (default: in-cluster)",
    "metric-resolution": "how often every kubelet is scraped; at least 10s",
    "version": "print the version and exit",
    "deprecated-kubelet-completely-insecure": "plain HTTP to kubelets, no credentials "
                                              "(the read-only port); never in production",
    "kubelet-certificate-authority": "CA file for the kubelets' serving certificates",
    "kubelet-client-certificate": "client certificate file presented to kubelets",
    "kubelet-client-key": "key file of --kubelet-client-certificate",
    "kubelet-insecure-tls": "do not verify kubelets' serving certificates (test clusters)",
    "kubelet-port": "kubelet port, unless --kubelet-use-node-status-port finds one",
    "kubelet-preferred-address-types": "Node address types to try, in order",
    "kubelet-request-timeout": "timeout of one kubelet scrape",
    "kubelet-use-node-status-port": "use the port in the Node's status.daemonEndpoints",
    "node-selector": "label selector of the nodes to scrape and serve",
    "bind-address": "address to serve on",
    "cert-dir": "where the self-signed serving certificate is written (when no "
                "--tls-cert-file)",
    "secure-port": "HTTPS port",
    "tls-cert-file": "serving certificate (PEM; CA certificates may follow)",
    "tls-private-key-file": "key of --tls-cert-file",
    "tls-cipher-suites": "allowed cipher suites (Go names)",
    "tls-min-version": "VersionTLS12 or VersionTLS13 (also VersionTLS10, VersionTLS11)",
    "tls-sni-cert-key": "certificate,key[:domains] for SNI; repeatable",
    "authentication-kubeconfig": "kubeconfig for TokenReviews and the authentication "
                                 "ConfigMap (default: --kubeconfig)",
    "authentication-skip-lookup": "do not read kube-system/extension-apiserver-authentication",
    "authentication-token-webhook-cache-ttl": "how long TokenReview answers are cached",
    "authentication-tolerate-lookup-failure": "start even if that ConfigMap cannot be read",
    "client-ca-file": "CA for client certificates (default: from the ConfigMap)",
    "requestheader-allowed-names": "front-proxy certificate common names allowed (empty: any)",
    "requestheader-client-ca-file": "front-proxy CA (default: from the ConfigMap)",
    "requestheader-extra-headers-prefix": "header prefixes of a front-proxied user's extra",
    "requestheader-group-headers": "headers of a front-proxied user's groups",
    "requestheader-uid-headers": "headers of a front-proxied user's UID",
    "requestheader-username-headers": "headers of a front-proxied user's name",
    "authorization-always-allow-paths": "paths served without authorization (trailing * = "
                                        "prefix)",
    "authorization-kubeconfig": "kubeconfig for SubjectAccessReviews (default: --kubeconfig)",
    "authorization-webhook-cache-authorized-ttl": "how long 'allowed' answers are cached",
    "authorization-webhook-cache-unauthorized-ttl": "how long 'denied' answers are cached",
    "v": "log verbosity: 1 a line per tick, 2 two, 4 a line per node",
    "logging-format": "text (klog) or json",
    "shutdown-delay-duration": "after SIGTERM, keep serving this long with /readyz failing",
    "request-timeout": "the longest wait for in-flight requests at shutdown",
}


def _help_default(name: str) -> str:
    """The default of a flag as pflag shows it (empty when it has none worth showing)."""
    from .options import FLAGS, Options, format_go_duration

    flag = next(f for f in FLAGS if f.name == name)
    if flag.field is None or not hasattr(Options, flag.field):
        return ""
    value = getattr(Options(), flag.field)
    if isinstance(value, bool):
        return "true" if value else ""
    if value in ("", 0, ()):
        return ""  # as pflag: no default shown for zero values
    if flag.kind == "duration" and isinstance(value, int):
        return format_go_duration(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _server_help() -> str:
    from .options import FLAGS

    by_name = {f.name: f for f in FLAGS}
    lines = [
        "fastmetrics: a drop-in replacement for Kubernetes metrics-server; it takes "
        "metrics-server's flags.",
        "",
        "Usage:",
        "  fastmetrics [flags]                 run the server",
        "  fastmetrics demo|sim|decode ...     see fastmetrics COMMAND --help",
    ]
    listed: set[str] = set()

    def entry(name: str) -> str:
        flag = by_name[name]
        listed.add(name)
        left = f"  {flag.display} {'' if flag.kind == 'bool' else flag.kind}".rstrip()
        text = _HELP_TEXT.get(name, "" if flag.field else "accepted, not applied")
        default = _help_default(name)
        if default:
            text = f"{text} (default {default})" if text else f"(default {default})"
        return f"{left:<50} {text}".rstrip() if text else left

    for title, names in _HELP_SECTIONS:
        lines += ["", f"{title}:", *(entry(n) for n in names)]
    rest = [f.name for f in FLAGS if f.name not in listed and f.name != "help"]
    lines += ["", "Generic server, audit and feature flags:", *(entry(n) for n in rest)]
    lines += ["", "Documentation: docs/operations.md (install, sizing, troubleshooting), "
                  "docs/compatibility.md."]
    return "\n".join(lines) + "\n"


def _os_reason(e: OSError) -> str:
    """An OS error as Go words it: ``no such file or directory``, ``permission denied``."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def _check_pem_files(options: Options) -> list[str]:
    """Every certificate, key and CA file named by a flag: readable, PEM, matching pairs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from .log import go_quote

    errors: list[str] = []

    def read(flag: str, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            errors.append(f"{flag}: cannot read {go_quote(path)}: {_os_reason(e)}")
            return None

    def certs(flag: str, path: str) -> list[x509.Certificate]:
        data = read(flag, path)
        if data is None:
            return []
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            errors.append(f"{flag}: {go_quote(path)} holds no PEM certificate")
            return []

    def pair(cert_flag: str, cert_path: str, key_flag: str, key_path: str) -> None:
        chain = certs(cert_flag, cert_path)
        data = read(key_flag, key_path)
        if data is None:
            return
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            reason = ("is encrypted" if isinstance(e, TypeError)
                      else "holds no PEM private key fastmetrics can read")
            errors.append(f"{key_flag}: {go_quote(key_path)} {reason}")
            return
        if not chain:
            return
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if chain[0].public_key().public_bytes(der, spki) != key.public_key().public_bytes(
                der, spki):
            errors.append(f"{key_flag}: the private key in {go_quote(key_path)} does not match "
                          f"the certificate in {go_quote(cert_path)} ({cert_flag})")

    if options.tls_cert_file and options.tls_private_key_file:
        pair("--tls-cert-file", options.tls_cert_file,
             "--tls-private-key-file", options.tls_private_key_file)
    for sni in options.tls_sni_cert_key:
        pair("--tls-sni-cert-key", sni.cert_file, "--tls-sni-cert-key", sni.key_file)
    if options.kubelet_client_certificate and options.kubelet_client_key:
        pair("--kubelet-client-certificate", options.kubelet_client_certificate,
             "--kubelet-client-key", options.kubelet_client_key)
    for flag, path in (("--client-ca-file", options.client_ca_file),
                       ("--requestheader-client-ca-file", options.requestheader_client_ca_file),
                       ("--kubelet-certificate-authority",
                        options.kubelet_certificate_authority)):
        if path:
            certs(flag, path)
    for flag, path in (("--kubeconfig", options.kubeconfig),
                       ("--authentication-kubeconfig", options.authentication_kubeconfig),
                       ("--authorization-kubeconfig", options.authorization_kubeconfig)):
        if path:
            read(flag, path)
    return errors


def _check_cert_dir(options: Options) -> list[str]:
    """Without --tls-cert-file the self-signed certificate goes into --cert-dir: it must be
    writable, or hold the certificate and key already."""
    import os

    from .log import go_quote

    if options.tls_cert_file and options.tls_private_key_file:
        return []
    directory = Path(options.cert_dir)
    hint = ("(the self-signed serving certificate is written there: give a writable "
            "--cert-dir, e.g. an emptyDir, or --tls-cert-file and --tls-private-key-file)")
    if (directory / "apiserver.crt").is_file() and (directory / "apiserver.key").is_file():
        return []
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return [f"--cert-dir: cannot create {go_quote(str(directory))}: {_os_reason(e)} {hint}"]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [f"--cert-dir: {go_quote(str(directory))} is not writable {hint}"]
    return []


def _check_port(options: Options) -> list[str]:
    """The serving port is free (bound and released at once; the server binds it later)."""
    import errno
    import ipaddress
    import socket

    if options.secure_port == 0:
        return []
    host = options.bind_address or "0.0.0.0"
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    shown = f"[{host}]:{options.secure_port}" if family == socket.AF_INET6 else \
        f"{host}:{options.secure_port}"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, options.secure_port))
        except OSError as e:
            hint = ""
            if e.errno == errno.EACCES and options.secure_port < 1024:
                hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE: use " \
                       "--secure-port=10250 as the manifests do)"
            elif e.errno == errno.EADDRINUSE:
                hint = (" (with hostNetwork the kubelet holds 10250: choose another "
                        "--secure-port)")
            return [f"--secure-port: cannot listen on {shown}: {_os_reason(e)}{hint}"]
    return []


def preflight(options: Options) -> list[str]:
    """What can be checked before contacting anything, each problem one line naming the flag:
    every certificate/key/CA/kubeconfig file readable (and PEM, pairs matching), --cert-dir
    usable, --secure-port free. metrics-server fails on these at start-up too."""
    return [*_check_pem_files(options), *_check_cert_dir(options), *_check_port(options)]


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
    errors = preflight(options)
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
    try:
        return _main(argv)
    except BrokenPipeError:
        # `fastmetrics --help | head`: the reader left; no traceback, and none at exit either
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
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
