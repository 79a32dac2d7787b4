"""Unit tests for the synthetic raw-data generator (contract, labels, determinism, drift)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from churn_assets.app.cli import generate as generate_command
from churn_assets.app.cli import main
from churn_assets.data.contract import RawTables, read_raw_tables
from churn_assets.data.generator import (
    CATEGORIES,
    FREE_EMAIL_DOMAINS,
    PROFILES,
    DriftScenario,
    GeneratedData,
    GeneratorConfig,
    generate,
    write_raw_files,
)
from churn_assets.data.profile import profile_raw_tables
from churn_assets.policy import Policy

DRIFT = DriftScenario(
    starts_at=date(2025, 7, 1),
    spend_multiplier=1.5,
    order_rate_multiplier=2.0,
    email_mix={"free": 0.2, "business": 0.7, "education": 0.1},
)


@pytest.fixture(scope="module")
def default_data() -> GeneratedData:
    return generate()


@pytest.fixture(scope="module")
def large_data() -> GeneratedData:
    """Big enough for rates and AUC to be stable, still well under a second."""
    return generate(GeneratorConfig(n_customers=20_000, seed=7))


def roc_auc(scores: pd.Series | np.ndarray, labels: pd.Series | np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties (no sklearn needed)."""
    y = np.asarray(labels).astype(bool)
    ranks = pd.Series(np.asarray(scores, dtype=float)).rank(method="average").to_numpy()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def labels_from_orders(orders: pd.DataFrame, as_of: date, window_days: int) -> pd.DataFrame:
    """The platform's SQL label rule, restated independently in pandas."""
    order_date = orders["ordered_at"].dt.date
    before = orders.loc[order_date <= as_of, "customer_id"].unique()
    window_end = as_of + timedelta(days=window_days)
    in_window = (order_date > as_of) & (order_date <= window_end)
    active = set(orders.loc[in_window, "customer_id"])
    population = pd.Series(sorted(before), name="customer_id")
    churned = (~population.isin(active)).astype("int64").rename("churned")
    return pd.concat([population, churned], axis=1)


def test_generate_same_seed_gives_identical_frames() -> None:
    config = GeneratorConfig(n_customers=300, seed=11, drift=DRIFT)
    first, second = generate(config), generate(config)
    pd.testing.assert_frame_equal(first.customers, second.customers)
    pd.testing.assert_frame_equal(first.orders, second.orders)
    pd.testing.assert_frame_equal(first.ground_truth, second.ground_truth)


def test_generate_different_seeds_give_different_data() -> None:
    first = generate(GeneratorConfig(n_customers=300, seed=1))
    second = generate(GeneratorConfig(n_customers=300, seed=2))
    assert not first.customers.equals(second.customers)
    assert not first.orders.equals(second.orders)
    assert not first.ground_truth.equals(second.ground_truth)


def test_generate_default_volumes_and_churn_rate(default_data: GeneratedData) -> None:
    assert len(default_data.customers) == 1000
    assert 8_000 <= len(default_data.orders) <= 12_000
    gt = default_data.ground_truth
    assert 0.17 <= gt["churned"].mean() <= 0.23
    # Calibration makes the mean hidden probability hit the target exactly.
    assert gt["churn_probability"].mean() == pytest.approx(0.20, abs=1e-6)
    assert gt["churn_probability"].between(0, 1, inclusive="neither").all()
    assert set(gt["churned"].unique()) <= {0, 1}


def test_generate_oracle_auc_in_band(
    default_data: GeneratedData, large_data: GeneratedData
) -> None:
    gt = default_data.ground_truth
    assert 0.78 <= roc_auc(gt["churn_probability"], gt["churned"]) <= 0.93
    big = large_data.ground_truth
    assert 0.80 <= roc_auc(big["churn_probability"], big["churned"]) <= 0.90
    assert big["churned"].mean() == pytest.approx(0.20, abs=0.015)


