"""Helpers for tests that run the training scripts for real: run one, read what it wrote."""

import glob
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# A real but tiny run: 200 random steps, then 4 bursts of 50 gradient steps, a checkpoint and a 2-episode evaluation.
TINY = ["--total-timesteps", "400", "--learning-starts", "200", "--buffer-size", "10000", "--log-freq", "100",
        "--geometry-freq", "200", "--geometry-batch", "32", "--eval-episodes", "2", "--no-progress-bar", "--save-model"]


def run_script(script, *args, cwd, timeout=600):
    """Run a top-level script of the repository as a user would, in `cwd`; return the CompletedProcess."""
    # one thread: tiny batches gain nothing from more, and it keeps runs steady on a busy 2-core machine
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def train(script, env_id, cwd, *extra, seed=1):
    """A TINY run that must succeed; returns (run_dir, checkpoint dict)."""
    result = run_script(script, "--env-id", env_id, "--seed", seed, *TINY, *extra, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (checkpoint,) = glob.glob(f"{cwd}/runs/*/*.pt")
    return Path(checkpoint).parent, torch.load(checkpoint, weights_only=False)


def read_scalars(run_dir):
    """{tag: [values]} of every TensorBoard scalar a run wrote."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def all_finite(values):
    return len(values) > 0 and all(math.isfinite(v) for v in values)
