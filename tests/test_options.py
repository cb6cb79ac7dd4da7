"""Options: every metrics-server flag (SPEC §8) parses as pflag would; validate (§10.5)."""

from __future__ import annotations

import dataclasses

import pytest

from fastmetrics.errors import ConfigError
from fastmetrics.options import (
    FLAGS,
    NamedCertKey,
    Options,
    format_go_duration,
    manifest_args,
    parse_args,
    parse_go_duration,
    validate,
)

S = 1_000_000_000
MS = 1_000_000

# -- every flag of SPEC §8, transcribed from its tables (name, pflag type) ------------------------

SPEC_8_1 = [
    ("metric-resolution", "duration"), ("kubeconfig", "string"), ("version", "bool"),
    ("kubelet-preferred-address-types", "strings"), ("kubelet-use-node-status-port", "bool"),
    ("kubelet-port", "int"), ("kubelet-insecure-tls", "bool"),
    ("kubelet-certificate-authority", "string"), ("kubelet-client-certificate", "string"),
    ("kubelet-client-key", "string"), ("kubelet-request-timeout", "duration"),
    ("node-selector", "string"), ("deprecated-kubelet-completely-insecure", "bool"),
]
SPEC_8_2 = [
    ("bind-address", "ip"), ("secure-port", "int"), ("cert-dir", "string"),
    ("tls-cert-file", "string"), ("tls-private-key-file", "string"),
    ("tls-cipher-suites", "strings"), ("tls-min-version", "string"),
    ("tls-curve-preferences", "int32Slice"), ("tls-sni-cert-key", "namedCertKey"),
    ("http2-max-streams-per-connection", "int"), ("disable-http2-serving", "bool"),
    ("permit-port-sharing", "bool"), ("permit-address-sharing", "bool"),
]
SPEC_8_3 = [
    ("authentication-kubeconfig", "string"), ("authentication-skip-lookup", "bool"),
    ("authentication-tolerate-lookup-failure", "bool"),
    ("authentication-token-webhook-cache-ttl", "duration"), ("client-ca-file", "string"),
    ("requestheader-client-ca-file", "string"), ("requestheader-allowed-names", "strings"),
    ("requestheader-username-headers", "strings"), ("requestheader-group-headers", "strings"),
    ("requestheader-extra-headers-prefix", "strings"), ("requestheader-uid-headers", "strings"),
    ("authorization-kubeconfig", "string"), ("authorization-always-allow-paths", "strings"),
    ("authorization-webhook-cache-authorized-ttl", "duration"),
    ("authorization-webhook-cache-unauthorized-ttl", "duration"),
]
SPEC_8_4_GENERIC = [
    ("advertise-address", "ip"), ("cors-allowed-origins", "strings"),
    ("emulated-version", "strings"), ("emulation-forward-compatible", "bool"),
    ("external-hostname", "string"), ("feature-gates", "colonSeparatedMultimapStringString"),
    ("goaway-chance", "float"), ("livez-grace-period", "duration"),
    ("max-mutating-requests-inflight", "int"), ("max-requests-inflight", "int"),
    ("min-compatibility-version", "strings"), ("min-request-timeout", "int"),
    ("request-timeout", "duration"), ("runtime-config-emulation-forward-compatible", "bool"),
    ("shutdown-delay-duration", "duration"), ("shutdown-send-retry-after", "bool"),
    ("shutdown-watch-termination-grace-period", "duration"),
    ("storage-initialization-timeout", "duration"),
    ("strict-transport-security-directives", "strings"),
]
# "--audit-log-* (path, format, maxage, maxbackup, maxsize, mode, batch/truncate knobs, version),
# --audit-policy-file, --audit-webhook-*": the full list of metrics-server's --help
SPEC_8_4_AUDIT = [
    *(
        (f"audit-{sink}-{name}", kind)
        for sink in ("log", "webhook")
        for name, kind in [
            ("batch-buffer-size", "int"), ("batch-max-size", "int"),
            ("batch-max-wait", "duration"), ("batch-throttle-burst", "int"),
            ("batch-throttle-enable", "bool"), ("batch-throttle-qps", "float32"),
            ("mode", "string"), ("truncate-enabled", "bool"),
            ("truncate-max-batch-size", "int"), ("truncate-max-event-size", "int"),
            ("version", "string"),
        ]
    ),
    ("audit-log-compress", "bool"), ("audit-log-format", "string"), ("audit-log-maxage", "int"),
    ("audit-log-maxbackup", "int"), ("audit-log-maxsize", "int"), ("audit-log-path", "string"),
    ("audit-policy-file", "string"), ("audit-webhook-config-file", "string"),
    ("audit-webhook-initial-backoff", "duration"),
]
SPEC_8_4_FEATURES = [
    ("profiling", "bool"), ("contention-profiling", "bool"),
    ("enable-priority-and-fairness", "bool"), ("debug-socket-path", "string"),
]
SPEC_8_4_LOGGING = [
    ("v", "Level"), ("vmodule", "pattern=N,..."), ("logging-format", "string"),
    ("log-flush-frequency", "duration"), ("log-text-split-stream", "bool"),
    ("log-json-split-stream", "bool"), ("log-text-info-buffer-size", "quantity"),
    ("log-json-info-buffer-size", "quantity"),
]
SPEC_FLAGS = (SPEC_8_1 + SPEC_8_2 + SPEC_8_3 + SPEC_8_4_GENERIC + SPEC_8_4_AUDIT
              + SPEC_8_4_FEATURES + SPEC_8_4_LOGGING)

