"""``guard`` command line: serve, score, policy, demo, settings.

Each subcommand lives with the part of the guard it drives; this module only parses
arguments and dispatches, so ``guard --help`` stays cheap (no model is loaded).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> "module:function" taking the parsed namespace and returning an exit code.
# Each owning module also provides ``add_arguments(parser)``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("guard.serve", "Run the guard as a reverse proxy in front of an LLM server."),
    "policy": (
        "guard.policy.cli",
        "Check policy files, export their JSON Schema, show the gallery.",
    ),
    "demo": ("guard.demo", "Watch the guard work in front of a built-in scripted model."),
    "score": ("guard.classifier.cli", "Score JSON lines (text or messages) with the classifier."),
    "settings": ("guard.settings_cli", "Check a settings file, or print the settings reference."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
