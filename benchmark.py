"""benchmark.py: studies (training scripts x envs x seeds) here or on a Ray cluster, their tables, figures and timings.

Commands (`python benchmark.py COMMAND --help` for each one's flags):
    study        run a study and write its report (the default: `python benchmark.py --suite ...` is
                 `python benchmark.py study --suite ...`)
    publish      regenerate every table and figure of a finished study, without training (publish.py)
    throughput   training SPS per script and its ratio to the base script (the paper's Table 5; timing.py)
    threads      training SPS per script and torch thread count, idle and beside busy processes (timing.py)
    denormals    a PAVE critic step from trained checkpoints, denormal floats computed and flushed (timing.py)
Every command stops on Ctrl-C (SIGINT) and SIGTERM alike, however it was started (also as a background job of a script
or under nohup, which start it with SIGINT ignored): the runs it started save their resumable states.

The study:

A study is a grid of runs. One run is one real invocation of a training script in its own process,
    python <script> --env-id E --seed S --exp-name <variant> --save-model --no-progress-bar <variant flags>
           --checkpoint-freq N <--extra> [--resume runs/<run folder>/resume.pt]
with the study folder (--out) as working directory, so it writes
<out>/runs/<E>__<variant>__<S>__<unix time>/<variant>.pt, and its stdout and stderr go to
<out>/logs/<E>__<variant>__<S>.log. The variant name (its --exp-name) says what differs between runs of one script
(td3_pave-lambda3_0.5), so a run is found again by globbing runs/<E>__<variant>__<S>__*/<variant>.pt.

Studies (--env-ids, --seeds and --extra override any suite's grid; seeds default to the released runs' five, in their
order 178132 410580 922852 787576 660993, eval_smoothness.RELEASED_SEEDS, so "seed 1" is 178132 as in the released
runs):
    --suite paper-td3     Table 1: td3 td3_caps td3_gradcaps td3_asap td3_pave on the paper's six envs
    --suite paper-sac     Table 2: the same with sac*
    --suite noise         Table 3: paper-td3's variants on LunarLander and Walker (the paper's two), evaluated under
                          observation noise 0.01 0.05 0.1 (--noise-levels) with eval_smoothness's protocol; same run
                          names, so in the same --out it reuses paper-td3's runs
    --suite ablation      Table 4: td3 with SiLU, then td3_pave with MPR only, MPR + VFC, all three (lambdas zeroed)
    --suite sensitivity   Figure 4: td3_pave on Pendulum, one lambda at a time over --grid (0, 1e-3 .. 10), the
                          others at presets
    --suite factorial     the released ablation: td3_pave with each non-empty subset of MPR, VFC, Curv (7 runs per env
                          and seed; a term on at lambda 0.1 / 0.1 / 0.01, off at 0) on LunarLander and Walker
    --suite sigma-delta   the released sweeps: td3_pave with --mpr-sigma in 0.001 0.005 0.01 0.05 0.1, then
                          --curv-delta in 0.1 0.5 1 2 5, the other flags at presets, on LunarLander and Walker (as its
                          eval_sensitivity.py)
    --scripts td3.py td3_pave.py --env-ids Pendulum-v1 --seeds 1 2 --extra "--total-timesteps 20000"   (any scripts)
Every script runs the released code's SiLU networks; --paper-text-activations runs every method but PAVE with ReLU, as
the paper text's section 6.1 says, under run names ending in -relu (the ablation's SiLU base stays as it is).
Scripts a suite names that are not in the repository are left out with a note; scripts given by --scripts must exist.

Nothing is lost:
- Resuming is the default (--resume): a run whose checkpoint exists is skipped, whatever flags made it (--force reruns
  it; use a new --out to keep both). An interrupted run (its folder has resume.pt or resume.prev.pt but no checkpoint)
  continues from its last resumable state, in its folder, with the script's --resume: runs save one every
  --checkpoint-freq env steps (default 10 000) and when stopped. A state file is checked before use (zip CRCs,
  torch.load); a truncated or corrupt one is reported in one line and the one before it (resume.prev.pt) is used, else
  the run starts from step 0. A run that starts from step 0 first loses its old folder, log and cached evaluations.
- A failed run is reported with its log's last lines and the others go on; the exit status is then 1. So is a run that
  was stopped from outside (SIGTERM from a scheduler: it exits 0 with a resumable state and no checkpoint). A resumed
  run keeps the flags it started with: a changed --extra makes its script refuse to resume (use --force to restart).
- Runs start in their own session, so Ctrl-C reaches benchmark.py alone, which stops them with SIGTERM and waits while
  each saves its resumable state; SIGTERM to benchmark.py (a scheduler, `kill`) does the same. On Ray the tasks poll a
  StopFlag actor, stop their runs the same way and return the run folders, resumable states included. A stopped run
  writes no checkpoint, so a finished run is exactly a run with a checkpoint, and the same command resumes the others
  where they stopped.

Backends:
- local (--workers N): N runs at once on this machine, each with OMP_NUM_THREADS=--cpus-per-run.
- ray (--address auto): each run is a Ray task declaring num_cpus=--cpus-per-run and num_gpus=--gpus-per-run. The task
  runs the same command in a scratch folder on its node and returns the run folder and log, which this process writes
  into --out: no shared filesystem is needed. The code travels with the tasks as Ray's runtime_env working_dir (this
  repository without SHIP_EXCLUDES); --no-ray-ship-code instead runs the repository at this same path on every node.
  A resumed run's folder travels to its task the same way.
  Every node needs the same Python environment. Ray is imported only by this backend.

Report (<out>/report/, after the runs, or alone with --report-only): every finished run is evaluated with
eval_smoothness.evaluate (--episodes deterministic episodes per run, cached in <out>/eval/); tables pool the episodes
of all seeds and show mean (std) per env, best in bold and second underlined (re higher, sm lower is better):
table1.md (return and sm), table3_noise.md (noise suite: the paper's Table 3 protocol through eval_smoothness's
functions: sigma_base from 20 clean episodes of the env's first-seed base run per algorithm family, noisy observations
clipped to the observation bounds, --noise-episodes (20) per run and sigma, cells mean (std) over the per-seed means),
table5_throughput.md (mean over seeds of the last logged
charts/SPS_train), learning_curves.png (charts/episodic_return, mean and std band over seeds), sensitivity.md (a table
per swept flag, a row per value) and sensitivity_<env>.png (a panel per swept flag: sensitivity and sigma-delta suites),
and index.md linking them.

"""

import argparse
import difflib
import glob
import itertools
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

import publish
import timing
from benchmark_common import (
    LOG_TAIL_LINES,
    METHODS,
    NOISE_LEVELS,
    PROG,
    REPO,
    Run,
    Variant,
    fail,
    run_events,
    run_process,
    scalars,
    script_path,
    stop_on_sigint_and_sigterm,
    training_seconds,
)
from study_report import write_report

SIX_ENVS = ("LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5")
# the paper's noise and ablation tables use these two, and so did the released code's factorial and sigma / delta sweeps
TABLE3_ENVS = ("LunarLanderContinuous-v3", "Walker2d-v5")
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
# file suffix -> the method's name in the paper's tables
SENSITIVITY_GRID = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
LAMBDAS = ("lambda1", "lambda2", "lambda3")
# the released code's ablation: each PAVE term on at this lambda (LunarLander's and Walker's preset), off at 0
FACTORIAL_TERMS = {"MPR": ("lambda1", 0.1), "VFC": ("lambda2", 0.1), "Curv": ("lambda3", 0.01)}
# the released code's sweeps of MPR's noise std sigma and Curv's margin delta (defaults 0.01 and 1.0), one at a time
SIGMA_DELTA_GRIDS = {"mpr_sigma": (0.001, 0.005, 0.01, 0.05, 0.1), "curv_delta": (0.1, 0.5, 1.0, 2.0, 5.0)}
SHIP_EXCLUDES = [".git", ".venv", ".ci-venv", "runs", "studies", "reports", "results", "__pycache__", ".pytest_cache",
                 ".ruff_cache"]


# ----------------------------------------------------------------------------------------------------------------------
# What a study is: variants (a script plus the flags that make it differ) x envs x seeds
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class Study:
    name: str
    title: str  # of the return/sm table
    variants: list
    env_ids: list
    seeds: list
    noise_levels: tuple = ()

    @property
    def runs(self):
        return [Run(v, env_id, seed) for env_id in self.env_ids for v in self.variants for seed in self.seeds]


def method_variants(algo):
    return [Variant(f"{algo}{suffix}.py", f"{algo}{suffix}", f"{algo.upper()} {method}")
            for suffix, method in METHODS.items()]


def ablation_variants():
    # the paper's Table 4 base "modified to incorporate SiLU": every script's default now, so it is plain td3 (and the
    # same run as paper-td3's Base in one --out), kept SiLU also under --paper-text-activations
    return [
        Variant("td3.py", "td3", "Base (SiLU)"),
        Variant("td3_pave.py", "td3_pave-mpr", "+ MPR", ("--lambda2", "0", "--lambda3", "0")),
        Variant("td3_pave.py", "td3_pave-mpr_vfc", "+ MPR + VFC", ("--lambda3", "0")),
        Variant("td3_pave.py", "td3_pave", "+ MPR + VFC + Curv"),
    ]


def factorial_variants():
    """td3_pave with every non-empty subset of its terms (7): a term on at its FACTORIAL_TERMS lambda, off at 0, all
    three lambdas given so that no env preset changes them."""
    variants = []
    for size in (1, 2, 3):
        for terms in itertools.combinations(FACTORIAL_TERMS, size):
            flags = [arg for term, (lam, value) in FACTORIAL_TERMS.items()
                     for arg in (f"--{lam}", f"{value if term in terms else 0:g}")]
            variants.append(Variant("td3_pave.py", "td3_pave-factorial_" + "_".join(term.lower() for term in terms),
                                    " + ".join(terms), tuple(flags)))
    return variants


def sweep_variants(grids):
    """td3_pave with one flag at a time over its values, every other flag at its preset: grids = {field name:
    values}."""
    return [Variant("td3_pave.py", f"td3_pave-{name}_{value:g}", f"{name}={value:g}",
                    (f"--{name.replace('_', '-')}", f"{value:g}"),
                    (name, value)) for name, values in grids.items() for value in values]


SUITES = {
    "paper-td3": lambda: Study("paper-td3", "Table 1: return (re) and smoothness (sm), TD3", method_variants("td3"),
                               SIX_ENVS, []),
    "paper-sac": lambda: Study("paper-sac", "Table 2: return (re) and smoothness (sm), SAC", method_variants("sac"),
                               SIX_ENVS, []),
    "noise": lambda: Study("noise", "Return (re) and smoothness (sm) without noise, TD3", method_variants("td3"),
                           TABLE3_ENVS, [],
                           NOISE_LEVELS),
    "ablation": lambda: Study("ablation", "Table 4: component analysis (TD3)", ablation_variants(), TABLE3_ENVS, []),
    "sensitivity": lambda: Study("sensitivity", "Figure 4 as a table: TD3 + PAVE, one lambda varied",
                                 sweep_variants(dict.fromkeys(LAMBDAS, SENSITIVITY_GRID)), ("Pendulum-v1",), []),
    "factorial": lambda: Study("factorial", "The released ablation: TD3 + PAVE with each non-empty subset of its terms "
                               "(lambdas 0.1 / 0.1 / 0.01, 0 when off)", factorial_variants(), TABLE3_ENVS, []),
    "sigma-delta": lambda: Study("sigma-delta",
                                 "TD3 + PAVE, MPR's sigma or Curv's delta varied, the other flags at presets",
                                 sweep_variants(SIGMA_DELTA_GRIDS), TABLE3_ENVS, []),
}


def build_study(args):
    """The study the flags describe; one clear line and exit on bad input."""
    if args.suite:
        if args.suite not in SUITES:
            close = difflib.get_close_matches(args.suite, SUITES, n=1)
            fail(f"unknown suite '{args.suite}'" + (f"; did you mean {close[0]}?" if close
                                                    else f"; choose from {', '.join(SUITES)}"))
        study = SUITES[args.suite]()
        missing = sorted({v.script for v in study.variants if not script_path(v.script).is_file()})
        if missing:
            print(f"note: {', '.join(missing)} not in {REPO}; left out of the study")
            study.variants = [v for v in study.variants if v.script not in missing]
    else:
        for script in args.scripts:
            if not script_path(script).is_file():
                fail(f"unknown script '{script}' (no such file in {REPO} or as given)")
        if not args.env_ids:
            fail("--scripts needs --env-ids")
        variants = [Variant(s, Path(s).stem, Path(s).stem) for s in args.scripts]
        study = Study("custom", "Return (re) and smoothness (sm)", variants, [], [])
    if args.grid is not None:
        if args.suite != "sensitivity":
            fail("--grid is for --suite sensitivity")
        study.variants = sweep_variants(dict.fromkeys(LAMBDAS, args.grid))
    env_ids = args.env_ids or study.env_ids
    for env_id in env_ids:
        if env_id in PAPER_ENV_IDS:
            print(f"note: {env_id} (the paper's id) is not in Gymnasium 1.x; using {PAPER_ENV_IDS[env_id]}, the same "
                  "task")
    study.env_ids = list(dict.fromkeys(PAPER_ENV_IDS.get(e, e) for e in env_ids))
    if args.seeds:
        study.seeds = args.seeds
    # imported here, not at the top: eval_smoothness loads torch and Gymnasium, which --help and bad input do not need
    else:
        from eval_smoothness import RELEASED_SEEDS

        study.seeds = list(RELEASED_SEEDS)
    if args.noise_levels is not None:
        study.noise_levels = tuple(args.noise_levels)
    if args.paper_text_activations:
        study.variants = [paper_text_variant(v) if study.name != "ablation" else v for v in study.variants]
    return study


def paper_text_variant(variant):
    """The paper text's section 6.1 setting: Base, CAPS, Grad-CAPS and ASAP with ReLU actor and critics (the released
    code runs SiLU everywhere, our default); PAVE keeps SiLU. Renamed (-relu) so that both settings can share one
    --out."""
    if Path(variant.script).stem.endswith("_pave"):
        return variant
    return Variant(variant.script, f"{variant.name}-relu", f"{variant.label} (ReLU)",
                   (*variant.flags, "--actor-activation", "relu", "--critic-activation", "relu"), variant.sweep)


# ----------------------------------------------------------------------------------------------------------------------
# Running: one subprocess per run, on this machine or as a Ray task
# ----------------------------------------------------------------------------------------------------------------------
class StopFlag:
    """Ray backend: an actor that the tasks poll. Ctrl-C or SIGTERM to benchmark.py sets it; each running task then
    stops its run with SIGTERM and returns the run folder with its resumable state, and a task not yet started returns
    at once."""

    def __init__(self):
        self.stopped = False

    def stop(self):
        self.stopped = True

    def is_set(self):
        return self.stopped


def train_in_scratch(script, arguments, env_vars, inputs=None, stop_flag=None):
    """Ray task: run one training command in a scratch folder on this node; return (exit status, log, files, seconds).

    `script` is relative to the task's working directory (the shipped repository) or absolute. `inputs` maps paths in
    the scratch folder to their bytes: a resumed run's folder. `stop_flag`: a StopFlag actor; a task that finds it set
    before starting returns exit status None (not run) and no files.
    """
    stop_requested = None
    if stop_flag is not None:
        import ray

        def stop_requested():
            return ray.get(stop_flag.is_set.remote())

        if stop_requested():
            return None, "", {}, 0.0
    script, start = os.path.abspath(script), time.time()
    with tempfile.TemporaryDirectory() as scratch:
        for relative, data in (inputs or {}).items():
            Path(scratch, relative).parent.mkdir(parents=True, exist_ok=True)
            Path(scratch, relative).write_bytes(data)
        log_path = Path(scratch) / "log"
        returncode = run_process([sys.executable, script, *arguments], scratch, log_path, {**os.environ, **env_vars},
                                 stop_requested=stop_requested)
        files = {str(p.relative_to(scratch)): p.read_bytes() for p in Path(scratch, "runs").rglob("*") if p.is_file()}
        return returncode, log_path.read_text(errors="replace"), files, time.time() - start


class Progress:
    """Runs done, running and failed, with tqdm's estimate of the time left; failures print their log's last lines."""

    def __init__(self, total, out):
        self.out, self.running, self.failed = out, 0, []
        self.bar = tqdm(total=total, unit="run", dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n}/{total} done [{elapsed}<{remaining}]{postfix}")
        self.lock = threading.Lock()
        self.show()

    def show(self):
        self.bar.set_postfix_str(f"running {self.running}, failed {len(self.failed)}")

    def started(self):
        with self.lock:
            self.running += 1
            self.show()

    def finished(self, run, returncode, seconds):
        with self.lock:
            self.running -= 1
            reached = run.stop_at and saved_step(run, self.out) == run.stop_at
            if returncode == 0 and run.checkpoint(self.out) is None and reached:
                self.bar.write(f"staged  {run.name} at step {run.stop_at} ({seconds:.0f} s)")
            # stopped from outside: it saved a resumable state
            elif returncode == 0 and run.checkpoint(self.out) is None:
                self.failed.append(run)
                self.bar.write(f"STOPPED {run.name} ({seconds:.0f} s) before its end; "
                               "run the same command to resume it")
            elif returncode == 0:
                self.bar.write(f"done    {run.name} ({seconds:.0f} s)")
            else:
                self.failed.append(run)
                log = Path(self.out, "logs", f"{run.name}.log")
                tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.exists() else []
                self.bar.write(f"FAILED  {run.name} (exit {returncode}, {seconds:.0f} s); last lines of {log}:\n"
                               + "\n".join(f"    {line}" for line in tail))
            self.bar.update(1)
            self.show()

    def close(self):
        self.bar.close()


def run_local(todo, out, extra, args, progress):
    """--workers runs at once as subprocesses; on Ctrl-C, queued runs are dropped and running ones terminated."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.cpus_per_run), "PYTHONUNBUFFERED": "1"}
    processes, lock, stopping = {}, threading.Lock(), threading.Event()

    def register(run, process):
        with lock:
            processes[run.name] = process
            if stopping.is_set():  # Ctrl-C came while this one was starting
                process.terminate()

    def one(run):
        start = time.time()
        progress.started()
        command = [sys.executable, str(script_path(run.variant.script)), *run.arguments(extra)]
        log = out / "logs" / f"{run.name}.log"
        try:
            returncode = run_process(command, out, log, env, lambda p: register(run, p))
        except OSError as error:  # could not start it: a failed run like any other
            returncode = -1
            with open(log, "a") as f:
                f.write(f"benchmark.py could not start this run: {error}\n")
        if not stopping.is_set():
            progress.finished(run, returncode, time.time() - start)

    pool = ThreadPoolExecutor(max_workers=args.workers)
    futures = [pool.submit(one, run) for run in todo]
    try:
        for future in as_completed(futures):
            future.result()
    except KeyboardInterrupt:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            running = [process for process in processes.values() if process.poll() is None]
            for process in running:
                process.terminate()
        progress.bar.write(f"stopping {len(running)} run(s): each saves its resumable state")
        for process in running:
            process.wait()
        raise
    pool.shutdown()


def connect_ray(args):
    """Join the Ray cluster at --address (one line and exit if Ray or the cluster is missing); returns the ray
    module."""
    try:
        import ray
    except ImportError:
        fail("--backend ray needs Ray: pip install 'ray[default]'")
    if args.address not in ("auto", "local"):  # Ray waits minutes on an address where nothing listens: ask first
        host, _, port = args.address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as error:
            fail(f"no Ray cluster at --address {args.address} ({error}); start one with `ray start --head`")
    runtime_env = {"working_dir": str(REPO), "excludes": SHIP_EXCLUDES} if args.ray_ship_code else None
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.init(address=args.address, runtime_env=runtime_env, log_to_driver=False)
    except ConnectionError as error:
        fail(f"no Ray cluster at --address {args.address} ({error}); start one with `ray start --head`")
    # ray.init makes SIGTERM exit the driver at once (sys.exit), leaving the tasks' runs unsaved: stop as before
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return ray


def run_ray(ray, todo, out, extra, args, progress):
    """One Ray task per run; each returns its run folder and log, written here into the study folder. Ctrl-C or SIGTERM
    sets the tasks' StopFlag and waits while each stopped run's folder, with its resumable state, comes back; a second
    one cancels the tasks at once (what they did since their last return is then lost)."""
    task = ray.remote(num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=0)(train_in_scratch)
    stop_flag = ray.remote(num_cpus=0)(StopFlag).remote()
    env_vars = {"OMP_NUM_THREADS": str(args.cpus_per_run), "PYTHONUNBUFFERED": "1"}
    pending = {}
    for run in todo:
        shipped = args.ray_ship_code and not Path(run.variant.script).is_absolute()
        script = run.variant.script if shipped else str(script_path(run.variant.script))
        folder = (out / run.resume).parent if run.resume else None  # a resumed run's folder goes with its task
        inputs = {str(p.relative_to(out)): p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder else None
        pending[task.remote(script, run.arguments(extra), env_vars, inputs, stop_flag)] = (run, time.time())
        progress.started()  # on Ray, "running" also counts tasks still queued on the cluster

    def collect():
        """Wait for the next task to return and write what it brought back; (run, exit status, seconds), None if it
        never ran."""
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        run, submitted = pending.pop(ref)
        try:
            returncode, log_text, files, seconds = ray.get(ref)
        except ray.exceptions.RayError as error:
            returncode, log_text, files, seconds = -1, f"Ray task failed: {error}\n", {}, time.time() - submitted
        if returncode is None:  # stopped before it started
            return None
        for relative, data in files.items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_bytes(data)
        with open(out / "logs" / f"{run.name}.log", "a" if run.resume else "w") as log:
            log.write(log_text)
        return run, returncode, seconds

    try:
        while pending:
            if done := collect():
                progress.finished(*done)
    except KeyboardInterrupt:
        stop_flag.stop.remote()
        progress.bar.write(f"stopping {len(pending)} run(s): each saves its resumable state, which comes back here "
                           "(Ctrl-C again: cancel them, losing their work since they started)")
        try:
            while pending:
                collect()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def resumable_state(run, out):
    """The last readable resumable state of an interrupted run, relative to out (resume.pt, else resume.prev.pt of its
    newest folder), or None. Each file is checked as the scripts' --resume checks it (the CRCs of its zip members, then
    torch.load); one that fails is reported in one line and skipped."""
    folders = run.folders(out)
    states = [path for path in (Path(folders[-1], "resume.pt"), Path(folders[-1], "resume.prev.pt"))
              if path.exists()] if folders else []
    for i, path in enumerate(states):
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged is None:
                import torch

                torch.load(path, map_location="cpu", weights_only=True)
                return path.relative_to(out)
            problem = f"bad CRC in {damaged}"
        except Exception as error:
            problem = type(error).__name__
        fallback = f"trying {states[i + 1].name}" if i + 1 < len(states) else "starting the run from step 0"
        print(f"note: {path} is unreadable, truncated or corrupt ({problem}); {fallback}")
    return None


def saved_step(run, out):
    """The step of an unfinished run's newest resumable state (resume.pt of its newest folder), or 0 without one."""
    folders = run.folders(out)
    path = Path(folders[-1], "resume.pt") if folders else None
    if path is None or not path.exists():
        return 0
    try:
        import torch

        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # unreadable: resumable_state says so and falls back
        return 0


def forget(run, out):
    """Remove what an unfinished (or --force'd) run left: its folders, log and cached evaluations."""
    for folder in run.folders(out):
        shutil.rmtree(folder)
    for path in [out / "logs" / f"{run.name}.log", *glob.glob(f"{out}/eval/{run.name}__*.json")]:
        Path(path).unlink(missing_ok=True)


def runs_to_do(study, out, args, stage=None):
    """Every run without a checkpoint (every run with --force), an interrupted one with its resumable state. With a
    `stage` (a step of --stages), only the runs whose resumable state is before it, each with --stop-at-step `stage`: a
    run that stops there has reached the stage (its script finishes normally when the stage is its last step)."""
    todo = [run for run in study.runs if args.force or run.checkpoint(out) is None]
    todo = [run if args.force else replace(run, resume=resumable_state(run, out)) for run in todo]
    if stage:
        todo = [replace(run, stop_at=stage) for run in todo if not run.resume or saved_step(run, out) < stage]
    return todo


def study_status(study, out):
    """A Markdown table of every run's progress: its last logged step, the step of its last resumable state (or of its
    final checkpoint), its wall time so far (training_seconds: every segment, pauses left out) and its training SPS
    (the last charts/SPS_train it logged, over every segment)."""
    lines = ["| run | last logged step | saved at step | wall time so far | training SPS |", "|---|---|---|---|---|"]
    for run in study.runs:
        folders = run.folders(out)
        if not folders:
            lines.append(f"| {run.name} | not started | | | |")
            continue
        events = run_events(folders[-1])
        steps = [point.step for tag in events.Tags()["scalars"] for point in events.Scalars(tag)]
        _, sps = scalars(None, "charts/SPS_train", events)
        seconds, _ = training_seconds(folders[-1])
        checkpoint = run.checkpoint(out)
        if checkpoint:
            import torch

            saved = f"{torch.load(checkpoint, map_location='cpu', weights_only=True)['global_step']} (finished)"
        else:
            saved = saved_step(run, out) or "-"
        lines.append(f"| {run.name} | {max(steps, default='-')} | {saved} | {seconds / 3600:.2f} h | "
                     f"{f'{sps[-1]:.1f}' if len(sps) else '-'} |")
    return "\n".join(lines)


def run_study(study, out, args, stage=None):
    """Run what runs_to_do gives (to `stage`, if given); return the failed runs."""
    extra = ["--checkpoint-freq", str(args.checkpoint_freq), *shlex.split(args.extra)]
    runs = study.runs
    todo = runs_to_do(study, out, args, stage)
    if args.dry_run:
        planned = {run.name: run for run in todo}  # an interrupted run as it would start: with --resume
        for run in runs:
            run = planned.get(run.name, run)
            command = shlex.join(["python", str(script_path(run.variant.script)), *run.arguments(extra)])
            skip = (f"# skip, {'at step ' + str(stage) + ' or ' if stage else ''}finished: "
                    if run.name not in planned else "")
            print(f"{skip}cd {out} && {command} > logs/{run.name}.log 2>&1")
        return []
    done = f"at step {stage} or finished" if stage else "finished"
    print(f"study {study.name}{f', stage {stage}' if stage else ''}: {len(runs)} runs in {out}; "
          f"{len(runs) - len(todo)} {done} (skipped), {len(todo)} to run "
          f"({sum(run.resume is not None for run in todo)} resumed) on the {args.backend} backend")
    if not todo:
        return []
    ray = connect_ray(args) if args.backend == "ray" else None
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for run in todo:
        if not run.resume:
            forget(run, out)
    progress = Progress(len(todo), out)
    try:
        if ray:
            run_ray(ray, todo, out, extra, args, progress)
        else:
            run_local(todo, out, extra, args, progress)
    except KeyboardInterrupt:
        progress.close()
        finished = sum(run.checkpoint(out) is not None for run in runs)
        sys.exit(f"\ninterrupted: {finished} of {len(runs)} runs finished and kept in {out}; run the same command to "
                 "resume (stopped runs continue from their resumable states)")
    progress.close()
    return progress.failed




# ----------------------------------------------------------------------------------------------------------------------
def add_study_arguments(parser):
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help=f"a named study: {', '.join(SUITES)}")
    which.add_argument("--scripts", nargs="+",
                       help="training scripts of an explicit study (relative to the repository, or paths)")
    parser.add_argument("--env-ids", nargs="+", help="override the suite's envs")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="training seeds (default: the released runs' five in their order, "
                             "eval_smoothness.RELEASED_SEEDS)")
    parser.add_argument("--extra", default="",
                        help='flags for every run, one string: --extra "--total-timesteps 20000"')
    parser.add_argument("--noise-levels", nargs="+", type=float,
                        help="observation noise levels evaluated for Table 3 (noise suite: 0.01 0.05 0.1)")
    parser.add_argument("--paper-text-activations", action="store_true",
                        help="the paper text's ReLU for every method but PAVE (default: the released code's SiLU "
                             "everywhere)")
    parser.add_argument("--grid", nargs="+", type=float,
                        help=f"sensitivity suite: the values of each lambda (default {SENSITIVITY_GRID})")
    parser.add_argument("--out", type=Path, help="the study folder (default: studies/<suite>)")
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--workers", type=int, help="local backend: runs at once (default: CPU cores / --cpus-per-run)")
    parser.add_argument("--address", default="auto",
                        help="ray backend: the cluster to join (auto: the one started on this node; local: a new one "
                             "just for this study)")
    parser.add_argument("--ray-ship-code", action=argparse.BooleanOptionalAction, default=True,
                        help="ray backend: send this repository with the tasks (no: it is at the same path on every "
                             "node)")
    parser.add_argument("--cpus-per-run", type=int, default=1,
                        help="CPUs a run declares to Ray and its OMP_NUM_THREADS")
    parser.add_argument("--gpus-per-run", type=float, default=0,
                        help="GPUs a run declares to Ray (fractions share a GPU)")
    parser.add_argument("--checkpoint-freq", type=int, default=10_000,
                        help="env steps between the runs' resumable states, from which an interrupted run resumes (0: "
                             "only when stopped)")
    parser.add_argument("--stages", type=int, nargs="+",
                        help="advance every run to each of these steps in turn (each run stops there with its "
                             "resumable state; a stage is started when every run has reached the one before); the "
                             "last is normally the runs' --total-timesteps (docs/studies.md)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="skip runs whose checkpoint exists (the default)")
    again.add_argument("--force", action="store_true", help="rerun every run, replacing what it wrote before")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--status", action="store_true",
                        help="print each run's step, wall time so far and training SPS as a Markdown table, and exit")
    parser.add_argument("--report-only", action="store_true", help="no training: report on the runs already in --out")
    parser.add_argument("--no-report", action="store_true", help="train only")
    parser.add_argument("--episodes", type=int, default=10,
                        help="clean evaluation episodes per run for the tables (the paper's 10)")
    parser.add_argument("--noise-episodes", type=int,
                        help="evaluation episodes per run and noise level (default: Table 3's 20, "
                             "eval_smoothness.NOISE_EPISODES)")


