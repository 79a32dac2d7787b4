"""The model card: the facts of a training run (saved beside the model) and their markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from churn_assets.ml.features import (
    CATEGORICAL_FEATURE,
    EMAIL_DOMAIN_CLASSES,
    FEATURE_DESCRIPTIONS,
    NUMERIC_FEATURES,
)
from churn_assets.ml.gates import Gate, reference_gate
from churn_assets.ml.metrics import Calibration, Gains, Metrics

if TYPE_CHECKING:  # train and reference load torch: a card renders without it
    from churn_assets.ml.btyd import BTYDResult
    from churn_assets.ml.reference import ReferenceResult
    from churn_assets.ml.train import TrainResult


def _fmt(value: float | None) -> str:
    # 4 significant digits: AUCs read 0.7981, parity differences 1.192e-07.
    return "n/a" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card states, fixed at training time.

    Saved next to the model (``CARD_FACTS_FILE``) so the registry step, which knows the ONNX
    parity but has no model object, re-renders the card with every gate's observed value.
    """

    as_of: str
    label_window_days: int | None
    n_rows: int
    label_rate: float
    n_fit: int
    n_val: int
    n_holdout: int
    layers: tuple[int, ...]
    dropout: float
    log1p_features: tuple[str, ...]
    n_parameters: int
    lr: float
    weight_decay: float
    batch_size: int
    seed: int
    patience: int
    max_epochs: int
    pos_weight: float
    best_epoch: int
    epochs_run: int
    val_roc_auc: float
    threshold: float
    metrics: Metrics
    oracle_auc: float | None = None
    reference_auc: float | None = None
    reference_n_fit: int | None = None
    # Paired bootstrap interval of AUC(MLP) - AUC(reference) at reference_confidence.
    reference_diff_interval: tuple[float, float] | None = None
    reference_confidence: float | None = None
    calibration: Calibration | None = None
    title: str = "Churn model"
    # Time: which period the metrics are out of time on (None: a random, in-time holdout),
    # which periods were trained on, and the AUC on a random holdout of those periods, so
    # the card shows what the model loses to time. Defaults keep older facts files readable.
    holdout_as_of: str | None = None
    training_as_of: tuple[str, ...] = ()
    in_time_auc: float | None = None
    n_in_time: int | None = None
    # The BG/NBD buy-till-you-die reference on the same holdout: its AUC, fitted parameters
    # (r, alpha, a, b; days) and the horizon its P(no order) looks over.
    btyd_auc: float | None = None
    btyd_params: dict[str, float] | None = None
    btyd_n_fit: int | None = None
    btyd_window_days: int | None = None
    # Gains and lift per decile of the holdout (what a campaign contacting the top k% reaches).
    gains: Gains | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> CardFacts:
        raw: dict[str, Any] = json.loads(text)
        raw["layers"] = tuple(raw["layers"])
        raw["log1p_features"] = tuple(raw["log1p_features"])
        raw["metrics"] = Metrics(**raw["metrics"])
        if raw.get("reference_diff_interval") is not None:
            raw["reference_diff_interval"] = tuple(raw["reference_diff_interval"])
        if raw.get("calibration") is not None:
            raw["calibration"] = Calibration(**raw["calibration"])
        raw["training_as_of"] = tuple(raw.get("training_as_of", ()))
        if raw.get("gains") is not None:
            raw["gains"] = Gains.from_dict(raw["gains"])
        return cls(**raw)


