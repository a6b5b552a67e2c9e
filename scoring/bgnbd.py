"""Lifetime value: BG/NBD (transaction counts) + Gamma-Gamma (spend per transaction), own code.

Both models are fitted by maximum likelihood with ``scipy.optimize`` on log-parameters, over
customers compressed to distinct (x, t_x, T) rows with weights, so a million customers cost a
few thousand likelihood terms. Time is measured in weeks inside the models (it keeps ``alpha``
near 1 and the optimiser well-conditioned); the public functions take and return days.

References: Fader, Hardie & Lee (2005) "Counting your customers the easy way" (BG/NBD);
Fader, Hardie & Lee (2005) "RFM and CLV" (Gamma-Gamma spend model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

from scoring.features import DAY_NS, times_ns, to_utc

WEEK_DAYS = 7.0


def rfm_summary(contact_ids: pd.Index, events: pd.DataFrame | None, cutoff: object,
                transaction_types: Sequence[str] = ("deposit",)) -> pd.DataFrame:
    """Per contact, from transactions before ``cutoff``: the BG/NBD inputs, in days.

    ``n`` transactions, ``x`` = repeat transactions (n - 1), ``t_x`` = days from first to last,
    ``T`` = days from first to cutoff, ``m`` = mean transaction value (NaN when none known).
    Contacts without a transaction get n = 0 and NaN times.
    """
    out = pd.DataFrame(index=contact_ids)
    cut = to_utc(cutoff).value
    n = np.zeros(len(contact_ids))
    first = np.full(len(contact_ids), np.inf)
    last = np.full(len(contact_ids), -np.inf)
    vsum = np.zeros(len(contact_ids))
    vcnt = np.zeros(len(contact_ids))
    if events is not None and len(events):
        t = times_ns(events["occurred_at"])
        m = (t < cut) & events["type"].astype(str).isin(list(transaction_types)).to_numpy()
        codes = contact_ids.get_indexer(pd.Index(events["contact_id"].astype(str).to_numpy()[m]))
        ok = codes >= 0
        codes, tt = codes[ok], t[m][ok].astype(np.float64)
        val = (pd.to_numeric(events["value"], errors="coerce").to_numpy(np.float64)[m][ok]
               if "value" in events.columns else np.full(len(codes), np.nan))
        n = np.bincount(codes, minlength=len(contact_ids)).astype(float)
        np.minimum.at(first, codes, tt)
        np.maximum.at(last, codes, tt)
        has = ~np.isnan(val)
        vsum = np.bincount(codes[has], weights=val[has], minlength=len(contact_ids)).astype(np.float64)
        vcnt = np.bincount(codes[has], minlength=len(contact_ids)).astype(float)
    buyer = n > 0
    out["n"] = n
    out["x"] = np.maximum(n - 1, 0)
    out["t_x"] = np.where(buyer, (last - first) / DAY_NS, np.nan)
    out["T"] = np.where(buyer, (cut - first) / DAY_NS, np.nan)
    out["m"] = np.divide(vsum, vcnt, out=np.full(len(n), np.nan), where=vcnt > 0)
    return out


@dataclass
class BgNbd:
    """Beta-geometric / negative binomial distribution model of repeat transactions."""

    r: float = 1.0
    alpha: float = 1.0
    a: float = 1.0
    b: float = 1.0
    converged: bool = False

    @staticmethod
    def _loglik(params: np.ndarray, x: np.ndarray, tx: np.ndarray, T: np.ndarray) -> np.ndarray:
        r, alpha, a, b = np.exp(params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b)  # = ln B(a, b+x) / B(a, b)
        a3 = -(r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore"):
            a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12)) - (r + x) * np.log(alpha + tx),
                          -np.inf)
        # B(a, b+x)/B(a, b) * [ (alpha+T)^-(r+x) + a/(b+x-1) (alpha+t_x)^-(r+x) ] times the gamma term;
        # the a/(b+x-1) factor uses B(a+1, b+x-1) = B(a, b+x) * a / (b+x-1).
        return np.asarray(a1 + a2 + np.logaddexp(a3, a4))

    def fit(self, x: np.ndarray, t_x_days: np.ndarray, T_days: np.ndarray) -> BgNbd:
        """Maximum-likelihood fit on repeat counts and ages (days) of customers with a first purchase."""
        frame = pd.DataFrame({"x": x, "tx": np.round(t_x_days / WEEK_DAYS, 2), "T": np.round(T_days / WEEK_DAYS, 2)})
        grouped = frame.groupby(["x", "tx", "T"], sort=False).size().reset_index(name="w")
        gx, gtx, gT, w = (grouped[c].to_numpy(float) for c in ("x", "tx", "T", "w"))

        def nll(p: np.ndarray) -> float:
            return -float(np.sum(w * self._loglik(p, gx, gtx, gT))) / float(w.sum())

        start = np.log([1.0, max(float(np.average(gT, weights=w)) / 4, 0.1), 1.0, 1.0])
        res = minimize(nll, start, method="L-BFGS-B", bounds=[(-8, 8)] * 4)
        self.r, self.alpha, self.a, self.b = (float(v) for v in np.exp(res.x))
        self.converged = bool(res.success)
        return self

    def expected(self, t_days: float, x: np.ndarray, t_x_days: np.ndarray, T_days: np.ndarray) -> np.ndarray:
        """Expected transactions in the next ``t_days`` given a customer's (x, t_x, T)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        t, tx, T = t_days / WEEK_DAYS, t_x_days / WEEK_DAYS, T_days / WEEK_DAYS
        term1 = (a + b + x - 1) / (a - 1)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        term2 = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        denom = 1 + (x > 0) * a / np.maximum(b + x - 1, 1e-12) * ((alpha + T) / (alpha + tx)) ** (r + x)
        out = term1 * term2 / denom
        return np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0)

    def params(self) -> dict[str, float]:
        """Fitted parameters (rates per week)."""
        return {"r": self.r, "alpha_weeks": self.alpha, "a": self.a, "b": self.b}


