"""A long study in stages: benchmark.py --stages advances every run to each step in turn (a run stops there with its
resumable state and a model checkpoint at that fixed step), a stop at a stage is not a failure, the same command goes
on from wherever the study stopped, and a run done in stages ends with the weights of the same run done in one go."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from runs import REPO, assert_one_line_error, run_in_process, run_script, same

ENV = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # as runs.run_script
FLAGS = "--total-timesteps 400 --learning-starts 200 --buffer-size 1000 --batch-size 32 --hidden-sizes 32 32 " \
        "--log-freq 100 --geometry-freq 200 --geometry-batch 32 --eval-episodes 1 --model-checkpoint-every 200"
pytestmark = pytest.mark.xdist_group("stages")  # one process trains the staged study once for the tests that read it


def benchmark(out, *flags, extra=FLAGS):
    command = [sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py", "--env-ids", "Pendulum-v1", "--seeds",
               "1", "2", "--out", str(out), "--workers", "1", "--checkpoint-freq", "100", "--no-report", *flags,
               "--extra", extra]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The tiny study run with --stages 200 400: (its folder, the CompletedProcess)."""
    out = tmp_path_factory.mktemp("staged") / "study"
    return out, benchmark(out, "--stages", "200", "400")


def test_every_run_reaches_a_stage_before_any_goes_past_it(staged):
    out, result = staged
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line.strip() for line in re.split(r"[\r\n]", result.stderr + result.stdout) if line.strip()]
    staged_lines = [i for i, line in enumerate(lines) if line.startswith("staged  Pendulum-v1__td3__")]
    done_lines = [i for i, line in enumerate(lines) if line.startswith("done    Pendulum-v1__td3__")]
    assert len(staged_lines) == 2 and len(done_lines) == 2 and max(staged_lines) < min(done_lines), lines
    assert not any(line.startswith(("STOPPED", "FAILED")) for line in lines)
    for seed in (1, 2):
        (folder,) = out.glob(f"runs/Pendulum-v1__td3__{seed}__*")  # one folder per run: the stage continued it
        log = (out / "logs" / f"Pendulum-v1__td3__{seed}.log").read_text()
        assert "--stop-at-step 200" in log and "stopped at step 200 (--stop-at-step)" in log
        assert f"resumed runs/{folder.name} at step 200 of 400" in log
        middle, last, final = (torch.load(folder / name, weights_only=True)
                               for name in ("checkpoints/td3_step200.pt", "checkpoints/td3_step400.pt", "td3.pt"))
        assert middle["global_step"] == 200 and final["global_step"] == 400 and same(last, final)
        assert not same(middle["qf1"], final["qf1"])


def test_the_same_command_again_skips_every_run(staged):
    out, _ = staged
    before = sorted(glob.glob(f"{out}/runs/*/*"))
    again = benchmark(out, "--stages", "200", "400")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage 200: 2 runs in" in again.stdout and "2 at step 200 or finished (skipped), 0 to run" in again.stdout
    assert "2 at step 400 or finished (skipped), 0 to run" in again.stdout
    assert sorted(glob.glob(f"{out}/runs/*/*")) == before


def test_a_run_in_stages_ends_with_the_weights_of_one_go(staged, tmp_path):
    out, _ = staged
    one_go = run_script("td3.py", "--env-id", "Pendulum-v1", "--seed", "1", "--save-model", "--no-progress-bar",
                        *FLAGS.split(), cwd=tmp_path)
    assert one_go.returncode == 0, one_go.stderr[-3000:]
    (reference,) = glob.glob(f"{tmp_path}/runs/*/td3.pt")
    (staged_checkpoint,) = glob.glob(f"{out}/runs/Pendulum-v1__td3__1__*/td3.pt")
    a, b = (torch.load(path, weights_only=True) for path in (reference, staged_checkpoint))
    for net in ("actor", "qf1", "qf2"):
        assert same(a[net], b[net]), net


