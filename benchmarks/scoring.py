"""Batch scoring throughput: onnxruntime vs torch eager on the same rows, same model.

Why: serving scores the whole customer base in batches with onnxruntime; this measures what
that buys over calling the torch module directly, per batch size.

Setup: a model trained on the demo data (1,000 customers, seed 42) scores its real feature
rows tiled to each batch size. The parent saves weights, both ONNX graphs and the inputs
once; every variant then runs in its own subprocess, so the thread pools of one runtime
(torch's OpenMP, ORT's own pool; both spin while idle) never compete with the other's timed
calls. Rounds repeat all variants in turn to spread a noisy neighbour over all of them; the
median over all timed calls is reported, after an untimed warm-up call. Small batches are
timed as blocks of calls (>= 2,000 rows per block) divided by the block length. Every
variant's output is checked against torch (<= 1e-6).

Variants: the trained ``ChurnMLP`` (no_grad / inference_mode, default or 1 thread), torch
eager on ``serving_module`` (the folded graph the ONNX export uses, so torch gets the same
algebraic simplification), and onnxruntime on the as-trained and on the folded graph with
default session options or ``OnnxScorer`` (ORT_ENABLE_ALL, fixed intra-op threads).

    python benchmarks/scoring.py                                # 100k, 1k and 1 row batches
    python benchmarks/scoring.py --rows 1000000 --rounds 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "torch eager, ChurnMLP, no_grad, default threads"
# name -> (runtime, model or graph, setting, threads); threads None = the runtime's default.
VARIANTS: dict[str, tuple[str, str, str, int | None]] = {
    BASELINE: ("torch", "trained", "no_grad", None),
    "torch eager, ChurnMLP, inference_mode, default threads": (
        "torch", "trained", "inference_mode", None,
    ),
    "torch eager, ChurnMLP, inference_mode, 1 thread": ("torch", "trained", "inference_mode", 1),
    "torch eager, serving_module (folded), inference_mode, default threads": (
        "torch", "folded", "inference_mode", None,
    ),
    "onnxruntime, as-trained graph, default session options": ("ort", "trained", "plain", None),
    "onnxruntime, as-trained graph, ORT_ENABLE_ALL, 2 threads": ("ort", "trained", "scorer", 2),
    "onnxruntime, folded graph (export default), default session options": (
        "ort", "folded", "plain", None,
    ),
    "onnxruntime, folded graph, ORT_ENABLE_ALL, 2 threads": ("ort", "folded", "scorer", 2),
    "onnxruntime, folded graph, ORT_ENABLE_ALL, 1 thread": ("ort", "folded", "scorer", 1),
}  # fmt: skip
ONNX_FILES = {"trained": "as_trained.onnx", "folded": "folded.onnx"}


def prepare(directory: Path, rows: int) -> None:
    """Train on the demo data; save weights, both ONNX graphs, inputs, torch's reference."""
    if str(ROOT) not in sys.path:  # the snapshot fixture lives in tests/, not installed
        sys.path.insert(0, str(ROOT))
    from churn_assets.ml.export import export_onnx
    from churn_assets.ml.features import split_holdout, to_model_inputs
    from churn_assets.ml.model import predict_proba, save_model
    from churn_assets.ml.train import train
    from tests.unit._features import generated_snapshot

    snapshot, _ = generated_snapshot(1000, seed=42)
    model = train(split_holdout(snapshot)[0]).model
    base = to_model_inputs(snapshot)
    inputs = base.take(np.arange(rows) % len(base))
    save_model(model, directory / "model")
    export_onnx(model, directory / ONNX_FILES["trained"], fold_preprocessing=False)
    export_onnx(model, directory / ONNX_FILES["folded"])
    np.savez(directory / "inputs.npz", numeric=inputs.numeric, category=inputs.category)
    np.save(directory / "reference.npy", predict_proba(model, inputs))


