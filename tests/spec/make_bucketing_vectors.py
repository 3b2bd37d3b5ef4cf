"""Write ``tests/spec/bucketing-vectors.json``: bucketing spec v1 vectors (docs/spec.md section 1).

Run ``uv run --frozen python tests/spec/make_bucketing_vectors.py``. The output is
deterministic (fixed seed), and ``test_bucketing_vectors.py`` checks that the committed file
is exactly what this script writes.

Hashes are computed by a pure-Python MurmurHash3_x86_32 written from the reference algorithm
(not by the engine) and cross-checked against the ``mmh3`` C extension, so the vectors are an
independent statement of the spec that the engine and the PHP bridge are both checked against.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import mmh3

OUTPUT = Path(__file__).with_name("bucketing-vectors.json")
SEED = 20_261_128
BUCKETS = 100_000
M32 = 0xFFFFFFFF

#: The externally known MurmurHash3_x86_32 (seed 0) values: exactly 0, 2^31 and 2^32 - 1.
KNOWN_RAW = {"ejOoVL": 0, "6LvT0": 2**31, "ceQdGm": 2**32 - 1}


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & M32


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3_x86_32 (Austin Appleby's reference), unsigned."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & M32
    length = len(data)
    rounded = length - length % 4
    for i in range(0, rounded, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = _rotl((k * c1) & M32, 15)
        h ^= (k * c2) & M32
        h = (_rotl(h, 13) * 5 + 0xE6546B64) & M32
    tail = data[rounded:]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = _rotl((k * c1) & M32, 15)
        h ^= (k * c2) & M32
    return _fmix(h ^ length)


def spec_hash(salt: str, unit: str | int, seed: int) -> int:
    text = f"{salt}:{unit}".encode()
    value = murmur3_x86_32(text, seed)
    if value != mmh3.hash(text, seed, signed=False):  # pragma: no cover - would be a bug here
        raise AssertionError(f"pure-Python murmur3 disagrees with mmh3 on {text!r}")
    return value


SALTS = [
    "ui-improvements",
    "ui-improvements.mobile-navigation-fix",
    "ui-improvements.dropdown-fixes",
    "checkout.new-payment-flow",
    "billing",
    "a",
    "0",
    "portal-v2.dashboard.widgets",
    "custom-salt-2024",
    "Ünïcödé-salt",
    "日本語",
    "🚀",
    "salt with spaces",
    "x" * 200,
]

NON_ASCII = [
    "é",
    "ß",
    "Ω",
    "Ж",
    "ø",
    "\u0131",  # dotless i
    "İ",
    "中",
    "日本",
    "한국어",
    "עברית",
    "العربية",
    "हिन्दी",
    "ไทย",
    "e\u0301",  # e + combining acute accent (not normalised)
    "\u00a0",
    "\u200d",
    "\ufeff",
    "\U0010ffff",
    "😀",
    "🚀",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "🇫🇷",
    "🏳️‍🌈",
    "👍🏽",
]
ASCII = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@+:/ "


def _units(rng: random.Random) -> list[str | int]:
    units: list[str | int] = ["", " ", ":", "::", "0", "1", "-1", "007", "42", "user-1", "user:1"]
    units += [str(n) for n in range(1, 60)]
    units += [f"user-{rng.randrange(10**6)}" for _ in range(60)]
    units += [f"{rng.randrange(10**9)}@example.com" for _ in range(20)]
    units += ["".join(rng.choice(ASCII) for _ in range(rng.randrange(1, 40))) for _ in range(80)]
    # Integer units (JSON integers; they bucket as their decimal string), within int64 so
    # that PHP's json_decode keeps them integers.
    units += [0, 1, 7, -3, 42, 122, 1000, 65_535, 2**31 - 1, 2**31, 2**32, -(2**31)]
    units += [2**53 + 1, 2**63 - 1, -(2**63)]
    units += [rng.randrange(-(10**12), 10**12) for _ in range(40)]
    # Non-ASCII, emoji, mixed scripts.
    units += NON_ASCII
    units += [
        "".join(rng.choice(NON_ASCII + list(ASCII)) for _ in range(rng.randrange(1, 30)))
        for _ in range(60)
    ]
    units += ["".join(chr(rng.randrange(0x80, 0xD7FF)) for _ in range(8)) for _ in range(20)]
    units += ["".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(4)) for _ in range(10)]
    # Long strings (lengths around the 4-byte block boundary and well past it).
    units += ["a" * n for n in (3, 4, 5, 255, 256, 257, 1000)]
    units += ["".join(rng.choice(ASCII) for _ in range(n)) for n in (511, 1024, 4093, 10_000)]
    units += ["é" * 700, "😀" * 500, "日本語" * 400]
    return units


def _extreme_units(salt: str, target: int) -> list[str]:
    """Units whose seed-0 bucket is ``target`` for ``salt`` (found by a deterministic scan)."""
    found: list[str] = []
    prefix = f"{salt}:".encode()
    for n in range(2_000_000):
        unit = f"u{n}"
        if (mmh3.hash(prefix + unit.encode(), 0, signed=False) * BUCKETS) >> 32 == target:
            found.append(unit)
            if len(found) == 2:
                break
    return found


def vector(salt: str, unit: str | int, seed: int, note: str | None = None) -> dict[str, Any]:
    value = spec_hash(salt, unit, seed)
    out: dict[str, Any] = {
        "salt": salt,
        "unit": unit,
        "seed": seed,
        "hash": value,
        "bucket": (value * BUCKETS) >> 32,
    }
    if note:
        out["note"] = note
    return out


def build() -> dict[str, Any]:
    rng = random.Random(SEED)
    units = _units(rng)
    vectors: list[dict[str, Any]] = []
    for salt in SALTS:
        # Every salt sees a deterministic sample of the units, and each pair both seeds.
        chosen = rng.sample(units, k=min(len(units), 80))
        for unit in chosen:
            for seed in (0, 1):
                vectors.append(vector(salt, unit, seed))
    for unit in units:  # every unit at least once, under the portal's usual salt
        for seed in (0, 1):
            vectors.append(vector("ui-improvements", unit, seed))
    for salt in ("ui-improvements", "checkout.new-payment-flow"):
        for target in (0, 99_999):
            for unit in _extreme_units(salt, target):
                for seed in (0, 1):
                    vectors.append(vector(salt, unit, seed, f"seed-0 bucket {target}"))
    # Unleash's published case: murmur3("AB12A:122") % 100 + 1 == 23.
    note = "Unleash: hash % 100 + 1 == 23"
    vectors.append(vector("AB12A", "122", 0, note))
    vectors.append(vector("AB12A", 122, 0, note + " (integer unit)"))
    raw = []
    for text, expected in KNOWN_RAW.items():
        value = murmur3_x86_32(text.encode(), 0)
        if value != expected:  # pragma: no cover
            raise AssertionError(f"{text}: {value} != {expected}")
        raw.append({"input": text, "seed": 0, "hash": value, "bucket": (value * BUCKETS) >> 32})
    return {
        "description": (
            "Flagport bucketing spec v1 (docs/spec.md section 1): hash = MurmurHash3_x86_32("
            "utf8(salt + ':' + unit), seed) unsigned; bucket = (hash * 100000) >> 32. Integer "
            "units are JSON integers and hash as their decimal string. 'raw' hashes the input "
            "string itself. Generated by tests/spec/make_bucketing_vectors.py; do not edit."
        ),
        "bucketing": 1,
        "vectors": vectors,
        "raw": raw,
    }


def render(data: dict[str, Any]) -> str:
    """One vector per line: small diffs, easy to grep, valid JSON."""

    def dump(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))

    lines = ["{"]
    for name in ("description", "bucketing"):
        lines.append(f"  {dump(name)}: {dump(data[name])},")
    for name in ("vectors", "raw"):
        items = data[name]
        lines.append(f"  {dump(name)}: [")
        lines += [
            f"    {dump(item)}{',' if i < len(items) - 1 else ''}" for i, item in enumerate(items)
        ]
        lines.append("  ]," if name == "vectors" else "  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    data = build()
    OUTPUT.write_text(render(data), encoding="utf-8")
    print(f"wrote {len(data['vectors'])} vectors and {len(data['raw'])} raw values to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
