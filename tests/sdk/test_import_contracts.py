"""The engine is pure (docs/spec.md section 11): an import-linter contract, an allow-list of the
engine's own imports, and ``import flagport`` without httpx."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.tools import REPO_ROOT

ENGINE_DIR = REPO_ROOT / "sdk" / "src" / "flagport" / "engine"
ROLLOUT_DIR = REPO_ROOT / "sdk" / "src" / "flagport" / "rollout"
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


#: What the guarded-rollout core may import besides itself (docs/spec.md, "Guarded
#: rollouts"): the engine's models, the exceptions, msgspec and pure stdlib modules
#: (zoneinfo reads the time zone database, nothing else).
ROLLOUT_ALLOWED = {
    "__future__",
    "collections.abc",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "itertools",
    "math",
    "re",
    "typing",
    "urllib.parse",
    "zoneinfo",
    "msgspec",
    "flagport._exceptions",
    "flagport.durations",
    "flagport.exposures",
    "flagport.engine",
    "flagport.engine.models",
}


def _contract() -> dict[str, object]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]  # type: ignore[no-any-return]


def _contract_of_type(kind: str) -> dict[str, object]:
    contracts: list[dict[str, object]] = _contract()["contracts"]  # type: ignore[assignment]
    (contract,) = [c for c in contracts if c["type"] == kind]
    return contract


def _engine_contract() -> dict[str, list[str] | str]:
    contracts: list[dict[str, list[str] | str]] = _contract()["contracts"]  # type: ignore[assignment]
    (contract,) = [c for c in contracts if c.get("source_modules") == ["flagport.engine"]]
    return contract


def _lint_imports(
    *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-logo", "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_import_linter_contract_holds() -> None:
    completed = _lint_imports()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    contracts = _contract()["contracts"]
    assert isinstance(contracts, list)
    assert f"{len(contracts)} kept, 0 broken" in completed.stdout


def test_contract_names_no_single_flagport_module() -> None:
    """The contract forbids ``flagport.*`` rather than a list of today's modules, so it
    neither breaks before a module exists nor misses one added later."""
    contract = _engine_contract()
    internal = [m for m in contract["forbidden_modules"] if m.startswith("flagport")]
    assert internal == ["flagport.*"]
    assert {"httpx", "yaml"} <= set(contract["forbidden_modules"])


def _fake_distribution(root: Path, engine_imports: str, extra: dict[str, str]) -> None:
    package = root / "flagport"
    (package / "engine").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "_exceptions.py").write_text("")
    (package / "engine" / "__init__.py").write_text("")
    (package / "engine" / "_compile.py").write_text(
        "import flagport._exceptions\n" + engine_imports
    )
    for name, text in extra.items():
        (package / f"{name}.py").write_text(text)
    contract = _engine_contract()
    lines = [
        "[tool.importlinter]",
        'root_packages = ["flagport"]',
        "include_external_packages = true",
        "[[tool.importlinter.contracts]]",
        f"name = {contract['name']!r}",
        f"type = {contract['type']!r}",
        f"source_modules = {contract['source_modules']!r}",
        f"forbidden_modules = {contract['forbidden_modules']!r}",
        f"ignore_imports = {contract['ignore_imports']!r}",
        f"unmatched_ignore_imports_alerting = {contract['unmatched_ignore_imports_alerting']!r}",
    ]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("engine_imports", "extra", "kept"),
    [
        pytest.param("import mmh3\nimport msgspec\n", {}, True, id="allowed"),
        pytest.param(
            "import flagport._brand_new_client\n",
            {"_brand_new_client": ""},
            False,
            id="a module added later",
        ),
        pytest.param(
            "from flagport import _helpers\n",
            {"_helpers": "import httpx\n"},
            False,
            id="httpx through a chain",
        ),
        pytest.param("import yaml\n", {}, False, id="yaml directly"),
    ],
)
def test_contract_catches_violations(
    tmp_path: Path, engine_imports: str, extra: dict[str, str], kept: bool
) -> None:
    """The same contract, run on a throwaway ``flagport`` package, keeps what the engine may
    import and breaks on a module that did not exist when the contract was written."""
    _fake_distribution(tmp_path, engine_imports, extra)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    completed = _lint_imports(cwd=tmp_path, env=env)
    output = completed.stdout + completed.stderr
    if kept:
        assert completed.returncode == 0, output
        assert "1 kept, 0 broken" in completed.stdout, output
    else:
        assert completed.returncode == 1, output
        assert "0 kept, 1 broken" in completed.stdout, output


@pytest.mark.parametrize(
    ("server_imports", "kept"),
    [
        pytest.param("from flagport.engine import compile_snapshot\n", True, id="public"),
        pytest.param("from flagport._local import LocalClient\n", False, id="flagport._*"),
        pytest.param("import flagport.engine._flag\n", False, id="flagport.engine._*"),
    ],
)
def test_the_server_and_the_cli_import_no_private_sdk_module(
    tmp_path: Path, server_imports: str, kept: bool
) -> None:
    """The private-modules contract, run on throwaway packages: a server or CLI module may
    import the SDK's public modules, never a private one at any depth."""
    for name, text in {
        "flagport/__init__.py": "",
        "flagport/_local.py": "",
        "flagport/engine/__init__.py": "from flagport.engine import _flag\n",
        "flagport/engine/_flag.py": "",
        "flagport_server/__init__.py": "",
        "flagport_server/app.py": server_imports,
        "flagport_cli/__init__.py": "",
        "flagport_cli/main.py": "import flagport\n",
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    contract = _contract_of_type("private_modules")
    (tmp_path / "pyproject.toml").write_text(
        "\n".join(
            [
                "[tool.importlinter]",
                f"root_packages = {_contract()['root_packages']!r}",
                "[[tool.importlinter.contracts]]",
                f"name = {contract['name']!r}",
                f"type = {contract['type']!r}",
                f"packages_with_private_modules = {contract['packages_with_private_modules']!r}",
            ]
        )
        + "\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    completed = _lint_imports(cwd=tmp_path, env=env)
    output = completed.stdout + completed.stderr
    assert completed.returncode == (0 if kept else 1), output
    assert ("1 kept, 0 broken" if kept else "0 kept, 1 broken") in completed.stdout, output


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
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


def test_rollout_imports_only_its_allow_list() -> None:
    files = sorted(ROLLOUT_DIR.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        outside = {
            name
            for name in _imports(path)
            if name not in ROLLOUT_ALLOWED and not name.startswith("flagport.rollout")
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


def test_yaml_is_parsed_in_one_place() -> None:
    """Every YAML the SDK, the server or the CLI reads goes through ``flagport.document``'s
    loader, which refuses anchors and aliases: no other module imports yaml."""
    sources = [REPO_ROOT / member / "src" for member in ("sdk", "server", "cli")]
    files = sorted(path for source in sources for path in source.rglob("*.py"))
    assert len(files) >= 40
    importers = {
        str(path.relative_to(REPO_ROOT))
        for path in files
        if any(name == "yaml" or name.startswith("yaml.") for name in _imports(path))
    }
    assert importers == {"sdk/src/flagport/document.py"}
