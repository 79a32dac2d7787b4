"""dbt dies with the run that started it: a killed ``churn run`` leaves no writer behind.

dagster-dbt starts ``dbt`` with ``subprocess.Popen`` and stops it only from Python (on an
interrupt, or when the step ends). A run killed with SIGKILL (``kill -9``, the OOM killer)
ran no Python on its way out, so its ``dbt build`` was re-parented to PID 1 and went on
writing the warehouse with no lock held (issue 24, case 5).

On Linux every child dagster-dbt starts asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, set in the child between fork and exec, so it holds for the
``dbt`` it becomes). The kernel sends it when the *thread* that started the child ends:
dbt is started from the step's own thread, which outlives the dbt command. Elsewhere
(macOS has no such signal) children start as before.

dagster-dbt offers no hook into its ``Popen`` call, so :func:`install` replaces the
``subprocess`` module its invocation module sees by one whose ``Popen`` adds the signal;
the rest of ``subprocess`` is the real one. If a dagster-dbt upgrade starts dbt some other
way, :func:`install` raises instead of silently protecting nothing
(``tests/unit/test_dbt_children.py`` kills a parent and waits for its dbt to go).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import types
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# The position of ``preexec_fn`` among Popen's positional parameters.
_PREEXEC_POSITION = 6


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None where there is none to load."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent(then: Callable[[], Any] | None = None) -> Callable[[], Any] | None:
    """A ``preexec_fn`` that runs ``then`` (the caller's own, if any) and arms the parent-death
    signal; ``then`` unchanged where the platform has no such signal."""
    prctl = _prctl() if sys.platform.startswith("linux") else None
    if prctl is None:
        return then
    parent = os.getpid()  # the forking process: the child's parent until it dies
    kill = int(signal.SIGKILL)

    def preexec() -> None:
        # Runs in the forked child before exec: no imports, no allocation worth naming.
        if then is not None:
            then()
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), kill)

    return preexec


class DiesWithParentPopen(subprocess.Popen):
    """``subprocess.Popen`` whose child is killed when this process (thread) dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > _PREEXEC_POSITION:
            given = list(args)
            given[_PREEXEC_POSITION] = die_with_parent(given[_PREEXEC_POSITION])
            args = tuple(given)
        else:
            kwargs["preexec_fn"] = die_with_parent(kwargs.get("preexec_fn"))
        super().__init__(*args, **kwargs)


class _SubprocessDyingWithParent(types.ModuleType):
    """The ``subprocess`` module, but for ``Popen``."""

    Popen = DiesWithParentPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


def install() -> None:
    """Make every dbt command dagster-dbt starts in this process die with it (idempotent)."""
    from dagster_dbt.core import dbt_cli_invocation

    current = getattr(dbt_cli_invocation, "subprocess", None)
    if isinstance(current, _SubprocessDyingWithParent):
        return
    if current is not subprocess:
        raise RuntimeError(
            "dagster-dbt no longer starts dbt through subprocess.Popen in "
            "dagster_dbt.core.dbt_cli_invocation: update churn_assets/lib/child_processes.py, "
            "or a killed run leaves its dbt writing"
        )
    shim = _SubprocessDyingWithParent(subprocess.__name__)
    setattr(dbt_cli_invocation, "subprocess", shim)  # noqa: B010  (a module's typed attribute)