def test_generate_churn_is_visible_in_features_at_as_of(large_data: GeneratedData) -> None:
    """Recency alone (computable from orders up to as_of) must carry real but partial signal."""
    as_of = large_data.config.as_of
    orders = large_data.orders
    seen = orders[orders["ordered_at"].dt.date <= as_of]
    last = seen.groupby("customer_id")["ordered_at"].max()
    gt = large_data.ground_truth.set_index("customer_id")
    recency = (pd.Timestamp(as_of) - last.dt.normalize()).dt.days.reindex(gt.index)
    auc = roc_auc(recency, gt["churned"])
    assert 0.65 <= auc < roc_auc(gt["churn_probability"], gt["churned"])


@pytest.mark.parametrize(
    "config",
    [
        GeneratorConfig(),
        GeneratorConfig(n_customers=2_000, seed=3, drift=DRIFT),
        GeneratorConfig(n_customers=500, seed=5, history_days=400, window_days=30),
        GeneratorConfig(n_customers=40, seed=9, end_date=date(2026, 3, 31)),
        replace(PROFILES["retail"], n_customers=2_000, seed=3),
        # Concept drift starting inside the last label window: its hidden truth is shifted
        # by part of the strength, the orders of the window by all of it.
        GeneratorConfig(
            n_customers=2_000,
            seed=3,
            drift=DriftScenario(starts_at=date(2025, 11, 1), concept_shift=1.5),
        ),
    ],
    ids=["default", "drift", "short-window", "tiny", "retail", "concept"],
)
def test_generate_ground_truth_matches_label_definition(config: GeneratorConfig) -> None:
    data = generate(config)
    orders = data.orders
    # The platform derives as_of from the data; it must equal the generator's.
    derived_as_of = orders["ordered_at"].max().date() - timedelta(days=config.window_days)
    assert derived_as_of == config.as_of
    expected = labels_from_orders(orders, config.as_of, config.window_days)
    gt = data.ground_truth
    assert (gt["as_of"] == config.as_of).all()
    pd.testing.assert_frame_equal(
        gt[["customer_id", "churned"]].reset_index(drop=True),
        expected,
        check_dtype=False,
    )


