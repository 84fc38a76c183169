"""Published studies stay valid: default runs train the same weights, bit for bit, as the code that made them.

tests/data/at_88a9444/ was written by every training script as it was at commit 88a9444, before run control and the
speed path moved out of the scripts (its make_references.py made it): each script's default Pendulum run crossing
geometry probes (the Base and baseline scripts draw them from torch's global generator), and a tiny run stopped where a
probe falls with the weights the same run reached in one go.

tests/data/pre_change/ was written by the training scripts as they were before PAVE's general `pave_regularizer`, the
speed-path split and the twin `Critics` module (commit c94f200): `fingerprints.json` holds, per run, each tensor's
SHA-256 and float64 sums, and the `*_resume/` folders hold resumable states that code saved mid-run
(tests/data/pre_change/README.md has the commands). Float results are exact on the same kind of CPU; another CPU
(another vendor or SIMD level) may round matrix products differently, so there the sums are compared to 1e-4 instead.
"""

import hashlib
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from runs import read_scalars, run_script

DATA = Path(__file__).parent / "data" / "pre_change"
PRE_CHANGE = json.loads((DATA / "fingerprints.json").read_text())
SHORT_PENDULUM = ["--env-id", "Pendulum-v1", "--total-timesteps", "1100", "--learning-starts", "1000", "--seed", "7",
                  "--save-model", "--eval-episodes", "1", "--no-progress-bar"]


AT_88A9444 = Path(__file__).parent / "data" / "at_88a9444"
_spec = importlib.util.spec_from_file_location("make_references", AT_88A9444 / "make_references.py")
MADE = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(MADE)
REFERENCES = json.loads((AT_88A9444 / "fingerprints.json").read_text())


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


# td3.py: the state's critics are qf1, qf2 (converted to the Critics module); sac_pave.py: the stacked critics as they
# were and SAC's own restore; td3_pave.py and sac.py share those code paths (the tests of their sources) and passed when
# written
@pytest.mark.parametrize("script", ["td3.py", "sac_pave.py"])
def test_a_state_saved_before_resumes_to_the_weights_of_the_old_run_in_one_go(script, tmp_path):
    """A resumable state saved by the old code at step 1050 (32x32 networks) resumes under this code to exactly the
    weights the old code reached in one go at step 1100."""
    run_dir = tmp_path / "run"
    shutil.copytree(DATA / f"{script[:-3]}_resume", run_dir)
    result = run_script(script, "--resume", run_dir / "resume.pt", "--save-model", "--eval-episodes", "1",
                        "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed" in result.stdout and "at step 1050 of 1100" in result.stdout
    assert_same_weights(run_dir / "small.pt", PRE_CHANGE[f"small_{script[:-3]}"])


@pytest.mark.parametrize("script", MADE.SCRIPTS)
def test_default_pendulum_run_trains_the_weights_of_88a9444(script, tmp_path):
    """The default flags, 100 gradient steps, geometry probes at steps 350, 700 and 1050 (the last between two gradient
    steps, so a probe drawing other random numbers changes the weights after it)."""
    result = run_script(script, *MADE.DEFAULT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (checkpoint,) = tmp_path.glob("runs/*/default.pt")
    assert len(read_scalars(checkpoint.parent)["geometry/mpr"]) == 3  # the probes ran
    assert_same_weights(checkpoint, REFERENCES[f"default_{script[:-3]}"])


@pytest.mark.parametrize("script", MADE.SCRIPTS)
def test_a_state_saved_by_88a9444_resumes_to_the_weights_of_its_run_in_one_go(script, tmp_path):
    """A state saved at step 350 (16x16 networks, probes at 300, 350 and 400) resumes to step 400 with the weights the
    code of 88a9444 reached there in one go."""
    run_dir = tmp_path / "run"
    shutil.copytree(AT_88A9444 / f"{script[:-3]}_resume", run_dir)
    result = run_script(script, "--resume", run_dir / "resume.pt", "--save-model", "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at step 350 of 400" in result.stdout
    assert_same_weights(run_dir / "small.pt", REFERENCES[f"small_{script[:-3]}"])


def test_a_state_that_says_fused_resumes_on_the_written_out_path(tmp_path):
    """--pave-impl fused, the speed path's old name, saved in a state's flags: the state resumes, on the speed path, to
    the weights of the same run in one go."""
    state = torch.load(AT_88A9444 / "td3_pave_resume" / "resume.pt", weights_only=True)
    assert state["args"]["pave_impl"] == "auto"
    state["args"]["pave_impl"] = "fused"  # as a run started with --pave-impl fused saved it
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "resume.pt")
    result = run_script("td3_pave.py", "--resume", tmp_path / "run" / "resume.pt", "--save-model",
                        "--eval-episodes", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PAVE terms: the speed path (written-out derivatives" in result.stdout
    assert_same_weights(tmp_path / "run" / "small.pt", REFERENCES["small_td3_pave"])
