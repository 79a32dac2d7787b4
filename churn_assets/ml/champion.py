"""Champion/challenger over the MLflow registry (no Dagster): score, decide, move aliases.

The challenger's own holdout rows are the evaluation set; the champion's ONNX file is scored
on exactly those rows. Both files are taken from MLflow and checked against the sha256 they
were registered with, so what is judged is what would be served.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow.artifacts
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from churn_assets.ml import tracking
from churn_assets.ml.artifacts import CARD_FILE, HOLDOUT_FILE, REFERENCE_FILE
from churn_assets.ml.export import OnnxScorer, sha256_file
from churn_assets.ml.features import ModelInputs, labels, to_model_inputs
from churn_assets.ml.promote import (
    Candidate,
    PromotionDecision,
    PromotionPolicy,
    UnusableChampion,
    should_promote,
)

# Named in tracking (the registry module), re-exported here for the promotion code.
CHAMPION = tracking.CHAMPION
CHALLENGER = tracking.CHALLENGER
TAG_DECISION = tracking.TAG_DECISION
ONNX_MISMATCH = "ONNX file does not match the sha256 it was gated with"
_MAX_PROBLEM_CHARS = 300  # an exception text (e.g. a protobuf dump) is cut to this in reasons


@dataclass(frozen=True)
class VersionFiles:
    """A registered version's ONNX file and training run artefacts, downloaded and verified."""

    version: str
    onnx_path: Path
    run_dir: Path
    gates_passed: bool
    gate_problem: str | None
    file_verified: bool  # the ONNX file is byte for byte the one that was gated


def undecided_versions(
    tracking_uri: str, after: int, name: str = tracking.REGISTERED_MODEL_NAME
) -> list[str]:
    """Versions newer than ``after`` with no recorded decision, oldest first."""
    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    pending = [
        int(v.version) for v in versions if int(v.version) > after and TAG_DECISION not in v.tags
    ]
    return [str(number) for number in sorted(pending)]


def fetch_version(
    tracking_uri: str, version: str, workdir: Path, name: str = tracking.REGISTERED_MODEL_NAME
) -> VersionFiles:
    """Download a version's ONNX file and run artefacts; report whether its gates hold."""
    client = MlflowClient(tracking_uri)
    model_version = client.get_model_version(name, version)
    target = workdir / f"v{version}"
    target.mkdir(parents=True, exist_ok=True)
    onnx_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=str(model_version.source),
        dst_path=str(target / "onnx"),
        tracking_uri=tracking_uri,
    )
    onnx_path = Path(onnx_dir)
    if onnx_path.is_dir():
        onnx_path = next(onnx_path.glob("*.onnx"))
    run_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=model_version.run_id,
            artifact_path=HOLDOUT_FILE,
            dst_path=str(target / "run"),
            tracking_uri=tracking_uri,
        )
    ).parent
    tags = dict(model_version.tags)
    verified = sha256_file(onnx_path) == tags.get(tracking.TAG_ONNX_SHA256)
    problem = _gate_problem(tags, verified)
    return VersionFiles(version, onnx_path, run_dir, problem is None, problem, verified)


def fetch_reference(
    tracking_uri: str, version: str, workdir: Path, name: str = tracking.REGISTERED_MODEL_NAME
) -> pd.DataFrame:
    """The training rows of a version's run: the drift monitor's reference distribution."""
    client = MlflowClient(tracking_uri)
    model_version = client.get_model_version(name, version)
    path = mlflow.artifacts.download_artifacts(
        run_id=model_version.run_id,
        artifact_path=REFERENCE_FILE,
        dst_path=str(workdir),
        tracking_uri=tracking_uri,
    )
    return pd.read_parquet(path)


def _gate_problem(tags: dict[str, str], file_verified: bool) -> str | None:
    """Why a version must not be promoted, or None when both gates passed and the file is
    byte-for-byte the one that passed them."""
    gates = json.loads(tags.get(tracking.TAG_GATES, "{}"))
    if not gates:
        return "no gate results recorded"
    failed = [name for name, gate in gates.items() if not gate.get("passed")]
    if failed:
        return f"failed gate(s): {', '.join(failed)}"
    if not file_verified:
        return ONNX_MISMATCH
    return None


