"""Label selectors (labels.Parse) and field selectors (fields.ParseSelector), SPEC §2.2, §5.4."""

from __future__ import annotations

import pickle

import pytest

from fastmetrics.errors import FastMetricsError
from fastmetrics.selectors import (
    EVERYTHING,
    FieldRequirement,
    LabelSelector,
    Requirement,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

# -- SPEC §10.4 fixtures --------------------------------------------------------------------------

NODES = {
    "node1": {"labelKey": "labelValue"},
    "node2": {"otherKey": "labelValue"},
    "node3": {"labelKey": "otherValue"},
    "node4": {"skipKey": "skipValue"},  # node4 carries node5's labels (the fixture's typo)
    "node5": {"skipKey": "skipValue"},
}
PODS = {
    ("other", "pod1"): {"labelKey": "labelValue"},
    ("other", "pod2"): {"otherKey": "labelValue"},
    ("testValue", "pod3"): {"labelKey": "otherValue"},
    ("other", "pod4"): {},
}


def _nodes(selector: str) -> list[str]:
    sel = parse_label_selector(selector)
    return sorted(name for name, labels in NODES.items() if sel.matches(labels))


def test_spec_10_4_node_selector() -> None:
    server = parse_label_selector("skipKey!=skipValue")
    assert sorted(n for n, ls in NODES.items() if server.matches(ls)) == ["node1", "node2", "node3"]
    request = parse_label_selector("labelKey=labelValue")
    both = request & server
    assert sorted(n for n, ls in NODES.items() if both.matches(ls)) == ["node1"]
    assert _nodes("labelKey=otherValue") == ["node3"]


def test_spec_10_4_pods() -> None:
    sel = parse_label_selector("labelKey=labelValue")
    assert [k for k, ls in PODS.items() if sel.matches(ls)] == [("other", "pod1")]
    fields = parse_field_selector("metadata.namespace=testValue")
    assert [k for k in PODS if fields.matches({"metadata.namespace": k[0],
                                               "metadata.name": k[1]})] == [("testValue", "pod3")]
    fields = parse_field_selector("metadata.name=pod3")
    label = parse_label_selector("labelKey=otherValue")
    assert [k for k, ls in PODS.items()
            if label.matches(ls) and fields.matches({"metadata.namespace": k[0],
                                                     "metadata.name": k[1]})] == [
        ("testValue", "pod3")]


def test_e2e_node_selector() -> None:
    """SPEC §10.1: the test overlay's --node-selector skips the labelled worker."""
    sel = parse_label_selector("metrics-server-skip!=true")
    assert sel.matches({"kubernetes.io/hostname": "kind-worker"})
    assert sel.matches({"metrics-server-skip": "false"})
    assert not sel.matches({"metrics-server-skip": "true"})
    assert not parse_label_selector("metrics-server-skip==true").matches({})


# -- valid label selectors: (selector, canonical String(), labels that match, labels that do not) -

A = {"a": "1"}
AB = {"a": "1", "b": "2"}
EMPTY: dict[str, str] = {}

VALID = [
    ("", "", [EMPTY, A, AB], []),
    ("   ", "", [EMPTY, A], []),
    ("a=1", "a=1", [A, AB], [EMPTY, {"a": "2"}, {"b": "1"}]),
    ("a==1", "a==1", [A], [EMPTY, {"a": "11"}]),
    ("a!=1", "a!=1", [EMPTY, {"a": "2"}, {"b": "1"}], [A, AB]),
    ("a=", "a=", [{"a": ""}], [EMPTY, A]),
    ("a!=", "a!=", [EMPTY, A], [{"a": ""}]),
    ("a", "a", [A, {"a": ""}], [EMPTY, {"b": "1"}]),
    ("!a", "!a", [EMPTY, {"b": "1"}], [A, {"a": ""}]),
    ("a in (1,3)", "a in (1,3)", [A, {"a": "3"}], [EMPTY, {"a": "2"}]),
    ("a in (1)", "a in (1)", [A], [EMPTY, {"a": "2"}]),
    ("a notin (1,3)", "a notin (1,3)", [EMPTY, {"a": "2"}], [A, {"a": "3"}]),
    ("a notin (1)", "a notin (1)", [EMPTY, {"a": "2"}], [A]),
    ("a in ()", "a in ()", [{"a": ""}], [EMPTY, A]),
    ("a in (,1)", "a in (,1)", [{"a": ""}, A], [EMPTY, {"a": "2"}]),
    ("a in (1,)", "a in (,1)", [{"a": ""}, A], [EMPTY]),
    ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()",
     [{"x": "foo", "y": ""}, {"x": "", "y": "1", "z": "q"}], [{"x": "foo"}, {"x": "q", "y": ""}]),
    ("a in (3,1,3)", "a in (1,3)", [A], []),
    ("a=1,b=2", "a=1,b=2", [AB], [A, {"b": "2"}]),
    ("b=2,a=1", "a=1,b=2", [AB], [A]),  # sorted by key
    ("a=1,a=2", "a=1,a=2", [], [A, {"a": "2"}]),
    ("a,!b", "a,!b", [A], [AB, EMPTY]),
    ("a>1", "a>1", [{"a": "2"}, {"a": "+5"}], [A, EMPTY, {"a": "x"}, {"a": "1.5"}]),
    ("a<1", "a<1", [{"a": "0"}, {"a": "-3"}], [A, EMPTY, {"a": ""}]),
    ("a>1,b<5", "a>1,b<5", [{"a": "2", "b": "4"}], [{"a": "2", "b": "5"}]),
    ("a gt 1".replace(" gt ", ">"), "a>1", [{"a": "2"}], []),
    # whitespace: around operators, after commas, tabs and newlines; none needed
    (" a = 1 , b != 2 ", "a=1,b!=2", [A], [AB]),
    ("a\t==\t1,\nb", "a==1,b", [AB], [A]),
    ("a in(1,2)", "a in (1,2)", [A], []),
    ("a in ( 1 , 2 )", "a in (1,2)", [A], []),
    ("a notin(1)", "a notin (1)", [EMPTY], [A]),
    ("a=1 ,b=2", "a=1,b=2", [AB], []),
    ("x= ,z= ", "x=,z=", [{"x": "", "z": ""}], []),
    # in and notin are keywords only where an operator is expected
    ("in=in", "in=in", [{"in": "in"}], []),
    ("notin=in", "notin=in", [{"notin": "in"}], []),
    ("in in (in,notin)", "in in (in,notin)", [{"in": "notin"}], [{"in": "x"}]),
    ("!in", "!in", [EMPTY], [{"in": ""}]),
    # keys: prefixes, dots, dashes, underscores, 63-character names, 253-character prefixes
    ("kubernetes.io/hostname=kind-worker", "kubernetes.io/hostname=kind-worker",
     [{"kubernetes.io/hostname": "kind-worker"}], []),
    ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/control-plane",
     [{"node-role.kubernetes.io/control-plane": ""}], [EMPTY]),
    ("app.kubernetes.io/name in (metrics-server)", "app.kubernetes.io/name in (metrics-server)",
     [{"app.kubernetes.io/name": "metrics-server"}], []),
    ("A_b.C-d=E_f.G-h", "A_b.C-d=E_f.G-h", [{"A_b.C-d": "E_f.G-h"}], []),
    ("k" * 63, "k" * 63, [{"k" * 63: ""}], []),
    ("a=" + "v" * 63, "a=" + "v" * 63, [{"a": "v" * 63}], []),
    (("p" * 63 + ".") * 3 + "p" * 61 + "/k", ("p" * 63 + ".") * 3 + "p" * 61 + "/k", [], [A]),
    ("0=0", "0=0", [{"0": "0"}], []),
]


