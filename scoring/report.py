"""What the CLI calls: backtest one score into a model card, render it, write it to disk.

    card = run_backtest(contacts, events, spec, cutoff=None)   # JSON-ready dict (the model card)
    print(render_backtest(card))                               # markdown for people
    write_model_card(card, directory)                          # <score>.json + <score>.md

``contacts``/``events`` are the frames described in :mod:`scoring.features` (``sync.scorer.frames``
builds them from the store). An "insufficient data" result is a card whose ``verdict`` says so;
a cutoff too late to observe outcomes after it is an :class:`~connectors.errors.InputError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from scoring.backtest import backtest
from scoring.card import model_card, render_model_card
from scoring.models import MIN_NEGATIVES, MIN_POSITIVES, TrainedModel
from scoring.specs import ScoreSpec


def run_backtest(contacts_df: pd.DataFrame, events_df: pd.DataFrame | None, spec: ScoreSpec, cutoff: object = None,
                 *, model: TrainedModel | None = None, min_positives: int = MIN_POSITIVES,
                 min_negatives: int = MIN_NEGATIVES, seed: int = 0) -> dict[str, Any]:
    """Backtest ``spec`` and return its model card (metrics, naive baseline, importance, fairness, verdict).

    ``cutoff`` (date or datetime, UTC if naive): the evaluation cutoff for event outcomes (default:
    one window before the last event) or the feature date for labelled-property outcomes.
    ``model``, when given, adds its training metadata to the card.
    """
    report = backtest(spec, contacts_df, events_df, cutoff=cutoff, min_positives=min_positives,
                      min_negatives=min_negatives, seed=seed)
    return model_card(report, model)


def render_backtest(card: dict[str, Any]) -> str:
    """Markdown of a card from :func:`run_backtest`."""
    return render_model_card(card)


def summary_line(card: dict[str, Any]) -> str:
    """One line per score for a run summary: the headline metric next to the baseline's."""
    verdict = card.get("verdict") or {}
    if verdict.get("verdict") == "insufficient_data":
        return f"{card['score']}: insufficient data ({verdict.get('reason')})"
    model, base = card.get("model") or {}, card.get("baseline") or {}
    if card["kind"] in ("propensity", "churn"):
        return (f"{card['score']}: ROC AUC {model.get('roc_auc')} (baseline {base.get('roc_auc')}), top-decile lift "
                f"{model.get('lift_top_decile')} (baseline {base.get('lift_top_decile')})")
    if card["kind"] == "ltv":
        return (f"{card['score']}: value RMSE {model.get('rmse_value')} with {model.get('winner')} "
                f"(baseline {base.get('rmse_value')})")
    return f"{card['score']}: {len(model.get('clusters', []))} clusters"


def write_model_card(card: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write ``<score>.json`` and ``<score>.md`` into ``directory`` (each atomically); return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / f"{card['score']}.json", directory / f"{card['score']}.md")
    texts = (json.dumps(card, indent=2, sort_keys=True, default=str), render_model_card(card))
    for path, text in zip(paths, texts):
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return paths
