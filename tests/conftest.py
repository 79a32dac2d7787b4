"""Shared fixtures: one real embedded Postgres per session, isolated settings per test."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from click.testing import CliRunner, Result

from churn_assets.app.cli import main
from churn_assets.data.generator import GeneratorConfig
from churn_assets.infra import warehouse
from churn_assets.policy import env_name, rules
from churn_assets.settings import SETTINGS
from tests.webhook import Receiver, serve_receiver

# Read by other programs themselves, not only through load_settings, so they are cleared
# even where they are also settings:
_OUTSIDE_ENV = (
    # Dagster's instance directory, read by Dagster itself (`DagsterInstance.get()`, the
    # `dagster` processes tests start with os.environ): a developer's would put the suite's
    # runs, cursors and schedules in their own instance.
    "DAGSTER_HOME",
    # dbt_project/profiles.yml picks its target from it, in every dbt the suite starts.
    "DBT_TARGET",
    # MLflow's client falls back to it wherever no URI is passed: a test would register
    # versions in the developer's registry.
    "MLFLOW_TRACKING_URI",
)
# Every variable a developer's shell could move the suite with: each setting and each
# policy rule (a threshold must not move under the suite), then the outside ones.
_ENV_TO_CLEAR = tuple(
    dict.fromkeys(
        [*(setting.env for setting in SETTINGS), *(rule.env for rule in rules()), *_OUTSIDE_ENV]
    )
)
# For tests of plumbing around a whole run (locks, readers, topology, which periods a
# delivery rebuilds, the daemon's story): one backtest period and two training cohorts
# instead of six and six. The training itself is tested under the default policy (the
# session demo, the retail profile); here it only has to pass its gates (and, in the story,
# a retrained version still has to beat the drifted champion).
LIGHT_TRAINING_ENV = {env_name("backtest_periods"): "1", env_name("training_periods"): "2"}
# Their data: the demo's customers over 13 months instead of 24 (half the periods for dbt to
# build), still enough labelled periods for two cohorts, a backtest and the holdout.
PLUMBING_DATA = GeneratorConfig(history_days=400)
# The test folders whose modules import the dbt assets (or load the definitions, which do).
_DBT_FOLDERS = ("defs", "integration")


def pytest_configure(config: pytest.Config) -> None:
    """Clear the developer's variables, and re-parse the dbt project before collection
    imports the dbt assets when the session collects tests that use them.

    The variables go from the session's environment too (each test also starts without
    them, see ``churn_env``): the dbt parse below, the imports of collection and the xdist
    workers, which inherit it, then see what a test sees.

    ``prepare_if_dev`` is a no-op under pytest, so without the parse a stale manifest would
    hide SQL changes from the tests. A session of unit tests only parses nothing (the parse
    takes ~15 s). Under pytest-xdist only the controller parses (it configures before it
    starts the workers, so before any of them imports the dbt assets): workers writing the
    manifest at once would read each other's half-written file. The controller collects
    nothing, so it decides from the paths it was given.
    """
    for name in _ENV_TO_CLEAR:
        os.environ.pop(name, None)
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        units = Path(tempfile.mkdtemp(prefix="churn-xdist-")) / "units.json"
        os.environ[_UNITS_FILE_ENV] = str(units)
    if hasattr(config, "workerinput") or not _collects_dbt_tests(config):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqlglotrs, pulled in by dagster-dbt
        from churn_assets.lib.dbt import churn_dbt_project

    project = churn_dbt_project()
    project.preparer.prepare(project)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _UNITS_FILE_ENV in os.environ:
        shutil.rmtree(Path(os.environ.pop(_UNITS_FILE_ENV)).parent, ignore_errors=True)


def _collects_dbt_tests(config: pytest.Config) -> bool:
    """Whether a path the session was given holds, or lies in, a folder of dbt tests."""
    tests = Path(__file__).resolve().parent
    folders = [tests / name for name in _DBT_FOLDERS]
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if any(path == f or f in path.parents or path in f.parents for f in folders):
            return True
    return False


# The longest module, started first (``make test`` keeps this order: --no-loadscope-reorder):
# one xdist worker begins with it, the other with the tests on the session demo.
_LONGEST_FIRST = ("integration/test_drift_story.py",)
_DEMO_UNIT = "session-demo"
# Where the workers tell the controller each test's work unit (set by the controller, which
# collects nothing itself; the workers inherit it).
_UNITS_FILE_ENV = "CHURN_TESTS_XDIST_UNITS"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests on the session demo slow, and choose the xdist work units.

    ``make test`` runs two workers, one unit each at a time. A unit is a module (its module
    fixtures are built once), except that every test needing the session's ``churn demo``
    (a whole run of the graph, minutes) joins one unit, so only one worker runs the demo.
    Units start in this order: the story, the demo's, the rest. (xdist's own
    ``--dist loadgroup`` would do the grouping, but its marks do not reach the scheduler
    under pytest 9: it renames ``item._nodeid``, which pytest 9 no longer reads.)
    """
    units: dict[str, str] = {}
    for item in items:
        on_demo = "demo" in getattr(item, "fixturenames", ())
        if on_demo:  # `-m "not slow"` then never starts the demo
            item.add_marker(pytest.mark.slow)
        units[item.nodeid] = _DEMO_UNIT if on_demo else item.nodeid.split("::")[0]

    def rank(item: pytest.Item) -> int:
        if any(item.path.as_posix().endswith(name) for name in _LONGEST_FIRST):
            return 0
        return 1 if units[item.nodeid] == _DEMO_UNIT else 2

    items.sort(key=rank)  # stable: within a rank, collection order
    units_file = os.environ.get(_UNITS_FILE_ENV)
    if units_file and hasattr(config, "workerinput"):  # every worker writes the same units
        partial = Path(f"{units_file}.{config.workerinput['workerid']}")
        partial.write_text(json.dumps(units))
        partial.replace(units_file)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the units of ``pytest_collection_modifyitems``."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    units_file = Path(os.environ[_UNITS_FILE_ENV])

    class UnitScheduling(LoadScopeScheduling):
        units: dict[str, str] | None = None

        # Called once collection is complete, so after every worker wrote the file.
        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                self.units = json.loads(units_file.read_text())
            return self.units.get(nodeid) or super()._split_scope(nodeid)

    return UnitScheduling(config, log)


