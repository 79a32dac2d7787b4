"""Time synthetic data generation and raw-file writing at several customer counts.

Why: the generator promises a million customers (~10M orders) in a few minutes on the
project's 2-core machines; this script measures that promise instead of asserting it.

Each size runs in its own subprocess so peak memory (max RSS) belongs to that size alone.

    python benchmarks/generate.py                       # 1k, 100k, 1M customers, csv
    python benchmarks/generate.py --sizes 1000 --formats csv parquet
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)


def _dir_size_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def run_one(n_customers: int, formats: list[str]) -> dict[str, float]:
    """Generate once, write once per format; returns timings in seconds."""
    from churn_assets.data.generator import GeneratorConfig, generate, write_raw_files

    started = time.perf_counter()
    data = generate(GeneratorConfig(n_customers=n_customers))
    result: dict[str, float] = {
        "n_customers": n_customers,
        "n_orders": len(data.orders),
        "generate_s": time.perf_counter() - started,
    }
    for fmt in formats:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            paths = write_raw_files(data, Path(tmp), fmt=fmt)  # type: ignore[arg-type]
            result[f"write_{fmt}_s"] = time.perf_counter() - started
            result[f"{fmt}_mb"] = _dir_size_mb(paths)
    result["max_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    return result


def _markdown(results: list[dict[str, float]], formats: list[str]) -> str:
    header = ["customers", "orders", "generate (s)"]
    for fmt in formats:
        header += [f"write {fmt} (s)", f"{fmt} size (MB)"]
    header.append("peak RSS (GB)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for r in results:
        cells = [f"{int(r['n_customers']):,}", f"{int(r['n_orders']):,}", f"{r['generate_s']:.2f}"]
        for fmt in formats:
            cells += [f"{r[f'write_{fmt}_s']:.2f}", f"{r[f'{fmt}_mb']:.1f}"]
        cells.append(f"{r['max_rss_gb']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--formats", nargs="+", choices=["csv", "parquet"], default=["csv"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()

    if args.one is not None:
        print(json.dumps(run_one(args.one, args.formats)))
        return

    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--formats", *args.formats]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{n:>9,} customers done", file=sys.stderr)
    print(f"python {platform.python_version()}, {platform.machine()}")
    print(_markdown(results, args.formats))


if __name__ == "__main__":
    main()
