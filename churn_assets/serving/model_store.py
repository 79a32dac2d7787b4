"""The model the scoring service serves, and its hot reload from the MLflow ``champion`` alias.

:class:`ChampionHolder` keeps one immutable :class:`HolderState` (the loaded model plus the
outcome of the last refresh). A refresh builds the new onnxruntime session completely, off
to the side, and then replaces the state with a single reference assignment under a lock.
A request reads :attr:`ChampionHolder.model` once and scores only with that object, so it
never mixes two models, and in-flight requests finish on the model they started with.

Failures never unload a working model: whatever goes wrong (registry unreachable, alias
missing, download error, a version whose gates failed or whose file does not match its
registered sha256, bytes onnxruntime cannot load, a graph that breaks the feature contract)
is recorded as :class:`RefreshError` for ``/health`` and the previous model keeps serving.
A failing version is retried on every poll (a truncated download must not block a version
for good); the next successful refresh clears the error.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from churn_assets.ml import tracking
from churn_assets.ml.champion import CHAMPION, fetch_version
from churn_assets.ml.export import OnnxScorer, sha256_file
from churn_assets.ml.features import EMAIL_DOMAIN_CLASSES, NUMERIC_FEATURES, ModelInputs
from churn_assets.serving.metrics import ServingMetrics
from churn_assets.serving.poller import Poller
from churn_assets.urls import mask_secrets

log = logging.getLogger(__name__)

DEFAULT_POLL_SECONDS = 5.0

Resolver = Callable[[], str | None]
"""Returns the version the champion alias names now (None: no champion)."""

Fetcher = Callable[[str, Path], Path]
"""Downloads and verifies a version into a scratch directory; returns its ONNX file.
Raises (e.g. :class:`ArtifactRejected`) when the version must not be served."""


class ArtifactRejected(RuntimeError):
    """A registered version that must not be served (failed gates, sha256 mismatch)."""


@dataclass(frozen=True)
class LoadedModel:
    """One ready-to-use model and its identity; immutable, so it can be shared by threads
    (onnxruntime's ``InferenceSession.run`` is thread-safe)."""

    scorer: OnnxScorer
    name: str
    version: str
    sha256: str
    loaded_at: datetime

    def predict(self, inputs: ModelInputs) -> npt.NDArray[np.float32]:
        return self.scorer.predict(inputs)


@dataclass(frozen=True)
class RefreshError:
    """Why the last refresh did not load the champion; the old model kept serving."""

    message: str
    at: datetime
    version: str | None


@dataclass(frozen=True)
class HolderState:
    """Everything ``/health`` shows, swapped as one object so it is always consistent."""

    model: LoadedModel | None
    last_refresh_at: datetime | None
    last_error: RefreshError | None


def load_scorer(path: Path | str, intra_op_threads: int | None = 1) -> OnnxScorer:
    """An :class:`OnnxScorer` for ``path``, checked before it may serve.

    Beyond what ``OnnxScorer`` checks (input names, metadata), the model must declare the
    serving feature order and vocabulary, since the service builds its input arrays from
    ``NUMERIC_FEATURES``/``EMAIL_DOMAIN_CLASSES``; and one row per category must score to a
    finite probability, which catches graphs that load but cannot run.

    One intra-op thread by default: online batches are tiny, and a second pool thread per
    session only competes with the server's own threads on a small machine.
    """
    scorer = OnnxScorer(path, intra_op_threads=intra_op_threads)
    if scorer.numeric_features != NUMERIC_FEATURES or scorer.categories != EMAIL_DOMAIN_CLASSES:
        raise ValueError(
            f"{path} was trained on features {scorer.numeric_features} / categories "
            f"{scorer.categories}; this service feeds {NUMERIC_FEATURES} / {EMAIL_DOMAIN_CLASSES}"
        )
    n = len(EMAIL_DOMAIN_CLASSES)
    probe = ModelInputs(
        numeric=np.ones((n, len(NUMERIC_FEATURES)), dtype=np.float32),
        category=np.arange(n, dtype=np.int64),
    )
    out = scorer.predict(probe)
    if out.shape != (n,) or not (np.isfinite(out) & (out >= 0) & (out <= 1)).all():
        raise ValueError(f"{path} does not produce probabilities (probe output {out!r})")
    return scorer


def mlflow_resolver(
    tracking_uri: str, name: str = tracking.REGISTERED_MODEL_NAME, alias: str = CHAMPION
) -> Resolver:
    """Resolves ``alias`` of ``name`` in the registry at ``tracking_uri``."""

    def resolve() -> str | None:
        # MLflow's client retries a dead server for minutes and would create a missing
        # SQLite store; both checks fail fast instead, so one poll stays short.
        tracking.check_reachable(tracking_uri)
        if tracking.local_store_missing(tracking_uri):
            raise tracking.RegistryUnavailable(f"no MLflow store at {tracking_uri}")
        return tracking.alias_version(tracking_uri, alias, name)

    return resolve


def mlflow_fetcher(tracking_uri: str, name: str = tracking.REGISTERED_MODEL_NAME) -> Fetcher:
    """Downloads a version with :func:`fetch_version`, refusing what it finds unusable."""

    def fetch(version: str, workdir: Path) -> Path:
        files = fetch_version(tracking_uri, version, workdir, name)
        if not files.gates_passed:
            raise ArtifactRejected(f"{name} v{version} refused: {files.gate_problem}")
        return files.onnx_path

    return fetch


class ChampionHolder:
    """Holds the served model; :meth:`refresh` follows the champion alias, atomically.

    ``alias`` names another alias to follow: the scorer holds the ``challenger`` the same
    way (same download, verification and swap) for shadow scoring and the canary.

    ``resolver`` and ``fetcher`` default to nothing: build holders with
    :meth:`from_mlflow` (production) or :meth:`from_file` (tests, benchmarks), or inject
    both to simulate alias moves and broken artefacts without a registry.
    """

    def __init__(
        self,
        resolver: Resolver,
        fetcher: Fetcher,
        *,
        name: str = tracking.REGISTERED_MODEL_NAME,
        alias: str = CHAMPION,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        intra_op_threads: int | None = 1,
        initial: LoadedModel | None = None,
        reuse: Callable[[], LoadedModel | None] | None = None,
        registry_url: str | None = None,
    ) -> None:
        self.name = name
        # MLflow's own errors quote the tracking URI whole: masked before /health shows them.
        self._registry_url = registry_url
        self.alias = alias
        self._resolver = resolver
        self._fetcher = fetcher
        self._intra_op_threads = intra_op_threads
        self._lock = threading.Lock()  # guards _state
        self._refresh_lock = threading.Lock()  # one refresh at a time (poller vs callers)
        self._state = HolderState(initial, None, None)
        self._poller = Poller(self.refresh, poll_seconds, alias)
        self._last_logged: tuple[str | None, str] | None = None
        self._metrics: ServingMetrics | None = None
        self._reuse = reuse

    def attach_metrics(self, metrics: ServingMetrics) -> None:
        """Record model swaps (``churn_model_info``) and loads of new versions
        (``churn_model_reloads_total``) into ``metrics`` from now on."""
        self._metrics = metrics
        model = self.model
        if model is not None:
            metrics.set_model(model.name, model.version, model.sha256)

    @classmethod
    def from_mlflow(
        cls,
        tracking_uri: str,
        *,
        name: str = tracking.REGISTERED_MODEL_NAME,
        alias: str = CHAMPION,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        intra_op_threads: int | None = 1,
        reuse: Callable[[], LoadedModel | None] | None = None,
    ) -> ChampionHolder:
        """A holder following ``alias`` in the registry; empty until :meth:`refresh`.
        ``reuse`` offers a model another holder already loaded (taken when it is the version
        the alias names, instead of downloading and loading it a second time)."""
        return cls(
            mlflow_resolver(tracking_uri, name, alias),
            mlflow_fetcher(tracking_uri, name),
            name=name,
            alias=alias,
            poll_seconds=poll_seconds,
            intra_op_threads=intra_op_threads,
            reuse=reuse,
            registry_url=tracking_uri,
        )

    @classmethod
    def from_file(
        cls,
        path: Path | str,
        *,
        version: str = "local",
        name: str = tracking.REGISTERED_MODEL_NAME,
        resolver: Resolver | None = None,
        fetcher: Fetcher | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        intra_op_threads: int | None = 1,
    ) -> ChampionHolder:
        """A holder already serving the ONNX file at ``path`` as ``version``.

        Without a ``resolver`` the champion is pinned to that version, so a refresh is a
        no-op; pass ``resolver``/``fetcher`` to make later versions loadable.
        """
        model = LoadedModel(
            scorer=load_scorer(path, intra_op_threads),
            name=name,
            version=version,
            sha256=sha256_file(path),
            loaded_at=datetime.now(UTC),
        )

        def pinned() -> str | None:
            return version

        def no_fetch(requested: str, workdir: Path) -> Path:
            raise ArtifactRejected(f"{name} v{requested} has no source (holder built from a file)")

        return cls(
            resolver or pinned,
            fetcher or no_fetch,
            name=name,
            poll_seconds=poll_seconds,
            intra_op_threads=intra_op_threads,
            initial=model,
        )

    @property
    def model(self) -> LoadedModel | None:
        """The model to score a request with; read it once per request."""
        with self._lock:
            return self._state.model

    def state(self) -> HolderState:
        """Model and last refresh outcome, as one consistent snapshot."""
        with self._lock:
            return self._state

    def refresh(self) -> bool:
        """Load the champion if it moved; True when the served model was replaced.

        Never raises for a refresh problem: it is recorded in :meth:`state` instead, and
        the current model (if any) keeps serving.
        """
        with self._refresh_lock:
            attempted: str | None = None
            loading = False  # a new version is being loaded (counted as a reload)
            try:
                attempted = self._resolver()
                if attempted is None:
                    raise LookupError(f"no version of {self.name} carries the {self.alias} alias")
                current = self.model
                if current is not None and current.version == attempted:
                    self._finish(None, None)
                    return False
                loading = True
                new = self._reusable(attempted) or self._load(attempted)
            except Exception as exc:  # any failure: keep serving, report on /health
                self._finish(
                    None,
                    RefreshError(_describe(exc, self._registry_url), datetime.now(UTC), attempted),
                )
                if loading and self._metrics is not None:
                    self._metrics.model_reloads.labels("failure").inc()
                return False
            self._finish(new, None)
            if self._metrics is not None:
                self._metrics.model_reloads.labels("success").inc()
                self._metrics.set_model(new.name, new.version, new.sha256)
            old = current.version if current is not None else None
            log.info(
                "%s: %s v%s (was v%s), sha256 %s",
                self.alias,
                self.name,
                new.version,
                old,
                new.sha256,
            )
            return True

    def _reusable(self, version: str) -> LoadedModel | None:
        """``reuse``'s model when it is ``version`` (already downloaded and verified, and
        immutable): the challenger alias usually names the champion's version."""
        model = self._reuse() if self._reuse is not None else None
        return model if model is not None and model.version == version else None

    def _load(self, version: str) -> LoadedModel:
        # The download only lives until the session is built: onnxruntime reads the whole
        # file at construction, so nothing accumulates on disk across reloads.
        with tempfile.TemporaryDirectory(prefix="churn-serve-") as tmp:
            path = self._fetcher(version, Path(tmp))
            sha256 = sha256_file(path)
            scorer = load_scorer(path, self._intra_op_threads)
        return LoadedModel(scorer, self.name, version, sha256, datetime.now(UTC))

    def _finish(self, new: LoadedModel | None, error: RefreshError | None) -> None:
        now = datetime.now(UTC)
        with self._lock:
            model = new if new is not None else self._state.model
            # The single assignment that publishes a new model (and the refresh outcome).
            self._state = replace(self._state, model=model, last_refresh_at=now, last_error=error)
        # Log a failure once, not on every poll while the alias stays on a broken version.
        key = (error.version, error.message) if error is not None else None
        if key != self._last_logged:
            if error is not None:
                log.warning("%s v%s not loaded: %s", self.alias, error.version, error.message)
            self._last_logged = key

    def start(self) -> None:
        """Start polling the champion every ``poll_seconds`` in a daemon thread."""
        self._poller.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the poller and wait for it (a refresh in progress finishes first)."""
        self._poller.stop(timeout)

    @property
    def polling(self) -> bool:
        return self._poller.running

    def __enter__(self) -> ChampionHolder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _describe(exc: BaseException, secret_url: str | None = None) -> str:
    text = str(exc).strip() or repr(exc)
    if secret_url:
        text = mask_secrets(text, secret_url)
    return f"{type(exc).__name__}: {text}"
