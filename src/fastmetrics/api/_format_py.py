"""Kubernetes string formats, in pure Python (the twin of the compiled formatters in ``_core``).

* ``format_cpu``: a ``resource.Quantity`` of nanocores (scale -9, DecimalSI), canonical string.
* ``format_memory``: a Quantity of bytes (BinarySI; DecimalSI below 1024), canonical string.
* ``format_window``: Go ``time.Duration.String()``.
* ``format_timestamp``: RFC 3339 UTC truncated to whole seconds (``metav1.Time`` JSON).
"""

from __future__ import annotations

from typing import Final

__all__ = ["format_cpu", "format_memory", "format_timestamp", "format_window"]

MAX_INT64: Final = 2**63 - 1
MAX_UINT64: Final = 2**64 - 1

# decimal exponent (a multiple of 3) -> SI suffix
_DECIMAL_SUFFIX: Final = {
    -9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E",
}
_BINARY_SUFFIX: Final = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def _check_uint64(value: int) -> int:
    value = int(value)
    if value < 0 or value > MAX_UINT64:
        raise ValueError(f"quantity value {value} is outside uint64")
    if value > MAX_INT64:
        # metrics-server's uint64Quantity: NewScaledQuantity(val/10, scale+1) loses a digit
        value = value // 10 * 10
    return value


def _decimal_si(value: int, exponent: int) -> str:
    """Canonical DecimalSI of ``value x 10**exponent`` (value > 0, as AsCanonicalBytes)."""
    while value % 10 == 0:
        value //= 10
        exponent += 1
    r = exponent % 3  # Python's modulo is non-negative: the distance above a multiple of 3
    if r:
        value *= 10**r
        exponent -= r
    return f"{value}{_DECIMAL_SUFFIX[exponent]}"


def format_cpu(nanocores: int) -> str:
    """Canonical string of a CPU Quantity of ``nanocores`` (e.g. ``20u``, ``500m``, ``2``)."""
    value = _check_uint64(nanocores)
    if value == 0:
        return "0"
    return _decimal_si(value, -9)


def format_memory(nbytes: int) -> str:
    """Canonical string of a memory Quantity of ``nbytes`` (e.g. ``600``, ``1k``, ``12240Ki``)."""
    value = _check_uint64(nbytes)
    if value == 0:
        return "0"
    if value < 1024:
        return _decimal_si(value, 0)
    k = 0
    while value % 1024 == 0 and k < 6:
        value //= 1024
        k += 1
    return f"{value}{_BINARY_SUFFIX[k]}"


def _frac(v: int, prec: int) -> tuple[str, int]:
    """Go's fmtFrac: the fraction of v / 10**prec without trailing zeros, and the quotient."""
    digits = []
    printed = False
    for _ in range(prec):
        digit = v % 10
        printed = printed or digit != 0
        if printed:
            digits.append(str(digit))
        v //= 10
    frac = "." + "".join(reversed(digits)) if printed else ""
    return frac, v


def format_window(ns: int) -> str:
    """Go ``time.Duration(ns).String()``: ``15.013s``, ``1m0s``, ``750ms``, ``1µs``, ``0s``."""
    ns = int(ns)
    if ns < -(2**63) or ns > MAX_INT64:
        raise ValueError(f"duration {ns} ns is outside int64")
    neg = ns < 0
    u = -ns if neg else ns
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            out = f"{u}ns"
        elif u < 1_000_000:
            frac, whole = _frac(u, 3)
            out = f"{whole}{frac}µs"
        else:
            frac, whole = _frac(u, 6)
            out = f"{whole}{frac}ms"
    else:
        frac, secs = _frac(u, 9)
        out = f"{secs % 60}{frac}s"
        minutes = secs // 60
        if minutes > 0:
            out = f"{minutes % 60}m{out}"
            hours = minutes // 60
            if hours > 0:
                out = f"{hours}h{out}"
    return "-" + out if neg else out


_DAYS_BEFORE_MONTH: Final = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # Howard Hinnant's days -> (year, month, day) for the proleptic Gregorian calendar.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def format_timestamp(ns: int) -> str:
    """RFC 3339 in UTC, whole seconds truncated: ``2026-01-01T00:00:12Z``."""
    secs = int(ns) // 1_000_000_000
    days, rem = divmod(secs, 86400)
    y, m, d = _civil_from_days(days)
    return f"{y:04d}-{m:02d}-{d:02d}T{rem // 3600:02d}:{rem // 60 % 60:02d}:{rem % 60:02d}Z"