def test_an_extended_run_keeps_its_fixed_step_checkpoints_and_adds_more(staged, tmp_path):
    out, _ = staged
    (folder,) = out.glob("runs/Pendulum-v1__td3__2__*")
    copy = tmp_path / folder.name
    subprocess.run(["cp", "-r", str(folder), str(copy)], check=True)
    kept = {path.name: path.read_bytes() for path in (copy / "checkpoints").iterdir()}
    refused = run_in_process("td3.py", "--resume", copy / "resume.pt", "--total-timesteps", "800", "--stop-at-step",
                             "400", cwd=tmp_path)
    assert_one_line_error(refused, "--stop-at-step 400 is not after step 400")
    result = run_script("td3.py", "--resume", copy / "resume.pt", "--total-timesteps", "800", "--stop-at-step", "600",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--stop-at-step N stops it again at N" in result.stdout
    names = sorted(path.name for path in (copy / "checkpoints").iterdir())
    assert names == ["td3_step200.pt", "td3_step400.pt", "td3_step600.pt"]  # every 200 steps, not 3 over the new total
    assert all((copy / "checkpoints" / name).read_bytes() == data for name, data in kept.items())
    assert torch.load(copy / "resume.pt", weights_only=True)["global_step"] == 600


def test_stop_at_step_past_the_end_is_refused_and_at_the_end_finishes(tmp_path):
    common = ("--env-id", "Pendulum-v1", "--total-timesteps", "300", "--learning-starts", "200", "--hidden-sizes", "32",
              "32", "--batch-size", "32", "--eval-episodes", "1", "--no-progress-bar", "--save-model")
    assert_one_line_error(run_in_process("td3.py", *common, "--stop-at-step", "301", cwd=tmp_path),
                          "--stop-at-step 301 is beyond --total-timesteps 300")
    result = run_script("td3.py", *common, "--stop-at-step", "300", cwd=tmp_path)
    assert result.returncode == 0 and "model saved to" in result.stdout, result.stderr[-3000:]
    assert not glob.glob(f"{tmp_path}/runs/*/resume.pt")


@pytest.mark.parametrize("stages, message", [(["200", "100"], "--stages must be positive steps in increasing order"),
                                             (["0", "100"], "--stages must be positive steps in increasing order")])
def test_stages_out_of_order_are_refused(tmp_path, stages, message):
    result = benchmark(tmp_path / "study", "--stages", *stages)
    assert_one_line_error(result, message)
    assert not (tmp_path / "study").exists()


def test_sigterm_in_a_stage_saves_every_run_and_the_same_command_continues_it(tmp_path):
    """The end of a stretch of work: SIGTERM to the study stops its runs, each with its resumable state; the same
    command then resumes them, still to the same stage (seen in its --dry-run)."""
    out = tmp_path / "study"
    extra = "--total-timesteps 100000 --learning-starts 200 --buffer-size 1000 --batch-size 32 --hidden-sizes 32 32"
    flags = [sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py", "--env-ids", "Pendulum-v1", "--seeds",
             "1", "--out", str(out), "--checkpoint-freq", "250", "--no-report", "--stages", "50000", "100000",
             "--extra", extra]
    process = subprocess.Popen(flags, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not glob.glob(f"{out}/runs/*/resume.pt"):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "interrupted: 0 of 1 runs finished" in stderr and "Traceback" not in stderr
    (folder,) = out.glob("runs/*")
    step = torch.load(folder / "resume.pt", weights_only=True)["global_step"]
    assert 250 <= step < 50000
    plan = subprocess.run([*flags, "--dry-run"], env=ENV, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    (command,) = [line for line in plan.stdout.splitlines() if "td3.py" in line]
    assert f"--resume runs/{folder.name}/resume.pt" in command and command.endswith("--stop-at-step 50000 "
                                                                                     "> logs/Pendulum-v1__td3__1.log "
                                                                                     "2>&1")
    assert not command.startswith("#")


def test_status_shows_every_runs_step_and_speed(staged):
    out, _ = staged
    status = subprocess.run([sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py", "td3_pave.py",
                             "--env-ids",
                             "Pendulum-v1", "--seeds", "1", "2", "--out", str(out), "--status"],
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in status.stdout.splitlines()[2:]}
    assert list(rows) == ["Pendulum-v1__td3__1", "Pendulum-v1__td3__2", "Pendulum-v1__td3_pave__1",
                          "Pendulum-v1__td3_pave__2"]
    for seed in (1, 2):
        _, logged, saved, wall, sps = rows[f"Pendulum-v1__td3__{seed}"]
        assert int(logged) >= 300 and saved == "400 (finished)" and wall.endswith(" h") and float(sps.strip(" |")) > 0
    assert "not started" in rows["Pendulum-v1__td3_pave__1"][1]


def test_the_mujoco_study_exports_a_stage_without_resumable_states(tmp_path):
    """results/mujoco_study.sh --export STEP copies what git keeps of the study at a stage: every run's events and log,
    its model checkpoint at STEP and its final checkpoint if it has one, never a resumable state."""
    study, dest = tmp_path / "kept", tmp_path / "export"
    runs = {"Hopper-v5__td3__1__100": ["events.out.tfevents.1", "resume.pt", "resume.prev.pt",
                                       "checkpoints/td3_step100.pt", "checkpoints/td3_step200.pt", "td3.pt"],
            "Hopper-v5__td3_pave__1__100": ["events.out.tfevents.1", "events.out.tfevents.2", "resume.pt"]}
    for name, files in runs.items():
        for file in files:
            (study / "study" / "runs" / name / file).parent.mkdir(parents=True, exist_ok=True)
            (study / "study" / "runs" / name / file).write_text(file)
        (study / "study" / "logs").mkdir(exist_ok=True)
        (study / "study" / "logs" / f"{name.rsplit('__', 1)[0]}.log").write_text(
            f"$ cd study && python td3.py --total-timesteps 200 --model-checkpoint-every 100\n{name}\n")

    def export(step, to):
        result = subprocess.run(["bash", str(REPO / "results" / "mujoco_study.sh"), "--export", str(step)],
                                capture_output=True, text=True,
                                env={**ENV, "PAVE_STUDY": str(study), "PAVE_EXPORT_TO": str(to)}, timeout=60)
        assert result.returncode == 0, result.stderr
        return sorted(str(path.relative_to(to)) for path in to.rglob("*") if path.is_file())

    common = ["logs/Hopper-v5__td3__1.log", "logs/Hopper-v5__td3_pave__1.log",
              "runs/Hopper-v5__td3__1__100/events.out.tfevents.1", "runs/Hopper-v5__td3__1__100/td3.pt",
              "runs/Hopper-v5__td3_pave__1__100/events.out.tfevents.1",
              "runs/Hopper-v5__td3_pave__1__100/events.out.tfevents.2"]
    assert export(100, dest) == sorted([*common, "runs/Hopper-v5__td3__1__100/checkpoints/td3_step100.pt"])
    # at the last step (the log's --total-timesteps) the final checkpoint is the model of that step: kept once
    assert export(200, tmp_path / "last") == common


def publish_all(python, src, results, calls):
    """results/mujoco_study.sh --publish all with a stand-in python recording each command into calls."""
    calls.write_text("")
    result = subprocess.run(["bash", str(REPO / "results" / "mujoco_study.sh"), "--publish", "all"],
                            capture_output=True, text=True, timeout=60,
                            env={**ENV, "PYTHON": str(python), "PAVE_PUBLISH_FROM": str(src),
                                 "PAVE_PUBLISH_TO": str(results)})
    if result.returncode == 1 and not calls.read_text():
        assert result.stderr.strip() == f"mujoco_study.sh: no stage published in {results} yet (publish one first: " \
                                        "--publish STEP)", result.stderr
    return result


def test_the_mujoco_study_publishes_a_stage_per_env_and_the_critic_along_training(tmp_path):
    """results/mujoco_study.sh --publish STEP runs benchmark.py publish per env at STEP from the exported study, then
    critic_geometry.py --during on the during/checkpoints.csv of each env whose publish succeeded and wrote one (from
    the second stage on): one figure with a row per env, nothing evaluated twice; a failed env does not stop the other,
    and the exit is 1. --publish all does it again for every stage and env published so far."""
    src, calls, results = tmp_path / "study", tmp_path / "calls.txt", tmp_path / "results"
    # a stand-in python: records each command; "fails" to publish Walker2d-v5 when $FAIL says so; a publish at step
    # 200 or more (but not the study's first, 100000) writes its env's during/checkpoints.csv, as benchmark.py publish
    # does once a run has two steps (only under tmp_path: an --out relative to the repository is never written)
    fake_python = tmp_path / "python"
    fake_python.write_text(f"""#!/bin/bash
echo "$*" >> {calls}
if [[ "$*" == *publish* ]]; then
    [[ -n "$FAIL" && "$*" == *Walker2d-v5* ]] && exit 1
    out="${{@: -1}}"
    if [[ "$*" != *"--step 100 "* && "$*" != *"--step 100000 "* && "$out" == /* ]]; then
        mkdir -p "$out/during" && echo csv > "$out/during/checkpoints.csv"
    fi
fi
exit 0
""")
    fake_python.chmod(0o755)

    def publish(step, fail=""):
        calls.write_text("")
        result = subprocess.run(["bash", str(REPO / "results" / "mujoco_study.sh"), "--publish", str(step)],
                                capture_output=True, text=True, timeout=60,
                                env={**ENV, "PYTHON": str(fake_python), "PAVE_PUBLISH_FROM": str(src),
                                     "PAVE_PUBLISH_TO": str(results), "FAIL": fail})
        lines = calls.read_text().splitlines()
        assert result.returncode == (1 if fail else 0), result.stdout + result.stderr
        assert len(result.stdout.splitlines()) == len(lines), result.stdout
        for env, folder, line in zip(("Walker2d-v5", "Hopper-v5"), ("walker2d", "hopper"), lines):
            assert line == f"benchmark.py publish --study {src} --step {step} --env-ids {env} " \
                           f"--out {results}/{folder}/step{step}"
        return lines[2:]

    assert publish(100) == []  # one step only: nothing along training
    assert publish(200) == [f"critic_geometry.py --during {results}/walker2d/step200/during/checkpoints.csv "
                            f"{results}/hopper/step200/during/checkpoints.csv --out-dir {results}/mujoco/during"]
    # Walker's publish fails: its during/ (here from the run above) is not joined, Hopper's is
    assert publish(200, fail="yes") == [f"critic_geometry.py --during {results}/hopper/step200/during/checkpoints.csv "
                                        f"--out-dir {results}/mujoco/during"]
    # --publish all: again every stage and env published so far (a results/<env>/step<STEP> folder), in stage order
    results = tmp_path / "published"
    assert publish_all(fake_python, src, results, calls).returncode == 1  # nothing published yet: one line, exit 1
    for folder in ("walker2d/step100000", "hopper/step100000", "walker2d/step200000"):
        (results / folder).mkdir(parents=True)
    assert publish_all(fake_python, src, results, calls).returncode == 0
    assert calls.read_text().splitlines() == [
        f"benchmark.py publish --study {src} --step {step} --env-ids {env} --out {results}/{folder}/step{step}"
        for step, env, folder in ((100000, "Walker2d-v5", "walker2d"), (100000, "Hopper-v5", "hopper"),
                                  (200000, "Walker2d-v5", "walker2d"))] + [
        f"critic_geometry.py --during {results}/walker2d/step200000/during/checkpoints.csv "
        f"--out-dir {results}/mujoco/during"]
    # by default from the repository's folders, named relative to it, so what publish writes is the same in any clone
    calls.write_text("")
    subprocess.run(["bash", str(REPO / "results" / "mujoco_study.sh"), "--publish", "1"], capture_output=True,
                   timeout=60, env={**ENV, "PYTHON": str(fake_python)})
    assert calls.read_text().splitlines()[1] == ("benchmark.py publish --study results/mujoco/study --step 1 "
                                                 "--env-ids Hopper-v5 --out results/hopper/step1")
