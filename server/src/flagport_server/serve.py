"""Run the server with several worker processes (what ``flags serve`` calls).

Granian was chosen over uvicorn by measurement: see docs/adr/0002-server-runner.md.
"""

from __future__ import annotations

import logging
import logging.config
import os
import shutil
import tempfile

import msgspec

from flagport_server.logs import logging_config
from flagport_server.settings import Settings

__all__ = ["serve"]

log = logging.getLogger("flagport.server")


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Serve until interrupted. Blocks."""
    # Must be set before any worker imports prometheus_client (multiprocess metrics).
    metrics_dir = tempfile.mkdtemp(prefix="flagport-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["FLAGPORT_SETTINGS_JSON"] = msgspec.json.encode(settings).decode()
    log_config = logging_config(log_level)
    logging.config.dictConfig(log_config)

    from pathlib import Path

    from granian.constants import Interfaces, Loops
    from granian.server import Server

    options: dict[str, object] = {}
    if settings.uds:
        options["uds"] = Path(settings.uds)
        options["uds_permissions"] = 0o660
    else:
        options["address"] = settings.host
        options["port"] = settings.port
    if settings.tls_cert and settings.tls_key:
        options["ssl_cert"] = Path(settings.tls_cert)
        options["ssl_key"] = Path(settings.tls_key)
    for warning in settings.exposure_warnings:
        log.warning("%s", warning)
    server = Server(
        "flagport_server.asgi:app_from_env",
        interface=Interfaces.ASGI,
        factory=True,
        workers=settings.workers,
        loop=Loops.auto,
        log_level=log_level,  # type: ignore[arg-type]
        log_dictconfig=log_config,
        log_access=False,
        **options,  # type: ignore[arg-type]
    )
    try:
        server.serve()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