# a valid, non-default value for each pflag type
SAMPLE = {
    "duration": "1m30s", "string": "some/path", "bool": "true", "int": "7", "strings": "a,b",
    "ip": "10.0.0.1", "int32Slice": "23,29", "namedCertKey": "c.crt,c.key:*.example.com",
    "float": "0.01", "float32": "2.5", "colonSeparatedMultimapStringString": "kube:A=true,B=false",
    "Level": "3", "pattern=N,...": "scrape*=4,store=2", "quantity": "4Ki",
}


def test_spec_list_is_the_flag_table() -> None:
    """The implementation knows exactly SPEC §8's flags (and cobra's --help), with their types."""
    assert len({name for name, _ in SPEC_FLAGS}) == len(SPEC_FLAGS)
    table = {f.name: f.kind for f in FLAGS}
    assert table.pop("help") == "bool"
    assert table == dict(SPEC_FLAGS)


@pytest.mark.parametrize(("name", "kind"), SPEC_FLAGS, ids=[n for n, _ in SPEC_FLAGS])
def test_every_flag_is_accepted(name: str, kind: str) -> None:
    flag = next(f for f in FLAGS if f.name == name)
    if kind == "bool":
        spellings = [([f"--{name}"], "true"), ([f"--{name}=true"], "true"),
                     ([f"--{name}=false"], "false")]
    else:
        value = SAMPLE[kind]
        spellings = [([f"--{name}={value}"], value), ([f"--{name}", value], value)]
    for argv, value in spellings:
        o = parse_args(argv)
        assert o.args == ()
        if flag.field is None:
            assert o.ignored == ((name, value),)
        else:
            assert o.ignored == ()
            got = getattr(o, flag.field)
            if kind == "bool":
                assert got is (value == "true"), argv
            else:
                assert got != getattr(Options(), flag.field), argv


