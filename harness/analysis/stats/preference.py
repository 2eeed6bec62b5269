"""Pairwise judgments: win rates and Bradley–Terry strengths, with cluster-bootstrap intervals.

    rate, lo, hi = win_rate(["win", "tie", "loss"], [1, 2, 3])           # ties count half
    table = bradley_terry(model_a, model_b, verdicts, clusters)          # log-strengths with intervals
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.analysis.stats.bootstrap import _cluster_index, _weight_blocks, mean_interval

if TYPE_CHECKING:
    import pandas as pd

_WIN_WORDS = {"win": 1.0, "tie": 0.5, "loss": 0.0}
_VERDICT_WORDS = {"a": 1.0, "tie": 0.5, "b": 0.0}  # harness.judges.parse.Verdict, from A's side


def _outcome_values(outcomes, words: dict[str, float], name: str) -> np.ndarray:
    """Outcomes as 1 / 0.5 / 0 floats; words (case-insensitive) are mapped, anything else refused."""
    a = np.asarray(outcomes).reshape(-1)
    allowed = ", ".join(repr(w) for w in words) + " or 1, 0.5, 0"
    if a.dtype.kind in "USO":
        try:
            a = np.array([words[x.lower()] if isinstance(x, str) else np.nan if x is None else float(x)
                          for x in a.tolist()], dtype=np.float64)
        except KeyError as e:
            raise ValueError(f"{name}: unknown outcome {e.args[0]!r}; use {allowed}") from None
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: outcomes must not be missing (drop missing judgments first and count them)")
    bad = ~np.isin(a, (0.0, 0.5, 1.0))
    if bad.any():
        raise ValueError(f"{name}: outcome {a[bad][0]:g} is not one of {allowed}")
    return a


def win_rate(outcomes, clusters, level: float = 0.95, n_boot: int = 10_000,
             seed: int = 0) -> tuple[float, float, float]:
    """(rate, low, high): the candidate's win rate over pairwise judgments, ties counting half."""
    return mean_interval(_outcome_values(outcomes, _WIN_WORDS, "win_rate"), clusters, level, n_boot, seed)


def _bt_loglik(theta: np.ndarray, wins: np.ndarray) -> np.ndarray:
    """[B] Σ_ij wins_ij · log P(i beats j) with P = 1/(1 + exp(θj − θi))."""
    return -(wins * np.logaddexp(0.0, theta[:, None, :] - theta[:, :, None])).sum((1, 2))


def _bt_fit(wins: np.ndarray, max_iter: int = 200, tol: float = 1e-10) -> np.ndarray:
    """[B, M] centred maximum-likelihood log-strengths for B win matrices [B, M, M] (wins[b, i, j]: i over j)."""
    bsz, m = wins.shape[:2]
    games = wins + wins.transpose(0, 2, 1)
    theta = np.zeros((bsz, m))
    ll = _bt_loglik(theta, wins)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[:, None, :] - theta[:, :, None]))  # [B, M, M] P(i beats j)
        grad = wins.sum(2) - (games * p).sum(2)  # [B, M]
        h = games * p * (1.0 - p)
        lap = -h  # minus the Hessian: a weighted graph Laplacian
        lap[:, np.arange(m), np.arange(m)] = h.sum(2)
        # Strengths are defined up to a constant: + 1/m in every cell fixes the step to sum 0.
        step = np.linalg.solve(lap + 1.0 / m, grad[..., None])[..., 0]
        for _ in range(40):  # halve where the likelihood fell: plain Newton overshoots near-certain wins
            new = theta + step
            new_ll = _bt_loglik(new, wins)
            worse = new_ll < ll - 1e-12 * np.abs(ll)
            if not worse.any():
                break
            step[worse] /= 2
        theta, ll = new - new.mean(1, keepdims=True), new_ll
        if np.abs(step).max() < tol:
            return theta
    raise ValueError(f"bradley_terry: the fit did not converge in {max_iter} Newton steps")