def decide(
    tracking_uri: str,
    version: str,
    policy: PromotionPolicy,
    name: str = tracking.REGISTERED_MODEL_NAME,
) -> PromotionDecision:
    """Score the challenger and the current champion on the challenger's holdout; decide."""
    with tempfile.TemporaryDirectory(prefix="churn-promote-") as tmp:
        workdir = Path(tmp)
        challenger = fetch_version(tracking_uri, version, workdir, name)
        holdout = pd.read_parquet(challenger.run_dir / HOLDOUT_FILE)
        inputs, y = to_model_inputs(holdout), labels(holdout)
        challenger_scores = Candidate(
            version, challenger.gates_passed, _scores(challenger.onnx_path, inputs)
        )
        champion_version = tracking.alias_version(tracking_uri, CHAMPION, name)
        champion: Candidate | UnusableChampion | None = None
        if champion_version is not None and champion_version != version:
            champion = _score_champion(tracking_uri, champion_version, workdir, inputs, name)
        decision = should_promote(y, challenger_scores, champion, policy)
    if challenger.gate_problem and not decision.promote:
        # Name the concrete problem (failed gate, tampered file) in the recorded reason.
        decision = _with_reason(decision, f"not promoted: {challenger.gate_problem}")
    return decision


def _score_champion(
    tracking_uri: str, version: str, workdir: Path, inputs: ModelInputs, name: str
) -> Candidate | UnusableChampion:
    """The champion's scores on the challenger's holdout, or why it cannot be scored.

    A champion whose file was deleted, corrupted or swapped cannot serve either, so it must
    not block every later promotion. Any failure to download, verify or score it makes it
    unusable, unless the registry itself is unreachable: then nothing is decided (the probe
    raises :class:`tracking.RegistryUnavailable`), so an outage never replaces a champion.
    """
    try:
        files = fetch_version(tracking_uri, version, workdir, name)
        if not files.file_verified:
            return UnusableChampion(version, ONNX_MISMATCH)
        # The incumbent's own gate results are not consulted (see should_promote).
        return Candidate(version, files.gates_passed, _scores(files.onnx_path, inputs))
    except Exception as exc:  # MLflow, I/O, protobuf and onnxruntime errors all land here
        tracking.check_reachable(tracking_uri)
        return UnusableChampion(version, _one_line(exc))


def _one_line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= _MAX_PROBLEM_CHARS else text[: _MAX_PROBLEM_CHARS - 1] + "…"


def _scores(onnx_path: Path, inputs: ModelInputs) -> npt.NDArray[np.float64]:
    """Served probabilities (float32 from onnxruntime), widened for the bootstrap maths."""
    return OnnxScorer(onnx_path).predict(inputs).astype(np.float64)


def _with_reason(decision: PromotionDecision, reason: str) -> PromotionDecision:
    from dataclasses import replace

    return replace(decision, reason=reason)


def apply_decision(
    tracking_uri: str, decision: PromotionDecision, name: str = tracking.REGISTERED_MODEL_NAME
) -> None:
    """Record the decision on the challenger and move the aliases.

    Order matters for a crash half-way: the ``champion`` alias moves first and the decision
    tag is written last, so a version is only ever marked decided after its alias is in
    place; an interrupted promotion is simply decided again on the next tick.
    """
    client = MlflowClient(tracking_uri)
    version = decision.challenger_version
    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(name, version, key, value)
    decided_at = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_model_version_tag(name, version, tracking.TAG_DECIDED_AT, decided_at)
    client.set_model_version_tag(
        name, version, TAG_DECISION, "promoted" if decision.promote else "kept"
    )


def record_rollout_history(
    tracking_uri: str, version: str, name: str = tracking.REGISTERED_MODEL_NAME
) -> str:
    """Write the rollout history into the card of ``version`` (the champion just promoted)
    in its MLflow run, and return the history's markdown (for the decision's metadata).

    The card is fixed at training time but for this section: whoever opens the serving
    model's card sees every champion before it, from when to when, and why each changed."""
    from churn_assets.ml.model_card import rollout_history_markdown, with_rollout_history

    history = tracking.champion_history(tracking_uri, name)
    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        with tempfile.TemporaryDirectory(prefix="churn-card-") as tmp:
            try:
                card = Path(
                    mlflow.artifacts.download_artifacts(
                        run_id=run_id, artifact_path=CARD_FILE, dst_path=tmp,
                        tracking_uri=tracking_uri,
                    )
                ).read_text()  # fmt: skip
            except (MlflowException, OSError):
                card = ""  # a version registered without a card gets the section alone
            path = Path(tmp) / "out" / CARD_FILE
            path.parent.mkdir()
            path.write_text(with_rollout_history(card, history))
            client.log_artifact(run_id, str(path))
    return rollout_history_markdown(history)
