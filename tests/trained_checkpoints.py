"""Tiny but really trained checkpoints (tests/runs.py's TINY run with 64-64 networks and batch 64, about 5 s each),
trained once per pytest process and shared by the tests that need a critic shaped by TD learning. Those tests carry
SHARES_TRAINED: under `pytest -n 2 --dist loadgroup` (pyproject.toml) they run on one process, which trains each
once."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
from runs import TINY, run_script

SHARES_TRAINED = pytest.mark.xdist_group("trained_checkpoints")
SMALL = ["--hidden-sizes", "64", "64", "--batch-size", "64"]


@functools.cache
def _folder():
    folder = Path(tempfile.mkdtemp(prefix="pave-trained-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def trained(script, env_id="Pendulum-v1", seed=178132):
    """The checkpoint path of a TINY run of `script` (trained on first use)."""
    cwd = _folder() / f"{Path(script).stem}-{env_id}-{seed}"
    cwd.mkdir()
    result = run_script(script, "--env-id", env_id, "--seed", seed, *TINY, *SMALL, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (checkpoint,) = cwd.glob("runs/*/*.pt")
    return checkpoint
