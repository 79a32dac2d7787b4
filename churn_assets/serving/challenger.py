"""The challenger in the scorer: shadow scoring and the canary.

When the registry's ``challenger`` alias names a version other than the champion, the
scorer holds both (the challenger is loaded and verified like the champion, by a second
:class:`~churn_assets.serving.model_store.ChampionHolder` that follows the other alias) and:

- **shadow**: every ``/predict`` is also scored by the other model, off the request path.
  The request only attaches a
  :class:`~churn_assets.serving.prediction_log.ShadowJob` (the second model, read once, and
  the input row the first model scored) to its log row; the log's writer thread scores each
  batch with :class:`ShadowScorer` (one onnxruntime call per model) before writing it.
  The response is exactly what the serving model alone would answer.
- **canary**: ``CHURN_CANARY_PERCENT`` of customers are served by the challenger, chosen
  by a hash of the customer id (:func:`in_canary`), so a customer always gets the same
  model while the pair stands. Requests with features and no id stay on the champion.
  A canary request's shadow is the champion, so both models are logged on every row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from churn_assets.ml.bands import RiskBands
from churn_assets.ml.features import ModelInputs
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.prediction_log import Buffered, ShadowJob, ShadowScores

log = logging.getLogger(__name__)

# Canary shares are resolved to 1/100 of a percent: 10,000 buckets of customer ids.
_BUCKETS = 10_000


def canary_bucket(customer_id: str) -> int:
    """The id's bucket in [0, 10,000): the first 8 bytes of its sha256, so it is the same in
    every process and on every machine (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(customer_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def in_canary(customer_id: str, percent: float) -> bool:
    """True for about ``percent``% of customer ids, always the same ones for one percent;
    raising the percent only adds customers to the canary, never swaps them."""
    return canary_bucket(customer_id) < round(percent * _BUCKETS / 100)


class ShadowScorer:
    """Scores buffered log rows with their shadow model, in the log's writer thread.

    A failure here never loses the log rows: they are written without a shadow result and
    the reason is logged (the counters then show fewer shadow predictions than requests).
    """

    def __init__(self, bands: RiskBands, metrics: ServingMetrics) -> None:
        self._bands = bands
        self._predictions = metrics.shadow_predictions
        self._disagreements = metrics.shadow_disagreements

    def score(self, batch: Sequence[Buffered]) -> list[ShadowScores]:
        """The shadow's answers for the rows that have a job, one onnxruntime call per model
        (a canary row's shadow is the champion, the others' the challenger)."""
        by_model: dict[int, list[tuple[int, ShadowJob]]] = {}
        for index, buffered in enumerate(batch):
            if buffered.shadow is not None:
                by_model.setdefault(id(buffered.shadow.model), []).append((index, buffered.shadow))
        scores = []
        for grouped in by_model.values():
            rows = [index for index, _ in grouped]
            jobs = [job for _, job in grouped]
            model = jobs[0].model
            try:
                inputs = ModelInputs(
                    numeric=np.concatenate([j.inputs.numeric[j.row : j.row + 1] for j in jobs]),
                    category=np.concatenate([j.inputs.category[j.row : j.row + 1] for j in jobs]),
                )
                scored = model.predict(inputs)
                bands = self._bands.bands(scored).tolist()
            except Exception as exc:  # the rows still go to the log, without a shadow
                log.warning(
                    "shadow scoring with %s v%s failed for %d rows: %s",
                    model.name,
                    model.version,
                    len(rows),
                    exc,
                )
                continue
            scores.append(ShadowScores(model, rows, scored.tolist(), bands))
            self._predictions.inc(len(rows))
            self._disagreements.inc(
                sum(band != batch[row].risk_band for row, band in zip(rows, bands, strict=True))
            )
        return scores
