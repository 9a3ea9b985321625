"""``guard serve`` with the KeywordScorer in place of the ONNX model.

For benchmarking the transport, memory and policies before a model is built; every table
labels these runs "(keyword scorer)".  Same flags as ``guard serve``.
"""

from __future__ import annotations

import argparse
import inspect
import sys

import uvicorn

from guard import factory
from guard.engine import Engine
from guard.logs import configure_logging
from guard.metrics import GuardMetrics
from guard.proxy import create_app
from guard.serve import add_arguments, settings_from_args
from guard.testing import KeywordScorer


def build_engine(args: argparse.Namespace, metrics: GuardMetrics) -> Engine:
    settings = settings_from_args(args)
    if "scorer" in inspect.signature(factory.build_engine).parameters:
        return factory.build_engine(settings, metrics, scorer=KeywordScorer())  # type: ignore[call-arg]
    return factory.build_engine(settings, metrics)  # the skeleton's factory: keyword already


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    settings = settings_from_args(args)
    configure_logging(settings.logging)
    metrics = GuardMetrics()
    app = create_app(settings, engine=build_engine(args, metrics), metrics=metrics)
    uvicorn.run(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
