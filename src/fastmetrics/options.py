"""metrics-server's command line: every flag of SPEC §8, parsed the way Go's pflag parses it.

``parse_args(argv)`` turns a Deployment's ``args`` into a frozen :class:`Options`;
``validate(options)`` returns every problem at once (the ``cli`` prints them all and exits 2).
Durations are ``int`` nanoseconds (``*_ns``), string slices are tuples.

The syntax is pflag's, so a metrics-server Deployment keeps working unchanged:

* ``--flag=value`` and ``--flag value``; booleans as ``--flag`` or ``--flag=true|false`` (a
  bare boolean never takes the next argument); ``--`` ends the flags;
* shorthands ``-l value``, ``-l=value``, ``-lvalue`` (``--node-selector``), ``-v=2``, ``-v 2``
  and ``-h``;
* ``strings`` flags split on commas with CSV quoting; giving one again appends to it (the
  first use replaces the default), as pflag's ``StringSlice`` does;
* Go duration syntax (``15s``, ``1m30s``, ``500ms``, ``1.5h``, ``-10s``), Go integer syntax
  (``0x10``, ``0o17``, ``1_000``), ``strconv.ParseBool`` booleans.

The incidental flags (audit, most generic server flags, feature flags, alpha logging flags) are
parsed, type-checked and kept in ``Options.ignored``; fastmetrics does not act on them.
Positional arguments are accepted and kept in ``Options.args`` (metrics-server's cobra command
ignores them too).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Final, NamedTuple, cast

from .errors import ConfigError
from .log import go_quote
from .selectors import SelectorError, parse_label_selector

__all__ = [
    "DEFAULT_ADDRESS_TYPES",
    "FLAGS",
    "TLS_CIPHER_SUITES",
    "TLS_VERSIONS",
    "Flag",
    "NamedCertKey",
    "Options",
    "format_go_duration",
    "manifest_args",
    "parse_args",
    "parse_go_duration",
    "validate",
]

NS_PER_MS: Final = 1_000_000
NS_PER_S: Final = 1_000_000_000
NS_PER_MIN: Final = 60 * NS_PER_S

DEFAULT_ADDRESS_TYPES: Final = (
    "Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP")

#: ``--tls-min-version`` values (``cliflag.TLSVersion``).
TLS_VERSIONS: Final = ("VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13")

#: ``--tls-cipher-suites`` names Go knows (``cliflag.TLSCipherSuites``): secure, then insecure.
TLS_CIPHER_SUITES: Final = frozenset({
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA", "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA", "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256", "TLS_RSA_WITH_RC4_128_SHA",
})


class NamedCertKey(NamedTuple):
    """One ``--tls-sni-cert-key``: certificate and key files, and the domain patterns (empty:
    take the names from the certificate)."""

    cert_file: str
    key_file: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Options:
    """Every metrics-server flag; defaults are the binary's (not the manifests')."""

    # §8.1 metrics-server specific
    metric_resolution_ns: int = 60 * NS_PER_S
    kubeconfig: str = ""
    show_version: bool = False
    kubelet_preferred_address_types: tuple[str, ...] = DEFAULT_ADDRESS_TYPES
    kubelet_use_node_status_port: bool = False
    kubelet_port: int = 10250
    kubelet_insecure_tls: bool = False
    kubelet_certificate_authority: str = ""
    kubelet_client_certificate: str = ""
    kubelet_client_key: str = ""
    kubelet_request_timeout_ns: int = 10 * NS_PER_S
    node_selector: str = ""
    deprecated_kubelet_completely_insecure: bool = False
    # §8.2 secure serving
    bind_address: str = "0.0.0.0"
    secure_port: int = 443
    cert_dir: str = "apiserver.local.config/certificates"
    tls_cert_file: str = ""
    tls_private_key_file: str = ""
    tls_cipher_suites: tuple[str, ...] = ()
    tls_min_version: str = ""
    tls_curve_preferences: tuple[int, ...] = ()
    tls_sni_cert_key: tuple[NamedCertKey, ...] = ()
    http2_max_streams_per_connection: int = 0
    disable_http2_serving: bool = False
    permit_port_sharing: bool = False
    permit_address_sharing: bool = False
    # §8.3 authentication / authorization
    authentication_kubeconfig: str = ""
    authentication_skip_lookup: bool = False
    authentication_tolerate_lookup_failure: bool = False
    authentication_token_webhook_cache_ttl_ns: int = 10 * NS_PER_S
    client_ca_file: str = ""
    requestheader_client_ca_file: str = ""
    requestheader_allowed_names: tuple[str, ...] = ()
    requestheader_username_headers: tuple[str, ...] = ("x-remote-user",)
    requestheader_group_headers: tuple[str, ...] = ("x-remote-group",)
    requestheader_extra_headers_prefix: tuple[str, ...] = ("x-remote-extra-",)
    requestheader_uid_headers: tuple[str, ...] = ()
    authorization_kubeconfig: str = ""
    authorization_always_allow_paths: tuple[str, ...] = ("/healthz", "/readyz", "/livez")
    authorization_webhook_cache_authorized_ttl_ns: int = 10 * NS_PER_S
    authorization_webhook_cache_unauthorized_ttl_ns: int = 10 * NS_PER_S
    # §8.4 generic server flags that are validated (the rest go to ``ignored``)
    request_timeout_ns: int = 60 * NS_PER_S
    min_request_timeout: int = 1800
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    livez_grace_period_ns: int = 0
    shutdown_delay_duration_ns: int = 0
    shutdown_watch_termination_grace_period_ns: int = 0
    goaway_chance: float = 0.0
    strict_transport_security_directives: tuple[str, ...] = ()
    # §8.4 features
    profiling: bool = True
    contention_profiling: bool = False
    # §8.4 logging
    verbosity: int = 0
    vmodule: tuple[tuple[str, int], ...] = ()
    logging_format: str = "text"
    log_flush_frequency_ns: int = 5 * NS_PER_S
    # cobra's -h/--help
    help: bool = False
    # accepted, type-checked, not acted upon: (flag name without dashes, value as given)
    ignored: tuple[tuple[str, str], ...] = ()
    # positional arguments (metrics-server ignores them as well)
    args: tuple[str, ...] = ()


# -- Go value syntax ------------------------------------------------------------------------------


class _BadValue(Exception):
    """A flag value's Set() failed; the text is Go's error for it."""


_UNITS: Final = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": NS_PER_MS, "s": NS_PER_S,
    "m": NS_PER_MIN, "h": 60 * NS_PER_MIN,
}
_MAX_U63: Final = 1 << 63


def _time_quote(text: str) -> str:
    # the time package's quote(): non-ASCII and control characters as \x bytes
    out = ['"']
    for ch in text:
        if ch >= "\x80" or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
        else:
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration``: ``"1m30s"`` -> ``90_000_000_000`` (nanoseconds).

    A sequence of decimal numbers, each with an optional fraction and a unit (``ns``, ``us``,
    ``µs``, ``ms``, ``s``, ``m``, ``h``), optionally signed; ``"0"`` needs no unit. The
    fraction is applied exactly as Go applies it (through a float64), and the result must fit
    in an int64. Raises :class:`ValueError` with Go's message (``time: invalid duration
    "x"``, ``time: missing unit in duration "1"``, ``time: unknown unit "d" in duration
    "1d"``).
    """
    invalid = f"time: invalid duration {_time_quote(text)}"
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(invalid)
    total = 0
    while s:
        if not (s[0] == "." or _is_digit(s[0])):
            raise ValueError(invalid)
        i = 0
        while i < len(s) and _is_digit(s[i]):
            i += 1
        whole = int(s[:i]) if i else 0
        if whole > _MAX_U63:
            raise ValueError(invalid)
        pre = i > 0
        s = s[i:]
        post = False
        frac = 0
        scale = 1.0
        if s and s[0] == ".":
            s = s[1:]
            i = 0
            overflow = False
            while i < len(s) and _is_digit(s[i]):
                if not overflow:
                    if frac > (_MAX_U63 - 1) // 10:
                        overflow = True
                    else:
                        nxt = frac * 10 + ord(s[i]) - 48
                        if nxt > _MAX_U63:
                            overflow = True
                        else:
                            frac = nxt
                            scale *= 10
                i += 1
            post = i > 0
            s = s[i:]
        if not pre and not post:
            raise ValueError(invalid)
        i = 0
        while i < len(s) and s[i] != "." and not _is_digit(s[i]):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_time_quote(text)}")
        unit_name = s[:i]
        s = s[i:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {_time_quote(unit_name)} in duration {_time_quote(text)}")
        if whole > _MAX_U63 // unit:
            raise ValueError(invalid)
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > _MAX_U63:
                raise ValueError(invalid)
        total += value
        if total > _MAX_U63:
            raise ValueError(invalid)
    if neg:
        return -total
    if total > _MAX_U63 - 1:
        raise ValueError(invalid)
    return total


def _fmt_frac(value: int, digits: int) -> tuple[str, int]:
    # the fraction part of Duration.String(): trailing zeros dropped
    frac = value % 10**digits
    text = f"{frac:0{digits}d}".rstrip("0")
    return ("." + text if text else ""), value // 10**digits


def format_go_duration(ns: int) -> str:
    """Go's ``Duration.String()``: ``90_000_000_000`` -> ``"1m30s"``, ``0`` -> ``"0s"``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = -ns if ns < 0 else ns
    if u < NS_PER_S:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < NS_PER_MS:
            frac, whole = _fmt_frac(u, 3)
            return f"{sign}{whole}{frac}\u00b5s"
        frac, whole = _fmt_frac(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, secs = _fmt_frac(u, 9)
    out = f"{secs % 60}{frac}s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m{out}"
        hours = mins // 60
        if hours:
            out = f"{hours}h{out}"
    return sign + out


_BOOLS: Final = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def _parse_bool(text: str) -> bool:
    value = _BOOLS.get(text)
    if value is None:
        raise _BadValue(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")
    return value


def _underscore_ok(s: str) -> bool:
    # strconv's underscoreOK: underscores only between digits (a base prefix counts as one)
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        ch = s[i]
        if _is_digit(ch) or (hexa and "a" <= ch.lower() <= "f"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


_GO_INT_RE: Final = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|0[0-7_]*|[1-9][0-9_]*)")


def _parse_go_int(text: str, bits: int, func: str = "ParseInt") -> int:
    """``strconv.ParseInt(text, 0, bits)`` (base from the prefix, ``0`` alone means octal)."""
    if not _GO_INT_RE.fullmatch(text) or not _underscore_ok(text):
        raise _BadValue(f"strconv.{func}: parsing {go_quote(text)}: invalid syntax")
    body = text.lstrip("+-").replace("_", "")
    neg = text.startswith("-")
    if body[:2].lower() == "0x":
        value = int(body[2:], 16)
    elif body[:2].lower() == "0b":
        value = int(body[2:], 2)
    elif body[:2].lower() == "0o":
        value = int(body[2:], 8)
    elif len(body) > 1 and body[0] == "0":
        value = int(body[1:], 8)
    else:
        value = int(body)
    if neg:
        value = -value
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise _BadValue(f"strconv.{func}: parsing {go_quote(text)}: value out of range")
    return value


def _parse_uint(text: str, bits: int) -> int:
    """``strconv.ParseUint(text, 10, bits)``."""
    if not text or not all(_is_digit(c) for c in text):
        raise _BadValue(f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax")
    value = int(text)
    if value >= 1 << bits:
        raise _BadValue(f"strconv.ParseUint: parsing {go_quote(text)}: value out of range")
    return value


_GO_FLOAT_RE: Final = re.compile(
    r"[+-]?(?:(?:[0-9](?:_?[0-9])*)?\.?[0-9](?:_?[0-9])*(?:[eE][+-]?[0-9]+)?|[0-9]+\."
    r"|inf|infinity|nan)", re.IGNORECASE)


def _parse_float(text: str) -> float:
    """``strconv.ParseFloat`` for decimal syntax (hexadecimal floats are not accepted)."""
    if not _GO_FLOAT_RE.fullmatch(text):
        raise _BadValue(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax")
    return float(text.replace("_", ""))


def _parse_duration(text: str) -> int:
    try:
        return parse_go_duration(text)
    except ValueError as exc:
        raise _BadValue(str(exc)) from None


def _read_csv(text: str) -> list[str]:
    """One record of Go's ``encoding/csv`` reader, as pflag's string slices read it."""
    if text == "":
        return []
    out: list[str] = []
    i = 0
    n = len(text)
    while True:
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                j = text.find('"', i)
                if j < 0:
                    raise _BadValue(
                        f'parse error on line 1, column {n + 1}: extraneous or missing " in '
                        "quoted-field")
                buf.append(text[i:j])
                i = j + 1
                if i < n and text[i] == '"':
                    buf.append('"')
                    i += 1
                    continue
                break
            out.append("".join(buf))
            if i >= n or text[i] in "\r\n":
                return out
            if text[i] != ",":
                raise _BadValue(
                    f'parse error on line 1, column {i + 1}: extraneous or missing " in '
                    "quoted-field")
            i += 1
        else:
            j = i
            while j < n and text[j] not in ',\r\n':
                if text[j] == '"':
                    raise _BadValue(
                        f'parse error on line 1, column {j + 1}: bare " in non-quoted-field')
                j += 1
            out.append(text[i:j])
            if j >= n or text[j] in "\r\n":
                return out
            i = j + 1


def _parse_ip(text: str) -> str:
    stripped = text.strip()
    try:
        ipaddress.ip_address(stripped)
    except ValueError:
        raise _BadValue(f"failed to parse IP: {go_quote(text)}") from None
    return stripped


def _parse_named_cert_key(text: str) -> NamedCertKey:
    # cliflag.NamedCertKey.Set
    keycert, colon, names_text = text.partition(":")
    names: tuple[str, ...] = ()
    if colon:
        names_text = names_text.strip()
        if not names_text:
            raise _BadValue("empty names list is not allowed")
        names = tuple(n.strip() for n in names_text.split(","))
    parts = keycert.strip().split(",")
    if len(parts) != 2:
        raise _BadValue("expected comma separated certificate and key file paths")
    return NamedCertKey(parts[0].strip(), parts[1].strip(), names)


def _parse_vmodule(text: str) -> list[tuple[str, int]]:
    # logsapi VModuleConfiguration.Set
    out: list[tuple[str, int]] = []
    for pat in text.split(","):
        if not pat:
            continue
        pieces = pat.split("=")
        if len(pieces) != 2 or not pieces[0] or not pieces[1]:
            raise _BadValue(f"{go_quote(pat)} does not have the pattern=N format")
        try:
            level = _parse_uint(pieces[1], 31)
        except _BadValue as exc:
            raise _BadValue(f"parsing verbosity in {go_quote(pat)}: {exc}") from None
        out.append((pieces[0], level))
    return out


def _parse_int32_slice(text: str) -> list[int]:
    return [_parse_go_int(part, 32) for part in text.split(",")]


_QUANTITY_RE: Final = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?")


def _check_quantity(text: str) -> str:
    if not _QUANTITY_RE.fullmatch(text):
        raise _BadValue("quantities must match the regular expression "
                        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    return text


def _check_feature_gates(text: str) -> str:
    # ColonSeparatedMultimapStringString.Set: comma-separated [component:]key=value pairs
    for item in text.split(","):
        if item.strip() and len(item.split("=")) != 2:
            raise _BadValue("malformed pair, expect string=string")
    return text


# -- the flag table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Flag:
    """One command-line flag: its name, pflag's type name, and where its value goes (an
    ``Options`` field, or ``None`` for the parse-and-ignore flags)."""

    name: str
    kind: str
    field: str | None
    shorthand: str = ""

    @property
    def display(self) -> str:
        """How pflag names the flag in errors: ``--name`` or ``-l, --name``."""
        return f"-{self.shorthand}, --{self.name}" if self.shorthand else f"--{self.name}"


def _f(name: str, kind: str, dest: str | None = "", shorthand: str = "") -> Flag:
    if dest == "":
        dest = name.replace("-", "_") + ("_ns" if kind == "duration" else "")
    return Flag(name, kind, dest, shorthand)


FLAGS: Final[tuple[Flag, ...]] = (
    # §8.1
    _f("metric-resolution", "duration"),
    _f("kubeconfig", "string"),
    _f("version", "bool", "show_version"),
    _f("deprecated-kubelet-completely-insecure", "bool"),
    _f("kubelet-certificate-authority", "string"),
    _f("kubelet-client-certificate", "string"),
    _f("kubelet-client-key", "string"),
    _f("kubelet-insecure-tls", "bool"),
    _f("kubelet-port", "int"),
    _f("kubelet-preferred-address-types", "strings"),
    _f("kubelet-request-timeout", "duration"),
    _f("kubelet-use-node-status-port", "bool"),
    _f("node-selector", "string", shorthand="l"),
    # §8.2
    _f("bind-address", "ip"),
    _f("cert-dir", "string"),
    _f("disable-http2-serving", "bool"),
    _f("http2-max-streams-per-connection", "int"),
    _f("permit-address-sharing", "bool"),
    _f("permit-port-sharing", "bool"),
    _f("secure-port", "int"),
    _f("tls-cert-file", "string"),
    _f("tls-cipher-suites", "strings"),
    _f("tls-curve-preferences", "int32Slice"),
    _f("tls-min-version", "string"),
    _f("tls-private-key-file", "string"),
    _f("tls-sni-cert-key", "namedCertKey"),
    # §8.3
    _f("authentication-kubeconfig", "string"),
    _f("authentication-skip-lookup", "bool"),
    _f("authentication-token-webhook-cache-ttl", "duration"),
    _f("authentication-tolerate-lookup-failure", "bool"),
    _f("client-ca-file", "string"),
    _f("requestheader-allowed-names", "strings"),
    _f("requestheader-client-ca-file", "string"),
    _f("requestheader-extra-headers-prefix", "strings"),
    _f("requestheader-group-headers", "strings"),
    _f("requestheader-uid-headers", "strings"),
    _f("requestheader-username-headers", "strings"),
    _f("authorization-always-allow-paths", "strings"),
    _f("authorization-kubeconfig", "string"),
    _f("authorization-webhook-cache-authorized-ttl", "duration"),
    _f("authorization-webhook-cache-unauthorized-ttl", "duration"),
    # §8.4 generic
    _f("advertise-address", "ip", None),
    _f("cors-allowed-origins", "strings", None),
    _f("emulated-version", "strings", None),
    _f("emulation-forward-compatible", "bool", None),
    _f("external-hostname", "string", None),
    _f("feature-gates", "colonSeparatedMultimapStringString", None),
    _f("goaway-chance", "float"),
    _f("livez-grace-period", "duration"),
    _f("max-mutating-requests-inflight", "int"),
    _f("max-requests-inflight", "int"),
    _f("min-compatibility-version", "strings", None),
    _f("min-request-timeout", "int"),
    _f("request-timeout", "duration"),
    _f("runtime-config-emulation-forward-compatible", "bool", None),
    _f("shutdown-delay-duration", "duration"),
    _f("shutdown-send-retry-after", "bool", None),
    _f("shutdown-watch-termination-grace-period", "duration"),
    _f("storage-initialization-timeout", "duration", None),
    _f("strict-transport-security-directives", "strings"),
    # §8.4 audit
    *(
        _f(f"audit-{sink}-{name}", kind, None)
        for sink in ("log", "webhook")
        for name, kind in (
            ("batch-buffer-size", "int"), ("batch-max-size", "int"),
            ("batch-max-wait", "duration"), ("batch-throttle-burst", "int"),
            ("batch-throttle-enable", "bool"), ("batch-throttle-qps", "float32"),
            ("mode", "string"), ("truncate-enabled", "bool"),
            ("truncate-max-batch-size", "int"), ("truncate-max-event-size", "int"),
            ("version", "string"),
        )
    ),
    _f("audit-log-compress", "bool", None),
    _f("audit-log-format", "string", None),
    _f("audit-log-maxage", "int", None),
    _f("audit-log-maxbackup", "int", None),
    _f("audit-log-maxsize", "int", None),
    _f("audit-log-path", "string", None),
    _f("audit-policy-file", "string", None),
    _f("audit-webhook-config-file", "string", None),
    _f("audit-webhook-initial-backoff", "duration", None),
    # §8.4 features
    _f("contention-profiling", "bool"),
    _f("debug-socket-path", "string", None),
    _f("enable-priority-and-fairness", "bool", None),
    _f("profiling", "bool"),
    # §8.4 logging
    _f("log-flush-frequency", "duration"),
    _f("log-json-info-buffer-size", "quantity", None),
    _f("log-json-split-stream", "bool", None),
    _f("log-text-info-buffer-size", "quantity", None),
    _f("log-text-split-stream", "bool", None),
    _f("logging-format", "string"),
    _f("v", "Level", "verbosity", shorthand="v"),
    _f("vmodule", "pattern=N,...", "vmodule"),
    # cobra
    _f("help", "bool", "help", shorthand="h"),
)

_BY_NAME: Final = {f.name: f for f in FLAGS}
_BY_SHORTHAND: Final = {f.shorthand: f for f in FLAGS if f.shorthand}

# kinds whose repeated use appends (the first use replaces the default)
_APPENDING: Final = frozenset({"strings", "int32Slice", "namedCertKey", "pattern=N,..."})

_CONVERTERS: Final[dict[str, Callable[[str], object]]] = {
    "bool": _parse_bool,
    "string": str,
    "duration": _parse_duration,
    "int": lambda t: _parse_go_int(t, 64),
    "float": _parse_float,
    "float32": _parse_float,
    "ip": _parse_ip,
    "Level": lambda t: _parse_uint(t, 32),
    "quantity": _check_quantity,
    "colonSeparatedMultimapStringString": _check_feature_gates,
    "strings": _read_csv,
    "int32Slice": _parse_int32_slice,
    "namedCertKey": lambda t: [_parse_named_cert_key(t)],
    "pattern=N,...": _parse_vmodule,
}


def _go_char(ch: str) -> str:
    # %q of a byte: 'x'
    if ch in ("'", "\\"):
        return f"'\\{ch}'"
    return f"'{ch}'" if ch.isprintable() else go_quote(ch).replace('"', "'")


def parse_args(argv: Sequence[str]) -> Options:
    """Parse metrics-server's command line (without the program name) into :class:`Options`.

    Raises :class:`ConfigError` with pflag's message for the first problem: ``unknown flag:
    --foo``, ``unknown shorthand flag: 'x' in -x``, ``flag needs an argument: --kubeconfig``,
    ``bad flag syntax: ---x``, or ``invalid argument "abc" for "--metric-resolution" flag:
    time: invalid duration "abc"``. Nothing is validated beyond each value's syntax; call
    :func:`validate` for that.
    """
    if isinstance(argv, str):
        raise TypeError("parse_args() takes a sequence of arguments, not a string")
    values: dict[str, object] = {}
    ignored: list[tuple[str, str]] = []
    positional: list[str] = []

    def set_flag(flag: Flag, value: str) -> None:
        try:
            converted = _CONVERTERS[flag.kind](value)
        except _BadValue as exc:
            raise ConfigError(
                f"invalid argument {go_quote(value)} for {go_quote(flag.display)} flag: {exc}"
            ) from None
        if flag.field is None:
            ignored.append((flag.name, value))
        elif flag.kind in _APPENDING:
            previous = cast("tuple[object, ...]", values.get(flag.field, ()))
            values[flag.field] = previous + tuple(cast("list[object]", converted))
        else:
            values[flag.field] = converted

    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if len(arg) < 2 or arg[0] != "-":
            positional.append(arg)
            continue
        if arg[1] == "-":
            if len(arg) == 2:  # "--" ends the flags
                positional.extend(args[i:])
                break
            body = arg[2:]
            if body[0] in "-=":
                raise ConfigError(f"bad flag syntax: {arg}")
            name, eq, value = body.partition("=")
            flag = _BY_NAME.get(name)
            if flag is None:
                raise ConfigError(f"unknown flag: --{name}")
            if not eq:
                if flag.kind == "bool":
                    value = "true"
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    raise ConfigError(f"flag needs an argument: {arg}")
            set_flag(flag, value)
            continue
        shorthands = arg[1:]
        while shorthands:
            ch = shorthands[0]
            rest = shorthands[1:]
            flag = _BY_SHORTHAND.get(ch)
            if flag is None:
                raise ConfigError(f"unknown shorthand flag: {_go_char(ch)} in -{shorthands}")
            if len(shorthands) > 2 and shorthands[1] == "=":
                value, rest = shorthands[2:], ""
            elif flag.kind == "bool":
                value = "true"
            elif len(shorthands) > 1:
                value, rest = shorthands[1:], ""
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                raise ConfigError(
                    f"flag needs an argument: {_go_char(ch)} in -{shorthands}")
            set_flag(flag, value)
            shorthands = rest
    return Options(**values, ignored=tuple(ignored), args=tuple(positional))  # type: ignore[arg-type]


def manifest_args() -> list[str]:
    """The container args of metrics-server's ``manifests/base/deployment.yaml``."""
    return [
        "--cert-dir=/tmp",
        "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
    ]


