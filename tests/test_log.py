"""klog-style logging: the text line, key/values, -v gating, JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator

import pytest

from fastmetrics import log
from fastmetrics.errors import ConfigError
from fastmetrics.log import (
    LOGGER_NAMES,
    JsonFormatter,
    KlogFormatter,
    V,
    go_quote,
    log_v,
    reset_logging,
    scrape_logger,
    set_verbosity,
    setup_logging,
    verbose,
)

KLOG_LINE = re.compile(
    r"(?P<sev>[IWEF])(?P<mmdd>\d{4}) (?P<time>\d\d:\d\d:\d\d\.\d{6}) +(?P<pid>\d+) "
    r"(?P<src>[^ :]+):(?P<line>\d+)\] (?P<rest>.*)"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def _record(msg: str = "Scrape finished", level: int = logging.INFO, *,
            extra: dict[str, object] | None = None, args: tuple[object, ...] = (),
            created: float | None = None) -> logging.LogRecord:
    logger = logging.getLogger("fastmetrics.scrape")
    record = logger.makeRecord("fastmetrics.scrape", level, "/src/fastmetrics/scrape.py", 42,
                               msg, args, None, extra=extra)
    if created is not None:
        record.created = created
        record.msecs = 0
    return record


def _capture(verbosity: int, fmt: str = "text") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(verbosity, fmt, stream)
    return stream


# -- the text line --------------------------------------------------------------------------------


def test_klog_header() -> None:
    created = time.mktime((2025, 11, 25, 13, 44, 5, 0, 0, -1)) + 0.123456
    line = KlogFormatter().format(_record(created=created))
    m = KLOG_LINE.fullmatch(line)
    assert m is not None, line
    assert m["sev"] == "I"
    assert m["mmdd"] == "1125"
    assert m["time"] == "13:44:05.123456"
    assert int(m["pid"]) == os.getpid()
    assert m["src"] == "scrape.py"
    assert m["line"] == "42"
    assert m["rest"] == '"Scrape finished"'
    # the pid is right-aligned in seven columns after one space
    assert f" {os.getpid():7d} scrape.py:42] " in line


def test_klog_exact_line() -> None:
    created = time.mktime((2025, 11, 25, 13, 44, 5, 0, 0, -1)) + 0.123456
    line = KlogFormatter().format(_record(
        "Message", extra={"key": "value", "key2": 3}, created=created))
    assert line == f'I1125 13:44:05.123456 {os.getpid():7d} scrape.py:42] "Message" ' \
                   'key="value" key2=3'


@pytest.mark.parametrize(("level", "letter"), [
    (logging.DEBUG, "I"), (logging.INFO, "I"), (logging.WARNING, "W"), (logging.ERROR, "E"),
    (logging.CRITICAL, "F"), (25, "I"), (35, "W"),
])
def test_severity_letter(level: int, letter: str) -> None:
    assert KlogFormatter().format(_record(level=level))[0] == letter


def test_key_values_in_insertion_order_and_klog_quoting() -> None:
    rest = KLOG_LINE.fullmatch(KlogFormatter().format(_record(
        "Failed to scrape node", logging.WARNING,
        extra={"node": "kind-worker", "timeout_s": 10, "ratio": 0.5, "ready": False,
               "err": ValueError('bad "x"'), "missing": None, "path": "a\\b", "tab": "x\ty"},
    )))
    assert rest is not None
    assert rest["rest"] == (
        '"Failed to scrape node" node="kind-worker" timeout_s=10 ratio=0.5 ready=false '
        'err="bad \\"x\\"" missing=<nil> path="a\\\\b" tab="x\\ty"'
    )


def test_message_args_and_quoting() -> None:
    line = KlogFormatter().format(_record('Got %d "pods"\n', args=(3,)))
    assert line.endswith('] "Got 3 \\"pods\\"\\n"')


def test_multiline_value() -> None:
    line = KlogFormatter().format(_record("Body", extra={"body": "line 1\nline 2\n"}))
    assert line.endswith('] "Body" body=<\n\tline 1\n\tline 2\n >')


def test_exception_is_err_and_traceback() -> None:
    try:
        raise TimeoutError("deadline exceeded")
    except TimeoutError:
        record = scrape_logger.makeRecord(
            "fastmetrics.scrape", logging.ERROR, "scrape.py", 7, "Failed to scrape node", (),
            __import__("sys").exc_info(), extra={"node": "n1"})
    text = KlogFormatter().format(record)
    first, *rest = text.split("\n")
    assert first.endswith('"Failed to scrape node" err="TimeoutError: deadline exceeded" '
                          'node="n1"')
    assert rest[0] == "Traceback (most recent call last):"


def test_standard_attributes_are_not_key_values() -> None:
    record = _record(extra={"node": "n1"})
    record.stack_info = None
    line = KlogFormatter().format(record)
    for attr in ("levelname", "pathname", "process", "thread", "msecs", "taskName"):
        assert f" {attr}=" not in line
    assert line.endswith('"Scrape finished" node="n1"')


@pytest.mark.parametrize(("text", "quoted"), [
    ("plain", '"plain"'), ("", '""'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'),
    ("\n\r\t\a\b\f\v", '"\\n\\r\\t\\a\\b\\f\\v"'), ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
    ("µs ünï", '"µs ünï"'), ("\u200b", '"\\u200b"'), ("\U000e0001", '"\\U000e0001"'),
])
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


# -- verbosity ------------------------------------------------------------------------------------


def test_v0_writes_info_and_above_only() -> None:
    stream = _capture(0)
    scrape_logger.debug("Per-node detail", extra={"node": "n1"})
    scrape_logger.info("Scrape finished", extra={"nodes": 3})
    scrape_logger.warning("Slow node")
    scrape_logger.error("Failed")
    log_v(scrape_logger, 1, "Verbose one")
    lines = stream.getvalue().splitlines()
    assert [line[0] for line in lines] == ["I", "W", "E"]
    assert lines[0].endswith('"Scrape finished" nodes=3')
    assert not V(1)
    assert V(0)


@pytest.mark.parametrize("verbosity", [0, 1, 2, 3, 4, 5, 6, 10])
def test_log_v_gating(verbosity: int) -> None:
    stream = _capture(verbosity)
    for n in range(11):
        log_v(scrape_logger, n, "Level", n=n)
    written = [int(line.rsplit("n=", 1)[1]) for line in stream.getvalue().splitlines()]
    assert written == list(range(verbosity + 1))
    assert log.verbosity() == verbosity
    assert all(V(n) for n in range(verbosity + 1))
    assert not V(verbosity + 1)


@pytest.mark.parametrize(("verbosity", "written"), [(0, False), (3, False), (4, True), (9, True)])
def test_plain_debug_is_v4(verbosity: int, written: bool) -> None:
    stream = _capture(verbosity)
    logging.getLogger("fastmetrics.store").debug("Dropped points", extra={"count": 2})
    assert bool(stream.getvalue()) is written


def test_log_v_source_is_the_caller_and_keys_may_shadow_record_attributes() -> None:
    stream = _capture(2)
    log_v(scrape_logger, 2, "Scraping node", name="n1", msg="m", node="n1")
    line = stream.getvalue().rstrip("\n")
    m = KLOG_LINE.fullmatch(line)
    assert m is not None, line
    assert m["src"] == "test_log.py"
    assert m["rest"] == '"Scraping node" name="n1" msg="m" node="n1"'


@pytest.mark.parametrize("verbosity", [0, 1, 2, 4])
def test_verbose_extra_is_filtered_by_the_handler_only(verbosity: int) -> None:
    """``extra=verbose(n, ...)``: the record always exists (another handler sees it, as pytest's
    caplog does in the scrape tests), fastmetrics' handler writes it from ``-v=n`` on, with the
    key/values in order; JSON carries ``v``."""
    stream = _capture(verbosity)
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    handler.setFormatter(JsonFormatter())
    scrape_logger.addHandler(handler)
    try:
        scrape_logger.info("Scrape finished",
                           extra=verbose(1, duration_s=0.5, nodes=3, pods=90, failed=0))
        scrape_logger.info("Tick details", extra=verbose(2, timeouts=1))
    finally:
        scrape_logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == (verbosity >= 1) + (verbosity >= 2)
    if verbosity >= 1:
        assert lines[0].endswith('"Scrape finished" duration_s=0.5 nodes=3 pods=90 failed=0')
    if verbosity >= 2:
        assert lines[1].endswith('"Tick details" timeouts=1')
    first, second = (json.loads(line) for line in other.getvalue().splitlines())
    assert (first["msg"], first["v"], first["pods"]) == ("Scrape finished", 1, 90)
    assert (second["v"], second["timeouts"]) == (2, 1)
    assert "klog_v" not in first


def test_set_verbosity() -> None:
    stream = _capture(0)
    assert set_verbosity(4) == 0
    assert V(4) and not V(5)
    scrape_logger.debug("Now written")  # the logger's level follows the verbosity
    assert set_verbosity(1) == 4
    scrape_logger.debug("Not written")
    log_v(scrape_logger, 1, "Written")
    assert stream.getvalue().count("written") == 1 and stream.getvalue().count("Written") == 1
    with pytest.raises(ConfigError, match="-v must not be negative, got -2"):
        set_verbosity(-2)
    assert log.verbosity() == 1


def test_every_stage_logger_is_configured() -> None:
    stream = _capture(0)
    for name in LOGGER_NAMES:
        logging.getLogger(name).info("Hello", extra={"logger": name})
    lines = stream.getvalue().splitlines()
    assert [line.rsplit("logger=", 1)[1] for line in lines] == [f'"{n}"' for n in LOGGER_NAMES]
    assert set(LOGGER_NAMES) == {
        "fastmetrics.scrape", "fastmetrics.store", "fastmetrics.api", "fastmetrics.server",
        "fastmetrics.access", "fastmetrics.cluster"}


def test_setup_again_replaces_the_handler() -> None:
    first = _capture(0)
    second = _capture(0)
    scrape_logger.info("Once")
    assert first.getvalue() == ""
    assert second.getvalue().count("Once") == 1
    assert len(logging.getLogger("fastmetrics").handlers) == 1


def test_no_double_logging_through_root(caplog: pytest.LogCaptureFixture) -> None:
    stream = _capture(0)
    with caplog.at_level(logging.INFO):
        scrape_logger.info("Only once")
    assert stream.getvalue().count("Only once") == 1
    assert "Only once" not in caplog.text


def test_bad_setup() -> None:
    with pytest.raises(ConfigError, match='--logging-format must be "text" or "json", got "xml"'):
        setup_logging(0, "xml", io.StringIO())
    with pytest.raises(ConfigError, match="-v must not be negative"):
        setup_logging(-1, "text", io.StringIO())


# -- JSON -----------------------------------------------------------------------------------------


def test_json_line() -> None:
    stream = _capture(2, "json")
    before = time.time() * 1000
    scrape_logger.info("Scrape finished", extra={"duration_s": 0.25, "nodes": 3, "ok": True,
                                                 "node": "kind-worker", "labels": {"a": "b"}})
    log_v(scrape_logger, 2, "Scraping node", node="n1")
    log_v(scrape_logger, 3, "Hidden")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[:4] == ["ts", "caller", "msg", "v"]
    assert first["msg"] == "Scrape finished"
    assert first["v"] == 0
    assert first["caller"].startswith("test_log.py:")
    assert before - 1 <= first["ts"] <= time.time() * 1000 + 1
    assert (first["duration_s"], first["nodes"], first["ok"], first["node"], first["labels"]) == (
        0.25, 3, True, "kind-worker", {"a": "b"})
    second = json.loads(lines[1])
    assert (second["msg"], second["v"], second["node"]) == ("Scraping node", 2, "n1")


def test_json_error_has_err_and_no_v() -> None:
    try:
        raise ConnectionError("refused")
    except ConnectionError:
        record = scrape_logger.makeRecord(
            "fastmetrics.scrape", logging.ERROR, "scrape.py", 7, "Failed to scrape node", (),
            __import__("sys").exc_info(), extra={"node": "n1", "value": float("nan")})
    obj = json.loads(JsonFormatter().format(record))
    assert "v" not in obj
    assert obj["err"] == "ConnectionError: refused"
    assert obj["node"] == "n1"
    assert obj["value"] == "nan"


def test_json_one_object_per_line_even_with_newlines() -> None:
    out = JsonFormatter().format(_record("a\nb", extra={"body": "x\ny", "raw": b"\xff"}))
    assert "\n" not in out
    obj = json.loads(out)
    assert (obj["msg"], obj["body"], obj["raw"]) == ("a\nb", "x\ny", "\\xff")
