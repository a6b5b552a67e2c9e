"""Models on disk: ``model.pkl`` (the fitted objects, joblib format) + ``metadata.json`` (what a human reads).

Runs reuse a saved model; retraining is an explicit call. A pickle from another scikit-learn
version is refused rather than trusted, because sklearn does not promise compatibility.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

import joblib
import sklearn

from core.errors import InputError
from scoring.base import TrainedModel

MODEL_FILE = "model.pkl"  # the name sync.scorer looks for
META_FILE = "metadata.json"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: TrainedModel, directory: str | Path) -> Path:
    """Write the model and its JSON metadata into ``directory`` (created if missing); return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".model.")
    os.close(fd)
    try:
        joblib.dump(model, tmp)
        os.replace(tmp, directory / MODEL_FILE)
    finally:
        Path(tmp).unlink(missing_ok=True)
    meta = json.dumps(model.metadata(), indent=2, sort_keys=True, default=str)
    _atomic_write(directory / META_FILE, meta.encode())
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of a saved model, without unpickling anything."""
    path = Path(directory) / META_FILE
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta
    except FileNotFoundError:
        raise InputError(f"{path}: no saved model here (train one first)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: metadata is not valid JSON ({exc})") from None


def load_model(directory: str | Path) -> TrainedModel:
    """Load a model saved by :func:`save_model`; refuse one pickled by another scikit-learn version."""
    meta = read_metadata(directory)
    if meta.get("sklearn_version") != sklearn.__version__:
        raise InputError(f"{Path(directory) / META_FILE}: model was trained with scikit-learn "
                         f"{meta.get('sklearn_version')}, this is {sklearn.__version__}; retrain it")
    path = Path(directory) / MODEL_FILE
    if not path.exists():
        raise InputError(f"{path}: model file missing next to its metadata; retrain it")
    try:
        model = joblib.load(path)
    except (ImportError, AttributeError) as exc:
        # A pickle names the classes it holds by module path; one from before a module moved cannot be read.
        raise InputError(f"{path}: saved by another version of segsync ({exc}); retrain it") from None
    except (EOFError, pickle.UnpicklingError, ValueError, struct.error) as exc:  # truncated or not a pickle
        raise InputError(f"{path}: not a readable model file ({exc or type(exc).__name__}); retrain it") from None
    if not isinstance(model, TrainedModel):
        raise InputError(f"{path}: not a segsync model")
    return model
