"""The engine is pure (DESIGN.md section 1): an import-linter contract, an allow-list of the
engine's own imports, and ``import flagport`` without httpx."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.tools import REPO_ROOT

ENGINE_DIR = REPO_ROOT / "sdk" / "src" / "flagport" / "engine"
#: What the engine may import: msgspec, mmh3, a few stdlib modules, itself and the
#: exception hierarchy.
ALLOWED = {
    "__future__",
    "collections.abc",
    "datetime",
    "enum",
    "math",
    "operator",
    "re",
    "typing",
    "msgspec",
    "mmh3",
    "flagport._exceptions",
}


def _contract() -> dict[str, object]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]  # type: ignore[no-any-return]


def _lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-logo", "--no-cache", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _missing_internal_modules() -> list[str]:
    missing = []
    for contract in _contract()["contracts"]:  # type: ignore[attr-defined]
        for name in contract.get("forbidden_modules", []):
            if name.startswith("flagport.") and importlib.util.find_spec(name) is None:
                missing.append(name)
    return missing


def test_import_linter_contract_holds() -> None:
    missing = _missing_internal_modules()
    if missing:
        # import-linter refuses a contract that names modules that do not exist (yet): the
        # clients land later. Until then check the same contract minus those names.
        pytest.xfail(f"the contract names modules that do not exist yet: {missing}")
    completed = _lint_imports()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 broken" in completed.stdout


def test_import_linter_contract_minus_missing_modules(tmp_path: Path) -> None:
    missing = set(_missing_internal_modules())
    lines = [
        "[tool.importlinter]",
        'root_packages = ["flagport"]',
        "include_external_packages = true",
    ]
    for index, contract in enumerate(_contract()["contracts"]):  # type: ignore[attr-defined]
        forbidden = [m for m in contract["forbidden_modules"] if m not in missing]
        lines += [
            "[[tool.importlinter.contracts]]",
            f"id = 'c{index}'",
            f"name = {contract['name']!r}",
            f"type = {contract['type']!r}",
            f"source_modules = {contract['source_modules']!r}",
            f"forbidden_modules = {forbidden!r}",
        ]
    config = tmp_path / "importlinter.toml"
    config.write_text("\n".join(lines) + "\n")
    completed = _lint_imports(str(config))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 kept, 0 broken" in completed.stdout


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            found.add(node.module or "")
    return found


def test_engine_imports_only_the_allow_list() -> None:
    files = sorted(ENGINE_DIR.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        outside = {
            name
            for name in _imports(path)
            if name not in ALLOWED and not name.startswith("flagport.engine")
        }
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_import_flagport_does_not_import_httpx() -> None:
    code = (
        "import sys, flagport, flagport.engine; "
        "assert 'httpx' not in sys.modules, 'httpx imported'; "
        "assert 'yaml' not in sys.modules, 'yaml imported'"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
