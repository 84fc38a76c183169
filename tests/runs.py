"""Helpers for tests that run the training scripts for real: run one, read what it wrote."""

import contextlib
import glob
import io
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# A real but tiny run: 200 random steps, then 4 bursts of 50 gradient steps, a checkpoint (and one at step 200 and a
# copy at step 400 under checkpoints/) and a 2-episode evaluation.
TINY = ["--total-timesteps", "400", "--learning-starts", "200", "--buffer-size", "10000", "--log-freq", "100",
        "--geometry-freq", "200", "--geometry-batch", "32", "--eval-episodes", "2", "--no-progress-bar", "--save-model",
        "--model-checkpoints", "2"]


def run_script(script, *args, cwd, timeout=600):
    """Run a top-level script of the repository as a user would, in `cwd`; return the CompletedProcess."""
    # one thread: tiny batches gain nothing from more, and it keeps runs steady on a busy 2-core machine
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_in_process(script, *args, cwd):
    """run_script for a command refused at its input checks, without a new interpreter (whose imports take seconds): the
    script runs as __main__ in this process, in `cwd`; its exit status, stdout and stderr come back as run_script's do.
    A script that raises instead of exiting fails the test with the traceback. One test per script family still runs
    each kind of refusal through run_script, where the interpreter's own output would show too."""
    stdout, stderr, argv, here = io.StringIO(), io.StringIO(), sys.argv, os.getcwd()
    sys.argv = [str(REPO / script), *map(str, args)]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(str(REPO / script), run_name="__main__")
        code = 0
    except SystemExit as exit_:  # as the interpreter does: a message goes to stderr with status 1
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if isinstance(exit_.code, str):
            print(exit_.code, file=stderr)
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess([script, *map(str, args)], code, stdout.getvalue(), stderr.getvalue())


def assert_one_line_error(result, *needles):
    """A refused command: non-zero exit, no traceback, and its last stderr line an error naming every needle."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last and all(n in last for n in needles), last


def train(script, env_id, cwd, *extra, seed=1):
    """A TINY run that must succeed; returns (run_dir, checkpoint dict)."""
    result = run_script(script, "--env-id", env_id, "--seed", seed, *TINY, *extra, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    (checkpoint,) = glob.glob(f"{cwd}/runs/*/*.pt")
    final = torch.load(checkpoint, weights_only=False)
    assert_model_checkpoints(Path(checkpoint).parent, final)
    return Path(checkpoint).parent, final


def same(a, b):
    """Whether two checkpoint entries are equal: tensors exactly, dicts entry by entry, anything else by ==."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def assert_model_checkpoints(run_dir, final):
    """TINY's --model-checkpoints 2: exactly two files under checkpoints/, half-way (step 200) and at the end, in the
    final checkpoint's format (the same keys); the one at the end is the final checkpoint itself."""
    exp_name, total = final["args"]["exp_name"], final["global_step"]
    expected = [f"{exp_name}_step{step}.pt" for step in (total // 2, total)]
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == sorted(expected)
    middle, last = (torch.load(run_dir / "checkpoints" / name, weights_only=True) for name in expected)
    assert (middle.keys() == final.keys() and middle["global_step"] == total // 2
            and not same(middle["qf1"], final["qf1"]))
    assert same(last, final)


def read_scalars(run_dir):
    """{tag: [values]} of every TensorBoard scalar a run wrote."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def all_finite(values):
    return len(values) > 0 and all(math.isfinite(v) for v in values)
