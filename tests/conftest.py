"""Shared fixtures: one real embedded Postgres per session, isolated settings per test."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from click.testing import CliRunner, Result

from churn_assets import warehouse
from churn_assets.cli import main
from churn_assets.policy import rules
from tests.webhook import Receiver, serve_receiver

_ENV_TO_CLEAR = (
    "CHURN_RAW_DIR",
    "CHURN_AS_OF",
    "CHURN_WINDOW_DAYS",
    "CHURN_WAREHOUSE_URL",
    "MLFLOW_TRACKING_URI",
    "CHURN_MIN_AUC",
    "DBT_TARGET",
    "DAGSTER_HOME",
    "CHURN_CANARY_PERCENT",
)


def pytest_configure(config: pytest.Config) -> None:
    """Re-parse the dbt project before collection imports the dbt assets.

    ``prepare_if_dev`` is a no-op under pytest, so without this a stale manifest would hide
    SQL changes from the tests. Under pytest-xdist only the controller parses (it configures
    before it starts the workers): workers writing the manifest at once would read each
    other's half-written file.
    """
    if hasattr(config, "workerinput"):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # sqlglotrs, pulled in by dagster-dbt
        from churn_assets.lib.dbt import churn_dbt_project

    project = churn_dbt_project()
    project.preparer.prepare(project)


# The longest module, started first (``make test`` keeps this order: --no-loadscope-reorder):
# one xdist worker begins with it and the rest fills in around it.
_LONGEST_FIRST = ("integration/test_drift_story.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next(
            (i for i, name in enumerate(_LONGEST_FIRST) if path.endswith(name)),
            len(_LONGEST_FIRST),
        )

    items.sort(key=rank)  # stable: the rest keep their order


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
    """Every test starts from default settings with the session's CHURN_HOME."""
    # Every policy rule too: a developer's shell must not move a threshold under the suite.
    for name in (*_ENV_TO_CLEAR, *(rule.env for rule in rules())):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHURN_HOME", str(churn_home))
    monkeypatch.setenv("CHURN_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return tmp_path / "raw"


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
