"""The PHP bridge checks the shared bucketing vectors with PHPUnit (Debian's phpunit 9.6)."""

from __future__ import annotations

import subprocess

from tests.support.tools import REPO_ROOT, require_tool


def test_phpunit_bucketing_vectors() -> None:
    require_tool("php")
    phpunit = require_tool("phpunit")
    completed = subprocess.run(
        [phpunit, "-c", "php-bridge/phpunit.xml", "--filter", "BucketingTest"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "OK (" in output, output
    assert "No tests executed" not in output


def test_php_bucket_of_a_non_ascii_integer_mix_matches_python() -> None:
    # One direct cross-language check outside the vectors file.
    import flagport

    php = require_tool("php")
    script = (
        "require 'php-bridge/autoload.php';"
        "echo Flagport\\Bucketing::bucket('日本語', 'ü-🚀'), ' ',"
        " Flagport\\Bucketing::bucket('a', -3, 1);"
    )
    completed = subprocess.run(
        [php, "-r", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert completed.stdout.split() == [
        str(flagport.bucket("日本語", "ü-🚀")),
        str(flagport.bucket("a", "-3", 1)),
    ]
