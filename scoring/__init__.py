"""Predictive scoring, run locally: point-in-time features, models, segments with a holdout, backtests.

Entry points (plain pandas frames in, plain data out; see each module):

- :mod:`scoring.features` ``build_features(contacts, events, cutoff, spec)`` - no leakage past ``cutoff``
- :mod:`scoring.models` ``train(spec, contacts, events, as_of=)`` -> ``TrainedModel | InsufficientData``;
  ``predict(model, contacts, events, as_of=)`` -> Series by contact id; ``default_as_of(events)``
- :mod:`scoring.backtest` ``backtest(spec, contacts, events, cutoff=None)`` -> ``BacktestReport``
- :mod:`scoring.card` ``model_card(report, model=None)`` -> JSON-ready dict; ``render_model_card(card)`` -> markdown
- :mod:`scoring.persist` ``save_model(model, dir)`` / ``load_model(dir)``
- :mod:`scoring.segments` ``assign_segments(...)``, ``holdout(tenant, contact, pct)``, ``lift_report(...)``
- :mod:`scoring.gate` ``gate(report)`` -> ``GateVerdict``: the one test every score passes before it cuts
  a pushed segment (gain over the baseline with a DeLong interval, no leakage, enough data, stable clusters)
- :mod:`scoring.fairness` ``segment_fairness(...)``, ``breaches(...)``, ``proxy_screen(...)`` - pushed segments
- :mod:`scoring.lift` ``segment_lift(spells, events, segment, outcome, now)`` - lift from membership history

Layout, bottom up (each layer imports only those below it; ``tests/test_scoring_layout.py`` checks):

- ``specs``, ``threads`` - plain records and the thread budget; ``features``, ``evaluation``, ``bgnbd``
  - point-in-time features, metrics, the BG/NBD + Gamma-Gamma maths;
- ``base`` - shared types (TrainedModel, InsufficientData, Encoder, BacktestReport, importance) and
  the ``Kind`` interface;
- ``kinds/classifier`` (propensity, churn), ``kinds/ltv``, ``kinds/cluster`` - one kind each:
  train / predict / backtest;
- ``registry`` - kind name -> implementation, the only place kinds are chosen;
- ``gate``, ``fairness`` (over ``base``/``evaluation``), ``lift`` (over ``segments``);
- ``models``, ``backtest``, ``card``, ``persist``, ``segments`` - what callers use.
"""