def _win_matrices(pair_wins: np.ndarray, pair_games: np.ndarray, pi, pj, m: int, prior: float) -> np.ndarray:
    """[B, M, M] wins from per-pair sums [B, P] of the lower-indexed model's wins, plus the virtual ties."""
    w = np.full((len(pair_wins), m, m), prior / 2)
    w[:, np.arange(m), np.arange(m)] = 0.0
    w[:, pi, pj] += pair_wins
    w[:, pj, pi] += pair_games - pair_wins
    return w


def bradley_terry(model_a, model_b, outcome, clusters=None, level: float = 0.95, n_boot: int = 1000,
                  seed: int = 0, anchor: str | None = None, prior: float = 1.0) -> pd.DataFrame:
    """Bradley–Terry log-strengths with cluster-bootstrap intervals: a DataFrame (strength, low, high, games).

    P(i beats j) = 1 / (1 + exp(θj − θi)); θ is centred to mean 0, or the `anchor` model is fixed at
    0 (its interval is then 0 to 0). outcome: 1 / 'A' = A won, 0 / 'B' = B won, 0.5 / 'tie' = half
    a win each. `prior` adds that many virtual ties between every two models, so a model that never
    lost (or never won) gets a finite strength. It shrinks differences by a fraction of roughly
    prior/(comparisons per pair): strengths move by 0.007 for 5 models and 1,000 comparisons, by 0.1
    with 200 (pass a smaller prior to shrink less). clusters (default: each comparison its own) are resampled
    together. Rows are sorted by strength, strongest first; `games` counts real comparisons.
    """
    import pandas as pd  # only this function needs it

    y = _outcome_values(outcome, _VERDICT_WORDS, "bradley_terry")
    a, b = np.asarray(model_a).reshape(-1), np.asarray(model_b).reshape(-1)
    n = len(y)
    if not len(a) == len(b) == n:
        raise ValueError(f"bradley_terry: {len(a)} model_a, {len(b)} model_b and {n} outcomes; they must align")
    if np.any(a == b):
        raise ValueError(f"bradley_terry: model {a[a == b][0]!r} is compared with itself")
    if not prior > 0:
        raise ValueError(f"bradley_terry: prior must be > 0 virtual ties per pair, got {prior}")
    names, idx = np.unique(np.concatenate([a, b]), return_inverse=True)
    m = len(names)
    if anchor is not None and anchor not in names:
        raise ValueError(f"bradley_terry: anchor {anchor!r} is not among the models {names.tolist()}")
    ia, ib = idx[:n], idx[n:]
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    pairs, p_inv = np.unique(lo * m + hi, return_inverse=True)
    inv, g = _cluster_index(np.arange(n) if clusters is None else clusters)
    if len(inv) != n:
        raise ValueError(f"bradley_terry: {n} outcomes but {len(inv)} cluster ids")
    key = inv * len(pairs) + p_inv.reshape(-1)  # per (cluster, pair) sums: [g, P]
    wins = np.bincount(key, weights=np.where(ia == lo, y, 1.0 - y), minlength=g * len(pairs)).reshape(g, -1)
    games = np.bincount(key, minlength=g * len(pairs)).reshape(g, -1).astype(np.float64)
    pi, pj = pairs // m, pairs % m

    def fit(pw: np.ndarray, pg: np.ndarray) -> np.ndarray:
        theta = _bt_fit(_win_matrices(pw, pg, pi, pj, m, prior))
        return theta if anchor is None else theta - theta[:, [int(np.searchsorted(names, anchor))]]

    point = fit(wins.sum(0)[None], games.sum(0)[None])[0]
    boots = np.concatenate([fit(w @ wins, w @ games) for w in _weight_blocks(g, n_boot, seed)])  # [n_boot, M]
    q = (1 - level) / 2
    table = pd.DataFrame({"strength": point, "low": np.quantile(boots, q, axis=0),
                          "high": np.quantile(boots, 1 - q, axis=0),
                          "games": np.bincount(np.concatenate([ia, ib]), minlength=m)},
                         index=pd.Index(names, name="model"))
    return table.sort_values("strength", ascending=False, kind="stable")