# -- validation -----------------------------------------------------------------------------------

_MIN_RESOLUTION_NS: Final = 10 * NS_PER_S
_D = format_go_duration


def _validate_kubelet(o: Options) -> list[str]:
    # KubeletClientOptions.Validate and Options.validate, one error per conflicting flag
    errs: list[str] = []
    if o.metric_resolution_ns < _MIN_RESOLUTION_NS:
        errs.append(
            f"--metric-resolution must be at least 10s, got {_D(o.metric_resolution_ns)}")
    if o.metric_resolution_ns * 9 // 10 < o.kubelet_request_timeout_ns:
        errs.append(
            f"--kubelet-request-timeout ({_D(o.kubelet_request_timeout_ns)}) must not exceed 90% "
            f"of --metric-resolution ({_D(o.metric_resolution_ns)}), i.e. "
            f"{_D(o.metric_resolution_ns * 9 // 10)}")
    if o.kubelet_request_timeout_ns <= 0:
        errs.append(
            f"--kubelet-request-timeout must be positive, got {_D(o.kubelet_request_timeout_ns)}")
    ca, key, cert = (o.kubelet_certificate_authority, o.kubelet_client_key,
                     o.kubelet_client_certificate)
    if ca and o.kubelet_insecure_tls:
        errs.append("cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls")
    if bool(key) != bool(cert):
        given, missing = (("--kubelet-client-key", "--kubelet-client-certificate") if key
                          else ("--kubelet-client-certificate", "--kubelet-client-key"))
        errs.append(f"need both --kubelet-client-key and --kubelet-client-certificate "
                    f"({given} is set, {missing} is not)")
    if o.deprecated_kubelet_completely_insecure:
        for name, used in (("--kubelet-client-key", key),
                           ("--kubelet-client-certificate", cert),
                           ("--kubelet-insecure-tls", o.kubelet_insecure_tls),
                           ("--kubelet-certificate-authority", ca)):
            if used:
                errs.append(
                    f"cannot use both {name} and --deprecated-kubelet-completely-insecure")
    if not 1 <= o.kubelet_port <= 65535:
        errs.append(f"--kubelet-port must be between 1 and 65535, got {o.kubelet_port}")
    if not o.kubelet_preferred_address_types:
        errs.append("--kubelet-preferred-address-types must name at least one address type")
    if o.node_selector:
        try:
            parse_label_selector(o.node_selector)
        except SelectorError as exc:
            errs.append(f"invalid --node-selector {go_quote(o.node_selector)}: {exc.reason}")
    return errs


