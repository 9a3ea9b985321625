"""``guard policy``: lint policy files, export their JSON Schema, print the gallery."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import structlog
from pydantic import BaseModel

from guard.policy.loader import inspect_policies
from guard.policy.models import CategoryPolicy, GlobalPolicy
from guard.settings import SHIPPED_POLICY_DIR

SCHEMAS: dict[str, type[BaseModel]] = {"global": GlobalPolicy, "category": CategoryPolicy}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="policy_command", required=True)
    check = actions.add_parser("check", help="Lint a policy directory; exit 1 on any error.")
    check.add_argument("dir", type=Path, nargs="?", default=SHIPPED_POLICY_DIR)
    schema = actions.add_parser("schema", help="Print the JSON Schema of a policy file kind.")
    schema.add_argument("kind", choices=sorted(SCHEMAS), help="global.yaml or a category file")
    gallery = actions.add_parser(
        "gallery", help="Print the README gallery: bare refusals in, the guard's refusals out."
    )
    gallery.add_argument("dir", type=Path, nargs="?", default=SHIPPED_POLICY_DIR)


def run(args: argparse.Namespace) -> int:
    if args.policy_command == "schema":
        schema = SCHEMAS[args.kind].model_json_schema()
        print(json.dumps(schema, indent=2, sort_keys=True))
        return 0
    if args.policy_command == "gallery":
        from guard.policy.gallery import render_gallery

        # The gallery goes to stdout as markdown; keep the engine's info logs out of it.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        print(asyncio.run(render_gallery(args.dir)), end="")
        return 0
    policies, issues = inspect_policies(args.dir)
    for issue in issues:
        print(issue, file=sys.stderr)
    if policies is None:
        errors = sum(issue.severity == "error" for issue in issues)
        print(f"{args.dir}: {errors} error(s); the guard will not start with this policy.",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"{args.dir}: ok ({len(policies.categories)} categories, version {policies.version}, "
          f"mode {policies.mode.value})")  # fmt: skip
    return 0
