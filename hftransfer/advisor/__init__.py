"""The transfer advisor: rank encoders and layers for a task, choose what to train.

``rank`` (and ``hftransfer rank``) scores every encoder x layer with transferability estimators
(:mod:`~hftransfer.advisor.estimators`); ``strategy.feature_layer=auto`` (:mod:`~hftransfer.advisor.auto_layer`) and
``strategy.name=auto`` (:mod:`~hftransfer.advisor.policy`) use them inside a run. Importing this package stays light:
the encoders and torch load only when something is ranked.
"""

from __future__ import annotations

from typing import Any

__all__ = ["rank"]


def rank(*args: Any, **kwargs: Any) -> Any:
    """See :func:`hftransfer.advisor.ranking.rank`."""
    from hftransfer.advisor.ranking import rank as _rank

    return _rank(*args, **kwargs)
