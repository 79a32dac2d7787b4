"""The dbt resource's version shortcut tells the same as the ``dbt`` executable."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from churn_assets.defs.resources import DbtCli
from churn_assets.settings import DBT_PROJECT_DIR


def test_the_dbt_version_without_a_subprocess_is_the_executables() -> None:
    # The dbt beside this interpreter, which lib/dbt.py puts first on PATH for the runs (the
    # project's directory, not the parsed project: a unit test parses no dbt project).
    executable = Path(sys.executable).parent / "dbt"
    resource = DbtCli(project_dir=str(DBT_PROJECT_DIR), dbt_executable=str(executable))
    assert executable.exists(), f"no dbt beside {sys.executable}"
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+\.\d+\.\d+)", output)
    assert match is not None, output
    assert resource._cli_version == Version(match.group(1))
    assert resource._cli_version.major < 2  # dbt-core: dagster-dbt opens its adapter
