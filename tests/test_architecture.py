"""docs/architecture.md names the one home of each rule: every entry it names exists, and no
rule's signature is written anywhere else in the source tree (sdk/, server/, cli/, the PHP
bridge's src/ and config/)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.support.tools import REPO_ROOT

ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
#: A Python entry: `package.module:attribute`.
PYTHON_ENTRY = re.compile(r"`((?:flagport|flagport_server|flagport_cli)[\w.]*):(\w+)`")
#: A PHP entry: `Flagport\Class::CONSTANT` (or a method) with its file in parentheses.
PHP_ENTRY = re.compile(r"`Flagport\\(\w+)::(\w+)(?:\(\))?`")

BUCKETING = "sdk/src/flagport/engine/_bucketing.py"
DURATIONS = "sdk/src/flagport/durations.py"
TALLY = "sdk/src/flagport/tally.py"
COMMON = "sdk/src/flagport/engine/_common.py"
PHP_CLIENT = "php-bridge/src/Client.php"

#: rule -> (its signature, the files allowed to hold it: the rule's home in each language).
SIGNATURES: dict[str, tuple[str, set[str]]] = {
    "the bucket expression": (r">>\s*32\b", {BUCKETING, "php-bridge/src/Bucketing.php"}),
    # PHP's artisan command checks the form alone, for exit code 2 (the server decides).
    "the duration grammar": (
        r"\[smhdw\]",
        {DURATIONS, "php-bridge/src/Laravel/Console/FeatureStatsCommand.php"},
    ),
    "seconds in a week": (r"\b604_?800\b", {DURATIONS}),
    "the 7-day stats window": (r"(?:DAYS|HOURS)_KEPT\b[^=\n]*=\s*\d", {DURATIONS}),
    "the 7-day stats window, spelt out": (r"\b7 \* 24\b|days=7\b", set()),
    "msgspec's error path": (r" - at `", {"sdk/src/flagport/_exceptions.py"}),
    "a unit's digest": (r"blake2b:", {TALLY}),
    "the unit rule": (
        r"def (?:unit_text|counted_unit)\b",
        {"sdk/src/flagport/engine/_common.py", TALLY},
    ),
    "the evaluation tally": (r"\bResultTally\(", {TALLY}),
    "the exposure batch bounds": (
        r"^\s*_?MAX_(?:EXPOSURE_)?(?:ITEMS|UNITS|COUNT|BATCH_EVALUATIONS|BODY)\b[^=\n]*=",
        {"sdk/src/flagport/exposures.py"},
    ),
    "the OFREP answer shape": (r"^\s+errorCode\s*:", {"sdk/src/flagport/ofrep.py"}),
    "PHP option defaults": (
        r"'(?:connect_timeout_ms|timeout_ms|cache_ttl|cache_max_entries|cache_prefix"
        r"|breaker_threshold|breaker_window|breaker_cooldown)'\s*=>\s*['\d]"
        r"|\?\?\s*(?:50|250|5000|86400|10000|5\.0|3|30)\b|'http://127\.0\.0\.1:8787'",
        {PHP_CLIENT},
    ),
}

#: Copies the server's split removes (the integrator empties this when it lands): rule ->
#: files still holding its signature.
AWAITING_THE_SERVER_SPLIT: dict[str, set[str]] = {}


def _sources() -> dict[str, str]:
    files = [
        *(REPO_ROOT / "sdk").rglob("*.py"),
        *(REPO_ROOT / "server").rglob("*.py"),
        *(REPO_ROOT / "cli").rglob("*.py"),
        *(REPO_ROOT / "php-bridge" / "src").rglob("*.php"),
        *(REPO_ROOT / "php-bridge" / "config").rglob("*.php"),
    ]
    return {str(path.relative_to(REPO_ROOT)): path.read_text() for path in files}


def _rule_rows() -> list[str]:
    text = ARCHITECTURE.read_text()
    section = text.split("## Rules and their one home", 1)[1]
    return [line for line in section.splitlines() if line.startswith("| ") and "`" in line]


def test_the_architecture_map_names_every_rule_of_the_issue() -> None:
    rules = " ".join(row.split("|")[1].lower() for row in _rule_rows())
    for rule in (
        "unit",
        "bucket expression",
        "tally",
        "since",
        "7-day",
        "audit change summary",
        "exposure batch bounds",
        "msgspec",
        "document errors",
        "ofrep answer shape",
        "php option defaults",
        "limits",
        "schema version",
        "tolerant decoding",
    ):
        assert rule in rules, rule


@pytest.mark.parametrize("row", _rule_rows(), ids=lambda row: row.split("|")[1].strip())
def test_every_entry_of_the_map_exists(row: str) -> None:
    entries = PYTHON_ENTRY.findall(row)
    php = PHP_ENTRY.findall(row)
    assert entries or php, f"no `module:function` entry in {row!r}"
    for module_name, attribute in entries:
        module = importlib.import_module(module_name)
        assert hasattr(module, attribute), f"{module_name} has no {attribute}"
    sources = _sources()
    for class_name, member in php:
        (path,) = [p for p in sources if Path(p).name == f"{class_name}.php" and "src" in p]
        declared = rf"(?:const|function)\s+{member}\b"
        assert re.search(declared, sources[path]), f"{path} declares no {member}"


@pytest.mark.parametrize("rule", sorted(SIGNATURES))
def test_no_rule_is_written_outside_its_home(rule: str) -> None:
    pattern, homes = SIGNATURES[rule]
    signature = re.compile(pattern, re.MULTILINE)
    holders = {path for path, text in _sources().items() if signature.search(text)}
    assert homes <= holders, f"{rule}: its home no longer holds it ({homes - holders})"
    awaiting = AWAITING_THE_SERVER_SPLIT.get(rule, set())
    assert awaiting <= holders, f"{rule}: {awaiting - holders} is gone; drop it from the list"
    elsewhere = holders - homes - awaiting
    assert not elsewhere, f"{rule} written outside its home: {sorted(elsewhere)}"
