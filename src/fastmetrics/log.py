"""klog-style structured logging and ``-v`` verbosity levels.

The loggers of the stages (aiohttp ``log.py`` style)::

    fastmetrics.scrape   the kubelet client and the tick loop
    fastmetrics.store    storage
    fastmetrics.api      metrics.k8s.io request handling
    fastmetrics.server   the HTTPS server, probes, certificates
    fastmetrics.access   one line per HTTP request
    fastmetrics.cluster  informers and the kube client

Messages are constant strings; the context goes in ``extra`` (klog ``InfoS``)::

    scrape_logger.warning("Failed to scrape node", extra={"node": name, "timeout_s": 10})

and comes out as klog's text format (``--logging-format=text``, the default)::

    W1125 13:44:05.123456   12345 scrape.py:42] "Failed to scrape node" node="n1" timeout_s=10

or as one JSON object per line (``--logging-format=json``, component-base's JSON logger)::

    {"ts":1764078245123.456,"caller":"scrape.py:42","msg":"Failed to scrape node","v":0,...}

Verbosity follows klog: ``-v=N`` enables ``V(n)`` messages for every ``n <= N``. Plain
``logger.debug(...)`` calls count as ``V(4)`` (the level metrics-server's test overlay runs at
and the one Kubernetes components use for debugging detail); INFO, WARNING and ERROR are
``V(0)`` and always written. ``log_v(logger, 2, "Scraping node", node=name)`` logs at ``V(2)``;
``logger.info("Scrape finished", extra=verbose(1, nodes=3))`` does too (at ``V(1)``) but always
creates the record, so other handlers (pytest's ``caplog``) see it whatever ``-v`` is;
``if V(6): ...`` guards costly message preparation.

What fastmetrics writes at each level (``-v`` / ``--v``):

* 0 (the default): warnings and errors (a kubelet that cannot be scraped, an informer that
  cannot list or watch), start-up and shutdown, readiness changes.
* 1: one ``"Scrape finished"`` line per tick (metrics-server logs its line of that name at
  ``V(1)`` too): ``duration_s``, ``nodes`` (node points received), ``pods`` (pods with
  metrics after the tick) and ``failed`` (nodes whose scrape failed).
* 2: a second line per tick, ``"Tick details"``: nodes and containers with a baseline (what
  ``metrics_server_storage_points`` counts), pods the kubelets' bodies dropped for a zero or
  missing value, samples skipped for a missing label, timeouts, the longest jitter sleep.
  (metrics-server's per-node "Scraping node" line at ``V(2)`` is not written: at 5,000 nodes
  it would be 333 lines a second; ``-v=4`` has one line per node.)
* 4: one line per node and tick: ``"Scraped node"`` with its duration and counts, or the
  failure (also for nodes that are not Ready, which are quiet below 4); informer list and
  watch details.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Final

from .errors import ConfigError

__all__ = [
    "DEBUG_VERBOSITY",
    "LOGGER_NAMES",
    "JsonFormatter",
    "KlogFormatter",
    "V",
    "access_logger",
    "api_logger",
    "cluster_logger",
    "go_quote",
    "log_v",
    "reset_logging",
    "scrape_logger",
    "server_logger",
    "set_verbosity",
    "setup_logging",
    "store_logger",
    "verbose",
    "verbosity",
]

scrape_logger: Final = logging.getLogger("fastmetrics.scrape")
store_logger: Final = logging.getLogger("fastmetrics.store")
api_logger: Final = logging.getLogger("fastmetrics.api")
server_logger: Final = logging.getLogger("fastmetrics.server")
access_logger: Final = logging.getLogger("fastmetrics.access")
cluster_logger: Final = logging.getLogger("fastmetrics.cluster")

LOGGER_NAMES: Final = (
    "fastmetrics.scrape",
    "fastmetrics.store",
    "fastmetrics.api",
    "fastmetrics.server",
    "fastmetrics.access",
    "fastmetrics.cluster",
)

#: The klog verbosity a plain ``logger.debug()`` call is written at.
DEBUG_VERBOSITY: Final = 4

# record attributes that carry log_v's verbosity and key/values (never printed as key=value)
_V_ATTR: Final = "klog_v"
_KV_ATTR: Final = "klog_kv"

# every attribute a bare LogRecord has, plus the ones logging adds later: what is left over in
# record.__dict__ came from ``extra``
_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName", _V_ATTR, _KV_ATTR}

_verbosity = 0
_handler: logging.Handler | None = None


# -- Go string quoting ----------------------------------------------------------------------------

_GO_ESCAPES: Final = {
    "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
    "\\": "\\\\", '"': '\\"',
}


def go_quote(text: str) -> str:
    """``text`` as Go's ``strconv.Quote`` (and so ``%q``) writes it.

    Printable characters stay as they are; the usual C escapes are used where they exist,
    other control characters become ``\\xNN`` and other non-printable ones ``\\uNNNN`` or
    ``\\UNNNNNNNN``.
    """
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    out = ['"']
    for ch in text:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x20 or code == 0x7F:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# -- verbosity ------------------------------------------------------------------------------------


def verbosity() -> int:
    """The configured ``-v`` level."""
    return _verbosity


def V(level: int) -> bool:
    """Whether ``V(level)`` messages are written (klog ``V(level).Enabled()``)."""
    return _verbosity >= level


def set_verbosity(level: int) -> int:
    """Set the ``-v`` level (handlers untouched); returns the previous one."""
    global _verbosity
    if level < 0:
        raise ConfigError(f"-v must not be negative, got {level}")
    previous, _verbosity = _verbosity, level
    root = logging.getLogger("fastmetrics")
    if _handler is not None:
        root.setLevel(logging.DEBUG if level >= DEBUG_VERBOSITY else logging.INFO)
    return previous


def verbose(level: int, /, **kv: object) -> dict[str, object]:
    """``extra`` for a message written at klog verbosity ``level``, with key/values ``kv``::

        log.info("Scrape finished", extra=verbose(1, nodes=3, pods=90))

    The record is created whatever ``-v`` is (so use it for messages that are cheap to build);
    fastmetrics' handler drops it when ``-v`` is below ``level``. Keys must not be names of
    ``LogRecord`` attributes (use :func:`log_v` for those).
    """
    return {_V_ATTR: level, **kv}


def log_v(logger: logging.Logger, level: int, msg: str, /, **kv: object) -> None:
    """Log ``msg`` with key/values ``kv`` at klog verbosity ``level`` (``klog.V(level).InfoS``).

    Nothing is done unless ``-v`` is at least ``level``. Keys may be any identifier, including
    names of ``LogRecord`` attributes (``name``, ``msg``...), which ``extra`` would refuse.
    """
    if _verbosity < level:
        return
    severity = logging.INFO if level < DEBUG_VERBOSITY else logging.DEBUG
    if logger.isEnabledFor(severity):
        logger.log(severity, msg, extra={_V_ATTR: level, _KV_ATTR: kv}, stacklevel=2)


def _record_v(record: logging.LogRecord) -> int:
    v = record.__dict__.get(_V_ATTR)
    if isinstance(v, int):
        return v
    return DEBUG_VERBOSITY if record.levelno < logging.INFO else 0


class _VerbosityFilter(logging.Filter):
    """Drops records whose klog verbosity is above ``-v``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _record_v(record) <= _verbosity


