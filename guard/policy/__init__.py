"""Policies: what the guard decides and how it says it.

Files in ``policies/`` are validated into an immutable :class:`PolicySet`
(:mod:`guard.policy.loader`), served live by :class:`PolicyProvider`, and voiced by
:mod:`guard.policy.voice`.
"""

from guard.policy.loader import PolicyIssue, PolicySet, inspect_policies, load_policies
from guard.policy.models import CategoryPolicy, GlobalPolicy
from guard.policy.provider import PolicyProvider

__all__ = [
    "CategoryPolicy",
    "GlobalPolicy",
    "PolicyIssue",
    "PolicyProvider",
    "PolicySet",
    "inspect_policies",
    "load_policies",
]
