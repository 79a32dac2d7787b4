"""docs/settings.md is generated from the code, the settings' descriptions match what
load_settings does, and every relative link in the README and docs/ leads somewhere."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from enum import Enum
from pathlib import Path

import pytest

from churn_assets.app.settings_doc import REGENERATE, render, shown_default
from churn_assets.policy import rules
from churn_assets.settings import (
    SETTINGS,
    WHEN_CODE_LOADS,
    SettingDoc,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

# A value each variable accepts that differs from its default (the test of "each variable
# moves its own field"); a new setting needs a line here.
EXAMPLES = {
    "CHURN_HOME": "/tmp/another-churn-home",
    "CHURN_RAW_DIR": "/tmp/another-raw-dir",
    "CHURN_PERIOD": "week",
    "CHURN_AS_OF": "2025-06-30",
    "CHURN_WINDOW_DAYS": "60",
    "CHURN_WAREHOUSE_URL": "postgresql://u:p@db:5433/w",
    "DBT_TARGET": "prod",
    "CHURN_ENGINE": "spark",
    "CHURN_SPARK_MASTER": "spark://127.0.0.1:7077",
    "CHURN_SPARK_WAREHOUSE_DIR": "s3a://bucket/churn",
    "CHURN_SPARK_METASTORE": "thrift://metastore:9083",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "CHURN_SENSOR_INTERVAL_SECONDS": "5",
    "CHURN_WAREHOUSE_LOCK_TIMEOUT_SECONDS": "0",
    "CHURN_ALERT_WEBHOOK_URL": "https://hooks.example.com/alert",
    "CHURN_UI_URL": "https://dagster.example.com",
    "CHURN_ONLINE_FEATURES_PATH": "/tmp/another-online/features.parquet",
    "CHURN_CANARY_PERCENT": "10",
    "CHURN_RAW_SOURCE": "tables",
    "CHURN_RAW_CUSTOMERS_TABLE": "shop.customers",
    "CHURN_RAW_ORDERS_TABLE": "shop.orders",
    "CHURN_SPARK_SHUFFLE_PARTITIONS": "4",
}


def test_docs_settings_page_is_what_the_generator_renders() -> None:
    committed = (ROOT / "docs" / "settings.md").read_text()
    assert committed == render(), f"docs/settings.md is stale; regenerate it: {REGENERATE}"


def test_settings_page_lists_every_policy_rule_with_its_default() -> None:
    page = render()
    for rule in rules():
        assert f"| `{rule.env}` | `{shown_default(rule)}` |" in page, rule.env


def test_every_settings_field_is_described_once_in_order() -> None:
    assert [doc.field for doc in SETTINGS] == [f.name for f in dataclasses.fields(Settings)]


class _RecordingEnv(Mapping[str, str]):
    """An environment that remembers every variable asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_load_settings_reads_exactly_the_described_variables() -> None:
    # A variable read but not described would be missing from the docs; one described but
    # not read would be a setting that does nothing.
    environ = _RecordingEnv()
    load_settings(environ)
    assert environ.asked == {doc.env for doc in SETTINGS}


@pytest.mark.parametrize("doc", SETTINGS, ids=lambda doc: doc.env)
def test_each_described_variable_moves_its_own_field(doc: SettingDoc) -> None:
    default, changed = load_settings({}), load_settings({doc.env: EXAMPLES[doc.env]})
    assert getattr(changed, doc.field) != getattr(default, doc.field)


@pytest.mark.parametrize("doc", SETTINGS, ids=lambda doc: doc.env)
def test_each_described_default_is_what_load_settings_gives(doc: SettingDoc) -> None:
    settings = load_settings({})
    value = getattr(settings, doc.field)
    if doc.default.startswith("unset"):
        assert value is None
        return
    literal = re.fullmatch(r"`([^`]+)`", doc.default)
    assert literal, f"{doc.env}: a default is `literal` or 'unset: ...', not {doc.default!r}"
    shown = literal.group(1).replace("$CHURN_HOME", str(settings.home))
    if isinstance(value, Path):
        assert value == Path(shown).resolve()
    elif isinstance(value, Enum):
        assert value.value == shown
    elif isinstance(value, float):
        assert f"{value:g}" == shown
    else:
        assert str(value) == shown


def test_the_sensor_interval_is_marked_as_read_when_the_code_loads() -> None:
    # The daemon's sensors take their interval when the definitions load: a change needs a
    # restart, and the page must say so.
    read = {doc.env: doc.read for doc in SETTINGS}
    assert read["CHURN_SENSOR_INTERVAL_SECONDS"] == WHEN_CODE_LOADS


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, code and bold marks and punctuation dropped
    (underscores and hyphens kept), spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_lead_to_an_existing_file_and_heading(page: Path) -> None:
    for link in _relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} points to a missing file"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link} has no such heading"


def test_the_readme_links_every_docs_page() -> None:
    linked = {
        (ROOT / link.partition("#")[0]).resolve()
        for link in _relative_links(ROOT / "README.md")
        if link.startswith("docs/")
    }
    missing = [p.name for p in PAGES if p.parent.name == "docs" and p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"