def card_facts(
    result: TrainResult,
    metrics: Metrics,
    *,
    as_of: date | str,
    n_rows: int,
    label_rate: float,
    n_holdout: int | None = None,
    label_window_days: int | None = None,
    oracle: float | None = None,
    reference: ReferenceResult | None = None,
    calibration: Calibration | None = None,
    title: str = "Churn model",
    holdout_as_of: str | None = None,
    training_as_of: Sequence[str] = (),
    in_time_auc: float | None = None,
    n_in_time: int | None = None,
    btyd: BTYDResult | None = None,
    gains: Gains | None = None,
) -> CardFacts:
    """The facts of a training run, for :func:`render_card`.

    ``holdout_as_of`` names the out-of-time holdout period the ``metrics`` are measured on
    (None: the holdout is a random sample of the training periods); ``in_time_auc`` is the
    AUC on ``n_in_time`` rows held out at random from the ``training_as_of`` periods.
    """
    from churn_assets.ml.model import count_parameters  # model imports torch; keep it local

    spec = result.model.spec
    config = result.config
    return CardFacts(
        as_of=str(as_of),
        label_window_days=label_window_days,
        n_rows=n_rows,
        label_rate=label_rate,
        n_fit=result.n_train,
        n_val=result.n_val,
        n_holdout=metrics.n if n_holdout is None else n_holdout,
        layers=(spec.n_inputs, *spec.hidden_sizes, 1),
        dropout=spec.dropout,
        log1p_features=spec.log1p_features,
        n_parameters=count_parameters(result.model),
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        seed=config.seed,
        patience=config.patience,
        max_epochs=config.max_epochs,
        pos_weight=result.pos_weight,
        best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        val_roc_auc=result.val_roc_auc,
        threshold=result.threshold,
        metrics=metrics,
        oracle_auc=oracle,
        reference_auc=None if reference is None else reference.auc,
        reference_n_fit=None if reference is None else reference.n_fit,
        reference_diff_interval=None if reference is None else reference.diff_interval,
        reference_confidence=None if reference is None else reference.confidence,
        calibration=calibration,
        title=title,
        holdout_as_of=holdout_as_of,
        training_as_of=tuple(training_as_of),
        in_time_auc=in_time_auc,
        n_in_time=n_in_time,
        btyd_auc=None if btyd is None else btyd.auc,
        btyd_params=None if btyd is None else asdict(btyd.params),
        btyd_n_fit=None if btyd is None else btyd.n_fit,
        btyd_window_days=None if btyd is None else btyd.window_days,
        gains=gains,
    )


def model_card(
    result: TrainResult,
    metrics: Metrics,
    *,
    as_of: date | str,
    n_rows: int,
    label_rate: float,
    n_holdout: int | None = None,
    label_window_days: int | None = None,
    oracle: float | None = None,
    gates: Sequence[Gate] = (),
    reference: ReferenceResult | None = None,
    reference_tolerance: float | None = None,
    calibration: Calibration | None = None,
    title: str = "Churn model",
) -> str:
    """A markdown model card: data, features, architecture, training, metrics, reference
    model, calibration, gains and lift, gates, use. Shorthand for
    ``render_card(card_facts(...), ...)``.

    ``n_rows`` and ``label_rate`` describe the whole training snapshot; ``metrics`` are the
    holdout metrics; ``oracle`` is ``oracle_auc`` on the same holdout (None if unknown).
    """
    facts = card_facts(
        result,
        metrics,
        as_of=as_of,
        n_rows=n_rows,
        label_rate=label_rate,
        n_holdout=n_holdout,
        label_window_days=label_window_days,
        oracle=oracle,
        reference=reference,
        calibration=calibration,
        title=title,
    )
    return render_card(facts, gates, reference_tolerance)


def _reference_lines(facts: CardFacts, gate: Gate | None) -> list[str]:
    from churn_assets.policy import env_name

    if facts.reference_auc is None:
        return ["No reference model was evaluated for this model."]
    n_fit = "" if facts.reference_n_fit is None else f"{facts.reference_n_fit:,} "
    auc = facts.metrics.roc_auc
    difference = auc - facts.reference_auc
    lines = [
        "Logistic regression (scikit-learn, L2, C = 1, no class weights) on the same features "
        f"with the same preprocessing (log1p, standardised, one-hot email class), fitted on "
        f"the {n_fit}training rows the MLP used (fit and validation), scored on the same "
        f"{facts.n_holdout:,} holdout customers.",
        "",
        "| model | holdout ROC AUC |",
        "|---|---:|",
        f"| MLP (this model) | {auc:.4f} |",
        f"| logistic regression reference | {facts.reference_auc:.4f} |",
        f"| difference (MLP - reference) | {difference:+.4f} |",
        "",
    ]
    if gate is None or gate.passed is None:
        lines.append("No tolerance was given, so the comparison was not judged.")
    elif not gate.passed:
        lines.append(
            f"**The MLP trails the reference** by {-difference:.4f} AUC, more than the "
            f"tolerance of {-gate.threshold:g} ({env_name('reference_auc_tolerance')}): on "
            "this data the network does not earn its place over a logistic regression."
        )
    elif difference < 0:
        lines.append(
            f"The MLP is {-difference:.4f} AUC below the reference, within the tolerance of "
            f"{-gate.threshold:g} ({env_name('reference_auc_tolerance')})."
        )
    else:
        lines.append(f"The MLP beats the reference by {difference:.4f} AUC.")
    lines.append("")
    interval = facts.reference_diff_interval
    if interval is None:
        lines.append(
            "No bootstrap interval of the difference (too few rows of a class in the holdout)."
        )
        return lines
    low, high = interval
    if high < 0:
        verdict = "the MLP is worse beyond sampling noise"
    elif low > 0:
        verdict = "the MLP is better beyond sampling noise"
    else:
        verdict = "it contains 0, so on these rows the two cannot be told apart"
    confidence = "" if facts.reference_confidence is None else f"{facts.reference_confidence:.0%} "
    lines.append(
        f"The {confidence}paired bootstrap interval of the difference (the same holdout rows "
        f"resampled for both models) is [{low:+.4f}, {high:+.4f}]: {verdict}."
    )
    return lines