def test_generate_contract_invariants(large_data: GeneratedData) -> None:
    config = large_data.config
    customers, orders = large_data.customers, large_data.orders

    assert customers["customer_id"].is_unique
    assert customers["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert orders["order_id"].is_unique
    assert orders["order_id"].str.fullmatch(r"O\d{8}").all()
    assert orders["order_id"].notna().all() and orders["customer_id"].notna().all()
    assert orders["customer_id"].isin(customers["customer_id"]).all()

    assert (orders["amount"] >= 0).all()
    assert np.allclose(orders["amount"], orders["amount"].round(2))
    assert str(orders["item_count"].dtype) == "Int64"
    assert (orders["item_count"].dropna() >= 1).all()
    assert set(orders["category"].dropna().unique()) <= set(CATEGORIES)
    assert (orders["ordered_at"] == orders["ordered_at"].dt.floor("s")).all()

    order_dates = orders["ordered_at"].dt.date
    assert order_dates.max() == config.end_date
    assert order_dates.min() >= config.end_date - timedelta(days=config.history_days)

    # Null rates of the raw contract (20,000 customers, ~200,000 orders).
    assert customers["signup_at"].isna().mean() == pytest.approx(0.03, abs=0.01)
    assert customers["email"].isna().mean() == pytest.approx(0.05, abs=0.01)
    assert orders["item_count"].isna().mean() == pytest.approx(0.01, abs=0.005)
    assert orders["category"].isna().mean() == pytest.approx(0.02, abs=0.005)


def test_generate_customer_behaviour_mix(large_data: GeneratedData) -> None:
    customers, orders = large_data.customers, large_data.orders
    first_order = orders.groupby("customer_id")["ordered_at"].min()
    # ~2 % never order; they can never enter a training population.
    assert 1 - first_order.size / len(customers) == pytest.approx(0.02, abs=0.007)
    joined = customers.set_index("customer_id").join(first_order.rename("first_order"))
    both = joined.dropna(subset=["signup_at", "first_order"])
    early = (both["first_order"] < both["signup_at"]).mean()
    assert 0 < early < 0.03  # mostly on/after signup, with a few guest checkouts

    domain = customers["email"].str.split("@").str[1]
    education = domain.str.endswith(".edu") | domain.str.contains(".ac.", regex=False)
    free = domain.isin(FREE_EMAIL_DOMAINS)
    assert free.mean() == pytest.approx(0.55, abs=0.03)
    assert education.mean() == pytest.approx(0.10, abs=0.02)
    assert (domain.notna() & ~free & ~education).mean() == pytest.approx(0.30, abs=0.03)

    assert len(orders) / len(customers) == pytest.approx(10.0, rel=0.1)
    assert orders.groupby("customer_id")["category"].nunique().max() > 1


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_raw_files_round_trip(tmp_path: Path, fmt: str) -> None:
    data = generate(GeneratorConfig(n_customers=200, seed=4))
    out_dir = tmp_path / "nested" / "raw"
    paths = write_raw_files(data, out_dir, fmt=fmt)  # type: ignore[arg-type]
    assert [p.name for p in paths] == [
        f"{n}.{fmt}" for n in ("customers", "orders", "ground_truth")
    ]
    frames = (data.customers, data.orders, data.ground_truth)
    for path, frame in zip(paths, frames, strict=True):
        back = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
        assert list(back.columns) == list(frame.columns)
        assert len(back) == len(frame)
        assert back["customer_id"].tolist() == frame["customer_id"].tolist()
    orders_back = pd.read_csv(paths[1]) if fmt == "csv" else pd.read_parquet(paths[1])
    assert orders_back["amount"].tolist() == data.orders["amount"].tolist()
    assert orders_back["item_count"].isna().sum() == data.orders["item_count"].isna().sum()
    ordered_at = pd.to_datetime(orders_back["ordered_at"]).astype("datetime64[ns]")
    assert ordered_at.equals(data.orders["ordered_at"].astype("datetime64[ns]"))


def test_write_raw_files_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt"):
        write_raw_files(generate(GeneratorConfig(n_customers=50)), tmp_path, fmt="json")  # type: ignore[arg-type]


def test_generate_drift_shifts_only_post_start_behaviour() -> None:
    base_config = GeneratorConfig(n_customers=5_000, seed=21)
    base = generate(base_config)
    drifted = generate(replace(base_config, drift=DRIFT))
    start = pd.Timestamp(DRIFT.starts_at)

    def split(data: GeneratedData) -> tuple[pd.DataFrame, pd.DataFrame]:
        orders = data.orders
        return orders[orders["ordered_at"] < start], orders[orders["ordered_at"] >= start]

    base_pre, base_post = split(base)
    drift_pre, drift_post = split(drifted)
    # Before starts_at: same distribution (same customers, same process).
    assert len(drift_pre) == pytest.approx(len(base_pre), rel=0.03)
    assert drift_pre["amount"].mean() == pytest.approx(base_pre["amount"].mean(), rel=0.03)
    # After: amounts scale by spend_multiplier, volume rises with the order rate.
    ratio = drift_post["amount"].mean() / base_post["amount"].mean()
    assert ratio == pytest.approx(DRIFT.spend_multiplier, rel=0.05)
    assert len(drift_post) > 1.5 * len(base_post)
    # Customers signing up after starts_at follow the drifted email mix.
    # (a margin past starts_at skips guest checkouts whose account was recorded late)
    late = drifted.customers[drifted.customers["signup_at"] >= start + pd.Timedelta(days=45)]
    domain = late["email"].str.split("@").str[1]
    assert domain.isin(FREE_EMAIL_DOMAINS).mean() == pytest.approx(0.2, abs=0.05)
    assert late["email"].isna().mean() == 0.0
    # Same customers before the shift: signup times and early emails are untouched.
    early = base.customers["signup_at"] < start
    pd.testing.assert_series_equal(
        base.customers.loc[early, "email"], drifted.customers.loc[early, "email"]
    )
    assert drifted.ground_truth["churned"].mean() == pytest.approx(0.20, abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"window_days": 90, "history_days": 90}, "history_days"),
        ({"target_churn_rate": 1.0}, "target_churn_rate"),
        ({"mean_orders_per_customer": 0.0}, "mean_orders"),
    ],
)
def test_generate_rejects_invalid_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def test_generate_rejects_invalid_drift() -> None:
    with pytest.raises(ValueError, match="email_mix"):
        DriftScenario(starts_at=date(2025, 1, 1), email_mix={"corporate": 1.0})
    with pytest.raises(ValueError, match="multipliers"):
        DriftScenario(starts_at=date(2025, 1, 1), spend_multiplier=-1.0)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_raw_files_output_satisfies_the_raw_data_contract(tmp_path: Path, fmt: str) -> None:
    data = generate(GeneratorConfig(n_customers=300, seed=5))
    write_raw_files(data, tmp_path, fmt=fmt)  # type: ignore[arg-type]
    tables = read_raw_tables(tmp_path)  # raises on any contract violation
    assert len(tables.customers) == 300
    assert len(tables.orders) == len(data.orders)


