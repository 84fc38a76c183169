"""Published studies stay valid: default runs train the same weights, bit for bit, as the code that made them.

tests/data/pre_change/ was written by the training scripts as they were before PAVE's general `pave_regularizer`, the
speed-path split and the twin `Critics` module (commit c94f200): `fingerprints.json` holds, per run, each tensor's
SHA-256 and float64 sums, and the `*_resume/` folders hold resumable states that code saved mid-run
(tests/data/pre_change/README.md has the commands). Float results are exact on the same kind of CPU; another CPU
(another vendor or SIMD level) may round matrix products differently, so there the sums are compared to 1e-4 instead.
"""

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from runs import run_script

DATA = Path(__file__).parent / "data" / "pre_change"
PRE_CHANGE = json.loads((DATA / "fingerprints.json").read_text())
SHORT_PENDULUM = ["--env-id", "Pendulum-v1", "--total-timesteps", "1100", "--learning-starts", "1000", "--seed", "7",
                  "--save-model", "--eval-episodes", "1", "--no-progress-bar"]


def cpu_signature():
    """What decides float rounding on a CPU: its vendor and the SIMD level torch dispatches to."""
    vendor = next((line.split(":")[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("vendor_id")), "unknown") if Path("/proc/cpuinfo").exists() else "unknown"
    return f"{vendor} {torch.backends.cpu.get_cpu_capability()}"


def fingerprint(checkpoint):
    return {f"{net}.{name}": {"sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
                              "sum": t.double().sum().item(), "abs_sum": t.double().abs().sum().item()}
            for net in ("actor", "qf1", "qf2") for name, t in checkpoint[net].items()}


def assert_same_weights(checkpoint_path, reference):
    got = fingerprint(torch.load(checkpoint_path, map_location="cpu", weights_only=True))
    assert got.keys() == reference["tensors"].keys()
    if cpu_signature() == reference["cpu"]:
        assert {k: v["sha256"] for k, v in got.items()} == {k: v["sha256"] for k, v in reference["tensors"].items()}
    else:  # another CPU: the same training up to float rounding
        for name, ref in reference["tensors"].items():
            for stat in ("sum", "abs_sum"):
                assert math.isclose(got[name][stat], ref[stat], rel_tol=1e-4, abs_tol=1e-4), (name, stat)


@pytest.mark.parametrize("script", ["td3_pave.py", "sac_pave.py"])
def test_default_pendulum_run_trains_the_weights_of_the_code_before(script, tmp_path):
    """The default flags (the speed path, --compile auto: eager this short) on Pendulum, 100 gradient steps."""
    result = run_script(script, *SHORT_PENDULUM, "--exp-name", "default", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PAVE terms: the speed path" in result.stdout
    (checkpoint,) = tmp_path.glob("runs/*/default.pt")
    assert_same_weights(checkpoint, PRE_CHANGE[f"default_{script[:-3]}"])


# td3.py: the state's critics are qf1, qf2 (converted to the Critics module); sac_pave.py: the stacked critics as they were
# and SAC's own restore; td3_pave.py and sac.py share those code paths (the tests of their sources) and passed when written
@pytest.mark.parametrize("script", ["td3.py", "sac_pave.py"])
def test_a_state_saved_before_resumes_to_the_weights_of_the_old_run_in_one_go(script, tmp_path):
    """A resumable state saved by the old code at step 1050 (32x32 networks) resumes under this code to exactly the weights
    the old code reached in one go at step 1100."""
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / f"{script[:-3]}_resume", run_dir)
    result = run_script(script, "--resume", run_dir / "resume.pt", "--save-model", "--eval-episodes", "1", "--no-progress-bar",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed" in result.stdout and "at step 1050 of 1100" in result.stdout
    assert_same_weights(run_dir / "small.pt", PRE_CHANGE[f"small_{script[:-3]}"])
