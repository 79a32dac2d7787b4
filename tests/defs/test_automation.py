"""The automation conditions of the real definitions, evaluated with Dagster's own evaluator
against a temporary instance (no warehouse: materialisations and check results are
reported as events), and the in-process grouping of requests into runs."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from churn_assets.defs.partitions import PERIODS_NAME
from churn_assets.lib.automation import _evaluate, _runs

PERIODS = ["2025-01-31", "2025-02-28", "2025-03-31"]
PER_PERIOD = ("customer_features", "churn_labels", "training_snapshot")
UNPARTITIONED_UPSTREAM = ("free_email_domains", "stg_raw__customers", "stg_raw__orders")


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from churn_assets.definitions import defs

    return defs()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(PERIODS_NAME, PERIODS)
        yield instance


def _requested(result: dg.EvaluateAutomationConditionsResult, defs: dg.Definitions) -> dict:
    return {
        key.to_user_string(): sorted(str(p) for p in result.get_requested_partitions(key))
        for key in defs.resolve_asset_graph().toposorted_asset_keys
        if result.get_num_requested(key)
    }


def _materialise(
    instance: dg.DagsterInstance, defs: dg.Definitions, key: str, partition: str | None = None
) -> None:
    """A materialisation with every check of the asset passed, as a real run reports it."""
    asset_key = dg.AssetKey(key)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key, partition=partition))
    graph = defs.resolve_asset_graph()
    for check_key in graph.get_check_keys_for_assets({asset_key}):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_key.name,
                passed=True,
                partition=partition,
            )
        )


def _materialise_upstream_of_scores(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    for key in (*UNPARTITIONED_UPSTREAM, "current_features", "churn_model_version"):
        _materialise(instance, defs, key)
    for key in PER_PERIOD:
        for period in PERIODS:
            _materialise(instance, defs, key, period)


def test_the_reference_seed_is_built_when_missing_and_nothing_else_moves(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _requested(first, defs) == {"free_email_domains": ["None"]}


def test_new_raw_data_flows_to_every_period_and_the_first_training(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    _materialise(instance, defs, "free_email_domains")

    def tick() -> dict[str, list[str]]:  # as `churn run` evaluates (the period list cached)
        nonlocal cursor
        result = _evaluate(defs, instance, cursor)
        cursor = result.cursor
        return _requested(result, defs)

    for key in ("raw_customers", "raw_orders"):
        _materialise(instance, defs, key)
    assert tick() == {"stg_raw__customers": ["None"], "stg_raw__orders": ["None"]}
    for key in ("stg_raw__customers", "stg_raw__orders"):
        _materialise(instance, defs, key)
    # A new file may revise any period and the newest labels mature: every period rebuilds,
    # and nothing reads the scores yet (no champion, nothing scored).
    assert tick() == {key: PERIODS for key in PER_PERIOD}
    for key in PER_PERIOD:
        for period in PERIODS:
            _materialise(instance, defs, key, period)
    # the first model: the whole training chain in one run (its gates stop it inside the run)
    assert set(tick()) == {
        "current_features",
        "training_dataset",
        "churn_model",
        "churn_model_onnx",
        "churn_model_version",
        "backtest",
    }
    assert tick() == {}  # handled: nothing is requested twice


def test_a_new_champion_rescores_only_the_newest_period_and_reruns_the_drift_monitor(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    _materialise_upstream_of_scores(instance, defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_champion"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(result, defs) == {"churn_scores": [PERIODS[-1]], "feature_drift": ["None"]}
    # the readers of the scores follow once the newest period is scored
    _materialise(instance, defs, "churn_scores", PERIODS[-1])
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor)
    assert {"realized_performance", "customer_360"} <= set(_requested(result, defs))


def test_a_failed_blocking_check_stops_everything_downstream(
    defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    _materialise_upstream_of_scores(instance, defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    graph = defs.resolve_asset_graph()
    features = dg.AssetKey("current_features")
    blocking = [
        key
        for key in graph.get_check_keys_for_assets({features})
        if graph.get_check_spec(key).blocking
    ]
    assert blocking, "current_features has no blocking check to fail"
    _materialise(instance, defs, "current_features")
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=features, check_name=blocking[0].name, passed=False)
    )
    instance.report_runless_asset_event(dg.AssetMaterialization("churn_champion"))
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert "feature_drift" not in _requested(result, defs)


def test_every_asset_but_the_sensor_driven_ones_has_a_condition(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    without = {
        key.to_user_string()
        for key in graph.materializable_asset_keys
        if graph.get(key).automation_condition is None
    }
    # raw files: raw_files_sensor; the champion: champion_promotion_sensor; the shadow
    # comparison is on demand (`churn status` computes it live)
    assert without == {"raw_customers", "raw_orders", "churn_champion", "shadow_comparison"}


def test_requests_become_runs_in_dependency_order_grouped_by_periods() -> None:
    a, b, c, d, e = (dg.AssetKey(name) for name in "abcde")
    every, newest = {"p1", "p2", "p3"}, {"p3"}
    wanted = {a: {None}, b: every, c: {None}, d: newest, e: {None}}
    runs = _runs([a, b, c, d, e], wanted)
    assert runs == [([a, b, c], ["p1", "p2", "p3"]), ([d, e], ["p3"])]
    assert _runs([a, c], {a: {None}, c: {None}}) == [([a, c], [])]


def test_an_evaluation_reads_the_period_list_once_and_the_next_sees_new_periods(
    defs: dg.Definitions, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = instance.event_log_storage
    read = storage.get_dynamic_partitions
    reads: list[str] = []

    def counted(partitions_def_name: str) -> list[str]:
        reads.append(partitions_def_name)
        return list(read(partitions_def_name))

    monkeypatch.setattr(storage, "get_dynamic_partitions", counted)
    _materialise_upstream_of_scores(instance, defs)
    uncached = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    uncached_reads, reads[:] = len(reads), []
    cached = _evaluate(defs, instance, None)

    assert _requested(cached, defs) == _requested(uncached, defs)
    assert len(reads) <= 3, reads  # Dagster's own cursor code asked hundreds of times
    assert uncached_reads > 100 * len(reads)
    # Afterwards the instance reads the storage again: a period added now is seen.
    assert "get_dynamic_partitions" not in vars(instance)
    instance.add_dynamic_partitions(PERIODS_NAME, ["2025-04-30"])
    assert instance.get_dynamic_partitions(PERIODS_NAME)[-1] == "2025-04-30"
