"""Predictive scoring, run locally: point-in-time features, models, segments with a holdout, backtests.

Entry points (plain pandas frames in, plain data out; see each module):

- :mod:`scoring.features` ``build_features(contacts, events, cutoff, spec)`` - no leakage past ``cutoff``
- :mod:`scoring.models` ``train(spec, contacts, events, as_of=)`` -> ``TrainedModel | InsufficientData``;
  ``predict(model, contacts, events, as_of=)`` -> Series by contact id; ``default_as_of(events)``
- :mod:`scoring.persist` ``save_model(model, dir)`` / ``load_model(dir)``
- :mod:`scoring.segments` ``assign_segments(...)``, ``holdout(tenant, contact, pct)``, ``lift_report(...)``
- :mod:`scoring.report` ``run_backtest(contacts, events, spec, cutoff=None)`` -> model card dict;
  ``render_backtest(card)`` -> markdown; ``write_model_card(card, dir)``
"""