@dataclass
class GammaGamma:
    """Gamma-Gamma model of average transaction value, independent of frequency."""

    p: float = 1.0
    q: float = 2.0
    gamma: float = 1.0
    converged: bool = False

    def fit(self, n: np.ndarray, m: np.ndarray) -> GammaGamma:
        """Fit on customers with ``n`` >= 1 transactions of mean value ``m`` > 0."""
        ok = (n >= 1) & (m > 0) & np.isfinite(m)
        n, m = n[ok], m[ok]

        def nll(params: np.ndarray) -> float:
            p, q, g = np.exp(params)
            ll = (gammaln(p * n + q) - gammaln(p * n) - gammaln(q) + q * np.log(g) + (p * n - 1) * np.log(m)
                  + p * n * np.log(n) - (p * n + q) * np.log(g + n * m))
            return -float(np.mean(ll))

        scale = float(np.mean(m)) if len(m) else 1.0
        res = minimize(nll, np.log([2.0, 3.0, scale]), method="L-BFGS-B", bounds=[(-8, 10), (np.log(1.01), 10),
                                                                                 (-10, 20)])
        self.p, self.q, self.gamma = (float(v) for v in np.exp(res.x))
        self.converged = bool(res.success)
        return self

    def population_mean(self) -> float:
        """Expected value of a transaction by someone never seen buying."""
        return self.p * self.gamma / (self.q - 1)

    def expected_value(self, n: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Expected mean transaction value given ``n`` transactions of observed mean ``m``."""
        m = np.where(np.isfinite(m), m, 0.0)
        est = self.p * (self.gamma + n * m) / (self.p * n + self.q - 1)
        return np.where(n > 0, est, self.population_mean())

    def params(self) -> dict[str, float]:
        """Fitted parameters."""
        return {"p": self.p, "q": self.q, "gamma": self.gamma}


@dataclass
class ProbabilisticLtv:
    """BG/NBD + Gamma-Gamma over a horizon, with a base rate for contacts who never transacted."""

    bgnbd: BgNbd
    gg: GammaGamma
    horizon_days: int
    newcomer_rate: float = 0.0  # mean transactions in a horizon by people with none before it

    @classmethod
    def fit(cls, summary: pd.DataFrame, horizon_days: int, newcomer_rate: float = 0.0) -> ProbabilisticLtv:
        """Fit on an :func:`rfm_summary` frame."""
        buyers = summary[summary["n"] > 0]
        bg = BgNbd().fit(buyers["x"].to_numpy(float), buyers["t_x"].to_numpy(float), buyers["T"].to_numpy(float))
        gg = GammaGamma().fit(buyers["n"].to_numpy(float), buyers["m"].to_numpy(float))
        return cls(bg, gg, horizon_days, newcomer_rate)

    def predict(self, summary: pd.DataFrame) -> pd.DataFrame:
        """expected_transactions and expected_value over the horizon, per contact."""
        n = summary["n"].to_numpy(float)
        buyer = n > 0
        tx = np.full(len(n), self.newcomer_rate)
        if buyer.any():
            tx[buyer] = self.bgnbd.expected(float(self.horizon_days), summary["x"].to_numpy(float)[buyer],
                                            summary["t_x"].to_numpy(float)[buyer], summary["T"].to_numpy(float)[buyer])
        value = tx * self.gg.expected_value(n, summary["m"].to_numpy(float))
        return pd.DataFrame({"expected_transactions": tx, "expected_value": value}, index=summary.index)
