"""The one place a score kind name is mapped to its implementation.

Everything that trains, applies or evaluates a score asks :func:`kind_for` instead of branching
on ``spec.kind``; adding a kind means one module in :mod:`scoring.kinds` and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from core.errors import InputError
from scoring.base import Kind
from scoring.kinds.classifier import Classifier
from scoring.kinds.cluster import Cluster
from scoring.kinds.ltv import Ltv

KINDS: Mapping[str, Kind] = MappingProxyType({
    "propensity": Classifier(churn=False),
    "churn": Classifier(churn=True),
    "ltv": Ltv(),
    "cluster": Cluster(),
})


def kind_for(name: str, *, score: str | None = None) -> Kind:
    """The implementation of kind ``name``; an unknown name is an :class:`InputError` listing the known ones."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        where = f"score {score}: " if score else ""
        raise InputError(f"{where}unknown score kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None