def _btyd_lines(facts: CardFacts) -> list[str]:
    if facts.btyd_auc is None or facts.btyd_params is None:
        return ["No buy-till-you-die reference was evaluated for this model."]
    p = facts.btyd_params
    n_fit = "" if facts.btyd_n_fit is None else f"{facts.btyd_n_fit:,} "
    auc = facts.metrics.roc_auc
    return [
        "BG/NBD (Fader, Hardie & Lee 2005) fitted by maximum likelihood on the purchase "
        f"counts and dates of the {n_fit}training rows (no labels, no other features), "
        f"scored as P(no order in the next {facts.btyd_window_days} days) on the same "
        f"{facts.n_holdout:,} holdout customers.",
        "",
        "| model | holdout ROC AUC |",
        "|---|---:|",
        f"| MLP (this model) | {auc:.4f} |",
        f"| BG/NBD buy-till-you-die reference | {facts.btyd_auc:.4f} |",
        f"| difference (MLP - BG/NBD) | {auc - facts.btyd_auc:+.4f} |",
        "",
        f"Fitted parameters (days): r = {p['r']:.4g}, alpha = {p['alpha']:.4g}, "
        f"a = {p['a']:.4g}, b = {p['b']:.4g}.",
    ]


def _calibration_lines(facts: CardFacts) -> list[str]:
    shift = math.log(facts.pos_weight)
    lines = [
        f"Training weights churners by pos_weight {facts.pos_weight:.3f}, which alone would "
        f"inflate the probabilities; the output bias is then shifted by -log(pos_weight) = "
        f"{-shift:.3f} (prior correction), so the scores are meant to be read as churn "
        "probabilities.",
        "",
    ]
    cal = facts.calibration
    if cal is None:
        return [*lines, "Calibration was not measured for this model."]
    base_rate_brier = cal.observed_rate * (1 - cal.observed_rate)
    return [
        *lines,
        f"Measured on the {cal.n:,} holdout customers: mean predicted probability "
        f"{cal.mean_predicted:.3f} against an observed churn rate of {cal.observed_rate:.3f}; "
        f"expected calibration error (ECE) {cal.ece:.3f} over {cal.n_bins} equal-width "
        "probability bins (row-weighted mean of |mean predicted - observed rate| per bin); "
        f"Brier score {facts.metrics.brier:.4f} against {base_rate_brier:.4f} for always "
        "predicting the holdout's churn rate. See the calibration plot.",
    ]


def _gains_lines(facts: CardFacts) -> list[str]:
    if facts.gains is None:
        return ["Gains and lift were not measured for this model."]
    return gains_markdown(facts.gains).split("\n")


def gains_markdown(gains: Gains) -> str:
    """The card's gains and lift section: what it measures, the top group's catch, the
    table (also the training asset's ``gains`` metadata)."""
    lines = [
        f"The {gains.n:,} holdout customers ranked by predicted probability, highest first, "
        f"in {gains.n_groups} groups of equal size: how many churners a retention campaign "
        "reaches by contacting the top groups. Gain is cumulative (share of all churners "
        "caught down to this group); lift is the group's churn rate over the holdout's "
        f"({gains.churners / gains.n:.1%}). See the gains plot.",
        "",
        f"**{gains.headline()}** Contacting at random would catch "
        f"{gains.top_customers / gains.n:.1%} of them.",
        "",
        "| group | customers | churners | churn rate | mean predicted | gain | lift |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {row.group} | {row.customers:,} | {row.churners:,} | {row.churn_rate:.1%} | "
        f"{row.mean_probability:.3f} | {row.gain:.1%} | {row.lift:.2f} |"
        for row in gains.rows
    ]
    return "\n".join(lines)


def _trained_on(facts: CardFacts) -> str:
    periods = facts.training_as_of
    if len(periods) > 1:
        return f"{len(periods)} periods ({periods[0]} to {periods[-1]})"
    return f"one as_of snapshot ({periods[0] if periods else facts.as_of})"