@pytest.fixture(scope="session")
def churn_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """CHURN_HOME for the session; its embedded Postgres is stopped at the end."""
    home = tmp_path_factory.mktemp("home")
    yield home
    warehouse.stop_embedded(home / "pg")


@pytest.fixture(scope="session")
def embedded_url(churn_home: Path) -> str:
    """URL of the session's embedded server (the same one the Dagster resource starts)."""
    return warehouse.start_embedded(churn_home / "pg")


@pytest.fixture(autouse=True)
def churn_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, churn_home: Path) -> Path:
    """Every test starts from default settings and policy with the session's CHURN_HOME
    (what an earlier test left in the environment goes too)."""
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHURN_HOME", str(churn_home))
    monkeypatch.setenv("CHURN_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return tmp_path / "raw"


@pytest.fixture
def light_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's runs train lightly (``LIGHT_TRAINING_ENV``)."""
    for name, value in LIGHT_TRAINING_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def demo(churn_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """`churn demo` once per session (default settings, empty raw dir): the embedded
    warehouse's `churn` database and the session's MLflow store then hold the demo."""
    raw_dir = tmp_path_factory.mktemp("demo_raw")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHURN_HOME", str(churn_home))
        mp.setenv("CHURN_RAW_DIR", str(raw_dir))
        mp.setenv("GX_ANALYTICS_ENABLED", "false")
        result = CliRunner().invoke(main, ["demo"], catch_exceptions=False)
    return result, raw_dir


@pytest.fixture(scope="session")
def new_database(embedded_url: str) -> Iterator[Callable[[], str]]:
    """Makes empty databases on the session server, so tests that write stay isolated."""
    admin = psycopg2.connect(embedded_url)
    admin.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    params = warehouse.parse_url(embedded_url)

    def create() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}"')
        return f"postgresql://{params.user}@/{name}?host={params.host}&port={params.port}"

    yield create
    admin.close()


@pytest.fixture
def fresh_database_url(new_database: Callable[[], str]) -> str:
    """A new, empty database on the session server."""
    return new_database()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 recording what it is sent (tests/webhook.py)."""
    with serve_receiver() as state:
        yield state
