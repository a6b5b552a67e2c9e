"""One module per score kind, each implementing :class:`scoring.base.Kind` (train / predict / backtest).

- :mod:`scoring.kinds.classifier` - propensity and churn (calibrated gradient boosting);
- :mod:`scoring.kinds.ltv` - lifetime value (BG/NBD + Gamma-Gamma vs a learned regressor);
- :mod:`scoring.kinds.cluster` - behavioural clusters with readable names.

Kinds import only the shared layer below them (:mod:`scoring.base`, features, evaluation), never
each other; :mod:`scoring.registry` is the one place that maps a kind name to its implementation.
This package imports nothing itself, so importing one kind never loads the others.
"""
