"""The online feature copy (``serving/features.py::OnlineFeatureSource``): its memory per
million customers, its load time from Postgres, what a poll costs the warehouse, and a
lookup in it against one in the table.

Why: the scorer holds the current period of ``marts.current_features`` in memory so a
request by id never waits on the warehouse; this says what that costs at a size where it
matters, and what the 5-second poll costs the warehouse.

1. Memory: a copy of ``--rows`` generated customers (the eight features' real column kinds),
   built chunk by chunk as the warehouse load builds it, measured with ``tracemalloc``
   (what the copy keeps after the build, and the build's peak) and as the process's RSS
   growth.
2. Load: the same rows in a table with ``current_features``' column types, in an embedded
   Postgres of the benchmark's own (a temporary directory, stopped at the end); the full
   load (connect, fingerprint, server-side cursor in chunks, arrays), then an unchanged
   poll (the fingerprint alone), ``--repeat`` times each.
3. Lookups: ``get()`` of random ids from the copy and from the table (the pooled source the
   scorer used before; the table has no index on ``customer_id``, as dbt builds it), in
   process, no HTTP.

    python benchmarks/online_features.py                 # 1,000,000 customers
    python benchmarks/online_features.py --rows 100000 --repeat 5
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from churn_assets.infra import warehouse
from churn_assets.serving.features import (
    FEATURE_TABLE,
    FeatureSnapshot,
    WarehouseFeatureSource,
    _SnapshotBuilder,
    warehouse_loader,
)

AS_OF = date(2025, 11, 30)
TABLE_LOOKUPS = 30
CHUNK = 50_000
NAMES = (
    "as_of",
    "customer_id",
    "days_since_last_order",
    "total_revenue_30d",
    "total_revenue_90d",
    "total_revenue_365d",
    "order_frequency",
    "cart_diversity",
    "email_domain_class",
    "customer_lifetime_days",
)
KINDS = ("levels", "id", "int", "float", "float", "float", "float", "int", "levels", "int")
DDL = (
    "as_of date, customer_id text, days_since_last_order integer, total_revenue_30d numeric, "
    "total_revenue_90d numeric, total_revenue_365d numeric, order_frequency double precision, "
    "cart_diversity integer, email_domain_class text, customer_lifetime_days integer"
)
DOMAINS = ("free", "business", "education", "unknown")


def generated_rows(start: int, stop: int, seed: int = 0) -> list[tuple[Any, ...]]:
    """Rows ``start..stop`` of a plausible feature table (money with 2 decimals, as in
    the warehouse; frequencies as doubles)."""
    rng = np.random.default_rng(seed + start)
    n = stop - start
    days = rng.integers(0, 400, n)
    r30 = np.round(rng.gamma(1.0, 40.0, n), 2)
    r90, r365 = np.round(r30 * 2.5, 2), np.round(r30 * 9.0, 2)
    freq = rng.gamma(1.0, 0.2, n)
    div, life = rng.integers(1, 40, n), rng.integers(0, 2000, n)
    dom = rng.integers(0, 4, n)
    return [
        (
            AS_OF,
            f"C{start + i:08d}",
            int(days[i]),
            float(r30[i]),
            float(r90[i]),
            float(r365[i]),
            float(freq[i]),
            int(div[i]),
            DOMAINS[dom[i]],
            int(life[i]),
        )
        for i in range(n)
    ]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(n_rows: int) -> FeatureSnapshot:
    gc.collect()
    rss_before = _rss_bytes()
    tracemalloc.start()
    kinds = ["levels" if k == "id" else k for k in KINDS]  # the id column is the index
    builder = _SnapshotBuilder(NAMES, kinds)
    for start in range(0, n_rows, CHUNK):
        builder.add(generated_rows(start, min(start + CHUNK, n_rows)))
    snapshot = builder.finish(None)
    del builder
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = _rss_bytes() - rss_before
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the build's freed pages back (glibc)
    rss_trimmed = _rss_bytes() - rss_before
    per_million = 1e6 / n_rows / 2**20
    print(f"\n## memory of a copy of {n_rows:,} customers")
    print(f"column arrays:        {snapshot.nbytes / 2**20:8.1f} MiB")
    print(f"kept (tracemalloc):   {kept / 2**20:8.1f} MiB = {kept * per_million:6.1f} MiB/million")
    print(f"build peak:           {peak / 2**20:8.1f} MiB")
    print(f"RSS growth:           {rss / 2**20:8.1f} MiB = {rss * per_million:6.1f} MiB/million")
    print(f"  after malloc_trim:  {rss_trimmed / 2**20:8.1f} MiB")
    return snapshot


def _timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def _fill(url: str, n_rows: int) -> None:
    with warehouse.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"create schema if not exists marts; create table {FEATURE_TABLE} ({DDL})")
        for start in range(0, n_rows, CHUNK):
            text = io.StringIO()
            for row in generated_rows(start, min(start + CHUNK, n_rows)):
                text.write("\t".join(map(str, row)) + "\n")
            text.seek(0)
            cur.copy_expert(f"copy {FEATURE_TABLE} from stdin", text)
        cur.execute(f"analyze {FEATURE_TABLE}")


def measure_load(n_rows: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="churn-online-bench-") as tmp:
        pg_dir = Path(tmp) / "pg"
        url = warehouse.start_embedded(pg_dir)
        try:
            _fill(url, n_rows)
            load = warehouse_loader(url)
            tracemalloc.start()
            snapshot = load(None)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert snapshot is not None and snapshot.rows == n_rows
            full = _timed(lambda: load(None), repeat)
            poll = _timed(lambda: load(snapshot.fingerprint), repeat)
            print(f"\n## load from Postgres ({n_rows:,} rows, median of {repeat})")
            print(f"full load:           {statistics.median(full):8.2f} s  (min {min(full):.2f})")
            print(f"  Python peak during the load: {peak / 2**20:.0f} MiB (copy included)")
            print(f"unchanged poll:      {statistics.median(poll) * 1e3:8.1f} ms")

            rng = np.random.default_rng(1)
            ids = [f"C{i:08d}" for i in rng.integers(0, n_rows, 20_000)]
            started = time.perf_counter()
            for customer_id in ids:
                snapshot.row(customer_id)
            copy_us = (time.perf_counter() - started) / len(ids) * 1e6
            # The table as dbt builds it has no index on customer_id: each lookup scans it
            # (cheap at the demo's few thousand rows, not at a million), hence few of them.
            pooled = WarehouseFeatureSource(url)
            try:
                started = time.perf_counter()
                for customer_id in ids[:TABLE_LOOKUPS]:
                    pooled.get(customer_id)
                table_us = (time.perf_counter() - started) / TABLE_LOOKUPS * 1e6
            finally:
                pooled.close()
            print("\n## one get() by id, in process")
            print(f"online copy:         {copy_us:8.1f} us")
            print(f"table (pooled):      {table_us:8.1f} us  ({TABLE_LOOKUPS} lookups)")
        finally:
            warehouse.stop_embedded(pg_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-load", action="store_true", help="memory only, no Postgres")
    args = parser.parse_args()
    snapshot = measure_memory(args.rows)
    del snapshot
    gc.collect()
    if not args.skip_load:
        measure_load(args.rows, args.repeat)


if __name__ == "__main__":
    main()
