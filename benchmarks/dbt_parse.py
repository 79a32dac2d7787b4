"""What the kept parse state saves each dbt invocation (``lib/dbt.py::keep_parse_state``).

Runs ``dbt parse`` against the project, the way a run's dbt step starts (same profile, the
run's ``--vars``), in three settings, ``--repeat`` times each, one process after another:

1. cold: no parse state (what every invocation did when the periods were in ``--vars``, or
   when the state came from ``prepare``, written with another connection);
2. kept: the state the previous invocation against the same warehouse left;
3. kept, new periods: the same, with another ``CHURN_PERIOD_ENDS`` (only the models that
   read it are re-parsed).

dbt reports its own parse time (``perf_info.json``: ``load_all_elapsed``); the ratio
"kept / cold" is the figure recorded in benchmarks/RESULTS.md. No database is contacted.

    python benchmarks/dbt_parse.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from churn_assets.lib.dbt import dbt_build_env, dbt_vars
from churn_assets.policy import Policy
from churn_assets.settings import DBT_PROJECT_DIR

_STATE = "partial_parse.msgpack"


def _parse(target: Path, periods: list[str]) -> float:
    env = {
        **os.environ,
        **dbt_build_env(periods),
        "CHURN_PG_HOST": "/tmp/churn-bench-socket",  # parse never connects
        "DBT_PROFILES_DIR": str(DBT_PROJECT_DIR),
    }
    dbt = str(Path(sys.executable).parent / "dbt")
    vars_ = json.dumps(dbt_vars(window_days=90, policy=Policy()), sort_keys=True)
    subprocess.run(
        [dbt, "parse", "--vars", vars_, "--target-path", str(target)],
        cwd=DBT_PROJECT_DIR,
        env=env,
        check=True,
        capture_output=True,
    )
    return float(json.loads((target / "perf_info.json").read_text())["load_all_elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cold, kept, new_periods = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        _parse(warm, ["2025-09-30"])  # leaves the state a run would keep
        for i in range(args.repeat):
            cold.append(_parse(Path(tmp) / f"cold{i}", ["2025-09-30"]))
            for name, periods, into in (
                ("kept", ["2025-09-30"], kept),
                ("new", ["2025-10-31", "2025-09-30"], new_periods),
            ):
                target = Path(tmp) / f"{name}{i}"
                target.mkdir()
                shutil.copyfile(warm / _STATE, target / _STATE)
                into.append(_parse(target, periods))
    for label, values in (
        ("cold", cold),
        ("kept", kept),
        ("kept, new periods", new_periods),
    ):
        print(f"{label:18} median {statistics.median(values):.2f} s  ({values})")
    base = statistics.median(cold)
    print(f"kept / cold: {statistics.median(kept) / base:.2f}")
    print(f"kept with new periods / cold: {statistics.median(new_periods) / base:.2f}")


if __name__ == "__main__":
    main()
