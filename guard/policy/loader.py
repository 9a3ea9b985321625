"""Read a policy directory into an immutable :class:`PolicySet`, or say exactly what is wrong.

Every problem is reported with the file and line it comes from: YAML is composed into
nodes first so each pydantic error location (``refusals.2``) maps back to the line the
operator has to edit.  Checks that span files (a file per hazard category, context
rules naming contexts the global file defines) are reported the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from guard.decisions import Mode
from guard.errors import PolicyError
from guard.policy.models import CategoryPolicy, GlobalPolicy
from guard.scoring import HAZARDS

GLOBAL_FILE = "global.yaml"
Location = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One lint finding, pointing at a file and line."""

    file: Path
    line: int
    field: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy of a deployment, validated, with context rules already applied.

    Immutable: a reload builds a new set and swaps the reference, so a request decided
    with one set never sees half of another.
    """

    general: GlobalPolicy
    categories: Mapping[str, CategoryPolicy]
    version: str  # content hash of the files, for logs and the guard_policy metric
    source: Path | None = None
    mode_override: Mode | None = None  # `guard serve --mode`: beats every file

    @property
    def mode(self) -> Mode:
        return self.mode_override or Mode(self.general.mode)

    def mode_for(self, category: str | None) -> Mode:
        """Mode for decisions in ``category``: command line, then category, then global."""
        if self.mode_override is not None:
            return self.mode_override
        policy = self.categories.get(category) if category else None
        if policy is not None and policy.mode is not None:
            return Mode(policy.mode)
        return Mode(self.general.mode)

    @property
    def shadow(self) -> bool:
        """True when no decision can alter traffic: every category is in observe mode."""
        return all(self.mode_for(category) is Mode.OBSERVE for category in (None, *self.categories))

    def with_mode(self, mode: Mode | None) -> PolicySet:
        return replace(self, mode_override=mode)


@dataclass(slots=True)
class _Document:
    path: Path
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)

    def line(self, loc: Location) -> int:
        """Line of the deepest node on ``loc`` that exists in the file (1-based)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1


def _index(node: yaml.Node, loc: Location, doc: _Document, issues: list[PolicyIssue]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*loc, key)
            if key in seen:
                issues.append(
                    PolicyIssue(
                        doc.path, key_node.start_mark.line + 1, _dotted(child),
                        "key appears twice; YAML would silently keep only the last one",
                    )
                )  # fmt: skip
            seen.add(key)
            doc.lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, doc, issues)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            doc.lines[(*loc, position)] = item.start_mark.line + 1
            _index(item, (*loc, position), doc, issues)


def _dotted(loc: Location) -> str:
    return ".".join(str(part) for part in loc) or "<top level>"


def _read(path: Path, issues: list[PolicyIssue]) -> _Document | None:
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        issues.append(PolicyIssue(path, 1, "<file>", f"cannot read: {exc.strerror}"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        issues.append(PolicyIssue(path, line, "<yaml>", f"not valid YAML: {exc.problem}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(PolicyIssue(path, 1, "<yaml>", f"not valid YAML: {exc}"))
        return None
    doc = _Document(path, data if data is not None else {})
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        _index(node, (), doc, issues)
    if not isinstance(doc.data, dict):
        issues.append(PolicyIssue(path, 1, "<top level>", "must be a mapping of keys to values"))
        return None
    return doc


def _validate(model: type[M], doc: _Document, issues: list[PolicyIssue]) -> M | None:
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            issues.append(PolicyIssue(doc.path, doc.line(loc), _dotted(loc), message))
        return None


def _version(documents: list[_Document]) -> str:
    digest = hashlib.sha256()
    for doc in sorted(documents, key=lambda d: d.path.name):
        digest.update(doc.path.name.encode())
        digest.update(doc.path.read_bytes())
    return digest.hexdigest()[:12]


def inspect_policies(directory: Path) -> tuple[PolicySet | None, list[PolicyIssue]]:
    """Validate every file in ``directory``; the set is None when any error was found."""
    issues: list[PolicyIssue] = []
    if not directory.is_dir():
        return None, [PolicyIssue(directory, 1, "<dir>", "not a directory")]
    documents: list[_Document] = []
    general_doc = _read(directory / GLOBAL_FILE, issues)
    general = _validate(GlobalPolicy, general_doc, issues) if general_doc else None
    known_contexts: dict[str, object] | None = None
    if general_doc:
        documents.append(general_doc)
        raw_contexts = general_doc.data.get("contexts", {})
        known_contexts = raw_contexts if isinstance(raw_contexts, dict) else None
    categories: dict[str, CategoryPolicy] = {}
    for path in sorted(directory.glob("*.yaml")):
        if path.name == GLOBAL_FILE:
            continue
        if path.stem not in HAZARDS:
            issues.append(
                PolicyIssue(path, 1, "<file>", f"{path.stem!r} is not a hazard category; "
                            f"known: {', '.join(HAZARDS)}")
            )  # fmt: skip
            continue
        doc = _read(path, issues)
        policy = _validate(CategoryPolicy, doc, issues) if doc else None
        if doc is None or policy is None:
            continue
        documents.append(doc)
        if policy.category != path.stem:
            issues.append(
                PolicyIssue(path, doc.line(("category",)), "category",
                            f"file {path.name} must describe category {path.stem!r}")
            )  # fmt: skip
        for name in policy.contexts:
            if known_contexts is not None and name not in known_contexts:
                issues.append(
                    PolicyIssue(path, doc.line(("contexts", name)), f"contexts.{name}",
                                f"context {name!r} is not defined in {GLOBAL_FILE} contexts:")
                )  # fmt: skip
        categories[policy.category] = policy
    for hazard in HAZARDS:
        if hazard not in categories and not any(i.file.stem == hazard for i in issues):
            issues.append(
                PolicyIssue(directory / f"{hazard}.yaml", 1, "<file>",
                            "missing: every hazard category needs a policy file")
            )  # fmt: skip
    if general and general_doc:
        for position, name in enumerate(general.deployment):
            if not any(name in policy.contexts for policy in categories.values()):
                issues.append(
                    PolicyIssue(general_doc.path, general_doc.line(("deployment", position)),
                                f"deployment.{position}",
                                f"context {name!r} is declared but no category reacts to it",
                                "warning")
                )  # fmt: skip
    if general is None or any(issue.severity == "error" for issue in issues):
        return None, issues
    effective = {name: policy.under(general.deployment) for name, policy in categories.items()}
    return PolicySet(general, effective, _version(documents), directory), issues


def load_policies(directory: Path, *, mode: Mode | None = None) -> PolicySet:
    """Load and validate ``directory``; raises :class:`PolicyError` listing every error."""
    policies, issues = inspect_policies(directory)
    if policies is None:
        errors = [str(issue) for issue in issues if issue.severity == "error"]
        raise PolicyError("invalid policy:\n  " + "\n  ".join(errors))
    return policies.with_mode(mode)
