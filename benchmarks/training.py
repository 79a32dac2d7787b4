"""Time ChurnMLP training on generated data, with epochs and holdout/oracle AUC.

Why: training runs inside a Dagster asset on 2-core machines; this measures how long it takes
at demo size and at 100x, and shows the quality reached at the same time.

The features are computed by the pandas test fixture (``tests/unit/_features.py``), which
restates the dbt SQL; only ``train`` itself is timed as "train (s)".

    python benchmarks/training.py                      # 1k and 100k customers, seed 42
    python benchmarks/training.py --sizes 1000 --seeds 42 1 2 3 7   # AUC across data seeds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1_000, 100_000)


def _imports() -> None:
    # The snapshot fixture lives in tests/, which is not an installed package.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def warm_up() -> float:
    """One 1-epoch training, so one-time costs (torch's lazy imports) are not in the timings.

    ``torch.use_deterministic_algorithms`` imports torch._inductor on first use (~2 s here).
    """
    from churn_assets.ml.features import split_holdout
    from churn_assets.ml.train import TrainConfig, train
    from tests.unit._features import generated_snapshot

    started = time.perf_counter()
    snapshot, _ = generated_snapshot(300, seed=0)
    train(split_holdout(snapshot)[0], TrainConfig(max_epochs=1))
    return time.perf_counter() - started


def run_one(n_customers: int, seed: int) -> dict[str, Any]:
    """Generate, build features, split, train with the default config, score the holdout."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from churn_assets.data.generator import GeneratorConfig, generate
    from churn_assets.ml.features import ID, labels, split_holdout, to_model_inputs
    from churn_assets.ml.metrics import evaluate, oracle_auc
    from churn_assets.ml.model import predict_proba
    from churn_assets.ml.train import TrainConfig, train
    from tests.unit._features import training_snapshot

    started = time.perf_counter()
    data = generate(GeneratorConfig(n_customers=n_customers, seed=seed))
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    snapshot = training_snapshot(data)
    features_s = time.perf_counter() - started

    train_df, holdout = split_holdout(snapshot)
    config = TrainConfig()
    started = time.perf_counter()
    result = train(train_df, config)
    train_s = time.perf_counter() - started
    y = labels(holdout)
    holdout_inputs = to_model_inputs(holdout)
    metrics = evaluate(y, predict_proba(result.model, holdout_inputs), result.threshold)

    # Reference point: logistic regression on the same log1p + standardised inputs.
    def design(frame_inputs: Any) -> Any:
        logged = frame_inputs.numeric.astype(np.float64)
        columns = [0, 1, 2, 3, 4, 6]  # all but cart_diversity, like the model
        logged[:, columns] = np.log1p(logged[:, columns])
        return np.hstack([logged, np.eye(4)[frame_inputs.category]])

    x_train = design(to_model_inputs(train_df))
    scaler = StandardScaler().fit(x_train)
    logreg = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), labels(train_df))
    logreg_prob = logreg.predict_proba(scaler.transform(design(holdout_inputs)))[:, 1]
    return {
        "customers": n_customers,
        "seed": seed,
        "rows": len(snapshot),
        "label_rate": float(labels(snapshot).mean()),
        "n_fit": result.n_train,
        "n_val": result.n_val,
        "n_holdout": len(holdout),
        "generate_s": generate_s,
        "features_s": features_s,
        "train_s": train_s,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "s_per_epoch": train_s / len(result.history),
        "auc": metrics.roc_auc,
        "pr_auc": metrics.pr_auc,
        "logreg_auc": evaluate(y, logreg_prob, 0.5).roc_auc,
        "oracle_auc": oracle_auc(holdout[ID], data.ground_truth),
    }


def _timing_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| customers | rows (fit/val/holdout) | features (s) | train (s) | epochs (best) "
        "| s/epoch | holdout AUC | oracle AUC |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['customers']:,} | {r['rows']:,} ({r['n_fit']:,}/{r['n_val']:,}/"
            f"{r['n_holdout']:,}) | {r['features_s']:.2f} | {r['train_s']:.2f} | "
            f"{r['epochs']} ({r['best_epoch']}) | {r['s_per_epoch']:.3f} | {r['auc']:.3f} | "
            f"{r['oracle_auc']:.3f} |"
        )
    return "\n".join(lines)


def _quality_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| data seed | rows | label rate | holdout AUC | logistic regression AUC | oracle AUC "
        "| gap to oracle | best epoch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['rows']:,} | {r['label_rate']:.1%} | {r['auc']:.3f} | "
            f"{r['logreg_auc']:.3f} | {r['oracle_auc']:.3f} | "
            f"{r['oracle_auc'] - r['auc']:+.3f} | {r['best_epoch']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="generator seeds")
    args = parser.parse_args()
    _imports()
    import torch

    overhead = warm_up()
    results = []
    for n in args.sizes:
        for seed in args.seeds:
            results.append(run_one(n, seed))
            print(f"{n:>9,} customers, seed {seed} done", file=sys.stderr)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} cores, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; warm-up (first call) "
        f"{overhead:.2f} s"
    )
    print(_timing_table(results))
    print()
    print(_quality_table(results))


if __name__ == "__main__":
    main()