def _key_values(record: logging.LogRecord) -> list[tuple[str, object]]:
    """The record's context: ``extra`` keys (in insertion order), then log_v's key/values."""
    items = [(k, v) for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS]
    kv = record.__dict__.get(_KV_ATTR)
    if isinstance(kv, Mapping):
        items.extend(kv.items())
    return items


def _error_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        text = str(exc)
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


# -- text format ----------------------------------------------------------------------------------

_SEVERITY: Final = {
    logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
    logging.CRITICAL: "F",
}


def _severity_letter(levelno: int) -> str:
    letter = _SEVERITY.get(levelno)
    if letter is not None:
        return letter
    if levelno >= logging.CRITICAL:
        return "F"
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


def _klog_value(value: object) -> str:
    """A value as klog's text format writes it: strings quoted, numbers and bools bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value is None:
        return "<nil>"
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "backslashreplace")
    else:
        text = str(value)
    if "\n" in text:
        # klog's multi-line form: key=<, each line indented by a tab, then " >"
        lines = text[:-1] if text.endswith("\n") else text
        return "<\n" + "".join(f"\t{line}\n" for line in lines.split("\n")) + " >"
    return go_quote(text)


class KlogFormatter(logging.Formatter):
    """klog's text format: ``Lmmdd hh:mm:ss.uuuuuu pid file:line] "msg" key="value"``.

    The time is local time, as klog writes it. An exception attached to the record is written
    as ``err="Type: text"`` followed by the traceback on the next lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        usec = int((record.created - int(record.created)) * 1_000_000)
        parts = [
            f"{_severity_letter(record.levelno)}{t.tm_mon:02d}{t.tm_mday:02d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{usec:06d} "
            f"{self._pid:7d} {record.filename}:{record.lineno}] "
            f"{go_quote(record.getMessage())}"
        ]
        err = _error_text(record)
        if err is not None:
            parts.append(f"err={go_quote(err)}")
        for key, value in _key_values(record):
            parts.append(f"{key}={_klog_value(value)}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


# -- JSON format ----------------------------------------------------------------------------------


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """component-base's JSON format: one object per line.

    Keys: ``ts`` (Unix milliseconds, float), ``caller`` (``file:line``), ``msg``, ``v`` (the
    klog verbosity; absent on errors, as in component-base), ``err`` (an attached
    exception), then the record's key/values.
    """

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {
            "ts": round(record.created * 1000.0, 3),
            "caller": f"{record.filename}:{record.lineno}",
            "msg": record.getMessage(),
        }
        if record.levelno < logging.ERROR:
            obj["v"] = _record_v(record)
        err = _error_text(record)
        if err is not None:
            obj["err"] = err
        for key, value in _key_values(record):
            if key not in obj:
                obj[key] = _json_value(value)
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# -- setup ----------------------------------------------------------------------------------------


def setup_logging(verbosity: int, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the ``fastmetrics`` loggers: ``-v`` level and ``--logging-format``.

    ``fmt`` is ``"text"`` (klog) or ``"json"``. Output goes to ``stream`` (standard error by
    default). Calling it again replaces the previous configuration. The ``fastmetrics`` logger
    stops propagating to the root logger, so nothing is written twice.
    """
    global _verbosity, _handler
    if verbosity < 0:
        raise ConfigError(f"-v must not be negative, got {verbosity}")
    formatter: logging.Formatter
    if fmt == "text":
        formatter = KlogFormatter()
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ConfigError(f'--logging-format must be "text" or "json", got {go_quote(fmt)}')
    _verbosity = verbosity
    root = logging.getLogger("fastmetrics")
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    handler.addFilter(_VerbosityFilter())
    _handler = handler
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= DEBUG_VERBOSITY else logging.INFO)
    root.propagate = False


def reset_logging() -> None:
    """Undo :func:`setup_logging`: no handler, ``-v=0``, propagate to the root logger again."""
    global _verbosity, _handler
    root = logging.getLogger("fastmetrics")
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    _handler = None
    _verbosity = 0
    root.setLevel(logging.NOTSET)
    root.propagate = True
