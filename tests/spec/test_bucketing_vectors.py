"""Bucketing spec v1 (docs/spec.md section 1): the engine against the shared vectors.

The same file is checked by the PHP bridge (``php-bridge/tests/Unit/BucketingTest.php``), so both
languages provably agree unit for unit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mmh3
import pytest

import flagport
from flagport.engine import BUCKETS, hash_unit
from tests.spec import make_bucketing_vectors as generator

VECTORS_FILE = Path(__file__).with_name("bucketing-vectors.json")


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return json.loads(VECTORS_FILE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_committed_file_is_what_the_generator_writes(data: dict[str, Any]) -> None:
    assert VECTORS_FILE.read_text(encoding="utf-8") == generator.render(generator.build()), (
        "bucketing-vectors.json is stale: run tests/spec/make_bucketing_vectors.py"
    )


def test_vectors_cover_the_required_cases(data: dict[str, Any]) -> None:
    vectors = data["vectors"]
    assert data["bucketing"] == 1
    assert len(vectors) >= 2_000
    units = [v["unit"] for v in vectors]
    strings = [u for u in units if isinstance(u, str)]
    assert {v["seed"] for v in vectors} == {0, 1}
    assert any(type(u) is int and u < 0 for u in units)
    assert any(type(u) is int and u >= 2**32 for u in units)
    assert "" in strings
    assert any(not u.isascii() for u in strings)
    assert any(any(ord(c) > 0xFFFF for c in u) for u in strings)  # emoji: 4-byte UTF-8
    assert any(len(u) >= 1_000 for u in strings)
    assert any(not s.isascii() for s in {v["salt"] for v in vectors})
    seed0_buckets = {v["bucket"] for v in vectors if v["seed"] == 0}
    assert {0, BUCKETS - 1} <= seed0_buckets
    assert {r["input"]: r["hash"] for r in data["raw"]} == {
        "ejOoVL": 0,
        "6LvT0": 2**31,
        "ceQdGm": 2**32 - 1,
    }


def test_every_vector(data: dict[str, Any]) -> None:
    failures = []
    for v in data["vectors"]:
        salt, unit, seed = v["salt"], v["unit"], v["seed"]
        got = (hash_unit(salt, unit, seed), flagport.bucket(salt, unit, seed))
        if got != (v["hash"], v["bucket"]) or v["bucket"] != (v["hash"] * BUCKETS) >> 32:
            failures.append((v, got))
    assert not failures, f"{len(failures)} vectors disagree, first: {failures[:3]}"


def test_integer_units_bucket_as_their_decimal_string(data: dict[str, Any]) -> None:
    ints = [v for v in data["vectors"] if type(v["unit"]) is int]
    assert len(ints) >= 40
    for v in ints:
        assert flagport.bucket(v["salt"], str(v["unit"]), v["seed"]) == v["bucket"]


def test_raw_known_values(data: dict[str, Any]) -> None:
    for r in data["raw"]:
        assert mmh3.hash(r["input"], r["seed"], signed=False) == r["hash"]
        assert generator.murmur3_x86_32(r["input"].encode(), r["seed"]) == r["hash"]
        assert (r["hash"] * BUCKETS) >> 32 == r["bucket"]
    assert [r["bucket"] for r in data["raw"]] == [0, 50_000, 99_999]


def test_unleash_published_case() -> None:
    # Unleash's normalized-hash test: murmur3("AB12A:122") % 100 + 1 == 23.
    assert hash_unit("AB12A", "122") % 100 + 1 == 23
    assert hash_unit("AB12A", 122) % 100 + 1 == 23


def test_bucket_is_in_range_and_uses_the_upper_bits() -> None:
    # (h * 100000) >> 32, not h % 100000: the extremes of h map to the extremes of buckets.
    assert (0 * BUCKETS) >> 32 == 0
    assert ((2**32 - 1) * BUCKETS) >> 32 == BUCKETS - 1
    assert flagport.bucket("ui-improvements", "u116960") == 99_999
    assert flagport.bucket("ui-improvements", "u41308") == 0


def test_lone_surrogate_is_an_error_not_a_crash() -> None:
    # mmh3 5.x segfaults on such a str; the engine encodes first.
    with pytest.raises(UnicodeEncodeError):
        flagport.bucket("salt", "\ud800")