def test_typed_values() -> None:
    o = parse_args([
        "--metric-resolution=1m30s", "--kubelet-request-timeout=1.5s", "--kubelet-port=10255",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--tls-curve-preferences=23,29", "--tls-sni-cert-key=a.crt,a.key",
        "--tls-sni-cert-key", " b.crt , b.key : *.b.com, b.com ", "--goaway-chance=0.01",
        "--vmodule=scrape*=4,store=2", "-v", "5", "--bind-address=::1", "--profiling=false",
        "--authorization-always-allow-paths=/metrics", "--requestheader-uid-headers=X-Remote-Uid",
    ])
    assert o.metric_resolution_ns == 90 * S
    assert o.kubelet_request_timeout_ns == 1500 * MS
    assert o.kubelet_port == 10255
    assert o.kubelet_preferred_address_types == ("InternalIP", "ExternalIP", "Hostname")
    assert o.tls_curve_preferences == (23, 29)
    assert o.tls_sni_cert_key == (
        NamedCertKey("a.crt", "a.key", ()), NamedCertKey("b.crt", "b.key", ("*.b.com", "b.com")))
    assert o.goaway_chance == 0.01
    assert o.vmodule == (("scrape*", 4), ("store", 2))
    assert o.verbosity == 5
    assert o.bind_address == "::1"
    assert o.profiling is False
    assert o.authorization_always_allow_paths == ("/metrics",)
    assert o.requestheader_uid_headers == ("X-Remote-Uid",)
    assert validate(o) == []


def test_defaults_are_the_binarys() -> None:
    o = parse_args([])
    assert o == Options()
    assert o.metric_resolution_ns == 60 * S
    assert o.kubelet_request_timeout_ns == 10 * S
    assert o.kubelet_port == 10250
    assert o.kubelet_preferred_address_types == (
        "Hostname", "InternalDNS", "InternalIP", "ExternalDNS", "ExternalIP")
    assert o.secure_port == 443
    assert o.bind_address == "0.0.0.0"
    assert o.cert_dir == "apiserver.local.config/certificates"
    assert o.authorization_always_allow_paths == ("/healthz", "/readyz", "/livez")
    assert o.requestheader_username_headers == ("x-remote-user",)
    assert o.requestheader_group_headers == ("x-remote-group",)
    assert o.requestheader_extra_headers_prefix == ("x-remote-extra-",)
    assert o.authentication_token_webhook_cache_ttl_ns == 10 * S
    assert o.logging_format == "text"
    assert o.verbosity == 0
    assert o.profiling is True
    assert validate(o) == []


def test_options_is_frozen() -> None:
    o = Options()
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.kubelet_port = 1  # type: ignore[misc]
    assert dataclasses.replace(o, kubelet_port=1).kubelet_port == 1


# -- the args of metrics-server's own deployments -------------------------------------------------


def test_manifest_args() -> None:
    args = manifest_args()
    assert args == [
        "--cert-dir=/tmp", "--secure-port=10250",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port", "--metric-resolution=15s",
    ]
    args.append("--mutated")
    assert "--mutated" not in manifest_args()
    o = parse_args(manifest_args())
    assert o.cert_dir == "/tmp"
    assert o.secure_port == 10250
    assert o.kubelet_preferred_address_types == ("InternalIP", "ExternalIP", "Hostname")
    assert o.kubelet_use_node_status_port is True
    assert o.metric_resolution_ns == 15 * S
    assert validate(o) == []


def test_manifest_test_overlay() -> None:
    """manifests/components/test appends these three."""
    o = parse_args([*manifest_args(), "--kubelet-insecure-tls", "--v=4",
                    "--node-selector=metrics-server-skip!=true"])
    assert o.kubelet_insecure_tls is True
    assert o.verbosity == 4
    assert o.node_selector == "metrics-server-skip!=true"
    assert validate(o) == []


def test_helm_chart_args() -> None:
    """charts/metrics-server: --secure-port, defaultArgs, metrics.enabled, tls.type !=
    metrics-server, then ci-values' args."""
    o = parse_args([
        "--secure-port=10250",
        "--cert-dir=/tmp",
        "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
        "--authorization-always-allow-paths=/metrics",
        "--tls-cert-file=/tmp/tls-certs/tls.crt",
        "--tls-private-key-file=/tmp/tls-certs/tls.key",
        "--kubelet-insecure-tls",
    ])
    assert o.authorization_always_allow_paths == ("/metrics",)  # replaces the default
    assert o.tls_cert_file == "/tmp/tls-certs/tls.crt"
    assert o.tls_private_key_file == "/tmp/tls-certs/tls.key"
    assert o.kubelet_insecure_tls is True
    assert validate(o) == []