@pytest.mark.parametrize(("text", "canonical", "yes", "no"), VALID, ids=[v[0] for v in VALID])
def test_valid_label_selector(
    text: str, canonical: str, yes: list[dict[str, str]], no: list[dict[str, str]]
) -> None:
    sel = parse_label_selector(text)
    assert str(sel) == canonical
    assert sel.empty is (canonical == "")
    for labels in yes:
        assert sel.matches(labels), labels
    for labels in no:
        assert not sel.matches(labels), labels
    # the canonical form parses to the same selector
    assert parse_label_selector(canonical) == sel


def test_requirements_are_exposed() -> None:
    sel = parse_label_selector("b in (y,x),!c,a")
    assert sel.requirements == (
        Requirement("a", "exists", ()), Requirement("b", "in", ("x", "y")),
        Requirement("c", "!", ()))


def test_empty_selector_selects_everything() -> None:
    assert parse_label_selector("") is EVERYTHING
    assert EVERYTHING.empty
    assert EVERYTHING.matches({})
    assert EVERYTHING.matches({"any": "thing"})
    a = parse_label_selector("a")
    assert (EVERYTHING & a) is a
    assert (a & EVERYTHING) is a


def test_and_combines() -> None:
    sel = parse_label_selector("b=2") & parse_label_selector("a=1")
    assert str(sel) == "a=1,b=2"
    assert sel.matches(AB)
    assert not sel.matches(A)