def _validate_serving(o: Options) -> list[str]:
    errs: list[str] = []
    if not 0 <= o.secure_port <= 65535:
        errs.append(f"--secure-port {o.secure_port} must be between 0 and 65535, inclusive")
    if bool(o.tls_cert_file) != bool(o.tls_private_key_file):
        given, missing = (("--tls-cert-file", "--tls-private-key-file") if o.tls_cert_file
                          else ("--tls-private-key-file", "--tls-cert-file"))
        errs.append(f"need both --tls-cert-file and --tls-private-key-file "
                    f"({given} is set, {missing} is not)")
    if o.tls_min_version and o.tls_min_version not in TLS_VERSIONS:
        errs.append(f"--tls-min-version must be one of {', '.join(TLS_VERSIONS)}, got "
                    f"{go_quote(o.tls_min_version)}")
    for suite in o.tls_cipher_suites:
        if suite not in TLS_CIPHER_SUITES:
            errs.append(f"--tls-cipher-suites: cipher suite {go_quote(suite)} not supported or "
                        "doesn't exist")
    if o.http2_max_streams_per_connection < 0:
        errs.append("--http2-max-streams-per-connection must not be negative, got "
                    f"{o.http2_max_streams_per_connection}")
    return errs


def _validate_auth(o: Options) -> list[str]:
    errs: list[str] = []
    for flag_name, items in (
        ("--requestheader-username-headers", o.requestheader_username_headers),
        ("--requestheader-group-headers", o.requestheader_group_headers),
        ("--requestheader-extra-headers-prefix", o.requestheader_extra_headers_prefix),
        ("--requestheader-allowed-names", o.requestheader_allowed_names),
        ("--requestheader-uid-headers", o.requestheader_uid_headers),
    ):
        if any(not item.strip() for item in items):
            errs.append(f"empty value in {flag_name}")
    for path in o.authorization_always_allow_paths:
        trimmed = path.removeprefix("/")
        if "*" in trimmed[:-1]:
            errs.append(f"--authorization-always-allow-paths: only trailing * allowed in "
                        f"{go_quote(trimmed)}")
    for flag_name, ttl in (
        ("--authentication-token-webhook-cache-ttl", o.authentication_token_webhook_cache_ttl_ns),
        ("--authorization-webhook-cache-authorized-ttl",
         o.authorization_webhook_cache_authorized_ttl_ns),
        ("--authorization-webhook-cache-unauthorized-ttl",
         o.authorization_webhook_cache_unauthorized_ttl_ns),
    ):
        if ttl < 0:
            errs.append(f"{flag_name} must not be negative, got {_D(ttl)}")
    return errs


