"""Kubernetes label and field selectors, as the API and ``--node-selector`` use them.

:func:`parse_label_selector` follows ``k8s.io/apimachinery/pkg/labels.Parse`` — the same
lexer, the same recursive descent, the same operators (``=``, ``==``, ``!=``, ``in``,
``notin``, ``gt``/``>``, ``lt``/``<``, ``key``, ``!key``), the same key and value validation
and the same error texts. :func:`parse_field_selector` follows ``fields.ParseSelector``
(``=``, ``==``, ``!=``, backslash escapes ``\\\\``, ``\\,`` and ``\\=`` in values).

A parsed selector is compiled to a short tuple of predicates over a ``Mapping[str, str]``, so
evaluating one HPA selector over every pod of a namespace costs a dict lookup or two per pod.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple

from .errors import FastMetricsError
from .log import go_quote

__all__ = [
    "EVERYTHING",
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(FastMetricsError, ValueError):
    """A label or field selector that does not parse.

    ``reason`` is the message Kubernetes gives for the same input (what an API error should
    carry); ``position`` is the 0-based character offset in ``selector`` where the problem was
    found. ``str()`` is the reason followed by the position.
    """

    def __init__(self, reason: str, *, selector: str, position: int) -> None:
        self.reason = reason
        self.selector = selector
        self.position = position
        super().__init__(f"{reason} (at position {position} of {go_quote(selector)})")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_selector_error, (self.reason, self.selector, self.position))


def _rebuild_selector_error(reason: str, selector: str, position: int) -> SelectorError:
    return SelectorError(reason, selector=selector, position=position)


Predicate = Callable[[Mapping[str, str]], bool]

# -- validation (k8s.io/apimachinery/pkg/api/validate/content) ------------------------------------

_LABEL_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE: Final = re.compile(_LABEL_KEY_FMT)
_LABEL_KEY_ERR: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_FMT: Final = "(" + _LABEL_KEY_FMT + ")?"
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)
_LABEL_VALUE_ERR: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1123_SUBDOMAIN_ERR: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
_MAX_NAME_BYTES: Final = 63
_MAX_PREFIX_BYTES: Final = 253


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # content.RegexError, double spaces included
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if not text.isascii() else len(text)


def label_key_errors(key: str) -> list[str]:
    """What is wrong with ``key`` as a label key (``content.IsLabelKey``); empty if valid."""
    errs: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            if _nbytes(prefix) > _MAX_PREFIX_BYTES:
                errs.append(f"prefix part must be no more than {_MAX_PREFIX_BYTES} bytes")
            if not _DNS1123_SUBDOMAIN_RE.fullmatch(prefix):
                errs.append("prefix part " + _regex_error(
                    _DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    else:
        return [
            "a valid label key "
            + _regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _nbytes(name) > _MAX_NAME_BYTES:
        errs.append(f"name part must be no more than {_MAX_NAME_BYTES} bytes")
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append("name part " + _regex_error(
            _LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc"))
    return errs


def label_value_errors(value: str) -> list[str]:
    """What is wrong with ``value`` as a label value (``content.IsLabelValue``)."""
    errs: list[str] = []
    if _nbytes(value) > _MAX_NAME_BYTES:
        errs.append(f"must be no more than {_MAX_NAME_BYTES} bytes")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(
            _regex_error(_LABEL_VALUE_ERR, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def _invalid(path: str, value: str, details: list[str]) -> str:
    # field.Invalid(path, value, detail).Error()
    return f"{path}: Invalid value: {go_quote(value)}: {'; '.join(details)}"


_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")


def _go_int64(text: str) -> int | None:
    """``strconv.ParseInt(text, 10, 64)``, or None."""
    if not _INT64_RE.fullmatch(text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


# -- lexer (labels.Lexer) -------------------------------------------------------------------------

(_ERROR, _EOS, _CLOSE, _COMMA, _NOT, _DEQ, _EQ, _GT, _IDENT, _IN, _LT, _NEQ, _NOTIN,
 _OPEN) = range(14)

_SYMBOLS: Final = {
    ")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DEQ, "=": _EQ, ">": _GT, "<": _LT, "!=": _NEQ,
    "(": _OPEN,
}
_KEYWORDS: Final = {"in": _IN, "notin": _NOTIN}
_SPECIAL: Final = frozenset("=!(),><")
_WHITESPACE: Final = frozenset(" \t\r\n")


class _Token(NamedTuple):
    tok: int
    lit: str
    pos: int


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    pos = 0
    while True:
        while pos < n and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= n:
            tokens.append(_Token(_EOS, "", n))
            return tokens
        start = pos
        if text[pos] in _SPECIAL:
            # the longest run of special characters that is still an operator
            best: tuple[int, int] | None = None
            while pos < n and text[pos] in _SPECIAL:
                tok = _SYMBOLS.get(text[start:pos + 1])
                if tok is not None:
                    best = (tok, pos + 1)
                elif best is not None:
                    break
                pos += 1
            if best is None:  # unreachable: every single special character is an operator
                tokens.append(_Token(_ERROR, f"error expected: keyword found '{text[start:pos]}'",
                                     start))
                continue
            pos = best[1]
            tokens.append(_Token(best[0], text[start:pos], start))
        else:
            while pos < n and text[pos] not in _SPECIAL and text[pos] not in _WHITESPACE:
                pos += 1
            lit = text[start:pos]
            tokens.append(_Token(_KEYWORDS.get(lit, _IDENT), lit, start))


# -- label selector -------------------------------------------------------------------------------

#: Operators as ``selection.Operator`` spells them.
EXISTS: Final = "exists"
DOES_NOT_EXIST: Final = "!"
EQUALS: Final = "="
DOUBLE_EQUALS: Final = "=="
NOT_EQUALS: Final = "!="
IN: Final = "in"
NOT_IN: Final = "notin"
GREATER_THAN: Final = "gt"
LESS_THAN: Final = "lt"

_BINARY_OPERATORS: Final = "in, notin, =, ==, !=, gt, lt"
_OPERATOR_OF_TOKEN: Final = {
    _IN: IN, _NOTIN: NOT_IN, _EQ: EQUALS, _DEQ: DOUBLE_EQUALS, _NEQ: NOT_EQUALS,
    _GT: GREATER_THAN, _LT: LESS_THAN,
}


class Requirement(NamedTuple):
    """One requirement: ``key``, an operator (``selection.Operator`` spelling) and the sorted,
    de-duplicated values (empty for ``exists`` and ``!``)."""

    key: str
    operator: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        joined = ",".join(self.values)
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({joined})"
        sym = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{sym}{joined}"

    def compile(self) -> Predicate:
        """A predicate over a label mapping (``Requirement.Matches``)."""
        key, op, values = self.key, self.operator, self.values
        if op in (EQUALS, DOUBLE_EQUALS) or (op == IN and len(values) == 1):
            value = values[0]
            return lambda labels: labels.get(key) == value
        if op == NOT_EQUALS or (op == NOT_IN and len(values) == 1):
            value = values[0]
            return lambda labels: labels.get(key) != value
        if op == IN:
            allowed = frozenset(values)
            return lambda labels: labels.get(key) in allowed
        if op == NOT_IN:
            excluded = frozenset(values)
            return lambda labels: labels.get(key) not in excluded
        if op == EXISTS:
            return lambda labels: key in labels
        if op == DOES_NOT_EXIST:
            return lambda labels: key not in labels
        bound = _go_int64(values[0]) if len(values) == 1 else None
        if bound is None:  # cannot come from the parser
            return lambda labels: False
        greater = op == GREATER_THAN

        def compare(labels: Mapping[str, str]) -> bool:
            raw = labels.get(key)
            if raw is None:
                return False
            number = _go_int64(raw)
            if number is None:
                return False
            return number > bound if greater else number < bound

        return compare


def _match_all(preds: tuple[Predicate, ...]) -> Predicate:
    if not preds:
        return lambda labels: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda labels: a(labels) and b(labels)

    def match(labels: Mapping[str, str]) -> bool:
        for pred in preds:  # noqa: SIM110 - a plain loop beats all() over a generator
            if not pred(labels):
                return False
        return True

    return match


class LabelSelector:
    """A parsed label selector: the AND of its requirements, sorted by key.

    ``matches(labels)`` is the compiled test; ``empty`` is true for the selector that
    selects everything. ``str()`` is Kubernetes' canonical form (``Selector.String()``).
    ``a & b`` is the selector requiring both.
    """

    __slots__ = ("_match", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = ()) -> None:
        reqs = tuple(sorted(requirements, key=lambda r: r.key))
        self.requirements: tuple[Requirement, ...] = reqs
        self._match = _match_all(tuple(r.compile() for r in reqs))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfies every requirement."""
        return self._match(labels)

    def __and__(self, other: LabelSelector) -> LabelSelector:
        if not other.requirements:
            return self
        if not self.requirements:
            return other
        return LabelSelector(self.requirements + other.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelSelector):
            return NotImplemented
        return self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash(self.requirements)


