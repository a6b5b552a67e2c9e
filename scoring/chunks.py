"""Scoring a big book in slices: a model is applied to a bounded number of rows at a time.

The encoded matrix is float64 (what scikit-learn's histogram boosting validates its input to), and
a calibrated ensemble holds several copies of intermediate arrays per call: applied to 1,000,000
rows at once that is gigabytes. In slices of :data:`SCORE_ROWS` the peak stays a few hundred MB,
whatever the book's size, and every contact is still scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

SCORE_ROWS = 100_000


def apply_in_slices(
    features: pd.DataFrame, encode: Callable[[pd.DataFrame], np.ndarray], apply: Callable[[np.ndarray], Any],
    rows: int = SCORE_ROWS,
) -> np.ndarray:
    """``apply(encode(slice))`` over consecutive slices of ``features``, concatenated (row order kept)."""
    if len(features) <= rows:
        return np.asarray(apply(encode(features)))
    parts = [np.asarray(apply(encode(features.iloc[start:start + rows])))
             for start in range(0, len(features), rows)]
    return np.concatenate(parts)


__all__ = ["SCORE_ROWS", "apply_in_slices"]