def _validate_generic(o: Options) -> list[str]:
    # ServerRunOptions.Validate
    errs: list[str] = []
    for flag_name, ns in (
        ("--livez-grace-period", o.livez_grace_period_ns),
        ("--request-timeout", o.request_timeout_ns),
        ("--shutdown-delay-duration", o.shutdown_delay_duration_ns),
        ("--shutdown-watch-termination-grace-period",
         o.shutdown_watch_termination_grace_period_ns),
    ):
        if ns < 0:
            errs.append(f"{flag_name} must not be negative, got {_D(ns)}")
    for flag_name, number in (
        ("--max-requests-inflight", o.max_requests_inflight),
        ("--max-mutating-requests-inflight", o.max_mutating_requests_inflight),
        ("--min-request-timeout", o.min_request_timeout),
    ):
        if number < 0:
            errs.append(f"{flag_name} must not be negative, got {number}")
    if not 0.0 <= o.goaway_chance <= 0.02:
        errs.append(f"--goaway-chance must be between 0 and 0.02, got {o.goaway_chance}")
    for directive in o.strict_transport_security_directives:
        if not directive.strip():
            errs.append("empty value in --strict-transport-security-directives")
        elif directive not in ("includeSubDomains", "preload"):
            parts = directive.split("=")
            if len(parts) != 2 or parts[0] != "max-age":
                errs.append(
                    f"--strict-transport-security-directives: invalid directive "
                    f"{go_quote(directive)}, allowed values: max-age=expireTime, "
                    "includeSubDomains, preload")
    return errs


