"""The ``flagport_flags`` pytest fixture, registered through the ``pytest11`` entry point: every
project that installs ``flagport`` has it (``-p no:flagport`` turns it off).

::

    def test_new_navigation(flagport_flags, app):
        flagport_flags.set("ui-improvements", True)
        app.flags = flagport_flags          # wherever the app takes its client
        assert "new-nav" in app.render("/")

    @pytest.mark.flagport({"checkout": "variant-b"})
    def test_checkout(flagport_flags, app):
        app.render("/checkout")
        assert flagport_flags.evaluated().get("checkout") == 1   # read once

The fixture is a :class:`~flagport.LocalClient` without a server, made afresh for each test
(nothing leaks from one test to the next): empty, or the snapshot document named by the ini
option ``flagport_file`` (``flags export`` of the real configuration, relative to the rootdir),
with the values of the ``flagport`` marker fixed on top. ``set()``/``update()`` fix more
flags; evaluation is the engine's, as in production. ``FLAGPORT_OVERRIDES`` is not read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flagport import LocalClient

__all__ = ["flagport_flags"]

_FILE_OPTION = "flagport_file"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _FILE_OPTION,
        "snapshot document (JSON or YAML, relative to the rootdir) the flagport_flags "
        "fixture starts from; empty: no flags",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "flagport(values): flag key -> value fixed in the flagport_flags fixture",
    )


@pytest.fixture
def flagport_flags(request: pytest.FixtureRequest) -> Iterator[LocalClient]:
    """A :class:`~flagport.LocalClient` without a server for this test (see the module)."""
    from flagport import LocalClient

    file = str(request.config.getini(_FILE_OPTION) or "")
    client = (
        LocalClient.from_file(request.config.rootpath / file) if file else LocalClient.from_flags()
    )
    try:
        for marker in reversed(list(request.node.iter_markers("flagport"))):
            # The closest marker (the test's own) is applied last: it wins over the class's.
            values = marker.args[0] if marker.args else dict(marker.kwargs)
            client.update(values)
        yield client
    finally:
        client.close()