# -- pflag syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["--node-selector=a=b"], ["--node-selector", "a=b"], ["-l", "a=b"], ["-l=a=b"], ["-la=b"],
])
def test_node_selector_spellings(argv: list[str]) -> None:
    assert parse_args(argv).node_selector == "a=b"


@pytest.mark.parametrize("argv", [["-v=2"], ["--v=2"], ["-v", "2"], ["--v", "2"], ["-v2"]])
def test_verbosity_spellings(argv: list[str]) -> None:
    assert parse_args(argv).verbosity == 2


@pytest.mark.parametrize(("argv", "expected"), [
    (["--kubelet-insecure-tls"], True),
    (["--kubelet-insecure-tls=true"], True),
    (["--kubelet-insecure-tls=false"], False),
    (["--kubelet-insecure-tls=1"], True),
    (["--kubelet-insecure-tls=F"], False),
    (["--kubelet-insecure-tls=TRUE"], True),
    (["--kubelet-insecure-tls", "--kubelet-insecure-tls=false"], False),  # last one wins
])
def test_bool_spellings(argv: list[str], expected: bool) -> None:
    assert parse_args(argv).kubelet_insecure_tls is expected


def test_bare_bool_does_not_take_the_next_argument() -> None:
    o = parse_args(["--kubelet-insecure-tls", "false", "--kubelet-port=1"])
    assert o.kubelet_insecure_tls is True
    assert o.args == ("false",)
    assert o.kubelet_port == 1


def test_value_flag_takes_the_next_argument_even_if_it_looks_like_a_flag() -> None:
    assert parse_args(["--kubeconfig", "--v=3"]).kubeconfig == "--v=3"


def test_help_and_version() -> None:
    assert parse_args(["-h"]).help is True
    assert parse_args(["--help"]).help is True
    assert parse_args(["--version"]).show_version is True
    assert parse_args(["--version=false"]).show_version is False


def test_double_dash_ends_flags() -> None:
    o = parse_args(["--kubelet-port=1", "--", "--kubelet-port=2", "-l"])
    assert o.kubelet_port == 1
    assert o.args == ("--kubelet-port=2", "-l")


def test_positional_arguments_are_kept() -> None:
    assert parse_args(["x", "-", "", "--v=1", "y"]).args == ("x", "-", "", "y")


def test_scalar_flags_last_one_wins() -> None:
    o = parse_args(["--metric-resolution=15s", "--metric-resolution", "30s", "-l", "a", "-l=b"])
    assert o.metric_resolution_ns == 30 * S
    assert o.node_selector == "b"


@pytest.mark.parametrize(("argv", "expected"), [
    (["--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname"],
     ("InternalIP", "ExternalIP", "Hostname")),
    # the first use replaces the default, later ones append
    (["--kubelet-preferred-address-types=InternalIP", "--kubelet-preferred-address-types=Hostname"],
     ("InternalIP", "Hostname")),
    (["--kubelet-preferred-address-types", "InternalIP,Hostname"], ("InternalIP", "Hostname")),
    (["--kubelet-preferred-address-types="], ()),
    # encoding/csv: quotes group, spaces are kept, empty fields are kept
    (['--kubelet-preferred-address-types="a,b",c'], ("a,b", "c")),
    (['--kubelet-preferred-address-types="say ""hi""",x'], ('say "hi"', "x")),
    (["--kubelet-preferred-address-types=a, b"], ("a", " b")),
    (["--kubelet-preferred-address-types=a,,b,"], ("a", "", "b", "")),
])
def test_string_slices(argv: list[str], expected: tuple[str, ...]) -> None:
    assert parse_args(argv).kubelet_preferred_address_types == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("10250", 10250), ("0x10", 16), ("0X1f", 31), ("0o17", 15), ("017", 15), ("0b101", 5),
    ("1_000", 1000), ("-1", -1), ("+5", 5), ("0", 0),
])
def test_go_integer_syntax(text: str, expected: int) -> None:
    assert parse_args([f"--kubelet-port={text}"]).kubelet_port == expected


@pytest.mark.parametrize("text", ["", "abc", "1.5", "08", "1__0", "_1", "1_", "0x", " 1",
                                  "99999999999999999999"])