#: The selector that selects everything.
EVERYTHING: Final = LabelSelector()


class _LabelParser:
    """``labels.Parser``: the scanned tokens and a cursor, with Go's contexts (in ``Values``
    context the keywords ``in`` and ``notin`` are identifiers)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _lex(text)
        self.i = 0

    def _fail(self, reason: str, pos: int) -> SelectorError:
        return SelectorError(reason, selector=self.text, position=pos)

    def lookahead(self, values: bool) -> _Token:
        t = self.tokens[self.i]
        if values and t.tok in (_IN, _NOTIN):
            return _Token(_IDENT, t.lit, t.pos)
        return t

    def consume(self, values: bool) -> _Token:
        t = self.lookahead(values)
        self.i += 1
        return t

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            t = self.lookahead(True)
            if t.tok in (_IDENT, _NOT):
                try:
                    reqs.append(self.requirement())
                except _RequirementError as exc:
                    raise self._fail(f"unable to parse requirement: {exc.reason}",
                                     exc.pos) from None
                t = self.consume(True)
                if t.tok == _EOS:
                    return reqs
                if t.tok == _COMMA:
                    t2 = self.lookahead(True)
                    if t2.tok not in (_IDENT, _NOT):
                        raise self._fail(
                            f"found '{t2.lit}', expected: identifier after ','", t2.pos)
                else:
                    raise self._fail(f"found '{t.lit}', expected: ',' or 'end of string'", t.pos)
            elif t.tok == _EOS:
                return reqs
            else:
                raise self._fail(
                    f"found '{t.lit}', expected: !, identifier, or 'end of string'", t.pos)

    def requirement(self) -> Requirement:
        # parseKeyAndInferOperator
        operator = ""
        t = self.consume(True)
        if t.tok == _NOT:
            operator = DOES_NOT_EXIST
            t = self.consume(True)
        if t.tok != _IDENT:
            raise _RequirementError(f"found '{t.lit}', expected: identifier", t.pos)
        key, key_pos = t.lit, t.pos
        errs = label_key_errors(key)
        if errs:
            raise _RequirementError(_invalid("<nil>", key, errs), key_pos)
        if self.lookahead(True).tok in (_EOS, _COMMA) and operator != DOES_NOT_EXIST:
            operator = EXISTS
        if operator in (EXISTS, DOES_NOT_EXIST):
            return Requirement(key, operator, ())
        # parseOperator
        t = self.consume(False)
        op = _OPERATOR_OF_TOKEN.get(t.tok)
        if op is None:
            raise _RequirementError(f"found '{t.lit}', expected: {_BINARY_OPERATORS}", t.pos)
        values = self.set_values() if op in (IN, NOT_IN) else self.exact_value()
        return self._new_requirement(key, op, values)

    def set_values(self) -> list[tuple[str, int]]:
        # parseValues
        t = self.consume(True)
        if t.tok != _OPEN:
            raise _RequirementError(f"found '{t.lit}' expected: '('", t.pos)
        t = self.lookahead(True)
        if t.tok in (_IDENT, _COMMA):
            values = self.identifiers()
            closing = self.consume(True)
            if closing.tok != _CLOSE:  # unreachable: identifiers() stops only before ')'
                raise _RequirementError(f"found '{t.lit}', expected: ')'", closing.pos)
            return values
        if t.tok == _CLOSE:
            self.consume(True)
            return [("", t.pos)]
        raise _RequirementError(f"found '{t.lit}', expected: ',', ')' or identifier", t.pos)

    def identifiers(self) -> list[tuple[str, int]]:
        # parseIdentifiersList: a possibly empty list of possibly empty identifiers
        values: list[tuple[str, int]] = []
        while True:
            t = self.consume(True)
            if t.tok == _IDENT:
                values.append((t.lit, t.pos))
                t2 = self.lookahead(True)
                if t2.tok == _COMMA:
                    continue
                if t2.tok == _CLOSE:
                    return values
                raise _RequirementError(f"found '{t2.lit}', expected: ',' or ')'", t2.pos)
            if t.tok == _COMMA:
                if not values:
                    values.append(("", t.pos))
                t2 = self.lookahead(True)
                if t2.tok == _CLOSE:
                    values.append(("", t2.pos))
                    return values
                if t2.tok == _COMMA:
                    values.append(("", t2.pos))
                continue
            raise _RequirementError(f"found '{t.lit}', expected: ',', or identifier", t.pos)

    def exact_value(self) -> list[tuple[str, int]]:
        # parseExactValue
        t = self.lookahead(True)
        if t.tok in (_EOS, _COMMA):
            return [("", t.pos)]
        t = self.consume(True)
        if t.tok == _IDENT:
            return [(t.lit, t.pos)]
        raise _RequirementError(f"found '{t.lit}', expected: identifier", t.pos)

    def _new_requirement(self, key: str, op: str, found: list[tuple[str, int]]) -> Requirement:
        # NewRequirement over the sorted set of values; errors aggregate as Go's do
        where: dict[str, int] = {}
        for value, pos in found:
            where.setdefault(value, pos)
        values = tuple(sorted(where))
        errs: list[tuple[str, int]] = []
        if op in (GREATER_THAN, LESS_THAN):
            for i, value in enumerate(values):
                if _go_int64(value) is None:
                    errs.append((_invalid(f"values[{i}]", value, [
                        "for 'Gt', 'Lt' operators, the value must be an integer"]), where[value]))
        for i, value in enumerate(values):
            details = label_value_errors(value)
            if details:
                errs.append((_invalid(f"values[{i}][{key}]", value, details), where[value]))
        if errs:
            messages = list(dict.fromkeys(msg for msg, _ in errs))
            text = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
            raise _RequirementError(text, errs[0][1])
        return Requirement(key, op, values)


class _RequirementError(Exception):
    def __init__(self, reason: str, pos: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


def parse_label_selector(text: str) -> LabelSelector:
    """Parse a label selector (``labels.Parse``); ``""`` (or blanks) selects everything.

    Raises :class:`SelectorError` with Kubernetes' message for anything ``labels.Parse``
    rejects.
    """
    if not text or text.isspace():
        return EVERYTHING
    return LabelSelector(_LabelParser(text).parse())


# -- field selector -------------------------------------------------------------------------------


class FieldRequirement(NamedTuple):
    """``field``, operator (``=`` or ``!=``; ``==`` parses as ``=``) and the unescaped value."""

    field: str
    operator: str
    value: str

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{_escape_field_value(self.value)}"

    def compile(self) -> Predicate:
        field, value = self.field, self.value
        if self.operator == NOT_EQUALS:
            return lambda fields: fields.get(field, "") != value
        return lambda fields: fields.get(field, "") == value


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


class FieldSelector:
    """A parsed field selector: the AND of ``field=value`` / ``field!=value`` terms.

    A field missing from the mapping given to ``matches`` compares as ``""`` (SPEC §5.4:
    ``metadata.namespace!=x`` matches every node). Which fields are allowed is the caller's
    business; ``keys()`` lists the ones used.
    """

    __slots__ = ("_match", "requirements")

    def __init__(self, requirements: Iterable[FieldRequirement] = ()) -> None:
        self.requirements: tuple[FieldRequirement, ...] = tuple(requirements)
        self._match = _match_all(tuple(r.compile() for r in self.requirements))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether ``fields`` satisfies every term."""
        return self._match(fields)

    def keys(self) -> tuple[str, ...]:
        """The distinct field names the selector tests, in order."""
        return tuple(dict.fromkeys(r.field for r in self.requirements))

    def requires_exact_match(self, field: str) -> str | None:
        """The value ``field`` must equal for anything to match, or None.

        (``Selector.RequiresExactMatch``.)
        """
        for r in self.requirements:
            if r.field == field and r.operator != NOT_EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"FieldSelector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSelector):
            return NotImplemented
        return self.requirements == other.requirements

    def __hash__(self) -> int:
        return hash(self.requirements)


