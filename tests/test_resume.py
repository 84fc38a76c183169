"""Long runs survive interruption: a run stopped (--stop-at-step, SIGTERM) saves a resumable state, and --resume
continues it to exactly the weights of the same run done in one go; bad --resume input gets one clear line and loses
nothing."""

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import REPO, read_scalars, run_in_process, run_script, same

import eval_smoothness
import td3
from run_control import BadInput

# 500 steps; --checkpoint-freq 500 makes the last step write a resumable state, which holds every tensor of the run
# (networks, targets, optimizer states, replay buffer, RNG states): comparing the two final states compares everything
SHORT = ["--total-timesteps", "500", "--learning-starts", "200", "--buffer-size", "1000", "--batch-size", "32",
         "--hidden-sizes", "64", "64", "--log-freq", "100", "--geometry-freq", "200", "--geometry-batch", "32",
         "--checkpoint-freq", "500", "--no-progress-bar", "--model-checkpoints", "3"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # as runs.run_script
TIMING = {"elapsed", "train_elapsed"}  # seconds, the only entries that may differ
# one process runs this module under `pytest -n 2 --dist loadgroup`, so that split_runs trains each split once
pytestmark = pytest.mark.xdist_group("resume")


def flatten(value, prefix=""):
    """(path, leaf) of every leaf of a nested state."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def assert_same_state(one_go, resumed):
    a = {k: v for k, v in flatten(one_go) if k.lstrip("/") not in TIMING and k != "/args/resume"}
    b = {k: v for k, v in flatten(resumed) if k.lstrip("/") not in TIMING and k != "/args/resume"}
    assert a.keys() == b.keys()
    differ = [k for k in a if not (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])]
    assert not differ, differ
    assert len(a) > 100 and any(k.startswith("/q_optimizer/state") for k in a)  # optimizer moments are in there


def load(path):
    return torch.load(path, weights_only=True)


def checked(result):
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def start(script, *args, cwd):
    """run_script without waiting: a Popen whose communicate() gives (stdout, stderr)."""
    return subprocess.Popen([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process):
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory):
    """split(script, env_id, stop, *extra): the SHORT run in one go, and stopped at `stop` then resumed (run once per
    module); returns (run folder of the one-go run, run folder of the split run, the state saved at the stop)."""
    done = {}

    def split(script, env_id, stop, *extra):
        key = (script, env_id, stop, extra)
        if key not in done:
            root = tmp_path_factory.mktemp(f"{Path(script).stem}_{env_id}_{stop}")
            (root / "one").mkdir()
            (root / "split").mkdir()
            flags = ["--env-id", env_id, *SHORT, *extra]
            one_go = start(script, *flags, cwd=root / "one")  # both at once: two cores
            stopped = finished(start(script, *flags, "--stop-at-step", stop, cwd=root / "split"))
            finished(one_go)
            (one_dir,), (split_dir,) = glob.glob(f"{root}/one/runs/*"), glob.glob(f"{root}/split/runs/*")
            state_path = f"runs/{Path(split_dir).name}/resume.pt"
            assert f"stopped at step {stop} (--stop-at-step): resumable state saved to {state_path}; resume with: " \
                   f"python {REPO / script} --resume {state_path}" in stopped
            assert not glob.glob(f"{split_dir}/*.pt.tmp") and not (Path(split_dir) / f"{Path(script).stem}.pt").exists()
            shutil.copy(f"{split_dir}/resume.pt", root / "stopped.pt")
            resumed = checked(run_script(script, "--resume", state_path, cwd=root / "split"))
            assert f"resumed runs/{Path(split_dir).name} at step {stop} of 500" in resumed.stdout
            done[key] = Path(one_dir), Path(split_dir), load(root / "stopped.pt")
        return done[key]

    return split


@pytest.mark.parametrize("script, env_id, stop, extra", [
    ("td3.py", "Pendulum-v1", 333, []),  # mid-episode (the second, replayed from its saved pre-reset RNG state)
    ("td3_pave.py", "Pendulum-v1", 187, ["--learning-starts", "100"]),  # the first episode (from reset(seed)), training
    ("sac.py", "Pendulum-v1", 333, ["--autotune"]),  # between two bursts of 50 gradient steps, mid-episode,
                                                     # alpha learned
    ("td3_gradcaps.py", "Hopper-v5", 333, []),  # MuJoCo, early terminations; the buffer's prev_obs and mid_episode
])
def test_a_resumed_run_ends_with_exactly_the_state_of_a_run_done_in_one_go(split_runs, script, env_id, stop, extra):
    one_dir, split_dir, stopped = split_runs(script, env_id, stop, *extra)
    assert stopped["global_step"] == stop and len(stopped["episode_actions"]) > 0  # stopped mid-episode
    assert (stopped["episode_rng_state"] is None) == (stop < 200)  # Pendulum's first episode ends at step 200
    assert stopped["rb"]["size"] == stop and len(stopped["rb"]["obs"]) == stop  # only the filled part of the buffer
    assert_same_state(load(one_dir / "resume.pt"), load(split_dir / "resume.pt"))
    assert load(split_dir / "resume.prev.pt")["global_step"] == stop  # the state before is kept beside it
    # one TensorBoard log: the split run's scalars are the one-go run's, timings aside
    one_go, split = read_scalars(one_dir), read_scalars(split_dir)
    assert one_go.keys() == split.keys()
    assert all(one_go[tag] == split[tag] for tag in one_go if not tag.startswith("charts/SPS"))


def test_a_split_run_writes_each_model_checkpoint_once_as_the_one_go_run_does(split_runs):
    """--model-checkpoints 3 over 500 steps: steps 166, 333 and 500. The run stopped at 333, a checkpoint step, wrote
    166 and 333 (the stopped process's args say so) and the resumed one 500 alone; each file is the one-go run's,
    loadable as a checkpoint."""
    one_dir, split_dir, _ = split_runs("td3.py", "Pendulum-v1", 333)
    names = [f"td3_step{step}.pt" for step in (166, 333, 500)]
    assert sorted(os.listdir(one_dir / "checkpoints")) == sorted(os.listdir(split_dir / "checkpoints")) == sorted(names)
    for name, writer in zip(names, ("stopped", "stopped", "resumed")):
        one, split = load(one_dir / "checkpoints" / name), load(split_dir / "checkpoints" / name)
        assert (split.keys() == one.keys()
                and split["global_step"] == one["global_step"] == int(name[len("td3_step"):-3]))
        assert all(same(split[key], one[key]) for key in one if key != "args")
        assert (split["args"]["stop_at_step"], split["args"]["resume"] is not None) == \
            ((333, False) if writer == "stopped" else (None, True))
        assert eval_smoothness.load_policy(split_dir / "checkpoints" / name).train_seed == 1


def test_a_run_may_be_resumed_with_denormals_flushed(split_runs, tmp_path):
    """--flush-denormal (the CPU speed path) may be added to a resumed run, as --torch-threads may: it goes on, says so,
    and stops where asked."""
    _, split_dir, _ = split_runs("td3.py", "Pendulum-v1", 333)
    shutil.copytree(split_dir, tmp_path / "runs" / split_dir.name)
    result = run_script("td3.py", "--resume", f"runs/{split_dir.name}/resume.prev.pt", "--flush-denormal",
                        "--stop-at-step", "400", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "device: cpu (1 torch threads, denormals flushed to 0)" in result.stdout
    state = load(tmp_path / "runs" / split_dir.name / "resume.pt")
    assert state["global_step"] == 400 and state["args"]["flush_denormal"]


def test_more_model_checkpoints_than_steps_is_refused():
    with pytest.raises(BadInput, match="--model-checkpoints 11 exceeds --total-timesteps 10"):
        td3.resolve_args(td3.Args(env_id="Pendulum-v1", total_timesteps=10, model_checkpoints=11))


def test_sigterm_saves_a_resumable_state_and_exits_cleanly(tmp_path):
    process = start("td3.py", "--env-id", "Pendulum-v1", *SHORT, "--total-timesteps", 100_000, "--checkpoint-freq", 250,
                    "--save-model", cwd=tmp_path)
    deadline = time.time() + 60
    while not glob.glob(f"{tmp_path}/runs/*/resume.pt"):  # its first periodic state: past learning_starts, training
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    sent = time.time()
    stdout, stderr = process.communicate(timeout=30)
    print(f"SIGTERM to exit: {time.time() - sent:.2f} s")
    assert process.returncode == 0 and time.time() - sent < 15, stderr[-3000:]
    (run_dir,) = glob.glob(f"{tmp_path}/runs/*")
    state_path = f"runs/{Path(run_dir).name}/resume.pt"
    assert (f"(SIGTERM): resumable state saved to {state_path}; resume with: python {REPO / 'td3.py'} "
            f"--resume {state_path}" in stdout)
    assert not Path(run_dir, "td3.pt").exists()  # --save-model, yet no final checkpoint: the run did not finish
    step = load(Path(tmp_path, state_path))["global_step"]
    assert step > 250
    # it resumes: extended to 20 more steps (--total-timesteps may change), without the final checkpoint and evaluation
    resumed = checked(run_script("td3.py", "--resume", state_path, "--total-timesteps", step + 20, "--no-save-model",
                                 cwd=tmp_path))
    assert f"resumed runs/{Path(run_dir).name} at step {step} of {step + 20}" in resumed.stdout


def digest(folder):
    """Every file below folder (its checkpoints/ too) by relative path, with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def broken_copy(path, kind, out):
    data = bytearray(Path(path).read_bytes())
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "corrupt":  # tensor bytes in the middle: the zip structure is intact, only the CRC check sees it
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    else:
        data = b"not a torch file\n"
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("case, message", [
    ("missing", "--resume runs/missing/resume.pt: no such file"),
    ("text", "not a readable torch.save file, truncated or corrupt (BadZipFile)"),
    ("truncated", "not a readable torch.save file, truncated or corrupt (BadZipFile)"),
    ("corrupt", "not a readable torch.save file, truncated or corrupt (bad CRC in "),
    ("other script", "a state of td3_pave.py, not of td3.py; resume it with td3_pave.py"),
    ("other env", "--env-id Hopper-v5 conflicts with Pendulum-v1, the value of the run resumed from"),
    ("conflicting flag", "--learning-rate 0.01 conflicts with 0.001, the value of the run resumed from"),
    ("before the saved step", "--total-timesteps 300 is below step 333 of"),
])
def test_bad_resume_input_gets_one_clear_line_and_loses_nothing(split_runs, tmp_path, case, message):
    _, td3_dir, _ = split_runs("td3.py", "Pendulum-v1", 333)
    _, pave_dir, _ = split_runs("td3_pave.py", "Pendulum-v1", 187, "--learning-starts", "100")
    shutil.copytree(td3_dir, tmp_path / "runs" / td3_dir.name)
    state = f"runs/{td3_dir.name}/resume.pt"
    path, flags = {
        "missing": ("runs/missing/resume.pt", []),
        "text": (broken_copy(td3_dir / "resume.pt", "text", tmp_path / "text.pt"), []),
        "truncated": (broken_copy(td3_dir / "resume.pt", "truncated", tmp_path / "truncated.pt"), []),
        "corrupt": (broken_copy(td3_dir / "resume.pt", "corrupt", tmp_path / "corrupt.pt"), []),
        "other script": (pave_dir / "resume.prev.pt", []),
        "other env": (state, ["--env-id", "Hopper-v5"]),
        "conflicting flag": (state, ["--learning-rate", "0.01"]),
        "before the saved step": (f"runs/{td3_dir.name}/resume.prev.pt", ["--total-timesteps", "300"]),
    }[case]
    before = digest(tmp_path / "runs" / td3_dir.name)
    run = run_script if case == "missing" else run_in_process  # one case through a new interpreter, as a user meets it
    result = run("td3.py", "--resume", path, *flags, cwd=tmp_path)
    assert result.returncode != 0
    assert (result.stderr.startswith("td3.py: error: --")
            and result.stderr.strip().count("\n") == 0), result.stderr[-3000:]
    assert message in result.stderr
    assert digest(tmp_path / "runs" / td3_dir.name) == before and os.listdir(tmp_path / "runs") == [td3_dir.name]


def test_benchmark_resumes_an_interrupted_run_from_its_last_readable_state(tmp_path):
    import benchmark

    out = tmp_path / "study"
    extra = ("--total-timesteps 400 --learning-starts 200 --buffer-size 1000 --batch-size 32 --hidden-sizes 64 64 "
             "--eval-episodes 1")
    study = [sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py", "--env-ids", "Pendulum-v1",
             "--seeds", "1", "--out", str(out), "--checkpoint-freq", "100", "--no-report"]
    # the run stops at step 250 as if a scheduler had sent SIGTERM: resume.pt at 250, resume.prev.pt at 200, no
    # checkpoint
    first = subprocess.run([*study, "--extra", f"{extra} --stop-at-step 250"], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert (first.returncode == 1
            and "STOPPED Pendulum-v1__td3__1" in first.stdout), first.stdout[-3000:] + first.stderr[-3000:]
    (folder,) = out.glob("runs/*")
    assert {"resume.pt", "resume.prev.pt"} <= set(os.listdir(folder)) and not (folder / "td3.pt").exists()
    dry = subprocess.run([*study, "--extra", extra, "--dry-run"], env=ENV, capture_output=True, text=True, timeout=300)
    assert f"--resume runs/{folder.name}/resume.pt" in dry.stdout, dry.stdout + dry.stderr  # --dry-run shows the resume

    # the Ray backend's task, here in this process: the run folder travels with it and the run resumes in a scratch
    # folder
    run = benchmark.Run(benchmark.Variant("td3.py", "td3", "td3"), "Pendulum-v1", 1,
                        resume=folder.relative_to(out) / "resume.pt")
    inputs = {str(p.relative_to(out)): p.read_bytes() for p in folder.iterdir()}
    returncode, log, files, _ = benchmark.train_in_scratch(str(REPO / "td3.py"), run.arguments(["--checkpoint-freq",
                                                           "100", *extra.split()]), {"OMP_NUM_THREADS": "1"}, inputs)
    assert returncode == 0 and f"resumed runs/{folder.name} at step 250 of 400" in log, log[-3000:]
    assert f"runs/{folder.name}/td3.pt" in files

    # here the newest state is damaged: one line says so, and the run resumes from the one before, in its folder
    data = (folder / "resume.pt").read_bytes()
    (folder / "resume.pt").write_bytes(data[: len(data) // 2])
    second = subprocess.run([*study, "--extra", extra], env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (f"note: {folder / 'resume.pt'} is unreadable, truncated or corrupt (BadZipFile); trying resume.prev.pt"
            in second.stdout)
    assert "1 to run (1 resumed)" in second.stdout
    assert list(out.glob("runs/*")) == [folder] and (folder / "td3.pt").exists()
    log = (out / "logs" / "Pendulum-v1__td3__1.log").read_text()
    assert "stopped at step 250 (--stop-at-step)" in log and f"resumed runs/{folder.name} at step 200 of 400" in log


def test_sigterm_to_benchmark_stops_its_runs_as_ctrl_c_does(tmp_path):
    """A scheduler's SIGTERM to benchmark.py reaches its runs (each in its own session) as SIGTERM: each saves its
    state, benchmark.py waits for them and exits with one line; none is left training on unwatched."""
    out = tmp_path / "study"
    extra = "--total-timesteps 100000 --learning-starts 200 --buffer-size 1000 --batch-size 32 --hidden-sizes 64 64"
    process = subprocess.Popen([sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py",
                                "--env-ids", "Pendulum-v1", "--seeds", "1", "--out", str(out), "--checkpoint-freq",
                                "250", "--no-report", "--extra", extra],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not glob.glob(f"{out}/runs/*/resume.pt"):  # the run is training
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stdout[-3000:] + stderr[-3000:]
    assert "interrupted: 0 of 1 runs finished and kept in" in stderr and "Traceback" not in stderr, stderr[-3000:]
    (folder,) = out.glob("runs/*")
    log = (out / "logs" / "Pendulum-v1__td3__1.log").read_text()
    # the run stopped itself, before benchmark.py exited
    assert "(SIGTERM): resumable state saved to" in log, log[-3000:]
    assert load(folder / "resume.pt")["global_step"] > 250 and not (folder / "td3.pt").exists()