def test_bad_integers(text: str) -> None:
    with pytest.raises(ConfigError, match=r'^invalid argument ".*" for "--kubelet-port" flag: '
                                          r"strconv.ParseInt: parsing .*"):
        parse_args([f"--kubelet-port={text}"])


def test_ignored_flags_are_recorded_in_order() -> None:
    o = parse_args(["--audit-log-path=-", "--profiling=false", "--feature-gates", "A=true",
                    "--enable-priority-and-fairness", "--audit-log-maxage=30"])
    assert o.ignored == (("audit-log-path", "-"), ("feature-gates", "A=true"),
                         ("enable-priority-and-fairness", "true"), ("audit-log-maxage", "30"))
    assert o.profiling is False


# -- parse errors name the flag -------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--foo"], "unknown flag: --foo"),
    (["--foo=bar"], "unknown flag: --foo"),
    (["--kubelet_port=1"], "unknown flag: --kubelet_port"),
    (["--logtostderr"], "unknown flag: --logtostderr"),
    (["-x"], "unknown shorthand flag: 'x' in -x"),
    (["-lx", "-q"], "unknown shorthand flag: 'q' in -q"),
    (["---x"], "bad flag syntax: ---x"),
    (["--=x"], "bad flag syntax: --=x"),
    (["--kubeconfig"], "flag needs an argument: --kubeconfig"),
    (["-l"], "flag needs an argument: 'l' in -l"),
    (["--metric-resolution=abc"],
     'invalid argument "abc" for "--metric-resolution" flag: time: invalid duration "abc"'),
    (["--metric-resolution=15"],
     'invalid argument "15" for "--metric-resolution" flag: time: missing unit in duration "15"'),
    (["--kubelet-request-timeout", "10x"],
     'invalid argument "10x" for "--kubelet-request-timeout" flag: '
     'time: unknown unit "x" in duration "10x"'),
    (["--metric-resolution="],
     'invalid argument "" for "--metric-resolution" flag: time: invalid duration ""'),
    (["--kubelet-insecure-tls=yes"],
     'invalid argument "yes" for "--kubelet-insecure-tls" flag: '
     'strconv.ParseBool: parsing "yes": invalid syntax'),
    (["--kubelet-port=abc"],
     'invalid argument "abc" for "--kubelet-port" flag: '
     'strconv.ParseInt: parsing "abc": invalid syntax'),
    (["-v=x"], 'invalid argument "x" for "-v, --v" flag: '
               'strconv.ParseUint: parsing "x": invalid syntax'),
    (["-v=-1"], 'invalid argument "-1" for "-v, --v" flag: '
                'strconv.ParseUint: parsing "-1": invalid syntax'),
    (["--bind-address=localhost"],
     'invalid argument "localhost" for "--bind-address" flag: failed to parse IP: "localhost"'),
    (["--tls-sni-cert-key=only.crt"],
     'invalid argument "only.crt" for "--tls-sni-cert-key" flag: '
     "expected comma separated certificate and key file paths"),
    (["--tls-sni-cert-key=a,b:"],
     'invalid argument "a,b:" for "--tls-sni-cert-key" flag: empty names list is not allowed'),
    (["--tls-curve-preferences=x"],
     'invalid argument "x" for "--tls-curve-preferences" flag: '
     'strconv.ParseInt: parsing "x": invalid syntax'),
    (["--vmodule=scrape"],
     'invalid argument "scrape" for "--vmodule" flag: "scrape" does not have the pattern=N format'),
    (["--goaway-chance=lots"],
     'invalid argument "lots" for "--goaway-chance" flag: '
     'strconv.ParseFloat: parsing "lots": invalid syntax'),
    (["--audit-log-maxage=old"],
     'invalid argument "old" for "--audit-log-maxage" flag: '
     'strconv.ParseInt: parsing "old": invalid syntax'),
    (["--kubelet-preferred-address-types=a\"b"],
     'invalid argument "a\\"b" for "--kubelet-preferred-address-types" flag: '
     'parse error on line 1, column 2: bare " in non-quoted-field'),
])
def test_parse_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_args(argv)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_a_string_is_not_an_argv() -> None:
    with pytest.raises(TypeError):
        parse_args("--v=2")


