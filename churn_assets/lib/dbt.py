"""dbt glue shared by the Dagster areas: the project, the step selections, CLI-arg builders.

The translator (keys, groups, automation conditions) is ``defs/dbt/translator.py``: it picks
automation conditions, and ``lib/`` never imports ``defs/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from dagster_dbt import DbtProject

from churn_assets.policy import Policy
from churn_assets.settings import DBT_PROJECT_DIR, Engine, load_dbt_target

# The analyst views read the batch scores, which the Dagster step `churn_scores` writes
# after the features: they are a separate dbt step so the graph has no cycle.
ANALYTICS_SELECT = "path:models/analytics"
# The per-period marts (incremental on as_of): one Dagster asset per model, partitioned by
# period. current_features follows the newest period and is a step of its own after them.
PERIOD_MODELS = ("customer_features", "churn_labels", "training_snapshot")
PERIOD_SELECT = " ".join(PERIOD_MODELS)
CURRENT_SELECT = "current_features"
# The analyst model over the online scorer's prediction log, which is kept on Postgres only
# (the scorer appends a row per request; a Parquet table takes a job per append).
ONLINE_PREDICTIONS_MODEL = "online_predictions_realized"
# What an engine's dbt steps leave out of the project, by engine: a model whose source that
# engine does not hold. Decided when the code loads (the engine is read then), so the
# graph, the jobs and the automation never ask for it.
_NOT_ON_ENGINE = {Engine.SPARK: ONLINE_PREDICTIONS_MODEL}
# Each engine's manifest in a folder of its own: it is parsed for that engine's target, and
# a process on one engine (a test session's Postgres runs) must never read a manifest a
# process on the other is rewriting.
_TARGET_PATHS = {Engine.POSTGRES: Path("target"), Engine.SPARK: Path("target") / "spark"}


def not_built_here() -> str | None:
    """The dbt selection the dbt steps of this code location's engine exclude (None: none)."""
    return _NOT_ON_ENGINE.get(load_dbt_target().engine)


@cache
def churn_dbt_project() -> DbtProject:
    """The dbt project, with a manifest guaranteed to exist.

    ``prepare_if_dev`` re-parses under ``dagster dev``; outside it we still parse once when
    no manifest exists, so a fresh clone loads under any entry point (pytest, ``churn``).
    """
    _put_interpreter_bin_on_path()
    settings = load_dbt_target()
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=settings.target,
        target_path=_TARGET_PATHS[settings.engine],
    )
    if settings.warehouse_url:
        # The manifest records the database name; Dagster's row-count queries use it, so
        # parse against the configured warehouse (no connection is made to parse).
        from churn_assets.infra.warehouse import parse_url

        with environ(parse_url(settings.warehouse_url).dbt_env()):
            project.preparer.prepare(project)
        return project
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def _put_interpreter_bin_on_path() -> None:
    """Make the venv's ``dbt`` findable when ``churn`` runs without an activated venv.

    dagster-dbt looks ``dbt`` up on PATH (also inside ``prepare``, which accepts no
    executable), so `.venv/bin/churn demo` would otherwise fail with "dbt not found".
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(bin_dir) / "dbt").exists() and bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


# The periods a dbt invocation builds (dbt_project/macros/periods.sql reads it).
PERIOD_ENDS_ENV = "CHURN_PERIOD_ENDS"
PARTIAL_PARSE_FILE = "partial_parse.msgpack"


# The policy rules dbt models read (analytics.retention_targets), passed as vars of the same
# names; dbt_project.yml declares each with the policy's default (a test keeps them equal).
DBT_POLICY_VARS = ("retention_margin", "retention_save_rate", "retention_contact_cost")


def dbt_vars(window_days: int, policy: Policy) -> dict[str, Any]:
    """The dbt ``--vars`` of every run: the label window and the policy rules dbt reads.
    The same for every step of a run, and from run to run unless the policy moves. The
    periods are not among them: dbt re-parses the whole project when the vars change (see
    :func:`dbt_build_env`)."""
    return {
        "churn_window_days": window_days,
        **{name: getattr(policy, name) for name in DBT_POLICY_VARS},
    }


def dbt_build_env(period_ends: list[str]) -> dict[str, str]:
    """Environment of a dbt invocation beyond the warehouse's: the run's periods, sorted
    and comma-separated (empty for an unpartitioned step). A changed variable re-parses only
    the models that read it; a changed ``--vars`` re-parses the whole project (~3 s)."""
    return {PERIOD_ENDS_ENV: ",".join(sorted(period_ends))}


def dbt_build_args(*, window_days: int, policy: Policy, full_refresh: bool) -> list[str]:
    """``dbt build`` arguments for one run (pure, so tests can check them)."""
    args = ["build", "--vars", json.dumps(dbt_vars(window_days, policy), sort_keys=True)]
    # A test runs with a step only if each model it reads is built in that step or
    # upstream of it: the staging step must not run the marts' relationship tests (the
    # marts may not exist yet; they run them in their own step, under automation a run of
    # its own). dbt's default, "eager", would run them.
    args += ["--indirect-selection", "buildable"]
    if full_refresh:
        args.append("--full-refresh")
    return args


def parse_state_dir(connection_env: Mapping[str, str]) -> Path:
    """Where the dbt invocations against one warehouse keep their parse state.

    dagster-dbt gives each invocation a target folder of its own, under ``DBT_TARGET_PATH``,
    and seeds it with that folder's ``partial_parse.msgpack``. The project's own (written
    by ``prepare``) never matches a run: dbt keys its parse state on the connection, which
    is known only at run time. One folder per connection, kept warm by
    :func:`keep_parse_state`, lets every invocation after the first skip the full parse.
    """
    digest = hashlib.sha256(json.dumps(dict(connection_env), sort_keys=True).encode())
    return DBT_PROJECT_DIR / "target" / f"runs-{digest.hexdigest()[:12]}"


def keep_parse_state(invocation_target: Path, state_dir: Path) -> None:
    """Make an invocation's parse state the next invocation's starting point (atomically:
    another run may be copying the current one). dbt checks the state before using it
    (its version, vars, connection and every file's checksum) and parses in full if stale.
    """
    written = invocation_target / PARTIAL_PARSE_FILE
    if not written.exists():
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    staged = state_dir / f".{PARTIAL_PARSE_FILE}.{os.getpid()}"
    shutil.copyfile(written, staged)
    os.replace(staged, state_dir / PARTIAL_PARSE_FILE)


def dbt_failure_lines(run_results: Mapping[str, Any] | None, error: str | None) -> list[str]:
    """Why a dbt invocation failed, one line per cause, the one to act on last.

    Each node that errored (not a failed data test: those are checks, described from their
    stored rows) gives ``<node>: <its message on one line>``; without run results (dbt
    could not even write them) dbt's own error text stands in. Buried in dbt's output, a
    full disk's "No space left on device" read as "dbt build failed".
    """
    lines = [
        f"{str(result.get('unique_id', '?')).split('.')[-1]}: {_one_line(result['message'])}"
        for result in (run_results or {}).get("results", [])
        if result.get("status") == "error" and str(result.get("message") or "").strip()
    ]
    if not lines and error:
        lines = [line.strip() for line in error.splitlines() if line.strip()][-3:]
    return lines


def _one_line(message: str, limit: int = 400) -> str:
    """dbt's multi-line node message ("Database Error in model x (path)", then the
    database's own words) as one line, cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Temporarily sets environment variables (profiles.yml reads the warehouse from them)."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
