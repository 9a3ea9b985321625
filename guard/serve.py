"""``guard serve``: run the sidecar with uvicorn.

Flags override ``GUARD_*`` variables, which override the ``--config`` file.  Flags are
handed to the settings model as given, so a bad value is reported against its settings
field (``server.port: ...``) and the guard exits with status 2 without starting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn

from guard.errors import ConfigError
from guard.logs import configure_logging, get_logger
from guard.settings import Settings, load_settings

EXIT_CONFIG = 2

# flag destination -> (settings section, field)
_FLAG_FIELDS: dict[str, tuple[str, str]] = {
    "upstream": ("upstream", "url"),
    "upstream_client": ("upstream", "client"),
    "host": ("server", "host"),
    "port": ("server", "port"),
    "mode": ("policy", "mode"),
    "max_body_bytes": ("server", "max_body_bytes"),
    "log_level": ("logging", "level"),
    "log_format": ("logging", "format"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upstream", metavar="URL", help="the LLM server (default http://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--upstream-client",
        metavar="{native,httpx}",
        help="HTTP client to the upstream: native (default, cheapest) or httpx (HTTP/2, "
        "HTTPS_PROXY/NO_PROXY, SSL_CERT_FILE)",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on (default 8080)")
    parser.add_argument("--mode", metavar="{observe,enforce}", help="observe (shadow) or enforce")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (or GUARD_CONFIG)")
    parser.add_argument("--max-body-bytes", help="largest chat request body accepted")
    parser.add_argument("--log-level", metavar="{debug,info,warning,error}")
    parser.add_argument("--log-format", metavar="{json,console}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from ``--config``/``GUARD_CONFIG``, ``GUARD_*`` and the flags given."""
    overrides: dict[str, dict[str, Any]] = {}
    for dest, (section, field) in _FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    config = Path(args.config) if getattr(args, "config", None) else None
    return load_settings(config, overrides=overrides)


def run(args: argparse.Namespace) -> int:
    from guard.proxy import create_app

    try:
        settings = settings_from_args(args)
        configure_logging(settings.logging)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"guard serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    get_logger("guard.serve").info("serving", host=settings.server.host, port=settings.server.port)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,  # structlog owns the output; uvicorn's loggers propagate to it
        access_log=False,  # one request_completed event per request instead
        server_header=False,  # a transparent hop adds no headers of its own
        date_header=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0
