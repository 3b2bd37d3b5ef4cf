"""Loading snapshot documents (JSON and YAML): what is refused, where the error points, and
how a lenient compile serves a broken flag (DESIGN.md section 3, issue 2 item 4)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from flagport import ErrorCode, InvalidDocumentError
from flagport.document import dump_document, load_document
from flagport.engine import compile_snapshot, document_from_builtins, validate_key

pytest.importorskip("yaml")


def _json(flags: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"bucketing": 1, "flags": flags, **extra})


def _refused(text: str, format: str | None = None) -> InvalidDocumentError:
    with pytest.raises(InvalidDocumentError) as caught:
        load_document(text, format)  # type: ignore[arg-type]
    return caught.value


# -- paths and lines -------------------------------------------------------------------


def test_a_field_error_names_the_path() -> None:
    error = _refused(_json({"a.b": {"percentage": "ten"}}))
    assert error.path == '$.flags["a.b"].percentage'
    assert '$.flags["a.b"].percentage' in str(error)


def test_a_nested_field_error_names_the_path() -> None:
    error = _refused(
        _json({"a": {"rules": [{"conditions": [{"op": "nope", "values": [1]}], "variant": "on"}]}})
    )
    assert error.path == '$.flags["a"].rules[0].conditions[0].op'


def test_yaml_field_error_names_the_path() -> None:
    error = _refused("flags:\n  a.b:\n    enabled: maybe\n", "yaml")
    assert error.path == '$.flags["a.b"].enabled'


def test_json_syntax_error_names_the_line() -> None:
    error = _refused('{\n  "bucketing": 1,\n  "flags": {\n    "a": {,}\n  }\n}\n', "json")
    assert "line 4" in str(error)


def test_yaml_syntax_error_names_the_line() -> None:
    error = _refused("flags:\n  a:\n    enabled: true\n  b: [unclosed\n", "yaml")
    assert "line 5" in str(error) or "line 4" in str(error)
    error = _refused("flags:\n  a:\n   enabled: true\n  bad indent: : x\n", "yaml")
    assert "line 4" in str(error)


# -- YAML booleans stay variant names --------------------------------------------------


@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "y", "n", "On", "OFF", "Yes"])
def test_yaml_1_1_booleans_stay_strings(word: str) -> None:
    text = f"""
flags:
  a:
    enabled: true
    variants:
      {word}: 1
      other: 2
    on_variant: {word}
    off_variant: other
