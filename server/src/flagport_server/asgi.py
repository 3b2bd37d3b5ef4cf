"""ASGI entry point for server runners that start worker processes themselves.

``flags serve`` puts the settings, msgspec-encoded, in ``FLAGPORT_SETTINGS_JSON``; each worker
builds its app from them (``granian --factory flagport_server.asgi:app_from_env``).
"""

from __future__ import annotations

import os

import msgspec
from litestar import Litestar

from flagport_server.app import create_app
from flagport_server.settings import Settings

__all__ = ["SETTINGS_ENV", "app_from_env"]

SETTINGS_ENV = "FLAGPORT_SETTINGS_JSON"


def app_from_env() -> Litestar:
    raw = os.environ.get(SETTINGS_ENV)
    settings = msgspec.json.decode(raw, type=Settings) if raw else Settings.from_env()
    return create_app(settings)
