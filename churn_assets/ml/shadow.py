"""Shadow comparison: how the challenger answers the requests the champion answers.

While the registry's ``challenger`` alias differs from the ``champion``, the online scorer
scores every request with both models and logs both results (``scoring.online_predictions``,
see :mod:`churn_assets.tables.online_predictions`). Before anyone promotes the challenger, the
question is how differently it would have served *live traffic*: how often the two put a
customer in the same risk band, how far their probabilities are apart, and whether they
rank customers alike. This module answers it per (champion, challenger) pair, from rows
already oriented as champion and challenger (:func:`compare_shadow`, on the frame
:meth:`churn_assets.tables.warehouse.Warehouse.read_shadow_results` reads) or from the same
rows aggregated per pair by the warehouse (:func:`pairs_from_groups`, on
:meth:`~churn_assets.tables.warehouse.Warehouse.read_shadow_groups`: what ``churn status`` and
the ``shadow_comparison`` asset read, one scan of the log instead of every row in Python).
Both give the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from churn_assets.tables.online_predictions import SHADOW_COLUMNS, ShadowGroup

_PAIR = ["champion_version", "challenger_version"]
NO_SHADOW_YET = (
    "no shadow results yet: the scorer shadows only when the challenger alias differs "
    "from the champion"
)


@dataclass(frozen=True)
class ShadowPair:
    """The comparison of one champion version with one challenger version on live traffic.

    Attributes:
        champion_version: The registered version holding the ``champion`` alias.
        challenger_version: The registered version holding the ``challenger`` alias.
        rows: Logged predictions that carry both models' results.
        band_agreement: Share of those rows where both models gave the same risk band.
        mean_abs_diff: Mean absolute difference of the two churn probabilities.
        rank_correlation: Spearman correlation of the two probabilities (ties get their
            average rank); None when it is undefined: with fewer than 2 rows there is no
            ranking, and when one side gave every row the same probability its ranks have
            no variance (the correlation divides by it).
        first_scored_at: The earliest of those predictions.
        last_scored_at: The latest of those predictions.
    """

    champion_version: str
    challenger_version: str
    rows: int
    band_agreement: float
    mean_abs_diff: float
    rank_correlation: float | None
    first_scored_at: datetime
    last_scored_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ISO 8601 strings."""
        return {
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "rows": self.rows,
            "band_agreement": self.band_agreement,
            "mean_abs_diff": self.mean_abs_diff,
            "rank_correlation": self.rank_correlation,
            "first_scored_at": self.first_scored_at.isoformat(),
            "last_scored_at": self.last_scored_at.isoformat(),
        }


def _version_key(version: str) -> tuple[int, int, str]:
    # Registry versions are numbers in strings: "10" sorts after "9", not before "2".
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def compare_shadow(shadow: pd.DataFrame) -> list[ShadowPair]:
    """One :class:`ShadowPair` per (champion_version, challenger_version) in ``shadow``.

    ``shadow`` has one row per logged prediction with both results, in the columns of
    :data:`SHADOW_COLUMNS`. The pairs are sorted by their last prediction, then by the two
    versions, so the newest pair comes last and equal inputs give equal outputs.
    """
    missing = [column for column in SHADOW_COLUMNS if column not in shadow.columns]
    if missing:
        raise ValueError(f"shadow frame is missing column(s): {', '.join(missing)}")
    frame = shadow.assign(
        champion_version=shadow["champion_version"].astype(str),
        challenger_version=shadow["challenger_version"].astype(str),
        scored_at=pd.to_datetime(shadow["scored_at"], utc=True),
    )
    return _sorted(
        _pair(str(champion), str(challenger), group)
        for (champion, challenger), group in frame.groupby(_PAIR, sort=False)
    )


def pairs_from_groups(groups: Iterable[ShadowGroup]) -> list[ShadowPair]:
    """:func:`compare_shadow` of the rows behind ``groups`` (one per pair, aggregated by
    :meth:`~churn_assets.tables.warehouse.Warehouse.read_shadow_groups`): the same pairs, in the
    same order."""
    return _sorted(
        _judged(
            group.champion_version,
            group.challenger_version,
            group.champion_probability,
            group.challenger_probability,
            group.same_band,
            group.first_scored_at,
            group.last_scored_at,
        )
        for group in groups
    )


def _sorted(pairs: Iterable[ShadowPair]) -> list[ShadowPair]:
    return sorted(
        pairs,
        key=lambda p: (
            p.last_scored_at,
            _version_key(p.champion_version),
            _version_key(p.challenger_version),
        ),
    )


def describe(pairs: Sequence[ShadowPair]) -> str:
    """The newest pair in one line (or why there is none), for logs and ``churn status``."""
    if not pairs:
        return NO_SHADOW_YET
    newest = pairs[-1]
    spearman = (
        f"{newest.rank_correlation:.3f}"
        if newest.rank_correlation is not None
        else "undefined (under 2 requests or one side constant)"
    )
    return (
        f"challenger v{newest.challenger_version} against champion v{newest.champion_version} "
        f"on {newest.rows:,} request(s): same risk band on {newest.band_agreement:.1%}, mean "
        f"|probability difference| {newest.mean_abs_diff:.4f}, Spearman {spearman}"
    )


def _pair(champion: str, challenger: str, group: pd.DataFrame) -> ShadowPair:
    same_band = group["champion_band"].to_numpy() == group["challenger_band"].to_numpy()
    return _judged(
        champion,
        challenger,
        group["champion_probability"].to_numpy(dtype=np.float64),
        group["challenger_probability"].to_numpy(dtype=np.float64),
        int(same_band.sum()),
        group["scored_at"].min().to_pydatetime(),
        group["scored_at"].max().to_pydatetime(),
    )


def _judged(
    champion: str,
    challenger: str,
    champion_p: npt.NDArray[np.float64],
    challenger_p: npt.NDArray[np.float64],
    same_band: int,
    first_scored_at: datetime,
    last_scored_at: datetime,
) -> ShadowPair:
    """The one place a pair's numbers are worked out, whichever way its rows were read."""
    rows = len(champion_p)
    return ShadowPair(
        champion_version=champion,
        challenger_version=challenger,
        rows=rows,
        band_agreement=same_band / rows,
        mean_abs_diff=float(np.abs(champion_p - challenger_p).mean()),
        rank_correlation=spearman(champion_p, challenger_p),
        first_scored_at=first_scored_at,
        last_scored_at=last_scored_at,
    )


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float | None:
    """Spearman's rank correlation: Pearson's on the ranks, ties sharing their average rank.

    None when undefined: fewer than 2 values, a missing (NaN) value, or a side whose values
    are all equal (its ranks do not vary, and the correlation divides by their spread).
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size < 2 or np.isnan(xs).any() or np.isnan(ys).any():
        return None
    # Average ranks always average (n + 1) / 2: centre them on it.
    rx = average_ranks(xs) - (xs.size + 1) / 2
    ry = average_ranks(ys) - (ys.size + 1) / 2
    spread = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    if spread == 0.0:
        return None
    return float((rx * ry).sum() / spread)


def average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the average of their ranks (pandas'
    ``rank(method="average")``, twice as fast at a million values: one argsort). No NaN."""
    order = np.argsort(values)
    ordered = values[order]
    starts_tie = np.empty(ordered.size, dtype=bool)
    starts_tie[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts_tie[1:])
    starts = np.flatnonzero(starts_tie)
    ends = np.append(starts[1:], ordered.size)  # exclusive
    ranks = np.empty(ordered.size, dtype=np.float64)
    # A tie over sorted positions start..end-1 holds ranks start+1..end: their mean.
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks
