"""benchmark.py: tiny studies end to end on the local backend and on a local Ray instance, failures, resume, reports,
the noise table by Table 3's protocol, the released seeds as default, throughput, and one-line errors on bad input."""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import torch
from runs import REPO, assert_one_line_error
from tiny_checkpoints import write_checkpoint

import eval_smoothness
from benchmark import main as benchmark_main
from study_report import format_mean_std
from timing import BUSY_LOOP, format_warm_up

# A few hundred real steps per run, small networks and batches (the studies' machinery is under test, not the released
# sizes); --log-freq 100 so that the runs log SPS for the throughput table.
SMALL = "--batch-size 64 --hidden-sizes 64 64"
TINY_EXTRA = ("--total-timesteps 300 --learning-starts 100 --buffer-size 1000 --eval-episodes 2 --log-freq 100 "
              f"--geometry-freq 100 {SMALL}")
PAVE_PAIR = ["td3.py", "td3_pave.py"]


def benchmark(*args, cwd, timeout=300):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(REPO / "benchmark.py"), *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    return result


def tiny_study(out, *scripts, backend_flags=(), cwd):
    return benchmark("--scripts", *scripts, "--env-ids", "Pendulum-v1", "--seeds", 1, 2, "--extra", TINY_EXTRA,
                     "--episodes", 2, "--out", out, *backend_flags, cwd=cwd)


def table_rows(markdown):
    """{row label: [cells]} of a Markdown table."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(line) <= set("|-") and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def assert_report(out, labels):
    """The report of a finished tiny study: its tables hold numbers for every label, its figure is a real PNG."""
    report = out / "report"
    table = table_rows((report / "table1.md").read_text())
    for label in labels:
        re_cell, sm_cell = table[label]
        assert re.fullmatch(r"(\*\*|<u>)?-?\d+(\.\d+)? \(\d+(\.\d+)?\)(\*\*|</u>)?", re_cell), re_cell
        assert re.fullmatch(r"(\*\*|<u>)?\d+\.\d+ \(\d+\.\d+\)(\*\*|</u>)?", sm_cell), sm_cell
    # two rows with numbers: per column one best (bold) and one second (underlined)
    assert sum("**" in table[label][0] for label in labels) == 1 and sum("<u>" in table[label][0]
                                                                         for label in labels) == 1
    sps = table_rows((report / "table5_throughput.md").read_text())["Pendulum"]
    assert all(float(sps[i]) > 0 for i in range(len(labels)))
    png = (report / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    index = (report / "index.md").read_text()
    for name in ("table1.md", "table5_throughput.md", "learning_curves.png"):
        assert f"]({name})" in index


def test_local_study_survives_a_failing_run_and_resumes(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text('import sys\nprint("about to fail on purpose")\nsys.exit("broken.py: error: this run fails on '
                      'purpose")\n')
    out = tmp_path / "study"
    start = time.time()
    result = tiny_study(out, *PAVE_PAIR, broken, backend_flags=["--workers", 2], cwd=tmp_path)
    print(f"tiny study, local backend, 2 workers: {time.time() - start:.1f} s")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    # the failures are reported with their log's last lines; the other four runs finished anyway
    assert "FAILED  Pendulum-v1__broken__1" in result.stdout and "this run fails on purpose" in result.stdout
    assert "2 run(s) failed" in result.stdout
    for name in ("td3", "td3_pave"):
        for seed in (1, 2):
            assert len(list(out.glob(f"runs/Pendulum-v1__{name}__{seed}__*/{name}.pt"))) == 1
            assert (out / "logs" / f"Pendulum-v1__{name}__{seed}.log").read_text().startswith("$ cd ")
    assert_report(out, ["td3", "td3_pave"])
    assert "Missing (no checkpoint): Pendulum-v1__broken__1, Pendulum-v1__broken__2" in (out / "report"
                                                                                         / "index.md").read_text()

    # a second invocation skips the finished runs (same folders) and tries the failed ones again
    folders = sorted(out.glob("runs/*"))
    again = tiny_study(out, *PAVE_PAIR, broken, backend_flags=["--workers", 2], cwd=tmp_path)
    assert again.returncode == 1
    assert "6 runs in" in again.stdout and "4 finished (skipped), 2 to run" in again.stdout
    assert sorted(out.glob("runs/*")) == folders
    assert_report(out, ["td3", "td3_pave"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ignore_sigint():
    """Popen's preexec_fn: the child starts with SIGINT ignored, as a background job of a non-interactive shell does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_every_command_stops_on_sigint_and_sigterm_and_ray_init_changes_neither(monkeypatch):
    """main() makes SIGINT and SIGTERM raise KeyboardInterrupt (also when SIGINT was inherited ignored) and restores the
    handlers it found; connect_ray keeps them although ray.init makes SIGTERM exit the driver at once."""
    import types

    import benchmark as bm
    import benchmark_common

    seen = {}

    def command(args):
        seen["main"] = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        fake_ray = types.SimpleNamespace(init=lambda **kwargs: signal.signal(signal.SIGTERM, lambda *a: sys.exit(15)))
        monkeypatch.setitem(sys.modules, "ray", fake_ray)
        bm.connect_ray(types.SimpleNamespace(address="auto", ray_ship_code=False))
        seen["ray"] = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        return 0

    monkeypatch.setitem(bm.COMMANDS, "study", (*bm.COMMANDS["study"][:3], lambda args: command(args)))
    found = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.getsignal(signal.SIGTERM)
    try:
        assert bm.main(["--scripts", "td3.py", "--env-ids", "Pendulum-v1"]) == 0
        assert seen["main"] == seen["ray"] == (signal.default_int_handler, benchmark_common.stop_as_on_ctrl_c)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == found[1]
    finally:
        signal.signal(signal.SIGINT, found[0])


def test_ray_backend_runs_the_same_study(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the Ray backend needs Ray: pip install 'ray[default]'")
    # one auth mode for the head and the client: without it, a ~/.ray/auth_token left by any earlier `ray.init()` on
    # this
    # machine turns token authentication on for the client alone, and the head refuses it
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    # a short temp dir: Ray's socket paths must stay under the 107-character Unix limit
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    head = subprocess.Popen([ray_bin, "start", "--head", "--num-cpus", "2", "--port", str(port), "--temp-dir", ray_tmp,
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:  # until the head listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and head.poll() is None, "the Ray head did not start"
                time.sleep(0.5)
        out = tmp_path / "study"
        start = time.time()
        result = tiny_study(out, *PAVE_PAIR, backend_flags=["--backend", "ray", "--address", f"127.0.0.1:{port}"],
                            cwd=tmp_path)
        print(f"tiny study, Ray backend (local instance, 2 CPUs, including connecting): {time.time() - start:.1f} s")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # the tasks ran in scratch folders of the (here: local) node; their run folders and logs came back into --out
        for name in ("td3", "td3_pave"):
            for seed in (1, 2):
                assert len(list(out.glob(f"runs/Pendulum-v1__{name}__{seed}__*/{name}.pt"))) == 1
                assert "model saved to" in (out / "logs" / f"Pendulum-v1__{name}__{seed}.log").read_text()
        assert_report(out, ["td3", "td3_pave"])

        # Ctrl-C: the task stops its run, which saves its resumable state, and the run folder comes back into --out.
        # benchmark.py starts with SIGINT ignored whatever this test inherited: the case of a background job of a
        # non-interactive shell (`.ci/run &`, nohup), where Python keeps SIGINT ignored unless benchmark.py restores it
        long = tmp_path / "long"
        study = [sys.executable, str(REPO / "benchmark.py"), "--scripts", "td3.py", "--env-ids", "Pendulum-v1",
                 "--seeds", "7",
                 "--out", str(long), "--checkpoint-freq", "250", "--no-report", "--backend", "ray", "--address",
                 f"127.0.0.1:{port}", "--extra",
                 f"--total-timesteps 100000 --learning-starts 200 --buffer-size 1000 {SMALL}"]
        started = time.time()
        process = subprocess.Popen(study, cwd=tmp_path, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
        deadline = started + 120
        while not [p for p in glob.glob(f"{tempfile.gettempdir()}/*/runs/Pendulum-v1__td3__7__*/resume.pt")
                   if os.path.getmtime(p) >= started]:  # the run is training, in its task's scratch folder
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, stdout[-3000:] + stderr[-3000:]
        assert "stopping 1 run(s)" in stdout + stderr and "interrupted: 0 of 1 runs finished" in stderr, stderr[-3000:]
        (folder,) = long.glob("runs/*")
        assert torch.load(folder / "resume.pt", weights_only=True)["global_step"] >= 250 and not (folder
                                                                                                  / "td3.pt").exists()
        assert "(SIGTERM): resumable state saved to" in (long / "logs" / "Pendulum-v1__td3__7.log").read_text()
        dry = subprocess.run([*study, "--dry-run"], capture_output=True, text=True, timeout=120)
        assert f"--resume runs/{folder.name}/resume.pt" in dry.stdout, dry.stdout + dry.stderr
    finally:
        head.terminate()  # `ray start --block` drains and stops the Ray processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of that session left behind
        except ProcessLookupError:
            pass
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_sensitivity_suite_plots_return_and_sm_against_each_lambda(tmp_path):
    out = tmp_path / "sensitivity"
    result = benchmark("--suite", "sensitivity", "--grid", 0, 1, "--seeds", 1, "--workers", 2, "--episodes", 1, "--out",
                       out,
                       "--extra",
                       f"--total-timesteps 200 --learning-starts 150 --buffer-size 1000 --eval-episodes 1 {SMALL}",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = table_rows((out / "report" / "table1.md").read_text())
    assert set(table) == {f"lambda{i}={v}" for i in (1, 2, 3) for v in (0, 1)}
    assert all(cell != "-" for row in table.values() for cell in row)
    png = (out / "report" / "sensitivity_Pendulum.png").read_bytes()
    assert png[:4] == b"\x89PNG" and "](sensitivity_Pendulum.png)" in (out / "report" / "index.md").read_text()


def test_dry_run_prints_the_suites_commands(tmp_path):
    result = benchmark("--suite", "paper-td3", "--dry-run", "--out", tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5 * 6 * 5  # methods x envs x seeds
    assert all(" --save-model " in line and "> logs/" in line for line in lines)
    # the released runs' seeds, in their order
    seeds = [int(line.split(" --seed ")[1].split()[0]) for line in lines if "td3_asap.py --env-id Walker2d-v5 " in line]
    assert seeds == [178132, 410580, 922852, 787576, 660993]
    assert not (tmp_path / "s").exists()  # a dry run writes nothing
    ablation = benchmark("--suite", "ablation", "--seeds", 1, "--dry-run", "--extra", "--total-timesteps 1000",
                         cwd=tmp_path).stdout
    # the ablation's base is plain td3 (SiLU is every script's default), under --paper-text-activations too
    assert "td3.py --env-id LunarLanderContinuous-v3 --seed 1 --exp-name td3 --save-model --no-progress-bar " \
           "--checkpoint-freq 10000 --total-timesteps 1000" in ablation
    assert "--exp-name td3_pave-mpr --save-model --no-progress-bar --lambda2 0 --lambda3 0" in ablation
    relu_ablation = benchmark("--suite", "ablation", "--seeds", 1, "--dry-run", "--paper-text-activations",
                              cwd=tmp_path).stdout
    assert "relu" not in relu_ablation and "--exp-name td3 " in relu_ablation


def test_dry_run_of_the_factorial_and_sigma_delta_suites(tmp_path):
    """The released ablation's 7 configurations with all three lambdas (0.1 / 0.1 / 0.01, 0 when off), and its sweeps of
    sigma and delta (5 + 5 values, the other flags at presets), on LunarLander and Walker."""
    def expected(env_id, name, flags):
        return (f"cd {tmp_path / 's'} && python {REPO / 'td3_pave.py'} --env-id {env_id} --seed 1 --exp-name {name} "
                f"--save-model --no-progress-bar {flags} --checkpoint-freq 10000 > logs/{env_id}__{name}__1.log 2>&1")

    envs = ("LunarLanderContinuous-v3", "Walker2d-v5")
    factorial = {"mpr": "0.1 0 0", "vfc": "0 0.1 0", "curv": "0 0 0.01", "mpr_vfc": "0.1 0.1 0",
                 "mpr_curv": "0.1 0 0.01",
                 "vfc_curv": "0 0.1 0.01", "mpr_vfc_curv": "0.1 0.1 0.01"}
    result = benchmark("--suite", "factorial", "--seeds", 1, "--dry-run", "--out", tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        expected(env_id, f"td3_pave-factorial_{terms}",
                 "--lambda1 {} --lambda2 {} --lambda3 {}".format(*lambdas.split()))
        for env_id in envs for terms, lambdas in factorial.items()]
    result = benchmark("--suite", "sigma-delta", "--seeds", 1, "--dry-run", "--out", tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sweeps = [("mpr_sigma", v) for v in ("0.001", "0.005", "0.01", "0.05", "0.1")] + \
             [("curv_delta", v) for v in ("0.1", "0.5", "1", "2", "5")]
    assert result.stdout.splitlines() == [
        expected(env_id, f"td3_pave-{name}_{value}", f"--{name.replace('_', '-')} {value}") for env_id in envs
        for name, value in sweeps]


def test_sensitivity_table_and_plot_of_a_sigma_sweep(tmp_path, capsys):
    """--suite sigma-delta --report-only on a study folder of in-process checkpoints of the five sigma runs (no delta
    run): sensitivity.md has a row per sigma with the run's own evaluation, the delta rows are empty, and the plot is
    drawn."""
    out, paths = tmp_path / "study", {}
    for i, value in enumerate(("0.001", "0.005", "0.01", "0.05", "0.1")):
        name = f"td3_pave-mpr_sigma_{value}"
        folder = out / "runs" / f"Pendulum-v1__{name}__1__0"
        folder.mkdir(parents=True)
        paths[value] = write_checkpoint(folder / f"{name}.pt", "td3_pave.py", exp_name=name, init_seed=i)
    assert benchmark_main(["--suite", "sigma-delta", "--env-ids", "Pendulum-v1", "--seeds", "1", "--episodes", "1",
                          "--report-only", "--out", str(out)]) == 0
    report = out / "report"
    sigma, delta = (report / "sensitivity.md").read_text().split("**--curv-delta varied")
    assert sigma.startswith("**--mpr-sigma varied: return (re) and smoothness (sm) per value**")
    table = table_rows(sigma)
    assert list(table) == ["0.001", "0.005", "0.01", "0.05", "0.1"]
    for value, path in paths.items():
        result = eval_smoothness.evaluate(path, episodes=1)
        assert [re.sub(r"\*\*|</?u>", "", cell) for cell in table[value]] == [format_mean_std(result[key])
                                                                              for key in ("return", "sm")]
    delta = table_rows(delta)
    assert list(delta) == ["0.1", "0.5", "1", "2", "5"] and all(cell == "-" for row in delta.values() for cell in row)
    assert (report / "sensitivity_Pendulum.png").read_bytes()[:4] == b"\x89PNG"
    index = (report / "index.md").read_text()
    assert "](sensitivity.md)" in index and "](sensitivity_Pendulum.png)" in index


def test_paper_text_activations_make_every_method_but_pave_relu(tmp_path):
    """--paper-text-activations: the paper text's section 6.1 (ReLU baselines, SiLU PAVE), under their own run names."""
    result = benchmark("--suite", "paper-sac", "--env-ids", "Pendulum-v1", "--seeds", 1, "--dry-run",
                       "--paper-text-activations",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    relu = " --actor-activation relu --critic-activation relu"
    for name in ("sac", "sac_caps", "sac_gradcaps", "sac_asap"):
        (line,) = [line for line in lines if f" --exp-name {name}-relu " in line]
        assert line.startswith("cd ") and f"/{name}.py " in line and relu in line, line
    (pave,) = [line for line in lines if "sac_pave.py" in line]
    assert " --exp-name sac_pave " in pave and "relu" not in pave


@pytest.mark.parametrize("suite", ["paper-td3", "paper-sac", "noise", "ablation"])
def test_each_family_has_one_base_variant_that_scales_the_noise_under_either_activation_setting(suite):
    """Table 3's sigma_base comes from the Base run: plain td3.py (sac.py), renamed -relu by
    --paper-text-activations."""
    import benchmark as bm
    import study_report

    algo = "sac" if suite == "paper-sac" else "td3"
    for paper_text in (False, True):
        variants = bm.SUITES[suite]().variants
        if paper_text and suite != "ablation":  # as build_study does: the ablation's SiLU base stays as it is
            variants = [bm.paper_text_variant(v) for v in variants]
        (base,) = [v for v in variants if study_report.is_base_variant(v)]
        assert base.script == f"{algo}.py" and base.name == (f"{algo}-relu" if paper_text and suite != "ablation"
                                                             else algo)


def test_noise_table_follows_table_3s_protocol(tmp_path):
    """A study folder of in-process checkpoints, reported with --report-only: sigma_base from the first-seed (178132)
    td3 run's 20 clean episodes, --noise-episodes per run, cells mean (std) over the per-seed means; checked by hand
    with eval_smoothness's functions."""
    out, seeds, paths = tmp_path / "study", (410580, 178132), {}
    for name in ("td3", "td3_pave"):
        for seed in seeds:
            folder = out / "runs" / f"Pendulum-v1__{name}__{seed}__0"
            folder.mkdir(parents=True)
            paths[name, seed] = write_checkpoint(folder / f"{name}.pt", f"{name}.py", seed=seed,
                                                 init_seed=seed + len(name))
    result = benchmark("--scripts", "td3.py", "td3_pave.py", "--env-ids", "Pendulum-v1", "--seeds", *seeds,
                       "--noise-levels", 0.1,
                       "--episodes", 1, "--noise-episodes", 2, "--report-only", "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    policy = {key: eval_smoothness.load_policy(path) for key, path in paths.items()}
    scale = np.concatenate(eval_smoothness.rollout(policy["td3", 178132], 20)["observations"]).std(axis=0)
    text = (out / "report" / "table3_noise.md").read_text()
    assert "|  | Pendulum σ=0.1 re | Pendulum σ=0.1 sm |" in text and "(2 episodes per run and σ)" in text
    table = table_rows(text)
    for name in ("td3", "td3_pave"):
        noisy = [eval_smoothness.rollout(policy[name, seed], 2, obs_noise=0.1, obs_scale=scale) for seed in seeds]
        cells = [re.sub(r"\*\*|</?u>", "", cell) for cell in table[name]]
        assert cells == [format_mean_std([np.mean(r[key]) for r in noisy]) for key in ("return", "sm")]
        assert cells[1] != format_mean_std([v for r in noisy for v in r["sm"]])  # not the pooled episodes' std
    index = (out / "report" / "index.md").read_text()
    assert "Pendulum td3: per-dimension std (floored at 1e-06) of 4000 observations of 20 clean episodes of the " \
           f"first-seed base model td3 (training seed 178132, {paths['td3', 178132]})" in index
    assert "clip(o + u σ_base, obs_low, obs_high)" in index and "FALLBACK" not in index


@pytest.mark.parametrize("args, message", [
    (["--suite", "paper-tdd"], "unknown suite 'paper-tdd'; did you mean paper-td3?"),
    (["--scripts", "td4.py", "--env-ids", "Pendulum-v1"], "unknown script 'td4.py'"),
    (["--suite", "ablation", "--report-only", "--out", "nowhere"], "--report-only: no runs folder in"),
    (["--suite", "ablation", "--grid", "1"], "--grid is for --suite sensitivity"),
    (["threads", "--threads", "0"], "every --threads value must be positive"),
    (["threads", "--scripts", "td4.py"], "no such script: td4.py"),
])
def test_bad_input_gets_one_clear_line(tmp_path, args, message):
    result = benchmark(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert (result.stderr.strip().count("\n") == 0 and message in result.stderr
            and result.stderr.startswith("benchmark.py: error:"))


def test_throughput_reports_sps_and_ratio_to_the_base_script(tmp_path):
    # small networks and batches (--extra, for every script): the test is about the measurement, not the released sizes
    result = benchmark("throughput", "--env-id", "Pendulum-v1", "--steps", 100, "--learning-starts", 100,
                       "--scripts", "td3.py", "td3_pave.py", "td3_pave.py --pave-batch 25", "td3_missing.py",
                       "--no-cuda",
                       "--extra", SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "note: td3_missing.py not found; skipped" in result.stdout
    rows = table_rows(result.stdout)
    assert rows.pop("script") == ["SPS", "ratio", "warm-up s"]
    assert set(rows) == {"td3", "td3_pave", "td3_pave --pave-batch 25"}, rows
    base, pave, sub_batch = (rows[label] for label in ("td3", "td3_pave", "td3_pave --pave-batch 25"))
    assert float(base[1]) == 1.0 and float(pave[0]) > 0 and float(sub_batch[0]) > 0
    assert all(re.fullmatch(r"\d+\.\d", row[2]) for row in rows.values())  # warm-up seconds: never "-0.0" or "-0.2"
    assert " s extra)" in result.stdout and "took -" not in result.stdout
    # the ratio comes from the unrounded SPS, which the table shows to 0.1 (and the ratio to 0.01): at a few SPS (a busy
    # machine) the rounding alone moves pave / base by more than 0.01
    sps_pave, sps_base = float(pave[0]), float(base[0])
    assert (sps_pave - 0.05) / (sps_base + 0.05) - 0.005 <= float(pave[1]) <= (sps_pave + 0.05) / (sps_base
                                                                                                   - 0.05) + 0.005
    assert not list(tmp_path.iterdir())  # without --out, its runs go to a temporary folder that is removed


def busy_loops():
    """PIDs of the busy processes `benchmark.py threads` starts, found by their command line."""
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            if BUSY_LOOP.encode() in open(cmdline, "rb").read():
                pids.append(cmdline.split("/")[2])
        except OSError:  # the process ended meanwhile
            pass
    return pids


def test_threads_table_idle_and_beside_a_busy_process_then_no_busy_process_left(tmp_path):
    before = busy_loops()
    result = benchmark("threads", "--steps", 100, "--learning-starts", 100, "--scripts", "td3.py", "--threads", 1,
                       "--busy", 0, 1, "--extra", SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = table_rows(result.stdout)
    assert rows.pop("script") == ["torch threads", "idle", "beside 1 busy"]
    (threads, idle, beside), = rows.values()
    assert threads == "1" and re.fullmatch(r"\d+\.\d \(1\.00\), cpu \d+\.\dx", idle), idle
    assert re.fullmatch(r"\d+\.\d \(\d+\.\d\d\), cpu \d+\.\dx", beside), beside
    assert "td3, 1 torch thread(s), beside 1 busy process(es) ..." in result.stdout
    assert busy_loops() == before  # the busy processes it started are gone
    assert not list(tmp_path.iterdir())  # without --out, its runs go to a temporary folder that is removed


def test_throughput_warm_up_is_never_negative():
    """The first burst's extra seconds come from a difference of timings: a warm-up of about nothing can come out below
    0 by noise, and is shown as 0.0 (never "-0.0" or "-0.2")."""
    assert [format_warm_up(seconds) for seconds in (-0.2, -0.04, -0.0, 0.0, 0.04, 1.26, 12.0)] == [
        "0.0", "0.0", "0.0", "0.0", "0.0", "1.3", "12.0"]


def test_denormals_times_a_pave_critic_step_both_ways_and_refuses_other_checkpoints(tmp_path):
    """`benchmark.py denormals`: one row per checkpoint with the step's time with denormals computed and flushed, and
    their ratio; a checkpoint of a script without PAVE, or without its flags or critics, gets one line and a non-zero
    exit."""
    pave = write_checkpoint(tmp_path / "td3_pave.pt", script="td3_pave.py", step=1234)
    ckpt = torch.load(pave, weights_only=True)
    ckpt["args"].update(mpr_sigma=0.05, curv_delta=1.0, lambda1=0.1, lambda2=0.1, lambda3=0.01, batch_size=32,
                        gamma=0.99)
    torch.save(ckpt, pave)
    result = benchmark("denormals", pave, "--rounds", 2, "--updates", 1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    row = table_rows(result.stdout)[str(pave)]
    assert row[:3] == ["td3_pave.py", "1234", "32"]
    computed, flushed, ratio = map(float, row[3:])
    assert computed > 0 and flushed > 0 and abs(ratio - computed / flushed) <= 0.01 + 0.05 * ratio  # cells rounded
    assert_one_line_error(benchmark("denormals", write_checkpoint(tmp_path / "td3.pt"), cwd=tmp_path),
                          "td3.pt: a checkpoint of td3.py without PAVE's flags")
    assert_one_line_error(benchmark("denormals", tmp_path / "missing.pt", cwd=tmp_path), "missing.pt: no such file")
    assert_one_line_error(benchmark("denormals", pave, "--rounds", 0, cwd=tmp_path), "--rounds and --updates")
    del ckpt["qf2"]
    torch.save(ckpt, tmp_path / "no_qf2.pt")
    assert_one_line_error(benchmark("denormals", tmp_path / "no_qf2.pt", cwd=tmp_path), "cannot rebuild its critics")
