"""Every score kind the configuration can name is chosen through one registry; an unknown kind is a clear error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

import pandas as pd
import pytest
import yaml

from core.errors import InputError
from scoring.backtest import backtest
from scoring.kinds.classifier import Classifier
from scoring.kinds.cluster import Cluster
from scoring.kinds.ltv import Ltv
from scoring.models import TrainedModel, predict, train
from scoring.registry import KINDS, kind_for
from scoring.specs import ScoreKind, ScoreSpec

ROOT = Path(__file__).resolve().parents[1]


def example_kinds() -> set[str]:
    """The kinds config.example.yaml configures (read as plain YAML: this is about the scoring side)."""
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    return {score["kind"] for tenant in doc["tenants"] for score in tenant.get("scores", [])}


def test_every_kind_a_spec_can_name_is_registered_and_nothing_else():
    assert set(KINDS) == set(get_args(ScoreKind))


@pytest.mark.parametrize("name", sorted({*get_args(ScoreKind), *example_kinds()}))
def test_every_configured_kind_resolves_to_an_implementation(name):
    kind = kind_for(name)
    assert kind is KINDS[name]
    for method in ("train", "predict", "backtest"):
        assert callable(getattr(kind, method))
    assert isinstance(kind.uses_properties, bool)


def test_each_kind_name_maps_to_its_own_implementation():
    assert kind_for("propensity") == Classifier(churn=False)
    assert kind_for("churn") == Classifier(churn=True)
    assert isinstance(kind_for("ltv"), Ltv)
    assert isinstance(kind_for("cluster"), Cluster)
    assert not kind_for("cluster").uses_properties  # clusters are cut from behaviour alone


def test_an_unknown_kind_is_an_input_error_naming_it_and_the_known_ones():
    with pytest.raises(InputError) as exc:
        kind_for("uplift", score="next_best")
    message = str(exc.value)
    assert "score next_best" in message and "'uplift'" in message
    assert "known kinds: churn, cluster, ltv, propensity" in message


@pytest.mark.parametrize("bad", ["", "Propensity", None])
def test_odd_kind_values_are_input_errors_too(bad):
    with pytest.raises(InputError, match="unknown score kind"):
        kind_for(bad)  # type: ignore[arg-type]


def test_train_predict_and_backtest_refuse_an_unknown_kind_before_any_work():
    spec = ScoreSpec("next_best", "uplift")  # type: ignore[arg-type] - what an unchecked caller could pass
    contacts = pd.DataFrame({"contact_id": ["a"]})
    with pytest.raises(InputError, match="score next_best: unknown score kind 'uplift'"):
        train(spec, contacts, None)
    with pytest.raises(InputError, match="score next_best: unknown score kind 'uplift'"):
        backtest(spec, contacts, None)
    # A model whose spec names a kind this version does not know (say, pickled by a newer one).
    model = TrainedModel(spec, pd.Timestamp("2025-01-01", tz="UTC"), datetime.now(UTC), None, None, [])
    with pytest.raises(InputError, match="score next_best: unknown score kind 'uplift'"):
        predict(model, contacts, None)
