"""Renders ``docs/settings.md`` from the code, so the page cannot drift from it.

Settings come from :data:`churn_assets.settings.SETTINGS` and thresholds from
:func:`churn_assets.policy.rules`; a unit test fails when the committed page differs.
Regenerate it with::

    .venv/bin/python -m churn_assets.app.settings_doc > docs/settings.md
"""

from __future__ import annotations

import sys

from churn_assets.policy import Rule, rules
from churn_assets.settings import SETTINGS, WHEN_CODE_LOADS

REGENERATE = ".venv/bin/python -m churn_assets.app.settings_doc > docs/settings.md"

_INTRO = f"""\
# Settings

<!-- Generated from churn_assets/settings.py and churn_assets/policy.py: do not edit.
     Regenerate: {REGENERATE} -->

Everything the platform reads from the environment, in two kinds: **settings** say *where*
things are (directories, URLs, targets; `churn_assets/settings.py`), the **policy** holds
every threshold it *decides* with (`churn_assets/policy.py`). Back to the
[README](../README.md).

## Settings

"When read" says what a change needs. A setting read {WHEN_CODE_LOADS} takes effect once
`churn dev` (or the code server) restarts; every `churn` command loads the code afresh, so
it sees a change at once. The others are read again at each use.

| variable | default | meaning | when read |
|---|---|---|---|
"""

_AFTER_SETTINGS = f"""
Per-run overrides are in the UI's launchpad: `full_refresh` and `raw_dir` as run config of
the dbt steps and `raw_tables`, and the label definition as the `labels` resource
(`window_days`, `holdout_as_of`; defaults `CHURN_WINDOW_DAYS`, `CHURN_AS_OF`), which the dbt
steps, the training dataset and the backtest read alike; the periods of a run are its
partitions ([time and periods](time.md)).

Read elsewhere, not settings of the platform:

- `CHURN_API_KEY`: the key `churn serve` requires in the `X-API-Key` header (every
  endpoint but `/health`); unset, no key is required. `churn serve --api-key-env` names
  another variable ([serving](serving.md)).
- `MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`: MLflow's own basic-auth
  variables, the alternative to credentials in `MLFLOW_TRACKING_URI`.
- `CHURN_PG_*`: printed by `churn warehouse-env` for dbt's `profiles.yml`, derived from the
  warehouse; not set by hand ([analysts](analysts.md)).
- `CHURN_SPARK_METASTORE_JDBC_URL`, `CHURN_SPARK_METASTORE_URIS`,
  `CHURN_SPARK_DRIVER_JAVA_OPTIONS`: derived from the Spark settings above for the `spark`
  output of dbt's `profiles.yml` (`churn_assets.infra.spark.dbt_env`), printed on Spark by
  `churn warehouse-env`; not set by hand ([Spark notes](spark-notes.md)).

## The policy: every threshold the platform decides with

Every rule is defined once, in `churn_assets/policy.py` (default, meaning, variable, valid
range), and reaches Dagster as the `policy` resource (`ChurnPolicy`, generated from the same
definition): the UI shows each value with its description under Deployment → Resources, and
a run can override any of them in the launchpad. Gates, checks, sensors, the CLI and the
scorer all read that one object; a failed rule names the variable that moves it. The
variables are read {WHEN_CODE_LOADS} (the resource's defaults) and when `churn serve` starts.

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    """The whole settings page, as committed in ``docs/settings.md``."""
    setting_rows = [_row(f"`{s.env}`", s.default, s.meaning, s.read) for s in SETTINGS]
    policy_rows = [
        _row(f"`{rule.env}`", f"`{shown_default(rule)}`", rule.meaning) for rule in rules()
    ]
    return _INTRO + "\n".join(setting_rows) + "\n" + _AFTER_SETTINGS + "\n".join(policy_rows) + "\n"


def shown_default(rule: Rule) -> str:
    """A rule's default as a person would write it (``1e-06``, ``0.6``, ``500000``)."""
    return f"{rule.default:g}" if rule.kind is float else str(rule.default)


def _row(*cells: str) -> str:
    # A pipe inside a cell would end it early.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


if __name__ == "__main__":
    sys.stdout.write(render())