def _data_lines(facts: CardFacts, window: str) -> list[str]:
    split = f"{facts.n_fit:,} fit / {facts.n_val:,} validation (early stopping, threshold)"
    if facts.holdout_as_of is None:
        return [
            f"- Training snapshot at as_of **{facts.as_of}**{window}: churned = no order in "
            "(as_of, as_of + window].",
            f"- Rows: {facts.n_rows:,} customers, label rate {facts.label_rate:.1%}.",
            f"- Split: {split} / {facts.n_holdout:,} holdout (metrics below), stratified by label.",
            "- No out-of-time holdout: the holdout is a random sample of the training "
            "periods, so its metrics are in time.",
        ]
    trained = ", ".join(facts.training_as_of) or "n/a"
    in_time = "" if facts.n_in_time is None else f" / {facts.n_in_time:,} in-time holdout"
    return [
        f"- Trained on the periods (as_of) **{trained}**{window}: churned = no order in "
        "(as_of, as_of + window]; a customer appears once per period.",
        f"- Out-of-time holdout: every customer of period **{facts.holdout_as_of}** "
        f"({facts.n_holdout:,}; metrics below), a period no training label looked into.",
        f"- Rows: {facts.n_rows:,} customer-periods, label rate {facts.label_rate:.1%}.",
        f"- Split of the training periods: {split}{in_time} (random, stratified by label).",
    ]


def _holdout_caption(facts: CardFacts) -> str:
    if facts.holdout_as_of is None:
        return f"Random holdout of the training data ({facts.n_holdout:,} rows, in time)."
    return (
        f"Out of time: the {facts.n_holdout:,} customers of period {facts.holdout_as_of}, "
        "after every training period; this is how the model fares on a period it has not seen."
    )


def _in_time_rows(facts: CardFacts) -> list[str]:
    if facts.holdout_as_of is None or facts.in_time_auc is None:
        return []
    n = "" if facts.n_in_time is None else f", {facts.n_in_time:,} rows"
    gap = facts.metrics.roc_auc - facts.in_time_auc
    return [
        f"| ROC AUC in time (random holdout of the training periods{n}) | "
        f"{facts.in_time_auc:.4f} |",
        f"| out-of-time minus in-time ROC AUC | {gap:+.4f} |",
    ]