def _scorer(directory: Path, name: str) -> tuple[Callable[[int], np.ndarray], int]:
    """A function scoring the first ``n`` rows with one variant, and its thread count."""
    runtime, graph, setting, threads = VARIANTS[name]
    arrays = np.load(directory / "inputs.npz")
    numeric, category = arrays["numeric"], arrays["category"]
    if runtime == "torch":
        import torch

        from churn_assets.ml.export import serving_module
        from churn_assets.ml.model import load_model

        if threads is not None:
            torch.set_num_threads(threads)
        trained = load_model(directory / "model")
        module = serving_module(trained) if graph == "folded" else trained
        x, c = torch.from_numpy(numeric), torch.from_numpy(category)
        grad_off = torch.inference_mode if setting == "inference_mode" else torch.no_grad

        def score_torch(n: int) -> np.ndarray:
            with grad_off():
                out: np.ndarray = module(x[:n], c[:n]).numpy()
            return out

        return score_torch, torch.get_num_threads()

    import onnxruntime as ort

    from churn_assets.ml.export import OnnxScorer
    from churn_assets.ml.features import ModelInputs

    path = directory / ONNX_FILES[graph]
    if setting == "plain":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def score_plain(n: int) -> np.ndarray:
            feeds = {"numeric": numeric[:n], "email_domain_class": category[:n]}
            out: np.ndarray = session.run(None, feeds)[0]
            return out

        return score_plain, 0  # 0: onnxruntime's default (one thread per physical core)

    scorer = OnnxScorer(path, intra_op_threads=threads)
    batches = {}

    def score_scorer(n: int) -> np.ndarray:
        if n not in batches:  # slicing outside the timed call, like the torch views
            batches[n] = ModelInputs(numeric[:n], category[:n])
        return scorer.predict(batches[n])

    return score_scorer, threads or 0


def measure(directory: Path, name: str, sizes: list[int], repeats: int) -> dict[str, object]:
    """Child process: per batch size, ``repeats`` timed blocks of one variant."""
    score, threads = _scorer(directory, name)
    reference = np.load(directory / "reference.npy")
    diff = 0.0
    per_call: dict[str, list[float]] = {}
    for n in sizes:
        diff = max(diff, float(np.max(np.abs(score(n) - reference[:n]))))  # also the warm-up
        block = max(1, 2_000 // n)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(block):
                score(n)
            timings.append((time.perf_counter() - started) / block)
        per_call[str(n)] = timings
    return {"timings": per_call, "max_abs_diff": diff, "threads": threads}


def _table(rows: int, medians: dict[str, float], threads: dict[str, int]) -> str:
    best_torch = min(v for k, v in medians.items() if k.startswith("torch"))
    lines = [
        f"Batch of {rows:,} row(s):",
        "",
        "| variant | threads | median per batch | rows/s | vs torch baseline | vs best torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, median in medians.items():
        shown = "ORT default" if threads[name] == 0 else str(threads[name])
        per_batch = f"{median * 1e3:.2f} ms" if median >= 1e-3 else f"{median * 1e6:.1f} us"
        lines.append(
            f"| {name} | {shown} | {per_batch} | {rows / median:,.0f} | "
            f"{medians[BASELINE] / median:.2f}x | {best_torch / median:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="timed blocks per round")
    parser.add_argument("--child", nargs=2, metavar=("DIR", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(Path(args.child[0]), args.child[1], args.rows, args.repeats)
        print(json.dumps(result))
        return

    timings: dict[int, dict[str, list[float]]] = {n: {v: [] for v in VARIANTS} for n in args.rows}
    worst_diff = 0.0
    threads: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp), max(args.rows))
        load_before = os.getloadavg()[0]
        for _ in range(args.rounds):
            for name in VARIANTS:
                cmd = [sys.executable, __file__, "--child", tmp, name, "--repeats"]
                cmd += [str(args.repeats), "--rows", *map(str, args.rows)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                for n in args.rows:
                    timings[n][name] += result["timings"][str(n)]
                threads[name] = result["threads"]
                worst_diff = max(worst_diff, result["max_abs_diff"])
        load_after = os.getloadavg()[0]
    if worst_diff > 1e-6:
        raise AssertionError(f"a variant disagrees with torch by {worst_diff}")

    import onnxruntime as ort
    import torch

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, onnxruntime "
        f"{ort.__version__}, {platform.machine()}, {os.cpu_count()} cores; {args.rounds} "
        f"rounds x {args.repeats} timed blocks per variant; max |variant - torch| "
        f"{worst_diff:.1e}; 1-min load average {load_before:.2f} -> {load_after:.2f}"
    )
    for n in args.rows:
        medians = {name: statistics.median(t) for name, t in timings[n].items()}
        print()
        print(_table(n, medians, threads))


if __name__ == "__main__":
    main()