def check_study_args(args):
    """The study's checks after parsing (one line and exit status 2 on bad input); fills in --workers."""
    args.workers = args.workers or max(1, (os.cpu_count() or 1) // args.cpus_per_run)
    for name in ("workers", "cpus_per_run", "episodes", "noise_episodes"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive")
    if args.gpus_per_run < 0:
        fail("--gpus-per-run must be non-negative")
    if args.checkpoint_freq < 0:
        fail("--checkpoint-freq must be non-negative")
    if args.stages and (min(args.stages) <= 0 or sorted(set(args.stages)) != args.stages):
        fail(f"--stages must be positive steps in increasing order, got {' '.join(map(str, args.stages))}")
    if args.stages and args.force:
        fail("--stages continues runs stage by stage; it cannot be used with --force")
    return args




def study_command(args):
    """`python benchmark.py [study] ...`: run the study's runs (every stage of --stages in turn), then its report."""
    study = build_study(args)
    out = (args.out or Path("studies") / study.name).resolve()
    if args.status:
        if not (out / "runs").is_dir():
            fail(f"--status: no runs folder in {out}")
        print(study_status(study, out))
        return 0
    if args.report_only:
        if not (out / "runs").is_dir():
            fail(f"--report-only: no runs folder in {out}")
        write_report(study, out, args)
        return 0
    stages = args.stages or [None]
    if args.dry_run and args.stages:  # the commands of the first stage not yet reached: a later one's depend on it
        stages = [next((stage for stage in args.stages if runs_to_do(study, out, args, stage)), args.stages[-1])]
    for stage in stages:
        failed = run_study(study, out, args, stage)
        if failed and not args.dry_run:
            break  # a later stage starts only when every run has reached this one
    if not args.dry_run and not args.no_report:
        write_report(study, out, args)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(run.name for run in failed)} (logs in {out / 'logs'})")
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# The commands: argparse subcommands, the study's when argv names none
# ----------------------------------------------------------------------------------------------------------------------
# command -> (one line for --help, adds its flags, checks them after parsing, runs it with the parsed flags)
COMMANDS = {
    "study": ("run a study here or on a Ray cluster (default)", add_study_arguments, check_study_args, study_command),
    "publish": ("a finished study's tables and figures", publish.add_arguments, publish.check_args, publish.run),
    "throughput": ("training SPS per script (the paper's Table 5)", timing.add_throughput_arguments,
                   timing.check_throughput_args, timing.throughput),
    "threads": ("training SPS per torch thread count, idle and busy", timing.add_threads_arguments,
                timing.check_threads_args, timing.threads),
    "denormals": ("a PAVE critic step with denormals computed and flushed", timing.add_denormals_arguments,
                  timing.check_denormals_args, timing.denormals),
}
DESCRIPTIONS = {"study": "run a study (training scripts x envs x seeds) on this machine or a Ray cluster, then its "
                         "report",
                "publish": publish.DESCRIPTION, "throughput": timing.THROUGHPUT_DESCRIPTION,
                "threads": timing.THREADS_DESCRIPTION, "denormals": timing.DENORMALS_DESCRIPTION}


def command_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0],
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=30),
        epilog="Without a command word the arguments are the study's, as before the commands:\n"
               "`python benchmark.py --suite paper-td3` is `python benchmark.py study --suite paper-td3`.")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, (summary, add_arguments, _, _) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=summary, description=DESCRIPTIONS.get(name, summary)))
    return parser


def with_command(argv):
    """argv with its command word first: the study's when argv starts with a flag (`--suite ...`), as before the
    commands; a first word that names no command is one line and exit status 2."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        fail(f"unknown command '{argv[0]}'" + (f"; did you mean {close[0]}?" if close
                                               else f"; choose from {', '.join(COMMANDS)}"))
    return argv if argv[:1] in (["-h"], ["--help"]) or argv[:1] and argv[0] in COMMANDS else ["study", *argv]


def parse_command(argv):
    """The parsed and checked flags of `python benchmark.py argv`; args.command names the command."""
    args = command_parser().parse_args(with_command(list(argv)))
    COMMANDS[args.command][2](args)
    return args


def parse_study_args(argv):
    """The study's flags, parsed and checked (argv without the command word)."""
    return parse_command(["study", *argv])


def main(argv=None):
    """Run one command; returns its exit status, with the SIGINT and SIGTERM handlers it found restored (for callers in
    Python, such as the tests)."""
    argv = sys.argv[1:] if argv is None else argv
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop_on_sigint_and_sigterm()
    try:
        args = parse_command(argv)
        return COMMANDS[args.command][3](args)
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
