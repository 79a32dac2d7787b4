"""The dbt resource's version shortcut tells the same as the ``dbt`` executable."""

from __future__ import annotations

import re
import shutil
import subprocess

from packaging.version import Version

from churn_assets.defs.resources import DbtCli
from churn_assets.lib.dbt import churn_dbt_project


def test_the_dbt_version_without_a_subprocess_is_the_executables() -> None:
    resource = DbtCli(project_dir=churn_dbt_project())  # type: ignore[arg-type]
    executable = shutil.which(resource.dbt_executable)  # the one dagster-dbt would run
    assert executable is not None, "dbt is not on PATH"
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+\.\d+\.\d+)", output)
    assert match is not None, output
    assert resource._cli_version == Version(match.group(1))
    assert resource._cli_version.major < 2  # dbt-core: dagster-dbt opens its adapter