"""
    document = load_document(text, "yaml")
    flag = document.flags["a"]
    assert flag.on_variant == word
    assert list(flag.variants) == [word, "other"]
    assert compile_snapshot(document).evaluate("a", {}).variant == word


def test_yaml_true_false_are_booleans() -> None:
    document = load_document("flags:\n  a:\n    enabled: true\n  b:\n    enabled: False\n")
    assert document.flags["a"].enabled is True
    assert document.flags["b"].enabled is False


# -- duplicates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"bucketing": 1, "flags": {"a": {}, "a": {}}}',
        '{"bucketing": 1, "flags": {"a": {"enabled": true, "enabled": false}}}',
        '{"bucketing": 1, "bucketing": 1}',
    ],
)
def test_duplicate_keys_refused_in_json(text: str) -> None:
    assert "duplicate" in str(_refused(text, "json"))


@pytest.mark.parametrize(
    "text",
    [
        "flags:\n  a: {}\n  a: {}\n",
        "flags:\n  a:\n    enabled: true\n    enabled: false\n",
        "bucketing: 1\nbucketing: 1\n",
    ],
)
def test_duplicate_keys_refused_in_yaml(text: str) -> None:
    error = _refused(text, "yaml")
    assert "duplicate" in str(error)
    assert "line" in str(error)


# -- percentages -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [12.3456, -1, 100.0001, "ten", None, True])
def test_bad_percentages_refused_json(value: Any) -> None:
    error = _refused(_json({"a.b": {"percentage": value}}))
    assert error.path == '$.flags["a.b"].percentage'


@pytest.mark.parametrize("value", ["12.3456", "-1", "100.0001", ".nan", ".inf", "-.inf", "ten"])
def test_bad_percentages_refused_yaml(value: str) -> None:
    error = _refused(f"flags:\n  a.b:\n    percentage: {value}\n", "yaml")
    assert error.path == '$.flags["a.b"].percentage'


def test_nan_refused_in_json() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        _refused('{"bucketing": 1, "flags": {"a": {"percentage": ' + literal + "}}}", "json")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("-0.0", "negative zero (-0.0) is not allowed"),
        ("-0e3", "negative zero (-0e3) is not allowed"),
        ("1e400", "number 1e400 is out of range"),
        ("-1e400", "number -1e400 is out of range"),
        ('"\\ud800"', "\\ud800 is a lone UTF-16 surrogate"),
        ('"\\udc00x"', "\\udc00 is a lone UTF-16 surrogate"),
        ('"\\ud800\\\\udc00"', "\\ud800 is a lone UTF-16 surrogate"),
    ],
)
def test_values_a_lenient_parser_would_pick_are_refused_in_json(value: str, named: str) -> None:
    """The rule every admin API body follows too (``flagport.document.parse_json``)."""
    text = '{"flags": {"a": {"enabled": true, "variants": {"on": ' + value + ', "off": 0}}}}'
    assert named in str(_refused(text, "json"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0", 0.0),
        ("-0", 0),
        ("1e-400", 0.0),
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ('"\\\\ud800"', "\\ud800"),
    ],
)
def test_zero_pairs_and_escaped_backslashes_are_fine(value: str, expected: Any) -> None:
    text = '{"flags": {"a": {"enabled": true, "variants": {"on": ' + value + ', "off": 1}}}}'
    assert load_document(text, "json").flags["a"].variants["on"] == expected


def test_nan_percentage_refused_in_lenient_compile() -> None:
    document = document_from_builtins({"flags": {"a": {"enabled": True}}})
    document.flags["a"].percentage = math.nan
    snapshot = compile_snapshot(document)
    assert snapshot.evaluate("a", {"targetingKey": "u"}).error_code == ErrorCode.PARSE_ERROR
    with pytest.raises(InvalidDocumentError) as caught:
        compile_snapshot(document, strict=True)
    assert caught.value.path == '$.flags["a"].percentage'


@pytest.mark.parametrize("value", [0, 100, 12.345, 0.001, 99.999, 50])
def test_good_percentages_accepted(value: float) -> None:
    document = load_document(_json({"a": {"enabled": True, "percentage": value}}))
    assert document.flags["a"].percentage == value


# -- cross-references: strict refuses, lenient serves PARSE_ERROR ----------------------

BROKEN: list[Any] = [
    pytest.param(
        {"a": {"enabled": True, "on_variant": "ghost"}}, {}, '$.flags["a"].on_variant', id="on"
    ),
    pytest.param(
        {"a": {"enabled": True, "rules": [{"conditions": [], "variant": "ghost"}]}},
        {},
        '$.flags["a"].rules[0].variant',
        id="rule variant",
    ),
    pytest.param(
        {"a": {"enabled": True, "weights": {"on": 1, "ghost": 1}}},
        {},
        '$.flags["a"].weights',
        id="weights",
    ),
    pytest.param(
        {"a": {"enabled": True, "rules": [{"conditions": [], "weights": {"ghost": 1}}]}},
        {},
        '$.flags["a"].rules[0].weights',
        id="rule weights",
    ),
    pytest.param(
        {"a": {"enabled": True, "targets": {"ghost": ["u1"]}}},
        {},
        '$.flags["a"].targets["ghost"]',
        id="targets",
    ),
    pytest.param(
        {
            "a": {
                "enabled": True,
                "rules": [
                    {"conditions": [{"op": "in_segment", "values": ["nope"]}], "variant": "on"}
                ],
            }
        },
        {"segments": {"beta": {"included": ["u1"]}}},
        '$.flags["a"].rules[0].conditions[0].values',
        id="unknown segment",
    ),
    pytest.param(
        {"a": {"enabled": True, "prerequisites": [{"key": "nope"}]}},
        {},
        '$.flags["a"].prerequisites[0].key',
        id="unknown prerequisite",
    ),
    pytest.param(
        {"a": {"enabled": True, "prerequisites": [{"key": "b", "variant": "ghost"}]}, "b": {}},
        {},
        '$.flags["a"].prerequisites[0].variant',
        id="prerequisite variant",
    ),
    pytest.param(
        {
            "a": {"enabled": True, "prerequisites": [{"key": "b"}]},
            "b": {"enabled": True, "prerequisites": [{"key": "a"}]},
        },
        {},
        None,
        id="cycle",
    ),
    pytest.param(
        {"a": {"enabled": True, "prerequisites": [{"key": "a"}]}},
        {},
        '$.flags["a"].prerequisites',
        id="self cycle",
    ),
]


@pytest.mark.parametrize(("flags", "extra", "path"), BROKEN)
def test_cross_reference_refused_in_strict_mode(
    flags: dict[str, Any], extra: dict[str, Any], path: str | None
) -> None:
    error = _refused(_json(flags, **extra))
    if path is not None:
        assert error.path == path
    else:
        assert error.path.endswith(".prerequisites")
        assert "cycle" in error.problem


@pytest.mark.parametrize(("flags", "extra", "path"), BROKEN)
def test_cross_reference_served_as_parse_error_in_lenient_compile(
    flags: dict[str, Any], extra: dict[str, Any], path: str | None
) -> None:
    document = load_document(_json(flags, **extra), strict=False)
    snapshot = compile_snapshot(document)
    assert snapshot.problems
    result = snapshot.evaluate("a", {"targetingKey": "u1"})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert result.reason == "ERROR"
    # The broken flag serves its off variant (with the error code) ...
    assert result.variant == "off"
    assert result.value is False
    assert "invalid" in (result.error_message or "")
    # ... and evaluate_all agrees and never raises.
    assert snapshot.evaluate_all({"targetingKey": "u1"})["a"] == result


def test_cycle_breaks_every_flag_on_it_but_not_its_children() -> None:
    document = load_document(
        _json(
            {
                "a": {"enabled": True, "prerequisites": [{"key": "b"}]},
                "b": {"enabled": True, "prerequisites": [{"key": "a"}]},
                "c": {"enabled": True},
                "a.child": {"enabled": True},
            }
        ),
        strict=False,
    )
    snapshot = compile_snapshot(document)
    every = snapshot.evaluate_all({"targetingKey": "u"})
    assert every["a"].error_code == every["b"].error_code == ErrorCode.PARSE_ERROR
    assert every["c"].error_code is None
    assert every["a.child"].error_code == ErrorCode.PARSE_ERROR
    assert every["a.child"].metadata == {"gatedBy": "a"}


# -- key grammar -----------------------------------------------------------------------

BAD_KEYS = [
    "a/b",
    "a b",
    "Ab",
    "a..b",
    "a.",
    ".a",
    "-a",
    "a._b",
    "",
    "é",
    "a" * 201,
    "ab\n",
    "a.b\n",
    "\nab",
    "a\nb",
]
GOOD_KEYS = ["a", "a.b", "ui-improvements.mobile-navigation-fix", "a_b-c.0", "a" * 200, "9"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_flag_keys_refused(key: str) -> None:
    with pytest.raises(InvalidDocumentError) as caught:
        validate_key(key, "$.here")
    assert caught.value.path == "$.here"
    error = _refused(_json({key: {"enabled": True}}))
    assert error.path == f'$.flags["{key}"]'
    snapshot = compile_snapshot(load_document(_json({key: {"enabled": True}}), strict=False))
    assert snapshot.evaluate(key, {}).error_code == ErrorCode.PARSE_ERROR


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_segment_and_prerequisite_keys_refused(key: str) -> None:
    error = _refused(_json({}, segments={key: {"included": ["u"]}}))
    assert error.path.startswith("$.segments")
    error = _refused(_json({"a": {"prerequisites": [{"key": key}]}}))
    assert error.path == '$.flags["a"].prerequisites[0].key'


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys_accepted(key: str) -> None:
    assert validate_key(key, "$") == key
    document = load_document(
        _json({key: {"enabled": True}, "z": {"prerequisites": [{"key": key}]}})
    )
    assert key in document.flags


def test_key_with_trailing_newline_refused_in_yaml() -> None:
    error = _refused('flags:\n  "ab\\n":\n    enabled: true\n', "yaml")
    assert error.path == '$.flags["ab\n"]'


# -- values keep their JSON type ---------------------------------------------------------


@pytest.mark.parametrize("value", [[1, 2], [], [{"a": 1}]])
def test_array_variant_values_refused(value: Any) -> None:
    error = _refused(_json({"a": {"variants": {"on": value, "off": False}}}))
    assert error.path == '$.flags["a"].variants["on"]'


def test_object_variant_values_accepted() -> None:
    document = load_document(
        _json({"a": {"enabled": True, "variants": {"on": {"x": [1]}, "off": {}}}})
    )
    assert compile_snapshot(document).evaluate("a", {}).value == {"x": [1]}


@pytest.mark.parametrize("format", ["json", "yaml"])
def test_floats_stay_floats_and_ints_stay_ints(format: str) -> None:
    variants = {"one": 1, "one_float": 1.0, "zero": 0, "zero_float": 0.0, "off": False, "t": True}
    flags = {
        "a": {"enabled": True, "variants": variants, "on_variant": "one", "off_variant": "off"}
    }
    for name in variants:
        flags[f"a-{name.replace('_', '-')}"] = {
            "enabled": True,
            "variants": variants,
            "on_variant": name,
            "off_variant": "off",
        }
    raw = {"bucketing": 1, "flags": flags}
    if format == "json":
        text = json.dumps(raw)
    else:
        import yaml

        text = yaml.safe_dump(raw)
    document = load_document(text, format)  # type: ignore[arg-type]
    snapshot = compile_snapshot(document)
    for name, expected in variants.items():
        value = snapshot.evaluate(f"a-{name.replace('_', '-')}", {}).value
        assert type(value) is type(expected), name
        assert value == expected
    # And they survive a round trip through both formats.
    for out in ("json", "yaml"):
        again = load_document(dump_document(document, out), out)
        for name, expected in variants.items():
            assert type(again.flags["a"].variants[name]) is type(expected), (out, name)


def test_condition_values_keep_their_type() -> None:
    document = load_document(
        _json(
            {
                "a": {
                    "rules": [
                        {
                            "conditions": [{"attribute": "n", "op": "lt", "values": [2, 2.5]}],
                            "variant": "on",
                        }
                    ]
                }
            }
        )
    )
    values = document.flags["a"].rules[0].conditions[0].values
    assert [type(v) for v in values] == [int, float]


# -- shape ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '"flags"',
        "42",
        '{"bucketing": 2}',
        '{"bucketing": 1, "flags": []}',
        '{"bucketing": 1, "flags": {"a": []}}',
        '{"bucketing": 1, "unknown": {}}',
        '{"bucketing": 1, "flags": {"a": {"unknown": 1}}}',
    ],
)
def test_bad_shapes_refused(text: str) -> None:
    _refused(text, "json")


def test_empty_yaml_sections_are_empty() -> None:
    document = load_document("bucketing: 1\nflags:\nsegments:\n", "yaml")
    assert document.flags == {}
    assert document.segments == {}


def test_non_utf8_bytes_refused() -> None:
    assert "UTF-8" in str(_refused(b'{"flags": {"\xff": {}}}'))  # type: ignore[arg-type]