def _validate_logging(o: Options) -> list[str]:
    errs: list[str] = []
    if o.logging_format not in ("text", "json"):
        errs.append(f'--logging-format must be "text" or "json", got {go_quote(o.logging_format)}')
    if o.log_flush_frequency_ns <= 0:
        errs.append(
            f"--log-flush-frequency must be positive, got {_D(o.log_flush_frequency_ns)}")
    if o.verbosity < 0:
        errs.append(f"-v must not be negative, got {o.verbosity}")
    return errs


def validate(o: Options) -> list[str]:
    """Every problem with ``o``, each naming the flags and values involved; ``[]`` if valid.

    The §8.1 rules as metrics-server applies them (each conflicting flag its own error), the
    node selector's syntax, and sanity checks on the serving, authentication, generic and
    logging flags. Files are not opened here.
    """
    return [
        *_validate_kubelet(o),
        *_validate_serving(o),
        *_validate_auth(o),
        *_validate_generic(o),
        *_validate_logging(o),
    ]


def _field_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(Options))


# every flag's destination is a real field (checked once, at import)
_missing = {f.field for f in FLAGS if f.field is not None} - _field_names()
if _missing:  # pragma: no cover - a programming error
    raise RuntimeError(f"FLAGS name unknown Options fields: {sorted(_missing)}")
del _missing