# -- Go durations ---------------------------------------------------------------------------------

GOOD_DURATIONS = [
    ("0", 0), ("+0", 0), ("-0", 0), ("0s", 0), ("15s", 15 * S), ("1m0s", 60 * S),
    ("1m30s", 90 * S), ("500ms", 500 * MS), ("1h", 3600 * S), ("1.5s", 1500 * MS),
    ("2h45m", (2 * 3600 + 45 * 60) * S), ("-10s", -10 * S), ("+5s", 5 * S), (".5s", 500 * MS),
    ("5.s", 5 * S), ("1.s", S), ("10ns", 10), ("10us", 10_000), ("10\u00b5s", 10_000),
    ("10\u03bcs", 10_000), ("1h1m1s1ms1us1ns", 3661 * S + MS + 1_000 + 1),
    ("1s1s", 2 * S), ("0.000000001s", 1), ("0.0000000001s", 0), ("1.0000000001s", S),
    ("100h", 360_000 * S), ("9223372036854775807ns", (1 << 63) - 1),
    ("-9223372036854775808ns", -(1 << 63)), ("2562047h47m16.854775807s", (1 << 63) - 1),
    ("3.14159s", 3_141_590_000), ("0.3s", 300 * MS), ("1.1h", 3960 * S),
]


@pytest.mark.parametrize(("text", "ns"), GOOD_DURATIONS)
def test_go_duration(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(("text", "message"), [
    ("", 'time: invalid duration ""'),
    ("abc", 'time: invalid duration "abc"'),
    ("1", 'time: missing unit in duration "1"'),
    ("-1", 'time: missing unit in duration "-1"'),
    ("1.2.3s", 'time: missing unit in duration "1.2.3s"'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("1sec", 'time: unknown unit "sec" in duration "1sec"'),
    ("1S", 'time: unknown unit "S" in duration "1S"'),
    ("1\u00e9", 'time: unknown unit "\\xc3\\xa9" in duration "1\\xc3\\xa9"'),
    (".s", 'time: invalid duration ".s"'),
    ("s", 'time: invalid duration "s"'),
    ("-", 'time: invalid duration "-"'),
    ("+", 'time: invalid duration "+"'),
    (" 1s", 'time: invalid duration " 1s"'),
    ("1s ", 'time: unknown unit "s " in duration "1s "'),
    ("--1s", 'time: invalid duration "--1s"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
    ("2562048h", 'time: invalid duration "2562048h"'),
    ("99999999999999999999s", 'time: invalid duration "99999999999999999999s"'),
])
def test_bad_go_duration(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (999, "999ns"), (1_000, "1\u00b5s"), (1_500, "1.5\u00b5s"),
    (MS, "1ms"), (1_234_567, "1.234567ms"), (S, "1s"), (1500 * MS, "1.5s"), (60 * S, "1m0s"),
    (90 * S, "1m30s"), (3600 * S, "1h0m0s"), (9 * S, "9s"), (-10 * S, "-10s"),
    ((1 << 63) - 1, "2562047h47m16.854775807s"),
])
def test_format_go_duration(ns: int, text: str) -> None:
    assert format_go_duration(ns) == text


@pytest.mark.parametrize(("text", "_ns"), GOOD_DURATIONS)
def test_duration_round_trip(text: str, _ns: int) -> None:
    ns = parse_go_duration(text)
    assert parse_go_duration(format_go_duration(ns)) == ns


# -- validation: SPEC §10.5 "Options" vectors -----------------------------------------------------


def _with(**changes: object) -> Options:
    return dataclasses.replace(Options(), **changes)  # type: ignore[arg-type]


VECTORS_10_5 = [
    ("defaults", {}, 0),
    ("ca+insecure-tls", {"kubelet_certificate_authority": "ca", "kubelet_insecure_tls": True}, 1),
    ("ca+completely-insecure", {"kubelet_certificate_authority": "ca",
                                "deprecated_kubelet_completely_insecure": True}, 1),
    ("key+cert", {"kubelet_client_key": "k", "kubelet_client_certificate": "c"}, 0),
    ("cert+completely-insecure", {"kubelet_client_certificate": "c",
                                  "deprecated_kubelet_completely_insecure": True}, 2),
    ("key+completely-insecure", {"kubelet_client_key": "k",
                                 "deprecated_kubelet_completely_insecure": True}, 2),
    ("insecure-tls+completely-insecure", {"kubelet_insecure_tls": True,
                                          "deprecated_kubelet_completely_insecure": True}, 1),
    ("only cert", {"kubelet_client_certificate": "c"}, 1),
    ("only key", {"kubelet_client_key": "k"}, 1),
    ("timeout 1s", {"kubelet_request_timeout_ns": S}, 0),
    ("timeout 0", {"kubelet_request_timeout_ns": 0}, 1),
    ("timeout -10s", {"kubelet_request_timeout_ns": -10 * S}, 1),
    ("resolution 10s timeout 9s", {"metric_resolution_ns": 10 * S,
                                   "kubelet_request_timeout_ns": 9 * S}, 0),
    ("resolution 10s timeout 10s", {"metric_resolution_ns": 10 * S,
                                    "kubelet_request_timeout_ns": 10 * S}, 1),
]


@pytest.mark.parametrize(("changes", "count"), [(c, n) for _, c, n in VECTORS_10_5],
                         ids=[name for name, _, _ in VECTORS_10_5])
def test_spec_10_5_vectors(changes: dict[str, object], count: int) -> None:
    errors = validate(_with(**changes))
    assert len(errors) == count, errors


@pytest.mark.parametrize(("argv", "count"), [
    ([], 0),
    (["--kubelet-certificate-authority=ca", "--kubelet-insecure-tls"], 1),
    (["--kubelet-client-certificate=c", "--deprecated-kubelet-completely-insecure"], 2),
    (["--kubelet-request-timeout=-10s"], 1),
    (["--kubelet-request-timeout=0"], 1),
    (["--metric-resolution=10s", "--kubelet-request-timeout=9s"], 0),
    (["--metric-resolution=10s"], 1),
])
def test_spec_10_5_vectors_from_the_command_line(argv: list[str], count: int) -> None:
    assert len(validate(parse_args(argv))) == count


def test_error_messages_name_flags_and_values() -> None:
    errors = validate(_with(metric_resolution_ns=5 * S))
    assert errors == [
        "--metric-resolution must be at least 10s, got 5s",
        "--kubelet-request-timeout (10s) must not exceed 90% of --metric-resolution (5s), "
        "i.e. 4.5s",
    ]
    assert validate(_with(kubelet_request_timeout_ns=-10 * S)) == [
        "--kubelet-request-timeout must be positive, got -10s"]
    assert validate(_with(kubelet_client_certificate="c")) == [
        "need both --kubelet-client-key and --kubelet-client-certificate "
        "(--kubelet-client-certificate is set, --kubelet-client-key is not)"]
    assert validate(_with(kubelet_certificate_authority="ca", kubelet_insecure_tls=True)) == [
        "cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls"]


def test_completely_insecure_conflicts_one_error_per_flag() -> None:
    errors = validate(_with(
        deprecated_kubelet_completely_insecure=True, kubelet_client_key="k",
        kubelet_client_certificate="c", kubelet_insecure_tls=True,
        kubelet_certificate_authority="ca"))
    assert errors == [
        "cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls",
        "cannot use both --kubelet-client-key and --deprecated-kubelet-completely-insecure",
        "cannot use both --kubelet-client-certificate and --deprecated-kubelet-completely-insecure",
        "cannot use both --kubelet-insecure-tls and --deprecated-kubelet-completely-insecure",
        "cannot use both --kubelet-certificate-authority and "
        "--deprecated-kubelet-completely-insecure",
    ]


def test_resolution_boundary_is_ninety_percent() -> None:
    # 10s/9s passes, 10s/9.000000001s fails; 11s allows 9.9s
    assert validate(_with(metric_resolution_ns=10 * S, kubelet_request_timeout_ns=9 * S)) == []
    assert len(validate(_with(metric_resolution_ns=10 * S,
                              kubelet_request_timeout_ns=9 * S + 1))) == 1
    assert validate(_with(metric_resolution_ns=11 * S,
                          kubelet_request_timeout_ns=9900 * MS)) == []
    assert validate(_with(metric_resolution_ns=10 * S - 1,
                          kubelet_request_timeout_ns=S)) == [
        "--metric-resolution must be at least 10s, got 9.999999999s"]


def test_validate_returns_every_error_at_once() -> None:
    o = parse_args([
        "--metric-resolution=5s", "--kubelet-request-timeout=0", "--kubelet-insecure-tls",
        "--kubelet-certificate-authority=/ca.crt", "--kubelet-client-key=/k",
        "--node-selector=a in b", "--secure-port=70000", "--tls-cert-file=/t.crt",
        "--tls-min-version=VersionTLS14", "--tls-cipher-suites=TLS_AES_128_GCM_SHA256,NOPE",
        "--logging-format=xml", "--requestheader-username-headers=x, ",
        "--max-requests-inflight=-1",
        "--goaway-chance=0.5", "--strict-transport-security-directives=max-age=1,bogus",
        "--authorization-always-allow-paths=/a*b", "--kubelet-port=0",
        "--kubelet-preferred-address-types=", "--request-timeout=-1s",
        "--log-flush-frequency=0",
    ])
    errors = validate(o)
    expected_fragments = [
        "--metric-resolution must be at least 10s, got 5s",
        "--kubelet-request-timeout must be positive, got 0s",
        "cannot use both --kubelet-certificate-authority and --kubelet-insecure-tls",
        "need both --kubelet-client-key and --kubelet-client-certificate",
        "--kubelet-port must be between 1 and 65535, got 0",
        "--kubelet-preferred-address-types must name at least one address type",
        "invalid --node-selector \"a in b\": unable to parse requirement: found 'b' expected: '('",
        "--secure-port 70000 must be between 0 and 65535",
        "need both --tls-cert-file and --tls-private-key-file",
        '--tls-min-version must be one of VersionTLS10, VersionTLS11, VersionTLS12, '
        'VersionTLS13, got "VersionTLS14"',
        '--tls-cipher-suites: cipher suite "NOPE" not supported',
        "empty value in --requestheader-username-headers",
        '--authorization-always-allow-paths: only trailing * allowed in "a*b"',
        "--request-timeout must not be negative, got -1s",
        "--max-requests-inflight must not be negative, got -1",
        "--goaway-chance must be between 0 and 0.02, got 0.5",
        '--strict-transport-security-directives: invalid directive "bogus"',
        '--logging-format must be "text" or "json", got "xml"',
        "--log-flush-frequency must be positive, got 0s",
    ]
    assert len(errors) == len(expected_fragments), "\n".join(errors)
    for fragment in expected_fragments:
        assert any(fragment in e for e in errors), (fragment, errors)


@pytest.mark.parametrize("argv", [
    ["--secure-port=0"], ["--secure-port=65535"], ["--tls-min-version=VersionTLS13"],
    ["--tls-cert-file=a", "--tls-private-key-file=b"], ["--logging-format=json"],
    ["--node-selector="], ["--node-selector=a in (b, c),!d,e,f notin (g)"],
    ["--strict-transport-security-directives=max-age=31536000,includeSubDomains,preload"],
    ["--authorization-always-allow-paths=/healthz,/debug/*,/"], ["--goaway-chance=0.02"],
])
def test_valid_serving_and_generic_flags(argv: list[str]) -> None:
    assert validate(parse_args(argv)) == []


def test_files_are_not_checked() -> None:
    o = parse_args(["--tls-cert-file=/does/not/exist", "--tls-private-key-file=/nor/this",
                    "--kubelet-certificate-authority=/missing/ca.crt", "--kubeconfig=/nope"])
    assert validate(o) == []