def test_subscription_profile_is_the_default_generator() -> None:
    config = GeneratorConfig(n_customers=300, seed=5)
    profiled = replace(PROFILES["subscription"], n_customers=300, seed=5)
    default, same = generate(config), generate(profiled)
    pd.testing.assert_frame_equal(default.orders, same.orders)
    pd.testing.assert_frame_equal(default.ground_truth, same.ground_truth)


def test_retail_profile_is_mostly_one_off_buyers_with_high_churn() -> None:
    data = generate(replace(PROFILES["retail"], n_customers=3000, seed=11))
    per_customer = data.orders.groupby("customer_id").size()
    assert (per_customer == 1).mean() > 0.6  # most customers order once
    assert per_customer.max() >= 10  # ... and a long tail of heavy buyers
    assert data.ground_truth["churned"].mean() > 0.6  # well above 60% at 90 days
    assert per_customer.index.isin(data.customers["customer_id"]).all()


def test_retail_profile_meets_the_raw_data_contract(tmp_path: Path) -> None:
    write_raw_files(generate(replace(PROFILES["retail"], n_customers=500)), tmp_path)
    tables = read_raw_tables(tmp_path)
    assert len(tables.customers) == 500


def test_generate_command_subscription_profile_writes_the_default_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--customers", "300", "--seed", "5", "--format"]
    for fmt in ("csv", "parquet"):
        default = runner.invoke(main, [*args, fmt, "--out", str(tmp_path / f"default-{fmt}")])
        named = runner.invoke(
            main, [*args, fmt, "--profile", "subscription", "--out", str(tmp_path / f"sub-{fmt}")]
        )
        assert default.exit_code == 0 and named.exit_code == 0, default.output + named.output
        files = sorted(p.name for p in (tmp_path / f"default-{fmt}").iterdir())
        assert files == [f"{t}.{fmt}" for t in ("customers", "ground_truth", "orders")]
        for name in files:
            written = (tmp_path / f"sub-{fmt}" / name).read_bytes()
            assert written == (tmp_path / f"default-{fmt}" / name).read_bytes(), name


def test_subscription_profile_still_makes_the_documented_demo(default_data: GeneratedData) -> None:
    # The README's demo figures (seed 42): a profile change must not move the default stream.
    # (Checked byte for byte against the generator before profiles existed, seeds 42 and 7.)
    data = generate(PROFILES["subscription"])
    pd.testing.assert_frame_equal(data.orders, default_data.orders)
    assert len(data.orders) == 10_049
    assert (len(data.ground_truth), int(data.ground_truth["churned"].sum())) == (868, 172)
    assert data.config.as_of == date(2025, 9, 30)  # a month end: a period


def test_generate_command_offers_exactly_the_generator_profiles() -> None:
    option = next(p for p in generate_command.params if p.name == "profile_name")
    assert set(option.type.choices) == set(PROFILES)  # type: ignore[attr-defined]
    assert option.default == "subscription"


def test_retail_profile_stays_retail_at_the_window_its_profile_suggests() -> None:
    # Label rate well above 60% also at the long window `churn profile` suggests for it.
    data = generate(replace(PROFILES["retail"], n_customers=3000, seed=11))
    tables = RawTables(data.customers, data.orders, Path("customers"), Path("orders"))
    report = profile_raw_tables(tables, Policy())
    assert report.suggested_window_days >= 180
    assert report.label_rate_at_suggested_as_of is not None
    assert report.label_rate_at_suggested_as_of > 0.6