def render_card(
    facts: CardFacts, gates: Sequence[Gate] = (), reference_tolerance: float | None = None
) -> str:
    """The model card of ``facts`` with ``gates`` (observed or not) and, when a tolerance is
    given, the reference comparison judged as a WARN-only row of the gates table."""
    metrics = facts.metrics
    window = (
        "" if facts.label_window_days is None else f", label window {facts.label_window_days} days"
    )
    reference = (
        None
        if reference_tolerance is None
        else reference_gate(metrics.roc_auc, facts.reference_auc, reference_tolerance)
    )
    lines = [f"# {facts.title}", "", "## Data", "", *_data_lines(facts, window), ""]
    lines += [
        "## Features",
        "",
        "| feature | meaning | preprocessing |",
        "|---|---|---|",
    ]
    for name in NUMERIC_FEATURES:
        prep = "log1p, standardised" if name in facts.log1p_features else "standardised"
        lines.append(f"| `{name}` | {FEATURE_DESCRIPTIONS[name]} | {prep} |")
    lines += [
        f"| `{CATEGORICAL_FEATURE}` | {FEATURE_DESCRIPTIONS[CATEGORICAL_FEATURE]} | one-hot over "
        f"{', '.join(EMAIL_DOMAIN_CLASSES)}; other values -> unknown |",
        "",
        "## Model",
        "",
        f"- MLP {' -> '.join(map(str, facts.layers))} (ReLU, dropout {facts.dropout}), sigmoid "
        f"output; {facts.n_parameters} trainable parameters.",
        "- Preprocessing is inside the network, so the ONNX export takes raw feature values.",
        "",
        "## Training",
        "",
        f"- Adam, lr {facts.lr}, weight decay {facts.weight_decay}, batch size "
        f"{facts.batch_size}, seed {facts.seed}.",
        f"- BCE with pos_weight {facts.pos_weight:.3f} (n_neg / n_pos) against class "
        "imbalance, then the output bias shifted by -log(pos_weight) (see Calibration).",
        f"- Early stopping on validation loss, patience {facts.patience}, max "
        f"{facts.max_epochs} epochs: best epoch {facts.best_epoch} of "
        f"{facts.epochs_run} (validation ROC AUC {facts.val_roc_auc:.4f}).",
        f"- Decision threshold {facts.threshold:.4f}, chosen to maximise F1 on validation.",
        "",
        "## Holdout metrics",
        "",
        _holdout_caption(facts),
        "",
        "| metric | value |",
        "|---|---:|",
        f"| ROC AUC | {metrics.roc_auc:.4f} |",
        f"| PR AUC (average precision) | {metrics.pr_auc:.4f} |",
        f"| Brier score | {metrics.brier:.4f} |",
        f"| log loss | {metrics.log_loss:.4f} |",
        f"| F1 @ {metrics.threshold:.4f} | {metrics.f1:.4f} |",
        f"| rows / churners | {metrics.n:,} / {metrics.positives:,} |",
        *_in_time_rows(facts),
        "",
    ]
    if facts.oracle_auc is None:
        lines.append("Oracle AUC: n/a (no ground truth for these customers).")
    else:
        lines.append(
            f"Oracle AUC (hidden churn probability, same holdout): {facts.oracle_auc:.4f}; "
            f"gap to the model: {facts.oracle_auc - metrics.roc_auc:+.4f}."
        )
    lines += ["", "## Reference model", "", *_reference_lines(facts, reference)]
    lines += ["", "## Buy-till-you-die reference", "", *_btyd_lines(facts)]
    lines += ["", "## Calibration", "", *_calibration_lines(facts)]
    lines += ["", "## Gains and lift", "", *_gains_lines(facts)]
    lines += ["", "## Gates", ""]
    rows = [(gate, "FAIL") for gate in gates]
    if reference is not None:
        rows.append((reference, "WARN (not blocking)"))
    if rows:
        lines += ["| gate | threshold | observed | result |", "|---|---:|---:|---|"]
        for gate, failed in rows:
            verdict = {True: "pass", False: failed, None: "not evaluated"}[gate.passed]
            lines.append(
                f"| {gate.name} | {gate.comparison} {gate.threshold:g} | "
                f"{_fmt(gate.observed)} | {verdict} |"
            )
        if any(gate.passed is None for gate, _ in rows):
            lines += [
                "",
                "A gate marked *not evaluated* is measured after this card was written (ONNX "
                "parity needs the export). The registered version's card (`model_card.md` on "
                "its MLflow run, rewritten at registration) shows every gate's observed value.",
            ]
    else:
        lines.append("No gates were passed in.")
    lines += [
        "",
        "## Intended use",
        "",
        "Rank existing customers (>= 1 order by as_of) by their risk of placing no order in "
        "the next label window, to prioritise retention outreach. Scores come from the same "
        "dbt features at the scoring as_of.",
        "",
        "## Limitations",
        "",
        "- Calibration is measured on one holdout (above) at the training as_of: when the "
        "churn rate moves (season, market, product), the probabilities keep the old rate "
        "until the model is retrained.",
        f"- Trained on {_trained_on(facts)}; behaviour drift (spend, order rate, email "
        "mix) degrades it, so monitor feature drift and retrain.",
        "- Holdout metrics on a few hundred rows have a standard error of several AUC points.",
        "- Customers with no order by as_of are outside the population and get no score.",
        "",
    ]
    return "\n".join(lines)


ROLLOUT_HEADING = "## Rollout history"


def rollout_history_markdown(history: Sequence[dict[str, Any]]) -> str:
    """The rollout history (``tracking.champion_history``) as the card's last section: which
    version was champion from when to when, what it replaced and why it was promoted."""
    lines = [
        ROLLOUT_HEADING,
        "",
        "| version | champion since (UTC) | until | replaced | why |",
        "|---|---|---|---|---|",
    ]
    for reign in history:
        reason = str(reign["reason"] or "").replace("|", "/")  # a pipe would split the cell
        lines.append(
            f"| v{reign['version']} | {reign['since'] or 'unknown'} | "
            f"{reign['until'] or 'now'} | "
            f"{'v' + str(reign['replaced']) if reign['replaced'] else 'none'} | {reason} |"
        )
    return "\n".join(lines) + "\n"


def with_rollout_history(card: str, history: Sequence[dict[str, Any]]) -> str:
    """``card`` with its rollout history section replaced by (or ended with) ``history``'s."""
    body = card.split(f"\n{ROLLOUT_HEADING}\n", 1)[0].rstrip("\n")
    return f"{body}\n\n{rollout_history_markdown(history)}"
