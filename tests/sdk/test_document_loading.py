"""Loading snapshot documents (JSON and YAML): what is refused, where the error points, and
how a lenient compile serves a broken flag (docs/spec.md section 2, issue 2 item 4)."""

from __future__ import annotations

import json
import logging
import math
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flagport import ErrorCode, InvalidDocumentError, LocalClient
from flagport.document import (
    MAX_DOCUMENT_BYTES,
    dump_document,
    load_document,
    read_document_file,
)
from flagport.engine import (
    compile_snapshot,
    document_from_builtins,
    split_validation_message,
    validate_key,
)
from tests.support.documents import alias_bomb, realistic_flags
from tests.support.server import free_port

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
            "variants": dict(variants),  # shared, safe_dump would write aliases
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


# -- anchors and aliases, size -----------------------------------------------------------


def test_yaml_alias_bomb_refused_quickly_in_bounded_memory() -> None:
    text = alias_bomb()
    for strict in (True, False):
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(InvalidDocumentError) as caught:
                load_document(text, "yaml", strict=strict)
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert elapsed < 1.0
        assert peak < 2 * 1024 * 1024, peak
        problem = caught.value.problem
        assert "aliases and anchors are not supported (&l0)" in problem
        assert "line 8, column 13" in problem


@pytest.mark.parametrize(
    ("text", "where", "found"),
    [
        # An anchor nobody refers to, on a scalar, a sequence, a mapping.
        ("flags:\n  a:\n    description: &d hello\n", "line 3, column 18", "&d"),
        ("flags:\n  a:\n    tags: &t [x]\n", "line 3, column 11", "&t"),
        ("flags:\n  a: &a\n    enabled: true\n", "line 2, column 6", "&a"),
        # An alias to nothing, and a merge key through an alias.
        ("flags:\n  a:\n    description: *nothing\n", "line 3, column 18", "*nothing"),
        (
            "segments:\n  s: &s {included: [x]}\n  t:\n    <<: *s\n",
            "line 2, column 6",
            "&s",
        ),
    ],
)
def test_yaml_anchors_and_aliases_refused_where_they_are(text: str, where: str, found: str) -> None:
    problem = _refused(text, "yaml").problem
    assert f"invalid YAML at {where}: aliases and anchors are not supported ({found})" in problem


def test_ampersands_and_asterisks_in_strings_are_text() -> None:
    document = load_document('flags:\n  a:\n    description: "&x *y"\n    owner: a&b*c\n')
    assert document.flags["a"].description == "&x *y"
    assert document.flags["a"].owner == "a&b*c"


def test_a_realistic_15000_flag_document_fits_the_size_limit(tmp_path: Path) -> None:
    """The largest form of the document (an export in JSON, indented, with versions and
    timestamps) stays well under the limit, and loads through the file reader. Its YAML
    form is smaller (measured: 5.7 MiB without versions and timestamps, JSON 8 MiB)."""
    document = document_from_builtins(realistic_flags(15_000))
    stamped = msgspec.structs.replace(
        document,
        flags={
            key: msgspec.structs.replace(
                flag,
                version=123,
                created_at="2026-01-02T03:04:05.678Z",
                updated_at="2026-01-02T03:04:05.678Z",
            )
            for key, flag in document.flags.items()
        },
    )
    path = tmp_path / "flags.json"
    path.write_bytes(dump_document(stamped, "json", volatile=True))
    assert path.stat().st_size < 0.7 * MAX_DOCUMENT_BYTES  # 9.6 MiB: room to spare
    loaded = load_document(read_document_file(path), "json", strict=False)
    assert len(loaded.flags) == 15_000


def test_a_document_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    # Valid JSON of exactly the limit loads; one byte more does not, from a file or not.
    at_limit = b"{}" + b" " * (MAX_DOCUMENT_BYTES - 2)
    assert load_document(at_limit, "json").flags == {}
    over = at_limit + b" "
    for data in (over, over.decode()):
        assert "larger than 16 MiB" in _refused(data).problem  # type: ignore[arg-type]
    # Multi-byte characters count as their UTF-8 bytes.
    wide = "{}" + "\u00a0" * (MAX_DOCUMENT_BYTES // 2)
    assert "larger than 16 MiB" in _refused(wide).problem
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(4 * MAX_DOCUMENT_BYTES)  # sparse: nothing to write, nothing to read
    with pytest.raises(InvalidDocumentError, match="larger than 16 MiB"):
        read_document_file(path)
    path.write_bytes(at_limit)
    assert read_document_file(path) == at_limit


def test_a_bootstrap_file_with_aliases_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = tmp_path / "bootstrap.yaml"
    bootstrap.write_text(alias_bomb())
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the bootstrap is all there is
    with (
        caplog.at_level(logging.WARNING, logger="flagport"),
        LocalClient(
            url, bootstrap=bootstrap, start_timeout=1.0, log_interval=0.0, report_exposures=False
        ) as client,
    ):
        assert client.details("bomb", "default").value == "default"
    assert "aliases and anchors are not supported (&l0)" in caplog.text


def test_validation_messages_split_into_the_problem_and_where() -> None:
    """The one reader of msgspec's wording reads msgspec's own messages and the SDK's."""
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert([["x"]], list[list[int]], strict=True)
    assert split_validation_message(str(raised.value)) == ("Expected `int`, got `str`", "$[0][0]")
    problem = InvalidDocumentError("weights must total at least 1", '$.flags["a"].weights')
    assert split_validation_message(str(problem)) == (problem.problem, problem.path)
    assert split_validation_message("no path here") == ("no path here", None)