def test_selector_is_hashable_and_comparable() -> None:
    assert parse_label_selector("a=1,b") == parse_label_selector("b, a=1")
    assert hash(parse_label_selector("a=1,b")) == hash(parse_label_selector("b,a=1"))
    assert parse_label_selector("a=1") != parse_label_selector("a==1")
    assert repr(parse_label_selector("a=1")) == "LabelSelector('a=1')"
    assert isinstance(parse_label_selector("a"), LabelSelector)


def test_matches_any_mapping() -> None:
    from types import MappingProxyType

    sel = parse_label_selector("a=1,b notin (3)")
    assert sel.matches(MappingProxyType({"a": "1"}))


# -- invalid label selectors: Kubernetes' message and the position --------------------------------

_KEY_NAME_ERR = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_ERR = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_PREFIX_ERR = (
    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
    "'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_OPS = "in, notin, =, ==, !=, gt, lt"
_REQ = "unable to parse requirement: "

INVALID = [
    ("x=a||y=b", _REQ + "values[0][x]: Invalid value: \"a||y\": " + _VALUE_ERR, 2),
    ("x==a==b", "found '==', expected: ',' or 'end of string'", 4),
    ("!x=a", "found '=', expected: ',' or 'end of string'", 2),
    ("x<a", _REQ + "values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must "
     "be an integer", 2),
    ("a b", _REQ + f"found 'b', expected: {_OPS}", 2),
    ("a in b", _REQ + "found 'b' expected: '('", 5),
    ("a in (b", _REQ + "found '', expected: ',' or ')'", 7),
    ("a in (b c)", _REQ + "found 'c', expected: ',' or ')'", 8),
    ("a in (=)", _REQ + "found '=', expected: ',', ')' or identifier", 6),
    ("a in (b,=)", _REQ + "found '=', expected: ',', or identifier", 8),
    ("a=(", _REQ + "found '(', expected: identifier", 2),
    ("a=b c", "found 'c', expected: ',' or 'end of string'", 4),
    ("a,", "found '', expected: identifier after ','", 2),
    ("a,,b", "found ',', expected: identifier after ','", 2),
    (",a", "found ',', expected: !, identifier, or 'end of string'", 0),
    ("=a", "found '=', expected: !, identifier, or 'end of string'", 0),
    ("(a)", "found '(', expected: !, identifier, or 'end of string'", 0),
    ("!", _REQ + "found '', expected: identifier", 1),
    ("!!a", _REQ + "found '!', expected: identifier", 1),
    ("a!b", _REQ + f"found '!', expected: {_OPS}", 1),
    ("a===b", _REQ + "found '=', expected: identifier", 3),
    ("-a=b", _REQ + '<nil>: Invalid value: "-a": ' + _KEY_NAME_ERR, 0),
    ("a-=b", _REQ + '<nil>: Invalid value: "a-": ' + _KEY_NAME_ERR, 0),
    ("k" * 64, _REQ + f'<nil>: Invalid value: "{"k" * 64}": name part must be no more than 63 '
     "bytes", 0),
    ("a/b/c", _REQ + '<nil>: Invalid value: "a/b/c": a valid label key must consist of '
     "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
     "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
     "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' "
     "(e.g. 'example.com/MyName')", 0),
    ("/a", _REQ + '<nil>: Invalid value: "/a": prefix part must be non-empty', 0),
    ("a/", _REQ + '<nil>: Invalid value: "a/": name part must be non-empty; ' + _KEY_NAME_ERR,
     0),
    ("Example.com/a", _REQ + '<nil>: Invalid value: "Example.com/a": ' + _PREFIX_ERR, 0),
    (" x , Ä=1", _REQ + '<nil>: Invalid value: "Ä": ' + _KEY_NAME_ERR, 5),
    ("a=-b", _REQ + 'values[0][a]: Invalid value: "-b": ' + _VALUE_ERR, 2),
    ("a=" + "v" * 64, _REQ + f'values[0][a]: Invalid value: "{"v" * 64}": must be no more '
     "than 63 bytes", 2),
    ("a in (ok, -x)", _REQ + 'values[0][a]: Invalid value: "-x": ' + _VALUE_ERR, 10),
    ("a in (-y,-x)", _REQ + '[values[0][a]: Invalid value: "-x": ' + _VALUE_ERR
     + ', values[1][a]: Invalid value: "-y": ' + _VALUE_ERR + "]", 9),
    ("a>b", _REQ + "values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must "
     "be an integer", 2),
    ('a="b"', _REQ + 'values[0][a]: Invalid value: "\\"b\\"": ' + _VALUE_ERR, 2),
]


@pytest.mark.parametrize(("text", "reason", "position"), INVALID, ids=[i[0][:30] for i in INVALID])
def test_invalid_label_selector(text: str, reason: str, position: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    err = info.value
    assert err.reason == reason
    assert err.position == position
    assert err.selector == text
    assert str(err).startswith(reason)
    assert f"position {position}" in str(err)


def test_selector_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unable to parse requirement"):
        parse_label_selector("a b")
    with pytest.raises(FastMetricsError):
        parse_label_selector("a b")


def test_selector_error_pickles() -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector("a in b")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, copy.position, copy.selector, str(copy)) == (
        info.value.reason, info.value.position, info.value.selector, str(info.value))


# -- field selectors ------------------------------------------------------------------------------

NODE1 = {"metadata.name": "node1"}
POD1 = {"metadata.name": "pod1", "metadata.namespace": "other"}

FIELD_VALID = [
    ("", [], [NODE1, {}], []),
    ("metadata.name=node1", [("metadata.name", "=", "node1")], [NODE1], [{}, POD1]),
    ("metadata.name==node1", [("metadata.name", "=", "node1")], [NODE1], [POD1]),
    ("metadata.name!=node1", [("metadata.name", "!=", "node1")], [POD1, {}], [NODE1]),
    # a missing field compares as "" (SPEC §5.4)
    ("metadata.namespace=x", [("metadata.namespace", "=", "x")], [{"metadata.namespace": "x"}],
     [NODE1]),
    ("metadata.namespace!=x", [("metadata.namespace", "!=", "x")], [NODE1], []),
    ("metadata.namespace=", [("metadata.namespace", "=", "")], [NODE1], [POD1]),
    ("metadata.namespace=other,metadata.name=pod1",
     [("metadata.name", "=", "pod1"), ("metadata.namespace", "=", "other")], [POD1],
     [{"metadata.name": "pod1"}]),
    # escapes
    ("a=x\\,y", [("a", "=", "x,y")], [{"a": "x,y"}], [{"a": "x"}]),
    ("a=x\\=y", [("a", "=", "x=y")], [{"a": "x=y"}], []),
    ("a=x\\\\y", [("a", "=", "x\\y")], [{"a": "x\\y"}], []),
    ("a=x\\\\,b=y", [("a", "=", "x\\"), ("b", "=", "y")], [{"a": "x\\", "b": "y"}], []),
    # first operator wins; no trimming
    ("a!=b", [("a", "!=", "b")], [], []),
    ("a =b", [("a ", "=", "b")], [{"a ": "b"}], [{"a": "b"}]),
    ("a= b", [("a", "=", " b")], [{"a": " b"}], [{"a": "b"}]),
    # empty terms and an empty "=" term vanish
    (",a=b,,", [("a", "=", "b")], [{"a": "b"}], []),
    ("=", [], [{}], []),
    ("=x", [("", "=", "x")], [{"": "x"}], [{}]),
]


@pytest.mark.parametrize(("text", "reqs", "yes", "no"), FIELD_VALID,
                         ids=[f[0] for f in FIELD_VALID])
def test_valid_field_selector(
    text: str, reqs: list[tuple[str, str, str]], yes: list[dict[str, str]],
    no: list[dict[str, str]],
) -> None:
    sel = parse_field_selector(text)
    assert sel.requirements == tuple(FieldRequirement(*r) for r in reqs)
    assert sel.empty is (not reqs)
    for fields in yes:
        assert sel.matches(fields), fields
    for fields in no:
        assert not sel.matches(fields), fields
    assert parse_field_selector(str(sel)) == sel


def test_field_selector_keys_and_exact_match() -> None:
    sel = parse_field_selector("metadata.name=pod1,metadata.namespace!=x,metadata.name!=y")
    assert sel.keys() == ("metadata.name", "metadata.namespace")
    assert sel.requires_exact_match("metadata.name") == "pod1"
    assert sel.requires_exact_match("metadata.namespace") is None
    assert parse_field_selector("spec.nodeName=n1").keys() == ("spec.nodeName",)
    assert parse_field_selector("").keys() == ()


def test_field_selector_string_escapes() -> None:
    assert str(parse_field_selector("b!=2,a=x\\,y\\=z\\\\")) == "a=x\\,y\\=z\\\\,b!=2"


@pytest.mark.parametrize(("text", "reason", "position"), [
    ("abc", "invalid selector: 'abc'; can't understand 'abc'", 0),
    ("a=b,abc", "invalid selector: 'a=b,abc'; can't understand 'abc'", 4),
    ("a=b=c", "invalid field selector: unescaped character in value: 61", 3),
    ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'", 4),
    ("a==b=c", "invalid field selector: unescaped character in value: 61", 4),
    ("a=x\\y", "invalid field selector: invalid escape sequence: \\y", 3),
    ("a=x\\", "invalid field selector: invalid escape sequence: \\", 3),
    ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'", 0),
])
def test_invalid_field_selector(text: str, reason: str, position: int) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text)
    assert info.value.reason == reason
    assert info.value.position == position


def test_matching_many_objects() -> None:
    """The compiled predicates over a namespace's worth of pods (an HPA's selector)."""
    sel = parse_label_selector("app=web,tier in (frontend,edge),!canary")
    pods = [{"app": "web" if i % 2 else "db", "tier": ("frontend", "edge", "back")[i % 3],
             **({"canary": "1"} if i % 5 == 0 else {})} for i in range(3000)]
    chosen = [i for i, labels in enumerate(pods) if sel.matches(labels)]
    assert chosen == [i for i in range(3000) if i % 2 and i % 3 != 2 and i % 5]
