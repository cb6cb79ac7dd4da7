"""The exception hierarchy. ``_core`` raises only these classes."""

from __future__ import annotations

__all__ = ["ConfigError", "DecodeError", "FastMetricsError", "ScrapeError"]


class FastMetricsError(Exception):
    """Base class of every error fastmetrics raises on purpose."""


class ConfigError(FastMetricsError, ValueError):
    """Invalid flags or configuration; the message names every bad setting."""


class ScrapeError(FastMetricsError):
    """A kubelet scrape failed (connection, TLS, timeout, HTTP status, body too large)."""

    def __init__(
        self, message: str, *, node: str = "", url: str = "", status: int | None = None
    ) -> None:
        super().__init__(message)
        self.node = node
        self.url = url
        self.status = status


class DecodeError(FastMetricsError, ValueError):
    """A kubelet ``/metrics/resource`` body is not valid Prometheus 0.0.4 text.

    ``reason`` says what was wrong, ``offset`` is the 0-based byte offset in the body where it was
    detected, ``lineno`` the 1-based line, ``excerpt`` the offending line (cut to at most 120
    characters around the offset) with a caret under the offset on the next line.
    """

    def __init__(
        self, reason: str, *, offset: int, lineno: int, excerpt: str = "", node: str = ""
    ) -> None:
        self.reason = reason
        self.offset = offset
        self.lineno = lineno
        self.excerpt = excerpt
        self.node = node
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" on node {self.node!r}" if self.node else ""
        msg = (
            f"kubelet metrics malformed{where}: {self.reason} "
            f"(byte {self.offset}, line {self.lineno})"
        )
        if self.excerpt:
            msg += "\n" + self.excerpt
        return msg

    def with_node(self, node: str) -> DecodeError:
        """Return a copy naming ``node`` (the decoder itself does not know node names)."""
        return DecodeError(
            self.reason, offset=self.offset, lineno=self.lineno, excerpt=self.excerpt, node=node
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_decode_error, (self.reason, self.offset, self.lineno, self.excerpt,
                                        self.node))


def _rebuild_decode_error(
    reason: str, offset: int, lineno: int, excerpt: str, node: str
) -> DecodeError:
    return DecodeError(reason, offset=offset, lineno=lineno, excerpt=excerpt, node=node)


def make_excerpt(body: bytes, offset: int) -> str:
    """The line of ``body`` holding ``offset``, cut to 120 characters, and a caret line."""
    offset = max(0, min(offset, len(body)))
    start = body.rfind(b"\n", 0, offset) + 1
    end = body.find(b"\n", offset)
    if end < 0:
        end = len(body)
    col = offset - start
    lo = max(start, offset - 60)
    hi = min(end, lo + 120)
    line = body[lo:hi].decode("utf-8", "backslashreplace")
    line = line.replace("\r", "\\r").replace("\t", " ")
    prefix = "..." if lo > start else ""
    suffix = "..." if hi < end else ""
    # the caret sits under the byte at ``offset`` (column counted in decoded characters)
    caret_col = len(prefix) + len(
        body[lo:offset].decode("utf-8", "backslashreplace").replace("\r", "\\r")
    )
    del col
    return f"  {prefix}{line}{suffix}\n  {' ' * caret_col}^"