_FIELD_OPERATORS: Final = (NOT_EQUALS, DOUBLE_EQUALS, EQUALS)


def _split_terms(text: str) -> list[tuple[str, int]]:
    # splitTerms: commas separate terms unless escaped; the backslash stays in the term
    terms: list[tuple[str, int]] = []
    start = 0
    in_slash = False
    for i, ch in enumerate(text):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append((text[start:i], start))
            start = i + 1
    terms.append((text[start:], start))
    return terms


def _unescape(value: str, text: str, offset: int) -> str:
    # UnescapeValue
    if "\\" not in value and "," not in value and "=" not in value:
        return value
    out: list[str] = []
    in_slash = False
    for i, ch in enumerate(value):
        if in_slash:
            if ch in "\\,=":
                out.append(ch)
            else:
                raise SelectorError(
                    f"invalid field selector: invalid escape sequence: \\{ch}",
                    selector=text, position=offset + i - 1)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            raise SelectorError(
                f"invalid field selector: unescaped character in value: {ord(ch)}",
                selector=text, position=offset + i)
        else:
            out.append(ch)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\",
                            selector=text, position=offset + len(value) - 1)
    return "".join(out)


def _split_term(term: str) -> tuple[int, str] | None:
    # splitTerm: the first operator wins; no escaping on the left-hand side
    for i in range(len(term)):
        for op in _FIELD_OPERATORS:
            if term.startswith(op, i):
                return i, op
    return None


def parse_field_selector(text: str) -> FieldSelector:
    """Parse a field selector (``fields.ParseSelector``); ``""`` selects everything.

    No whitespace is trimmed (Kubernetes does not either). A term whose field and value are
    both empty (``=``) is dropped, as Kubernetes' ``Transform`` drops it. Terms are kept in
    sorted order, as Kubernetes sorts them.
    """
    if not text:
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for term, start in sorted(_split_terms(text)):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise SelectorError(
                f"invalid selector: '{text}'; can't understand '{term}'",
                selector=text, position=start)
        i, op = split
        field = term[:i]
        value = _unescape(term[i + len(op):], text, start + i + len(op))
        if not field and not value:
            continue
        reqs.append(FieldRequirement(field, EQUALS if op == DOUBLE_EQUALS else op, value))
    return FieldSelector(reqs)
