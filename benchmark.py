"""benchmark.py: run a study (training scripts x envs x seeds) on this machine or a Ray cluster, then tabulate and plot it.

A study is a grid of runs. One run is one real invocation of a training script in its own process,
    python <script> --env-id E --seed S --exp-name <variant> --save-model --no-progress-bar <variant flags>
           --checkpoint-freq N <--extra> [--resume runs/<run folder>/resume.pt]
with the study folder (--out) as working directory, so it writes <out>/runs/<E>__<variant>__<S>__<unix time>/<variant>.pt,
and its stdout and stderr go to <out>/logs/<E>__<variant>__<S>.log. The variant name (its --exp-name) says what differs
between runs of one script (td3_pave-lambda3_0.5), so a run is found again by globbing runs/<E>__<variant>__<S>__*/<variant>.pt.

Studies (--env-ids, --seeds and --extra override any suite's grid; seeds default to the released runs' five, in their
order 178132 410580 922852 787576 660993, eval_smoothness.RELEASED_SEEDS, so "seed 1" is 178132 as in the released runs):
    --suite paper-td3     Table 1: td3 td3_caps td3_gradcaps td3_asap td3_pave on the paper's six envs
    --suite paper-sac     Table 2: the same with sac*
    --suite noise         Table 3: paper-td3's variants on LunarLander and Walker (the paper's two), evaluated under
                          observation noise 0.01 0.05 0.1 (--noise-levels) with eval_smoothness's protocol; same run names,
                          so in the same --out it reuses paper-td3's runs
    --suite ablation      Table 4: td3 with SiLU, then td3_pave with MPR only, MPR + VFC, all three (lambdas zeroed)
    --suite sensitivity   Figure 4: td3_pave on Pendulum, one lambda at a time over --grid (0, 1e-3 .. 10), the others at presets
    --suite factorial     the released ablation: td3_pave with each non-empty subset of MPR, VFC, Curv (7 runs per env and
                          seed; a term on at lambda 0.1 / 0.1 / 0.01, off at 0) on LunarLander and Walker
    --suite sigma-delta   the released sweeps: td3_pave with --mpr-sigma in 0.001 0.005 0.01 0.05 0.1, then --curv-delta in
                          0.1 0.5 1 2 5, the other flags at presets, on LunarLander and Walker (as its eval_sensitivity.py)
    --scripts td3.py td3_pave.py --env-ids Pendulum-v1 --seeds 1 2 --extra "--total-timesteps 20000"   (any scripts)
Every script runs the released code's SiLU networks; --paper-text-activations runs every method but PAVE with ReLU, as
the paper text's section 6.1 says, under run names ending in -relu (the ablation's SiLU base stays as it is).
Scripts a suite names that are not in the repository are left out with a note; scripts given by --scripts must exist.

Nothing is lost:
- Resuming is the default (--resume): a run whose checkpoint exists is skipped, whatever flags made it (--force reruns
  it; use a new --out to keep both). An interrupted run (its folder has resume.pt or resume.prev.pt but no checkpoint)
  continues from its last resumable state, in its folder, with the script's --resume: runs save one every
  --checkpoint-freq env steps (default 10 000) and when stopped. A state file is checked before use (zip CRCs, torch.load);
  a truncated or corrupt one is reported in one line and the one before it (resume.prev.pt) is used, else the run starts
  from step 0. A run that starts from step 0 first loses its old folder, log and cached evaluations.
- A failed run is reported with its log's last lines and the others go on; the exit status is then 1. So is a run that
  was stopped from outside (SIGTERM from a scheduler: it exits 0 with a resumable state and no checkpoint). A resumed
  run keeps the flags it started with: a changed --extra makes its script refuse to resume (use --force to restart).
- Runs start in their own session, so Ctrl-C reaches benchmark.py alone, which stops them with SIGTERM and waits while
  each saves its resumable state; SIGTERM to benchmark.py (a scheduler, `kill`) does the same. On Ray the tasks poll a
  StopFlag actor, stop their runs the same way and return the run folders, resumable states included. A stopped run writes no
  checkpoint, so a finished run is exactly a run with a checkpoint, and the same command resumes the others where they
  stopped.

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
charts/SPS_train), learning_curves.png (charts/episodic_return, mean and std band over seeds), sensitivity.md (a table per
swept flag, a row per value) and sensitivity_<env>.png (a panel per swept flag: sensitivity and sigma-delta suites), and
index.md linking them.

Throughput (the paper's Table 5): `python benchmark.py throughput --env-id Hopper-v5 --steps 2000` runs each script for
--learning-starts + --steps steps, one after another in one process each, and prints each one's training SPS (from its
charts/SPS_train logs, after the first training burst, whose one-off costs such as torch.compile it shows apart) and its
ratio to its base script (td3_* against td3.py, sac_* against sac.py). A script may carry flags, quoted:
--scripts td3.py td3_pave.py "td3_pave.py --pave-batch 25"; --extra "..." gives flags to every script; --repeats N
interleaves N rounds and reports medians. The scripts use a GPU when there is one (--no-cuda: not).

Threads: `python benchmark.py threads` measures the same training SPS on the CPU for each script (--scripts: td3.py
td3_pave.py sac_pave.py) with each --torch-threads value (--threads 1 2), idle and beside --busy N busy processes
(0 1 2; a busy process is a pure-Python loop, one core's worth of work like a second single-thread run), and prints
each cell's ratio to the script's first cell and the run's CPU seconds over wall seconds (docs/performance.md).

Publish: `python benchmark.py publish --study results/pendulum/study --out results/pendulum` regenerates every table and
figure of a study folder from what its runs wrote, without training. A finished run is a run folder with its
<variant>.pt (the newest such folder per run name); per env, every method x seed of the runs found there without one is
listed as missing, and left out; --seeds S [S ...] keeps only those training seeds' runs (say, the seeds every method
has finished, so that no row pools a different set of seeds). A method with fewer finished seeds than the others (a
study still running) is published with the seeds it has: every table says how many. Every input is checked before
anything is written (the study folder and its runs, --seeds, --out, --paper-tables, --released-starts, --qfield-seed,
every checkpoint's readability): a problem is one line and exit status 2, with earlier outputs untouched. Written into
--out (default: the study folder's parent):
- table.md table.csv episodes.csv results.json spectrum_<env>.png actions_<env>.png: eval_smoothness.py's own CLI (its
  main) on every checkpoint with --episodes, --noise 0 <--noise levels> and --plot, so its Table 3 protocol as it is
  (sigma_base from the first-seed Base run of each env and algorithm family: td3 or sac under its own name, so a
  renamed td3-relu / sac-relu run is evaluated under noise but never scales it);
- released_starts/ (table.md, table.csv, episodes.csv, results.json): the clean evaluation on the released evaluation's
  start states (--released-starts, results/released_eval_seeds.txt: 50 env seeds; every checkpoint runs all 50);
- more_episodes/table.md, table.csv, episodes.csv, results.json: the clean evaluation again with --more-episodes (100)
  episodes per checkpoint (env seeds 10 000 on, the first 10 being the table's), a check of how much the table's returns
  owe to its 10 start states (0: skipped);
- statistics over training seeds, from the per-seed means of those three evaluations (each noise level of the table
  apart), with the rliable library (Agarwal et al. 2021): intervals.md and intervals.csv: per evaluation and method,
  return and sm as table.csv has them (mean, std over the pooled episodes, std over the seed means) beside the
  interquartile mean (IQM) over seeds with its 95% stratified-bootstrap CI (--bootstrap-reps resamples, seeded:
  reproducible); paired.md and paired.csv: <algo>_pave against every other method of its env and family, paired by
  training seed on the seeds both have: the mean per-seed difference (PAVE minus the other) with its 95% t-interval over
  seeds, marked "tie" when the interval includes 0, the seeds on which PAVE is better, rliable's probability of
  improvement, and PAVE's sm over the other's as the geometric mean of the per-seed ratios with its 95% t-interval;
- vs_paper.md and vs_paper.csv: table.csv's clean rows beside the paper's Tables 1-2 (--paper-tables,
  results/paper_tables.csv; a -relu run beside the paper's row of its script), each sm also over its family's Base sm,
  our IQM over seeds with its CI, and released_starts/'s return and sm;
- per_seed.md and per_seed.csv: each checkpoint's clean return, sm and action change (episodes.csv averaged per run),
  and per method the mean (std over seeds) and the IQM over seeds with its CI;
- return_vs_sm.png: a panel per env and algorithm family, one point per training seed (its clean return against its
  sm), a marker per method;
- learning_curves.csv: every logged charts/episodic_return and charts/action_change point (method, env_id, seed, tag,
  step, value); learning_curves.png: a row of two panels (those tags: training episodes, so with exploration noise) per
  env and algorithm family, one line per method: each seed's episodes averaged per bin of a common grid (at most 50
  equal bins from the runs' --learning-starts, whose random-action phase is left out, to the last step of any seed),
  then the mean over seeds with a +- one std band (mean_over_seeds);
- qfield_<algo>.png and qfield_<algo>.csv: plot_qfield.py's own CLI on the --qfield-seed (178132) checkpoints of every
  method of each algorithm family (skipped with a note where that seed has none);
- geometry/table.md, geometry/table.csv, geometry/checkpoints.csv: critic_geometry.py's own CLI on every checkpoint with
  --episodes (M_sup, mu_inf, gradient flip rate, concavity rates of each run's critic Q1 on the evaluation episodes);
- runs.csv: per run its steps, wall seconds (from its TensorBoard events: the last scalar's wall time minus the first
  event's, written as the run starts) and its last charts/SPS_train.
It prints one line per file written; exit status 0 when every step succeeded, 1 when any failed (one line each, the
others still run), 2 on bad input.
"""

import argparse
import csv
import difflib
import glob
import importlib
import itertools
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent
PROG = "benchmark.py"
SIX_ENVS = ("LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5")
# the paper's noise and ablation tables use these two, and so did the released code's factorial and sigma / delta sweeps
TABLE3_ENVS = ("LunarLanderContinuous-v3", "Walker2d-v5")
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
# file suffix -> the method's name in the paper's tables
METHODS = {"": "Base", "_caps": "CAPS", "_gradcaps": "Grad-CAPS", "_asap": "ASAP", "_pave": "PAVE"}
SENSITIVITY_GRID = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
LAMBDAS = ("lambda1", "lambda2", "lambda3")
# the released code's ablation: each PAVE term on at this lambda (LunarLander's and Walker's preset), off at 0
FACTORIAL_TERMS = {"MPR": ("lambda1", 0.1), "VFC": ("lambda2", 0.1), "Curv": ("lambda3", 0.01)}
# the released code's sweeps of MPR's noise std sigma and Curv's margin delta (defaults 0.01 and 1.0), one at a time
SIGMA_DELTA_GRIDS = {"mpr_sigma": (0.001, 0.005, 0.01, 0.05, 0.1), "curv_delta": (0.1, 0.5, 1.0, 2.0, 5.0)}
NOISE_LEVELS = (0.01, 0.05, 0.1)
EPISODE_KEYS = ("return", "length", "sm", "action_change")  # what evaluate() gives per episode
SHIP_EXCLUDES = [".git", ".venv", ".ci-venv", "runs", "studies", "reports", "results", "__pycache__", ".pytest_cache", ".ruff_cache"]
LOG_TAIL_LINES = 15
STOP_POLL_SECONDS = 2  # Ray backend: how often a task asks whether the study was stopped


def fail(message):
    sys.exit(f"{PROG}: error: {message}")


# ----------------------------------------------------------------------------------------------------------------------
# What a study is: variants (a script plus the flags that make it differ) x envs x seeds
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    script: str  # relative to the repository, or an absolute path
    name: str  # its --exp-name
    label: str  # its row in the tables
    flags: tuple = ()
    sweep: Optional[tuple] = None  # (swept flag's field name, value) for the sensitivity table and plot


@dataclass(frozen=True)
class Run:
    variant: Variant
    env_id: str
    seed: int
    resume: Optional[Path] = field(default=None, compare=False)  # an interrupted run's resumable state, relative to --out
    stop_at: Optional[int] = field(default=None, compare=False)  # --stages: the step this run is advanced to, then stops

    @property
    def name(self):
        return f"{self.env_id}__{self.variant.name}__{self.seed}"

    def arguments(self, extra):
        """The training script's command-line arguments (the interpreter and script path depend on the node)."""
        return ["--env-id", self.env_id, "--seed", str(self.seed), "--exp-name", self.variant.name, "--save-model",
                "--no-progress-bar", *self.variant.flags, *extra, *(["--resume", str(self.resume)] if self.resume else []),
                *(["--stop-at-step", str(self.stop_at)] if self.stop_at else [])]

    def folders(self, out):
        return sorted(glob.glob(f"{out}/runs/{self.name}__*"))

    def checkpoint(self, out):
        """The newest checkpoint of this run in the study folder, or None while it has not finished."""
        found = sorted(glob.glob(f"{out}/runs/{self.name}__*/{self.variant.name}.pt"))
        return Path(found[-1]) if found else None


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
    return [Variant(f"{algo}{suffix}.py", f"{algo}{suffix}", f"{algo.upper()} {method}") for suffix, method in METHODS.items()]


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
    """td3_pave with every non-empty subset of its terms (7): a term on at its FACTORIAL_TERMS lambda, off at 0, all three
    lambdas given so that no env preset changes them."""
    variants = []
    for size in (1, 2, 3):
        for terms in itertools.combinations(FACTORIAL_TERMS, size):
            flags = [arg for term, (lam, value) in FACTORIAL_TERMS.items() for arg in (f"--{lam}", f"{value if term in terms else 0:g}")]
            variants.append(Variant("td3_pave.py", "td3_pave-factorial_" + "_".join(term.lower() for term in terms),
                                    " + ".join(terms), tuple(flags)))
    return variants


def sweep_variants(grids):
    """td3_pave with one flag at a time over its values, every other flag at its preset: grids = {field name: values}."""
    return [Variant("td3_pave.py", f"td3_pave-{name}_{value:g}", f"{name}={value:g}", (f"--{name.replace('_', '-')}", f"{value:g}"),
                    (name, value)) for name, values in grids.items() for value in values]


SUITES = {
    "paper-td3": lambda: Study("paper-td3", "Table 1: return (re) and smoothness (sm), TD3", method_variants("td3"), SIX_ENVS, []),
    "paper-sac": lambda: Study("paper-sac", "Table 2: return (re) and smoothness (sm), SAC", method_variants("sac"), SIX_ENVS, []),
    "noise": lambda: Study("noise", "Return (re) and smoothness (sm) without noise, TD3", method_variants("td3"), TABLE3_ENVS, [],
                           NOISE_LEVELS),
    "ablation": lambda: Study("ablation", "Table 4: component analysis (TD3)", ablation_variants(), TABLE3_ENVS, []),
    "sensitivity": lambda: Study("sensitivity", "Figure 4 as a table: TD3 + PAVE, one lambda varied",
                                 sweep_variants(dict.fromkeys(LAMBDAS, SENSITIVITY_GRID)), ("Pendulum-v1",), []),
    "factorial": lambda: Study("factorial", "The released ablation: TD3 + PAVE with each non-empty subset of its terms "
                               "(lambdas 0.1 / 0.1 / 0.01, 0 when off)", factorial_variants(), TABLE3_ENVS, []),
    "sigma-delta": lambda: Study("sigma-delta", "TD3 + PAVE, MPR's sigma or Curv's delta varied, the other flags at presets",
                                 sweep_variants(SIGMA_DELTA_GRIDS), TABLE3_ENVS, []),
}


def script_path(script):
    path = Path(script)
    return path if path.is_absolute() else REPO / path


def build_study(args):
    """The study the flags describe; one clear line and exit on bad input."""
    if args.suite:
        if args.suite not in SUITES:
            close = difflib.get_close_matches(args.suite, SUITES, n=1)
            fail(f"unknown suite '{args.suite}'" + (f"; did you mean {close[0]}?" if close else f"; choose from {', '.join(SUITES)}"))
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
            print(f"note: {env_id} (the paper's id) is not in Gymnasium 1.x; using {PAPER_ENV_IDS[env_id]}, the same task")
    study.env_ids = list(dict.fromkeys(PAPER_ENV_IDS.get(e, e) for e in env_ids))
    if args.seeds:
        study.seeds = args.seeds
    else:  # imported here, not at the top: eval_smoothness loads torch and Gymnasium, which --help and bad input do not need
        from eval_smoothness import RELEASED_SEEDS

        study.seeds = list(RELEASED_SEEDS)
    if args.noise_levels is not None:
        study.noise_levels = tuple(args.noise_levels)
    if args.paper_text_activations:
        study.variants = [paper_text_variant(v) if study.name != "ablation" else v for v in study.variants]
    return study


def paper_text_variant(variant):
    """The paper text's section 6.1 setting: Base, CAPS, Grad-CAPS and ASAP with ReLU actor and critics (the released code
    runs SiLU everywhere, our default); PAVE keeps SiLU. Renamed (-relu) so that both settings can share one --out."""
    if Path(variant.script).stem.endswith("_pave"):
        return variant
    return Variant(variant.script, f"{variant.name}-relu", f"{variant.label} (ReLU)",
                   (*variant.flags, "--actor-activation", "relu", "--critic-activation", "relu"), variant.sweep)


def is_base_variant(variant):
    """Whether a variant is its family's Base model: td3.py (sac.py) under its own name, or under the -relu name that
    --paper-text-activations gives it (the paper text's Table 3 scales its noise by that ReLU Base)."""
    stem = Path(variant.script).stem
    return stem in ("td3", "sac") and variant.name.removesuffix("-relu") == stem


# ----------------------------------------------------------------------------------------------------------------------
# Running: one subprocess per run, on this machine or as a Ray task
# ----------------------------------------------------------------------------------------------------------------------
def run_process(command, cwd, log_path, env, on_start=None, stop_requested=None):
    """Run one command with its output appended to log_path, in its own session (Ctrl-C in the terminal does not reach it).
    With `stop_requested`, a function polled every STOP_POLL_SECONDS while the command runs: once it returns True, the
    command gets SIGTERM (a training script then saves its resumable state and exits)."""
    with open(log_path, "a") as log:
        log.write(f"$ cd {cwd} && {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if on_start:
            on_start(process)
        try:
            while stop_requested is not None:
                try:
                    return process.wait(timeout=STOP_POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    if stop_requested():
                        process.terminate()
                        break
            return process.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the thread that waits (throughput, threads): stop it as well
            process.terminate()
            process.wait()
            raise


class StopFlag:
    """Ray backend: an actor that the tasks poll. Ctrl-C or SIGTERM to benchmark.py sets it; each running task then stops its
    run with SIGTERM and returns the run folder with its resumable state, and a task not yet started returns at once."""

    def __init__(self):
        self.stopped = False

    def stop(self):
        self.stopped = True

    def is_set(self):
        return self.stopped


def train_in_scratch(script, arguments, env_vars, inputs=None, stop_flag=None):
    """Ray task: run one training command in a scratch folder on this node; return (exit status, log, files, seconds).

    `script` is relative to the task's working directory (the shipped repository) or absolute. `inputs` maps paths in the
    scratch folder to their bytes: a resumed run's folder. `stop_flag`: a StopFlag actor; a task that finds it set before
    starting returns exit status None (not run) and no files.
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
            elif returncode == 0 and run.checkpoint(self.out) is None:  # stopped from outside: it saved a resumable state
                self.failed.append(run)
                self.bar.write(f"STOPPED {run.name} ({seconds:.0f} s) before its end; run the same command to resume it")
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
    """Join the Ray cluster at --address (one line and exit if Ray or the cluster is missing); returns the ray module."""
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
    finally:  # ray.init makes SIGTERM exit the driver at once (sys.exit), leaving the tasks' runs unsaved: stop as before
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
        """Wait for the next task to return and write what it brought back; (run, exit status, seconds), None if it never ran."""
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
    states = [path for path in (Path(folders[-1], "resume.pt"), Path(folders[-1], "resume.prev.pt")) if path.exists()] if folders else []
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


def run_study(study, out, args, stage=None):
    """Start every run without a checkpoint (every run with --force), an interrupted one from its resumable state; return
    the failed runs. With a `stage` (a step of --stages), only the runs whose resumable state is before it, each with
    --stop-at-step `stage`: a run that stops there has reached the stage (its script finishes normally when the stage is
    its last step)."""
    extra = ["--checkpoint-freq", str(args.checkpoint_freq), *shlex.split(args.extra)]
    runs = study.runs
    todo = [run for run in runs if args.force or run.checkpoint(out) is None]
    todo = [run if args.force else replace(run, resume=resumable_state(run, out)) for run in todo]
    if stage:
        todo = [replace(run, stop_at=stage) for run in todo if not run.resume or saved_step(run, out) < stage]
    if args.dry_run:
        planned = {run.name: run for run in todo}  # an interrupted run as it would start: with --resume
        for run in runs:
            run = planned.get(run.name, run)
            command = shlex.join(["python", str(script_path(run.variant.script)), *run.arguments(extra)])
            skip = f"# skip, {'at step ' + str(stage) + ' or ' if stage else ''}finished: " if run.name not in planned else ""
            print(f"{skip}cd {out} && {command} > logs/{run.name}.log 2>&1")
        return []
    done = f"at step {stage} or finished" if stage else "finished"
    print(f"study {study.name}{f', stage {stage}' if stage else ''}: {len(runs)} runs in {out}; {len(runs) - len(todo)} "
          f"{done} (skipped), {len(todo)} to run ({sum(run.resume is not None for run in todo)} resumed) on the "
          f"{args.backend} backend")
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
        sys.exit(f"\ninterrupted: {finished} of {len(runs)} runs finished and kept in {out}; run the same command to resume "
                 "(stopped runs continue from their resumable states)")
    progress.close()
    return progress.failed


# ----------------------------------------------------------------------------------------------------------------------
# Reporting: evaluation, Markdown tables, figures
# ----------------------------------------------------------------------------------------------------------------------
def evaluation(run, checkpoint, out, episodes, obs_noise=0.0, obs_scale=None):
    """Per-episode lists EPISODE_KEYS of eval_smoothness.evaluate, cached in <out>/eval/ (recomputed if obs_scale changed)."""
    cache = out / "eval" / f"{run.name}__noise{obs_noise:g}__{episodes}ep.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        stored = saved.get("obs_scale")
        if (stored is None) == (obs_scale is None) and (stored is None or np.allclose(stored, obs_scale)):
            return saved
    from eval_smoothness import evaluate

    result = evaluate(str(checkpoint), episodes=episodes, obs_noise=obs_noise, obs_scale=obs_scale)
    saved = {key: [float(x) for x in result[key]] for key in EPISODE_KEYS}
    saved["obs_scale"] = None if obs_scale is None else [float(x) for x in obs_scale]
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(saved))
    return saved


def format_mean_std(values):
    mean, std = float(np.mean(values)), float(np.std(values))
    digits = 0 if abs(mean) >= 1000 else 1 if abs(mean) >= 100 else 2 if abs(mean) >= 1 else 3
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def markdown_table(title, row_labels, columns, cells):
    """A paper-style table: columns = [(header, higher_is_better)], cells[row][column] = values (pooled episodes or
    per-seed means) or None.

    Cells show mean (std); per column the best mean is bold and the second underlined.
    """
    lines = [f"**{title}**", "", "| " + " | ".join(["", *(header for header, _ in columns)]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    text = [[format_mean_std(values) if values else "-" for values in row] for row in cells]
    for c, (_, higher_is_better) in enumerate(columns):
        ranked = sorted((r for r in range(len(cells)) if cells[r][c]), key=lambda r: np.mean(cells[r][c]), reverse=higher_is_better)
        if len(ranked) >= 2:
            text[ranked[0]][c] = f"**{text[ranked[0]][c]}**"
            text[ranked[1]][c] = f"<u>{text[ranked[1]][c]}</u>"
    lines += ["| " + " | ".join([label, *row]) + " |" for label, row in zip(row_labels, text)]
    return "\n".join(lines) + "\n"


def short_env(env_id):
    return env_id.split("-v")[0]


def run_events(run_dir):
    """A run's TensorBoard events, read once, every scalar point kept (an EventAccumulator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def scalars(run_dir, tag, events=None):
    """(steps, values) of one TensorBoard scalar of a run, empty arrays if it was never logged (events: run_events(run_dir)
    when already read)."""
    events = run_events(run_dir) if events is None else events
    if tag not in events.Tags()["scalars"]:
        return np.array([]), np.array([])
    points = events.Scalars(tag)
    return np.array([p.step for p in points]), np.array([p.value for p in points])


CURVE_BINS = 50  # learning curves: at most this many bins over the steps (no more than the longest curve has points)


def mean_over_seeds(curves, bins=CURVE_BINS, start=0):
    """(steps, mean, std) of one method's learning curve from its seeds' curves [(steps, values)], on a common grid:
    [start, the last step of any seed] cut into equal bins (e_k, e_k+1] (at most `bins`, no more than the longest curve
    has points; an episode counts at the step it ended, and episodes that ended by `start` are left out); each seed's
    points are averaged per bin, then mean and std (ddof 0) go over the seeds with points in the bin. A bin is shown at
    its centre; bins no seed has points in are left out."""
    curves = [(np.asarray(steps), np.asarray(values)) for steps, values in curves]
    curves = [(steps[steps > start], values[steps > start]) for steps, values in curves if (steps > start).any()]
    if not curves:
        return np.array([]), np.array([]), np.array([])
    n = min(bins, max(len(steps) for steps, _ in curves))
    edges = np.linspace(start, max(steps[-1] for steps, _ in curves), n + 1)
    per_seed = np.full((len(curves), n), np.nan)
    for k, (steps, values) in enumerate(curves):
        index = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, n - 1)
        counts = np.bincount(index, minlength=n)
        per_seed[k, counts > 0] = (np.bincount(index, weights=values, minlength=n) / np.maximum(counts, 1))[counts > 0]
    kept = ~np.isnan(per_seed).all(axis=0)
    return (edges[:-1] + edges[1:])[kept] / 2, np.nanmean(per_seed[:, kept], axis=0), np.nanstd(per_seed[:, kept], axis=0)


def plot_mean_curves(ax, curves, ylabel, title, start=0):
    """One line per label of curves = {label: [(steps, values) per seed]}: mean_over_seeds (from `start`) with a +- one
    std band."""
    for label, seed_curves in curves.items():
        steps, mean, std = mean_over_seeds(seed_curves, start=start)
        if len(steps):
            ax.plot(steps, mean, marker="o" if len(steps) == 1 else None, label=label)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    ax.grid(alpha=0.3)


def plot_learning_curves(study, run_dirs, path):
    """Per env, charts/episodic_return per variant: mean and std band over seeds on a common step grid (mean_over_seeds)."""
    import matplotlib.pyplot as plt

    cols = min(3, len(study.env_ids))
    rows = -(-len(study.env_ids) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, study.env_ids):
        curves = {variant.label: [scalars(run_dirs[r], "charts/episodic_return") for r in study.runs
                                  if r.variant == variant and r.env_id == env_id and r in run_dirs] for variant in study.variants}
        plot_mean_curves(ax, curves, "episodic return", short_env(env_id))
    for ax in list(axes.flat)[len(study.env_ids):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweeps(study):
    """{swept field name: its variants in increasing value} of a study's sweep variants (sensitivity, sigma-delta)."""
    swept = {}
    for variant in sorted((v for v in study.variants if v.sweep), key=lambda v: v.sweep[1]):
        swept.setdefault(variant.sweep[0], []).append(variant)
    return swept


def plot_sensitivity(study, env_id, pooled, path):
    """Figure 4 and the sigma / delta sweeps: a panel per swept flag, return (solid) and sm (dashed, right axis) against its
    value, mean and std of pooled episodes."""
    import matplotlib.pyplot as plt

    swept = sweeps(study)
    fig, axes = plt.subplots(1, len(swept), figsize=(5 * len(swept), 3.6), squeeze=False)
    for ax, (name, variants) in zip(axes.flat, swept.items()):
        points = [(v.sweep[1], pooled[v, env_id, 0.0]) for v in variants if pooled.get((v, env_id, 0.0))]
        if not points:
            continue
        x = [value for value, _ in points]
        for axis, key, style, color in ((ax, "return", "-o", "tab:blue"), (ax.twinx(), "sm", "--s", "tab:orange")):
            mean = np.array([np.mean(result[key]) for _, result in points])
            std = np.array([np.std(result[key]) for _, result in points])
            axis.plot(x, mean, style, color=color)
            axis.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
            axis.set_ylabel("average return" if key == "return" else "smoothness sm", color=color)
            axis.ticklabel_format(axis="y", useOffset=False)
        ax.set_xscale("symlog", linthresh=min(v for v in x if v > 0) if any(v > 0 for v in x) else 1.0)
        ax.set(title=f"{short_env(env_id)}: {name}", xlabel=f"--{name.replace('_', '-')}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(study, out, args):
    """Evaluate every finished run, then write the tables, figures and index.md into <out>/report/."""
    import matplotlib

    matplotlib.use("Agg")
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    checkpoints = {run: run.checkpoint(out) for run in study.runs}
    finished = [run for run, checkpoint in checkpoints.items() if checkpoint]
    missing = [run for run in study.runs if run not in finished]

    results, unreadable, scale_notes = {}, [], []  # results[(run, noise)] = its evaluation

    def evaluate_into_results(run, obs_noise=0.0, obs_scale=None, episodes=args.episodes):
        try:
            results[run, obs_noise] = evaluation(run, checkpoints[run], out, episodes, obs_noise, obs_scale)
        except Exception as error:  # a damaged checkpoint must not take the whole report down
            unreadable.append(f"{run.name} (noise {obs_noise:g}): {type(error).__name__}: {error}")

    for run in tqdm(finished, desc="evaluating", unit="run", leave=False):
        evaluate_into_results(run)
    clean = [run for run, _ in results]
    if study.noise_levels:
        import eval_smoothness  # Table 3's protocol, as eval_smoothness.py follows it

        noise_episodes = args.noise_episodes or eval_smoothness.NOISE_EPISODES
        for env_id in study.env_ids:
            policies = {}
            for run in (r for r in clean if r.env_id == env_id):
                try:
                    policies[run] = eval_smoothness.load_policy(checkpoints[run])
                except eval_smoothness.CheckpointError as error:
                    unreadable.append(f"{run.name} (noise): {error}")
            for algo in sorted({policy.algo for policy in policies.values()}):
                family = {run: policy for run, policy in policies.items() if policy.algo == algo}
                # one sigma_base per env and algorithm family: the first-seed base run's (else the reported fallback)
                try:
                    scale = eval_smoothness.sigma_base([p for run, p in family.items() if is_base_variant(run.variant)],
                                                       list(family.values()), clean_episodes=args.episodes)
                except Exception as error:
                    unreadable.append(f"σ_base of {short_env(env_id)} {algo} (no noisy rows): {type(error).__name__}: {error}")
                    continue
                scale_notes.append(f"{short_env(env_id)} {algo}: {scale['how']}")
                todo = [(run, n) for run in family for n in study.noise_levels]
                for run, obs_noise in tqdm(todo, desc=f"noise {short_env(env_id)} {algo}", unit="eval", leave=False):
                    evaluate_into_results(run, obs_noise, scale["sigma_base"], noise_episodes)
    # over the episodes of every finished seed (clean tables), and the per-seed means (noise table: Table 3's cells)
    pooled, seed_means = {}, {}  # [(variant, env, noise)] = {"return": [...], "sm": [...]}
    for (run, obs_noise), result in results.items():
        key = (run.variant, run.env_id, obs_noise)
        for name in ("return", "sm"):
            pooled.setdefault(key, {"return": [], "sm": []})[name] += result[name]
            seed_means.setdefault(key, {"return": [], "sm": []})[name].append(float(np.mean(result[name])))

    def cell(variant, env_id, noise, key):
        return (seed_means if noise > 0 else pooled).get((variant, env_id, noise), {}).get(key)

    labels = [v.label for v in study.variants]
    tables = {}
    columns = [(f"{short_env(e)} {key}", key == "re") for e in study.env_ids for key in ("re", "sm")]
    cells = [[cell(v, e, 0.0, key) for e in study.env_ids for key in ("return", "sm")] for v in study.variants]
    tables["table1.md"] = markdown_table(study.title, labels, columns, cells)
    if sweeps(study):  # the same cells, a table per swept flag with a row per value
        tables["sensitivity.md"] = "\n".join(
            markdown_table(f"--{name.replace('_', '-')} varied: return (re) and smoothness (sm) per value",
                           [f"{v.sweep[1]:g}" for v in variants], columns,
                           [[cell(v, e, 0.0, key) for e in study.env_ids for key in ("return", "sm")] for v in variants])
            for name, variants in sweeps(study).items())
    if study.noise_levels:
        columns = [(f"{short_env(e)} σ={n:g} {key}", key == "re")
                   for e in study.env_ids for n in study.noise_levels for key in ("re", "sm")]
        cells = [[cell(v, e, n, key) for e in study.env_ids for n in study.noise_levels for key in ("return", "sm")]
                 for v in study.variants]
        title = (f"Table 3: return and smoothness under observation noise σ ({noise_episodes} episodes per run and σ); "
                 "mean over seeds of the per-seed means (std over those means)")
        tables["table3_noise.md"] = markdown_table(title, labels, columns, cells)

    run_dirs = {run: checkpoints[run].parent for run in finished}
    sps = {}  # (variant, env) -> last logged SPS after learning starts, per seed
    for run in finished:
        steps, values = scalars(run_dirs[run], "charts/SPS_train")
        if len(values):
            sps.setdefault((run.variant, run.env_id), []).append(float(values[-1]))
    sps_rows = [[f"{np.mean(sps[v, e]):.1f}" if (v, e) in sps else "-" for v in study.variants] for e in study.env_ids]
    tables["table5_throughput.md"] = "\n".join([
        "**Table 5: training throughput, env steps per second after learning starts (mean over seeds of charts/SPS_train)**", "",
        "| | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1),
        *("| " + " | ".join([short_env(e), *row]) + " |" for e, row in zip(study.env_ids, sps_rows))]) + "\n"
    for name, text in tables.items():
        (report / name).write_text(text)

    figures = ["learning_curves.png"]
    plot_learning_curves(study, run_dirs, report / "learning_curves.png")
    if sweeps(study):
        for env_id in study.env_ids:
            figures.append(f"sensitivity_{short_env(env_id)}.png")
            plot_sensitivity(study, env_id, pooled, report / figures[-1])

    index = [f"# Study {study.name}", "",
             f"{len(study.runs)} runs ({len(study.variants)} variants x {len(study.env_ids)} envs x {len(study.seeds)} seeds): "
             f"{len(finished)} finished, {len(missing)} missing. Evaluation: {args.episodes} deterministic episodes per run, "
             "pooled over seeds; mean (std); best **bold**, second <u>underlined</u>.", ""]
    if missing:
        index += ["Missing (no checkpoint): " + ", ".join(run.name for run in missing), ""]
    if unreadable:
        index += ["Not evaluated: " + "; ".join(unreadable), ""]
    if scale_notes:
        index += ["Observation noise (Table 3, as eval_smoothness.py): per step and dimension the policy sees "
                  "clip(o + u σ_base, obs_low, obs_high), u ~ U(-σ, σ), the env's state unchanged; a cell is the mean over "
                  "seeds of the per-seed means (std over those means). σ_base of " + "; ".join(scale_notes), ""]
    index += ["## Tables", ""]
    for name, text in tables.items():
        index += [f"[{name}]({name})", "", text]
    index += ["## Figures", ""] + [f"[{name}]({name})\n\n![{name}]({name})\n" for name in figures]
    (report / "index.md").write_text("\n".join(index))
    print(f"report: {report / 'index.md'}")
    return report


# ----------------------------------------------------------------------------------------------------------------------
# Throughput (the paper's Table 5): each script for a fixed number of training steps, one after another
# ----------------------------------------------------------------------------------------------------------------------
def add_measurement_arguments(parser, env_id, steps):
    """The flags `throughput` and `threads` share: what each measured run trains, and where it goes."""
    parser.add_argument("--env-id", default=env_id)
    parser.add_argument("--steps", type=int, default=steps, help="training steps measured, after --learning-starts random ones")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra", default="", help='flags for every script, one string: --extra "--batch-size 64"')
    parser.add_argument("--out", type=Path, default=None, help="keep runs and logs here (default: a temporary folder)")


def parse_throughput_args(argv):
    parser = argparse.ArgumentParser(prog=f"{PROG} throughput",
                                     description="SPS after learning starts per script, and the ratio to its base script")
    add_measurement_arguments(parser, env_id="Hopper-v5", steps=2000)
    parser.add_argument("--scripts", nargs="+", default=[f"{algo}{suffix}.py" for algo in ("td3", "sac") for suffix in METHODS],
                        help='scripts, each with its own flags if quoted: td3.py td3_pave.py "td3_pave.py --pave-batch 25"')
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all scripts; each script's SPS is its median over rounds")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=True, help="let the scripts use a GPU when there is one")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.learning_starts < 0 or args.repeats <= 0:
        fail("--steps and --repeats must be positive and --learning-starts non-negative")
    return args


def format_warm_up(seconds):
    """The first burst's extra seconds to 0.1 s: timing noise can make a warm-up of about nothing come out below 0, shown
    as 0.0 (never "-0.0" or "-0.2")."""
    return f"{max(0.0, seconds):.1f}"


def measure_sps(path, flags, name, out, args):
    """Train one script for args.learning_starts + args.steps steps in its own process (run folder and log in out, run
    name `name`); return (steady training SPS after the first burst, the first burst's extra seconds), or None after
    printing why it failed. args: env_id, seed, learning_starts, steps, cuda."""
    # log after every train burst (50 steps): the steady rate below needs the time at each of them
    command = [sys.executable, str(path), "--env-id", args.env_id, "--seed", str(args.seed), "--exp-name", name,
               "--total-timesteps", str(args.learning_starts + args.steps), "--learning-starts", str(args.learning_starts),
               "--log-freq", "50", "--no-progress-bar", "--cuda" if args.cuda else "--no-cuda", *flags]
    log = out / "logs" / f"{name}.log"
    returncode = run_process(command, out, log, {**os.environ, "PYTHONUNBUFFERED": "1"})
    folders = sorted(glob.glob(f"{out}/runs/{args.env_id}__{name}__{args.seed}__*"))
    steps, values = scalars(folders[-1], "charts/SPS_train") if folders else ([], [])
    if returncode != 0 or len(values) < 2:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"FAILED (exit {returncode}); last lines of {log}:\n" + "\n".join(f"    {line}" for line in tail))
        return None
    # SPS_train = steps / seconds since training started, logged after every burst: the seconds at each log give
    # the steady rate after the first burst, which alone pays one-off costs (torch.compile, warm-up)
    seconds = (steps - args.learning_starts) / values
    steady = (steps[-1] - steps[0]) / (seconds[-1] - seconds[0])
    first_burst = seconds[0] - (steps[0] - args.learning_starts) / steady  # the first burst's time beyond the steady rate
    print(f"{steady:.1f} SPS (first burst took {format_warm_up(first_burst)} s extra)")
    return steady, first_burst


def throughput(argv):
    args = parse_throughput_args(argv)
    variants = {}  # label -> (script path, its flags); a label is the script's stem and its flags
    for entry in args.scripts:
        script, *flags = shlex.split(entry)
        path = script_path(script)
        if not path.is_file():
            print(f"note: {script} not found; skipped")
            continue
        variants[" ".join([path.stem, *flags])] = (path, flags)
    out = args.out or Path(tempfile.mkdtemp(prefix="throughput-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    measured = {label: [] for label in variants}
    for round_ in range(args.repeats):  # rounds interleave the scripts, so a slow spell of a shared machine hits them alike
        for i, (label, (path, flags)) in enumerate(variants.items()):
            print(f"{label}: {args.steps} steps on {args.env_id} ...", end=" ", flush=True)
            result = measure_sps(path, [*shlex.split(args.extra), *flags], f"{path.stem}-{i}-{round_}", out, args)
            if result:
                measured[label].append(result)
    if args.out is None:
        shutil.rmtree(out)

    medians = {label: np.median(values, axis=0) for label, values in measured.items() if values}  # (steady SPS, warm-up s)
    sps = {label: float(m[0]) for label, m in medians.items()}
    device = "GPU if present" if args.cuda else "CPU"
    rounds = f", median of {args.repeats} rounds" if args.repeats > 1 else ""
    lines = [f"Training SPS after the first training burst, {args.env_id}, {args.steps} steps ({device}{rounds}); ratio: to the "
             "base script (td3_* to td3.py, sac_* to sac.py) of the same invocation; warm-up: the first burst's extra seconds "
             "(torch.compile)", "", "| script | SPS | ratio | warm-up s |", "|---|---|---|---|"]
    for label, value in sps.items():
        base = sps.get(label.split("_")[0].split(" ")[0])
        lines.append(f"| {label} | {value:.1f} | {f'{value / base:.2f}' if base else '-'} | {format_warm_up(medians[label][1])} |")
    print("\n" + "\n".join(lines))
    return 0 if sps else 1


# ----------------------------------------------------------------------------------------------------------------------
# Threads: how many torch threads a run should take, idle and beside busy processes (docs/performance.md)
# ----------------------------------------------------------------------------------------------------------------------
BUSY_LOOP = "while True: pass"  # a busy process: one core's worth of pure-Python work, like a second single-thread run


def parse_threads_args(argv):
    parser = argparse.ArgumentParser(prog=f"{PROG} threads",
                                     description="training SPS per script and torch thread count, idle and beside busy processes")
    add_measurement_arguments(parser, env_id="Pendulum-v1", steps=1000)
    parser.add_argument("--scripts", nargs="+", default=["td3.py", "td3_pave.py", "sac_pave.py"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="--torch-threads values, each script runs with each")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2],
                        help=f"numbers of busy processes ({BUSY_LOOP!r}) running beside the measured run")
    args = parser.parse_args(argv)
    if args.steps <= 0 or args.learning_starts < 0 or min(args.threads) < 1 or min(args.busy) < 0:
        fail("--steps and every --threads value must be positive, --learning-starts and every --busy value non-negative")
    missing = [script for script in args.scripts if not script_path(script).is_file()]
    if missing:
        fail(f"no such script: {' '.join(missing)}")
    args.cuda = False  # threads are a CPU question
    return args


def threads(argv):
    args = parse_threads_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="threads-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    measured = {}  # (script, threads, busy) -> (steady SPS, CPU seconds over wall seconds of the whole run)
    for busy in args.busy:
        loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
        try:
            for n_threads in args.threads:
                for script in args.scripts:
                    path = script_path(script)
                    print(f"{path.stem}, {n_threads} torch thread(s), beside {busy} busy process(es) ...", end=" ", flush=True)
                    cpu_before, wall_before = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                    flags = [*shlex.split(args.extra), "--torch-threads", str(n_threads)]
                    result = measure_sps(path, flags, f"{path.stem}-t{n_threads}-b{busy}", out, args)
                    cpu_after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - wall_before
                    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
                    if result:
                        measured[path.stem, n_threads, busy] = (result[0], cpu / wall)
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
    if args.out is None:
        shutil.rmtree(out)

    def cell(stem, n_threads, busy):
        if (stem, n_threads, busy) not in measured:
            return "-"
        sps, cpu_per_wall = measured[stem, n_threads, busy]
        reference = measured.get((stem, args.threads[0], args.busy[0]))
        ratio = f" ({sps / reference[0]:.2f})" if reference else ""
        return f"{sps:.1f}{ratio}, cpu {cpu_per_wall:.1f}x"

    stems = [script_path(script).stem for script in args.scripts]
    lines = [f"Training SPS after the first training burst, {args.env_id}, {args.steps} steps, CPU; in brackets: over the "
             f"same script's SPS with {args.threads[0]} thread(s) beside {args.busy[0]} busy process(es); cpu: the whole "
             f"run's CPU seconds over its wall seconds (1.0 = one core kept busy)", "",
             "| script | torch threads | " + " | ".join(f"beside {busy} busy" if busy else "idle" for busy in args.busy) + " |",
             "|---|---|" + "---|" * len(args.busy)]
    for stem in stems:
        for n_threads in args.threads:
            lines.append(f"| {stem} | {n_threads} | " + " | ".join(cell(stem, n_threads, busy) for busy in args.busy) + " |")
    print("\n" + "\n".join(lines))
    return 0 if measured else 1


# ----------------------------------------------------------------------------------------------------------------------
# Publish: every table and figure of a study, regenerated from its files without training
# ----------------------------------------------------------------------------------------------------------------------
# learning curves: TensorBoard tag -> (panel title, y label); training episodes act with exploration noise (TD3's
# Gaussian, SAC's sampled actions), so their action change is not the evaluation's deterministic one
CURVE_TAGS = {"charts/episodic_return": ("training episodes' return", "episodic return"),
              "charts/action_change": ("training episodes' action change (exploration noise on)",
                                       "mean |a_t - a_t-1| per episode (env units)")}


def found_runs(study):
    """{Run: checkpoint or None} of every run a study folder shows by benchmark.py's names: a run folder
    runs/<env>__<variant>__<seed>__<unix time>/ or a log logs/<env>__<variant>__<seed>.log. The checkpoint is
    Run.checkpoint's (the newest folder's <variant>.pt); the Run's script is the variant name up to its first '-'."""
    names = [p.name.rsplit("__", 1) for p in (study / "runs").iterdir() if p.is_dir()]
    names = [name for name, unix_time in (n for n in names if len(n) == 2) if unix_time.isdigit()]
    if (study / "logs").is_dir():
        names += [p.stem for p in (study / "logs").glob("*.log")]
    runs = {}
    for name in names:
        env_id, _, rest = name.partition("__")
        variant, _, seed = rest.rpartition("__")
        if env_id and variant and seed.lstrip("-").isdigit():
            run = Run(Variant(f"{variant.split('-')[0]}.py", variant, variant), env_id, int(seed))
            runs[run] = run.checkpoint(study)
    return runs


def algo_of(run):
    """The run's algorithm family: its script's name up to the first '_' (td3, sac)."""
    return family(Path(run.variant.script).stem)


def missing_runs(runs, study):
    """[(run, why)]: per env, every method x seed of the runs found there that has no checkpoint."""
    missing = []
    for env_id in sorted({run.env_id for run in runs}):
        variants = {run.variant for run in runs if run.env_id == env_id}
        seeds = sorted({run.seed for run in runs if run.env_id == env_id})
        for run in (Run(variant, env_id, seed) for variant in sorted(variants, key=lambda v: v.name) for seed in seeds):
            if runs.get(run):
                continue
            if run.folders(study):
                why = f"its run folder has no {run.variant.name}.pt: unfinished or failed"
            elif (study / "logs" / f"{run.name}.log").exists():
                why = "a log but no run folder: failed at start"
            else:
                why = "no run folder or log: not started"
            missing.append((run, why))
    return missing


def publish_learning_curves(runs, events, learning_starts, out):
    """learning_curves.csv: one row per logged point of CURVE_TAGS (method, env_id, seed, tag, step, value) of every run;
    learning_curves.png: one row of panels per env and algorithm family, one panel per tag, one line per method
    (mean_over_seeds: each seed's episodes averaged per bin of a common step grid, mean +- one std over seeds), from the
    end of the random-action phase (learning_starts = {run: its --learning-starts}; the largest of the row's runs) on:
    its uniform random actions say nothing about a method and would dwarf the action change of every policy."""
    import matplotlib.pyplot as plt

    curves, starts = {}, {}  # (env, algo) -> tag -> method -> [(steps, values) per seed]; (env, algo) -> learning starts
    with open(out / "learning_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env_id", "seed", "tag", "step", "value"])
        for run in runs:
            starts[run.env_id, algo_of(run)] = max(starts.get((run.env_id, algo_of(run)), 0), learning_starts[run])
            for tag in CURVE_TAGS:
                steps, values = scalars(None, tag, events(run))
                writer.writerows([run.variant.name, run.env_id, run.seed, tag, int(step), float(value)]
                                 for step, value in zip(steps, values))
                curves.setdefault((run.env_id, algo_of(run)), {}).setdefault(tag, {}).setdefault(run.variant.name, []).append(
                    (steps, values))
    fig, axes = plt.subplots(len(curves), len(CURVE_TAGS), figsize=(6.5 * len(CURVE_TAGS), 4.2 * len(curves)), squeeze=False)
    for ((env_id, algo), by_tag), row in zip(curves.items(), axes):
        start = starts[env_id, algo]
        for ax, (tag, (title, ylabel)) in zip(row, CURVE_TAGS.items()):
            plot_mean_curves(ax, by_tag[tag], ylabel, f"{short_env(env_id)}, {algo.upper()}: {title}", start)
            ax.set_xlabel(f"environment steps (from {start:,}: the first {start:,} are random actions)" if start else
                          "environment steps")
        if row[0].get_legend_handles_labels()[0]:
            row[0].legend(fontsize=8)
    fig.suptitle("Training episodes, mean +- one std over seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)
    return 0


def training_seconds(run_dir):
    """(seconds, segments) of a run: per TensorBoard events file (a script writes one per start, so a resumed run has one
    per segment), its last scalar's wall time minus its first event's, which the SummaryWriter writes as it starts;
    summed, so the pauses between segments are left out (the steps a resumed run repeats after its last saved state are
    counted). Start-up, torch.compile and the final evaluation are included."""
    seconds, segments = 0.0, 0
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        segment = run_events(path)
        times = [point.wall_time for tag in segment.Tags()["scalars"] for point in segment.Scalars(tag)]
        if times:
            seconds, segments = seconds + max(times) - segment.FirstEventTimestamp(), segments + 1
    return seconds, segments


def publish_runs_table(runs, events, out):
    """runs.csv: per run its method, env_id, seed, steps (the last step of any logged scalar), wall_seconds and segments
    (training_seconds), sps_train (the last charts/SPS_train) and its run folder relative to the output folder."""
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env_id", "seed", "steps", "wall_seconds", "segments", "sps_train", "run_folder"])
        for run in runs:
            logged = events(run)
            steps = [point.step for tag in logged.Tags()["scalars"] for point in logged.Scalars(tag)]
            if not steps:
                print(f"note: {run.name} logged no scalars; runs.csv has no steps, wall time or SPS for it")
            seconds, segments = training_seconds(runs[run].parent)
            _, sps = scalars(None, "charts/SPS_train", logged)
            writer.writerow([run.variant.name, run.env_id, run.seed, max(steps, default=""), f"{seconds:.1f}" if segments else "",
                             segments, f"{sps[-1]:.1f}" if len(sps) else "", os.path.relpath(runs[run].parent, out)])
    return 0


def write_rows(path, rows):
    """A CSV file of dicts (at least one), their keys as the header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# statistics over training seeds: rliable's interval estimates, PAVE's paired comparisons
METRICS = {"return": ("re", 1, 2), "sm": ("sm", -1, 3)}  # metric -> (short name, +1 if higher is better, decimals shown)
BOOTSTRAP_REPS = 2000  # publish's default resamples per bootstrap CI (rliable's 50 000 would take minutes on 2 cores)
BOOTSTRAP_SEED = 0  # rliable resamples with numpy's global generator: seeded per method, so no CI depends on the others
CONFIDENCE = 0.95
EVALUATIONS = ("table", "more_episodes", "released_starts")  # publish's evaluations: --out itself, then its two folders


def family(method):
    """A method's algorithm family: its name up to the first '-' or '_' (td3_pave: td3, sac-relu: sac)."""
    return method.split("-")[0].split("_")[0]


def method_key(method):
    """Sort key of a method (run name): TD3 then SAC; Base, CAPS, Grad-CAPS, ASAP, PAVE, a renamed variant (td3-relu)
    right after its script's own name; other scripts last."""
    script, algo = method.split("-")[0], family(method)
    suffix = script[len(algo):]
    return (("td3", "sac", algo).index(algo), algo, list(METHODS).index(suffix) if suffix in METHODS else len(METHODS), method)


def evaluation_label(evaluation, sigma, episodes):
    """How the statistics tables name one evaluation: "10 episodes", "20 episodes, sigma 0.05", "100 episodes
    (more_episodes/)", "50 released start states"."""
    if evaluation == "released_starts":
        return f"{episodes} released start states"
    return f"{episodes} episodes" + (f", sigma {sigma:g}" if sigma else "") + (" (more_episodes/)" if evaluation == "more_episodes" else "")


def seed_means(folder):
    """Per-seed means of an evaluation folder's episodes.csv (eval_smoothness.py's): one dict per method, env, noise
    level and training seed (method, env_id, obs_noise, seed, episodes, return, sm, action_change), in the file's order."""
    groups = {}
    for row in csv.DictReader((folder / "episodes.csv").read_text().splitlines()):
        groups.setdefault((row["method"], row["env_id"], float(row["obs_noise"]), int(row["train_seed"])), []).append(row)
    return [{"method": method, "env_id": env_id, "obs_noise": sigma, "seed": seed, "episodes": len(rows),
             **{key: float(np.mean([float(r[key]) for r in rows])) for key in ("return", "sm", "action_change")}}
            for (method, env_id, sigma, seed), rows in groups.items()]


def by_cell(rows):
    """{(env_id, method, obs_noise): {seed: row}} of seed_means rows."""
    cells = {}
    for row in rows:
        cells.setdefault((row["env_id"], row["method"], row["obs_noise"]), {})[row["seed"]] = row
    return cells


def iqm_per_column(scores):
    """rliable's IQM (metrics.aggregate_iqm: the 25% trimmed mean) of each column of scores (runs x columns), in one
    vectorized call per bootstrap resample (aggregate_iqm itself pools all columns)."""
    from scipy.stats import trim_mean

    return trim_mean(scores, proportiontocut=0.25, axis=0)


def interval_estimates(columns, reps=BOOTSTRAP_REPS):
    """{key: (IQM, CI low, CI high)} of columns = {key: per-seed values}: the IQM over seeds with its stratified-bootstrap
    CI (rliable's get_interval_estimates: percentile method, `reps` resamples of the seeds with replacement, CONFIDENCE
    coverage); the CI is (nan, nan) under two seeds. Columns with as many seeds share one bootstrap, in which
    each column is resampled on its own."""
    from rliable import library as rly
    from rliable import metrics

    estimates = {}
    for n in sorted({len(values) for values in columns.values()}):
        keys = [key for key, values in columns.items() if len(values) == n]
        scores = np.array([columns[key] for key in keys], dtype=float).T
        low = high = np.full(len(keys), np.nan)
        if n >= 2:
            state = np.random.get_state()
            np.random.seed(BOOTSTRAP_SEED)
            _, intervals = rly.get_interval_estimates({"iqm": scores}, iqm_per_column, reps=reps,
                                                      confidence_interval_size=CONFIDENCE)
            np.random.set_state(state)  # leave numpy's global generator as the caller had it
            low, high = intervals["iqm"]
        for k, key in enumerate(keys):
            estimates[key] = (float(metrics.aggregate_iqm(scores[:, [k]])), float(low[k]), float(high[k]))
    return estimates


def seed_statistics(per_seed, reps=BOOTSTRAP_REPS):
    """{(evaluation, env_id, method, obs_noise, metric): (IQM, CI low, CI high)} of return and sm over the training seeds,
    from per_seed = {evaluation: seed_means rows}; one bootstrap per env and method (interval_estimates)."""
    columns = {}  # (env, method) -> {key: per-seed values}
    for evaluation, rows in per_seed.items():
        for (env_id, method, sigma), seeds in by_cell(rows).items():
            for metric in METRICS:
                columns.setdefault((env_id, method), {})[evaluation, env_id, method, sigma, metric] = [
                    row[metric] for row in seeds.values()]
    return {key: value for method_columns in columns.values() for key, value in interval_estimates(method_columns, reps).items()}


def t_interval(values):
    """(low, high): the CONFIDENCE t-interval of the mean of values (scipy's one-sample t-test); (nan, nan) under two."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:  # no spread: the t statistic is undefined and the interval is the value itself
        return float(values[0]), float(values[0])
    interval = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


def paired_comparisons(per_seed):
    """PAVE (<algo>_pave) against every other method of its env and algorithm family, per evaluation and noise level,
    over the training seeds both have (per_seed = {evaluation: seed_means rows}). Per metric: the per-seed difference
    PAVE minus the other, its mean and CONFIDENCE t-interval over seeds, the seeds on which PAVE is better (lower sm,
    higher return), rliable's probability of improvement P(PAVE better) (a random seed of PAVE against a random seed of
    the other); for sm also the geometric mean of the per-seed ratios PAVE / other with its t-interval (on the logs).
    One dict per comparison; a method without a seed in common with PAVE is left out with a note."""
    from rliable import metrics

    comparisons = []
    for evaluation, rows in per_seed.items():
        cells = by_cell(rows)
        for (env_id, pave, sigma), mine in cells.items():
            if pave != f"{family(pave)}_pave":
                continue
            others = [key for key in cells if (key[0], key[2]) == (env_id, sigma) and family(key[1]) == family(pave) and key[1] != pave]
            for key in sorted(others, key=lambda key: method_key(key[1])):
                theirs = cells[key]
                seeds = [seed for seed in mine if seed in theirs]
                if not seeds:
                    print(f"note: {key[1]} has no training seed in common with {pave} ({env_id}); not compared")
                    continue
                row = {"evaluation": evaluation, "env_id": env_id, "obs_noise": sigma, "episodes": mine[seeds[0]]["episodes"],
                       "pave": pave, "other": key[1], "seeds": len(seeds), "pave_seeds": len(mine), "other_seeds": len(theirs)}
                values = {metric: [np.array([side[seed][metric] for seed in seeds]) for side in (mine, theirs)] for metric in METRICS}
                for metric, (_, better, _) in METRICS.items():
                    x, y = values[metric]
                    row[f"{metric}_diff"] = float(np.mean(x - y))
                    row[f"{metric}_diff_low"], row[f"{metric}_diff_high"] = t_interval(x - y)
                    row[f"{metric}_pave_better_seeds"] = int(np.sum(better * (x - y) > 0))
                    row[f"{metric}_probability_of_improvement"] = float(
                        metrics.probability_of_improvement(better * x[:, None], better * y[:, None]))
                log_ratios = np.log(values["sm"][0] / values["sm"][1])
                row["sm_ratio_geomean"] = float(np.exp(np.mean(log_ratios)))
                row["sm_ratio_low"], row["sm_ratio_high"] = (float(np.exp(bound)) for bound in t_interval(log_ratios))
                comparisons.append(row)
    return comparisons


def format_interval(value, low, high, digits, sign=""):
    """"value [low, high]" to `digits` decimals (sign "+": signed), or the value alone when there is no interval."""
    text = f"{value:{sign}.{digits}f}"
    return text if np.isnan(low) else f"{text} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def verdict(low, high):
    """A difference's reading: "tie" when its interval includes 0, else on which side PAVE is; "1 seed" without one."""
    return "1 seed" if np.isnan(low) else "PAVE lower" if high < 0 else "PAVE higher" if low > 0 else "tie"


def publish_paired(out, comparisons):
    """paired.md and paired.csv: paired_comparisons' rows, a table per env and PAVE script."""
    if not comparisons:
        print("note: no PAVE run with another method of its family; paired.md not written")
        return
    write_rows(out / "paired.csv", comparisons)
    lines = ["PAVE against each other method of its family, paired by training seed: per seed, PAVE's number minus the "
             "other's (the two checkpoints of one seed on the same episodes), then over the seeds both have: the mean "
             "difference with its 95% t-interval over seeds, where a difference whose interval includes 0 is a tie; the "
             "seeds on which PAVE is better (lower sm, higher return); rliable's probability of improvement P(PAVE better), "
             "the chance that a random seed of PAVE beats a random seed of the other (0.5: neither); and PAVE's sm over "
             "the other's as the geometric mean of the per-seed ratios with its 95% t-interval over seeds (on the logs). "
             "A method with fewer finished seeds is compared on the seeds it has (seeds: both, PAVE's, the other's)."]
    header = ["evaluation", "PAVE vs", "seeds", "sm: PAVE - other, mean [95% t-interval over seeds]", "sm: seeds PAVE lower",
              "sm: P(PAVE lower)", "sm: PAVE / other, geometric mean [95% t-interval over seeds]",
              "re: PAVE - other, mean [95% t-interval over seeds]", "re: seeds PAVE higher", "re: P(PAVE higher)"]
    for env_id, pave in dict.fromkeys((row["env_id"], row["pave"]) for row in comparisons):
        lines += ["", f"**{env_id}: {pave} minus each other {family(pave).upper()} method**", "",
                  "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in (row for row in comparisons if (row["env_id"], row["pave"]) == (env_id, pave)):
            seeds = str(row["seeds"]) if row["pave_seeds"] == row["other_seeds"] == row["seeds"] else \
                f"{row['seeds']} ({row['pave_seeds']}, {row['other_seeds']})"
            cells = [evaluation_label(row["evaluation"], row["obs_noise"], row["episodes"]), row["other"], seeds]
            for metric in ("sm", "return"):  # the header's order
                low, high, digits = row[f"{metric}_diff_low"], row[f"{metric}_diff_high"], METRICS[metric][2]
                cells += [f"{format_interval(row[f'{metric}_diff'], low, high, digits, '+')} {verdict(low, high)}",
                          f"{row[f'{metric}_pave_better_seeds']} of {row['seeds']}", f"{row[f'{metric}_probability_of_improvement']:.2f}"]
                if metric == "sm":
                    cells.append(format_interval(row["sm_ratio_geomean"], row["sm_ratio_low"], row["sm_ratio_high"], 2))
            lines.append("| " + " | ".join(cells) + " |")
    (out / "paired.md").write_text("\n".join(lines) + "\n")


def publish_intervals(out, evaluated, per_seed, estimates, reps):
    """intervals.md and intervals.csv: per evaluation, env, method and noise level, return and sm as the evaluation's
    table.csv has them (mean, std over the pooled episodes, std over the seed means) beside the IQM over seeds with its
    95% stratified-bootstrap CI (seed_statistics)."""
    rows = []
    for evaluation, folder in evaluated.items():
        table = {(r["env_id"], r["method"], float(r["obs_noise"])): r
                 for r in csv.DictReader((folder / "table.csv").read_text().splitlines())}
        for (env_id, method, sigma), seeds in sorted(by_cell(per_seed[evaluation]).items(),
                                                     key=lambda item: (item[0][0], item[0][2], method_key(item[0][1]))):
            row = {"evaluation": evaluation, "env_id": env_id, "method": method, "obs_noise": sigma, "seeds": len(seeds),
                   "episodes": next(iter(seeds.values()))["episodes"]}
            for metric in METRICS:
                iqm, low, high = estimates[evaluation, env_id, method, sigma, metric]
                row.update({f"{metric}_mean": float(table[env_id, method, sigma][f"{metric}_mean"]),
                            f"{metric}_std": float(table[env_id, method, sigma][f"{metric}_std"]),
                            f"{metric}_seed_std": float(table[env_id, method, sigma][f"{metric}_seed_std"]),
                            f"{metric}_iqm": iqm, f"{metric}_iqm_low": low, f"{metric}_iqm_high": high})
            rows.append(row)
    write_rows(out / "intervals.csv", rows)
    lines = ["Return (re) and sm per method: the mean with its std over the pooled episodes of all seeds (as table.md's clean "
             "rows show it), the std over the seeds' means (as its noisy rows show it), and the interquartile mean (IQM) "
             "over the seeds' means with its 95% stratified-bootstrap confidence interval over seeds (rliable, "
             f"{reps} resamples; none under 2 seeds). seeds: the finished training seeds pooled; episodes: per "
             "seed."]
    header = ["evaluation", "method", "seeds"] + [f"{name}: {column}" for name, _, _ in METRICS.values() for column in (
        "mean (std over pooled episodes)", "std over seed means", "IQM over seeds [95% bootstrap CI over seeds]")]
    for env_id in dict.fromkeys(row["env_id"] for row in rows):
        lines += ["", f"**{env_id}**", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in (row for row in rows if row["env_id"] == env_id):
            cells = [evaluation_label(row["evaluation"], row["obs_noise"], row["episodes"]), row["method"], str(row["seeds"])]
            for metric, (_, _, digits) in METRICS.items():
                cells += [f"{row[f'{metric}_mean']:.{digits}f} ({row[f'{metric}_std']:.{digits}f})",
                          f"{row[f'{metric}_seed_std']:.{digits}f}" if row["seeds"] > 1 else "-",  # none of one seed
                          format_interval(row[f"{metric}_iqm"], row[f"{metric}_iqm_low"], row[f"{metric}_iqm_high"], digits)]
            lines.append("| " + " | ".join(cells) + " |")
    (out / "intervals.md").write_text("\n".join(lines) + "\n")


def plot_return_vs_sm(rows, path):
    """return_vs_sm.png: a panel per env (row) and algorithm family (column), one point per training seed (its clean
    evaluation's mean return against its mean sm), a marker per method (hollow: a -relu run), sm on a log axis (a
    chattering seed sits an order of magnitude above the others)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    panels = {}  # (env, algo) -> method -> [seed rows]
    for row in sorted(rows, key=lambda row: (row["env_id"], method_key(row["method"]))):
        panels.setdefault((row["env_id"], family(row["method"])), {}).setdefault(row["method"], []).append(row)
    envs, algos = list(dict.fromkeys(env for env, _ in panels)), list(dict.fromkeys(algo for _, algo in panels))
    fig, axes = plt.subplots(len(envs), len(algos), figsize=(6.5 * len(algos), 4.8 * len(envs)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for (env_id, algo), methods in panels.items():
        ax = axes[envs.index(env_id), algos.index(algo)]
        ax.axis("on")
        for k, (method, seeds) in enumerate(methods.items()):
            color = f"C{k % 10}"
            ax.scatter([r["sm"] for r in seeds], [r["return"] for r in seeds], marker="osD^vPX*<>"[k % 10], s=50,
                       facecolors="none" if method.endswith("-relu") else color, edgecolors=color,
                       label=f"{method} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
        episodes = next(iter(methods.values()))[0]["episodes"]
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # plain ticks 0.2, 0.5, 1, 2: readable over any range
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(title=f"{short_env(env_id)}, {algo.upper()}: one point per training seed",
               xlabel=f"sm, mean of {episodes} clean episodes (lower is smoother; log scale)",
               ylabel=f"return, mean of {episodes} clean episodes")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def publish_paper_comparison(out, paper_csv, released_table=None, estimates=None):
    """vs_paper.md and vs_paper.csv: each clean row of out/table.csv (eval_smoothness.py's, pooled episodes) whose method
    and env are in the paper's Tables 1-2 (paper_csv: results/paper_tables.csv, the tables as printed, env ids mapped
    to Gymnasium 1.x), beside the paper's numbers, with each sm as a ratio to its family's Base sm (same env); a -relu
    run (the paper text's ReLU Base) beside its script's row of the paper. With released_table (the same evaluation on
    the released start states), its return and sm too; with estimates (seed_statistics), our IQM over seeds and its CI.
    Ours are printed with the paper's digits."""
    def read(path):  # {(method, env_id): row}, clean rows only (table.csv has a row per noise level)
        rows = csv.DictReader(Path(path).read_text().splitlines())
        return {(row["method"], row["env_id"]): row for row in rows if float(row.get("obs_noise", 0)) == 0}

    paper, ours = read(paper_csv), read(out / "table.csv")
    released = read(released_table) if released_table else {}
    order = list(paper)  # the paper's: TD3 then SAC; Base, CAPS, Grad-CAPS, ASAP, PAVE

    def in_paper(key):  # the paper's row for one of ours: the same method, or the script a -relu run ran
        return key[0].removesuffix("-relu"), key[1]

    keys = sorted((key for key in ours if in_paper(key) in paper), key=lambda key: (key[1], order.index(in_paper(key)), key[0]))
    if not keys:
        print(f"note: no method and env of {out / 'table.csv'} is in the paper's Tables 1-2; vs_paper.md not written")
        return

    def sm_to_base(table, method, env_id):  # sm over the same env's Base sm (td3 or sac), None without that Base
        base = table.get((family(method), env_id))
        return float(table[method, env_id]["sm_mean"]) / float(base["sm_mean"]) if base else None

    def cell(row, paper_row, side, name):  # "mean (std)" of one side, with the paper's digits for that number
        if side == "paper":
            return f"{paper_row[f'{name}_mean']} ({paper_row[f'{name}_std']})"
        digits = len(paper_row[f"{name}_mean"].partition(".")[2])
        return f"{row[f'{side}_{name}_mean']:.{digits}f} ({row[f'{side}_{name}_std']:.{digits}f})"

    rows, lines = [], [
        "Ours beside the paper's Tables 1-2: clean evaluation, mean (std over the pooled episodes of all seeds; the paper: "
        "5 seeds x 10 episodes); sm / Base is a method's sm over its family's Base sm on the same env (a -relu run, the "
        "paper text's ReLU Base, is beside the paper's Base)"
        + ("; IQM: the interquartile mean over our seeds' means with its 95% stratified-bootstrap CI over seeds" if estimates else "")
        + ("; \"released starts\": ours on the released evaluation's start states (released_starts/)." if released else "."),
        "", "| env | method | seeds | re (ours) | re (paper) | sm (ours) | sm (paper) | sm / Base (ours) | sm / Base (paper) |"
        + (" re IQM over seeds [95% CI] (ours) | sm IQM over seeds [95% CI] (ours) |" if estimates else "")
        + (" re (ours, released starts) | sm (ours, released starts) |" if released else ""),
        "|---" * (9 + 2 * bool(estimates) + 2 * bool(released)) + "|"]
    for method, env_id in keys:
        mine, theirs = ours[method, env_id], paper[in_paper((method, env_id))]
        row = {"method": method, "env_id": env_id, "seeds": int(mine["seeds"]), "episodes": int(mine["episodes"]),
               **{f"{side}_{name}_{stat}": float(source[f"{name}_{stat}"]) for side, source in (("ours", mine), ("paper", theirs))
                  for name in ("return", "sm") for stat in ("mean", "std")},
               "ours_sm_to_base": sm_to_base(ours, method, env_id), "paper_sm_to_base": sm_to_base(paper, *in_paper((method, env_id)))}
        if estimates:
            row.update({f"ours_{name}_iqm{suffix}": value for name in ("return", "sm") for suffix, value in
                        zip(("", "_low", "_high"), estimates["table", env_id, method, 0.0, name])})
        if released:
            row.update({f"released_starts_{name}_{stat}": float(released[method, env_id][f"{name}_{stat}"])
                        for name in ("return", "sm") for stat in ("mean", "std")})
        rows.append(row)
        cells = [cell(row, theirs, side, name) for name in ("return", "sm") for side in ("ours", "paper")]
        cells += ["" if row[key] is None else f"{row[key]:.2f}" for key in ("ours_sm_to_base", "paper_sm_to_base")]
        cells += [format_interval(*(row[f"ours_{name}_iqm{suffix}"] for suffix in ("", "_low", "_high")),
                                  len(theirs[f"{name}_mean"].partition(".")[2])) for name in ("return", "sm")] if estimates else []
        cells += [cell(row, theirs, "released_starts", name) for name in ("return", "sm")] if released else []
        lines.append(f"| {short_env(env_id)} | {method} | {row['seeds']} | {' | '.join(cells)} |")
    write_rows(out / "vs_paper.csv", rows)
    (out / "vs_paper.md").write_text("\n".join(lines) + "\n")


def publish_per_seed(out, rows, estimates):
    """per_seed.csv and per_seed.md: each run's clean evaluation on its own (rows: seed_means of the table's clean
    episodes: return, sm, action change), the spread that the pooled tables fold in; per method also the mean with its
    std over the seeds' means and the IQM over seeds with its 95% bootstrap CI (estimates: seed_statistics)."""
    rows = [row for row in rows if row["obs_noise"] == 0]
    write_rows(out / "per_seed.csv", [{key: value for key, value in row.items() if key != "obs_noise"} for row in rows])
    lines = []
    for env_id in dict.fromkeys(row["env_id"] for row in rows):
        seeds = list(dict.fromkeys(row["seed"] for row in rows if row["env_id"] == env_id))  # episodes.csv's: released first
        cells = by_cell(row for row in rows if row["env_id"] == env_id)
        lines += [f"{env_id}: return / sm of each training seed's checkpoint (mean over its clean episodes); per method the "
                  "mean (std over its seeds' means) and the IQM over its seeds [95% bootstrap CI over seeds]", "",
                  "| method | " + " | ".join(map(str, seeds)) + " | mean (std over seeds) | IQM over seeds [95% CI] |",
                  "|---" * (len(seeds) + 3) + "|"]
        for (_, method, sigma), mine in sorted(cells.items(), key=lambda item: method_key(item[0][1])):
            spread = " / ".join(f"{np.mean(values):.{digits}f}" + (f" ({np.std(values):.{digits}f})" if len(values) > 1 else "")
                                for metric, (_, _, digits) in METRICS.items() for values in [[row[metric] for row in mine.values()]])
            iqm = " / ".join(format_interval(*estimates["table", env_id, method, sigma, metric], digits)
                             for metric, (_, _, digits) in METRICS.items())
            lines.append(f"| {method} | " + " | ".join(f"{mine[seed]['return']:.1f} / {mine[seed]['sm']:.3f}" if seed in mine
                                                       else "" for seed in seeds) + f" | {spread} | {iqm} |")
        lines.append("")
    (out / "per_seed.md").write_text("\n".join(lines))


def parse_publish_args(argv):
    parser = argparse.ArgumentParser(prog=f"{PROG} publish", description="Regenerate every table and figure of a finished study "
                                     "from its checkpoints, TensorBoard events and logs, without training")
    parser.add_argument("--study", type=Path, required=True, help="the study folder (benchmark.py's --out), with runs/ and logs/")
    parser.add_argument("--out", type=Path, help="where the tables and figures go (default: the study folder's parent)")
    parser.add_argument("--episodes", type=int, default=10, help="clean evaluation episodes per checkpoint (the paper's 10)")
    parser.add_argument("--noise", nargs="+", type=float, default=list(NOISE_LEVELS),
                        help="observation noise levels of Table 3, evaluated besides sigma 0 (default: 0.01 0.05 0.1)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="publish only the runs of these training seeds (default: every seed found), e.g. the seeds "
                             "that every method has finished")
    parser.add_argument("--more-episodes", type=int, default=100,
                        help="clean episodes per checkpoint of the start-state check in more_episodes/ (0: skip it)")
    parser.add_argument("--paper-tables", type=Path, default=REPO / "results" / "paper_tables.csv",
                        help="the paper's Tables 1-2 as CSV, for vs_paper.md (default: results/paper_tables.csv)")
    parser.add_argument("--released-starts", type=Path, default=REPO / "results" / "released_eval_seeds.txt",
                        help="env seeds of the released evaluation's start states, one per line ('#' comments), for "
                             "released_starts/ (default: results/released_eval_seeds.txt; 'none' skips it)")
    parser.add_argument("--qfield-seed", type=int,
                        help="training seed whose checkpoints' Q-gradient fields are drawn (default: the first released seed, 178132)")
    parser.add_argument("--bootstrap-reps", type=int, default=BOOTSTRAP_REPS,
                        help=f"resamples of each stratified-bootstrap CI over seeds (rliable; default {BOOTSTRAP_REPS})")
    return parser.parse_args(argv)


def publish_statistics(out, evaluated, paper_tables, reps):
    """Publish's statistics step: intervals, paired, vs_paper, per_seed and return_vs_sm from the per-seed means of the
    evaluations that succeeded in this publish (evaluated = {evaluation: its folder}; never an older publish's files);
    returns the exit status (1 without the table's evaluation)."""
    if "table" not in evaluated:
        print("statistics: not computed, the evaluation failed")
        return 1
    per_seed = {name: seed_means(evaluated[name]) for name in EVALUATIONS if name in evaluated}
    estimates = seed_statistics(per_seed, reps)
    publish_intervals(out, {name: evaluated[name] for name in per_seed}, per_seed, estimates, reps)
    publish_paired(out, paired_comparisons(per_seed))
    released_table = evaluated["released_starts"] / "table.csv" if "released_starts" in evaluated else None
    publish_paper_comparison(out, paper_tables, released_table, estimates)
    publish_per_seed(out, per_seed["table"], estimates)
    plot_return_vs_sm([row for row in per_seed["table"] if row["obs_noise"] == 0], out / "return_vs_sm.png")
    return 0


PAPER_COLUMNS = ("method", "env_id", "return_mean", "return_std", "sm_mean", "sm_std")  # what vs_paper reads of --paper-tables


def publish_inputs(args):
    """Every check of publish's input, made before anything is written: (problem, None) with one line naming the first
    problem found, or (None, inputs) with inputs = (every run found {Run: checkpoint or None}, the finished ones, the
    released start seeds, {finished run: its --learning-starts})."""
    if not args.study.is_dir():
        return f"--study {args.study}: no such folder", None
    if not (args.study / "runs").is_dir():
        return f"--study {args.study}: no runs/ folder in it (a study folder as benchmark.py writes it)", None
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        return f"--out {args.out}: exists and is not a folder", None
    if args.episodes <= 0 or args.bootstrap_reps <= 0 or args.more_episodes < 0 or any(sigma < 0 for sigma in args.noise):
        return "--episodes and --bootstrap-reps must be positive, --more-episodes and every --noise level non-negative", None
    if not args.paper_tables.is_file():
        return f"--paper-tables {args.paper_tables}: no such file", None
    missing = [c for c in PAPER_COLUMNS if c not in next(csv.reader(args.paper_tables.read_text().splitlines()), [])]
    if missing:
        return f"--paper-tables {args.paper_tables}: no {', '.join(missing)} column (results/paper_tables.csv's layout)", None
    released_starts = []
    if str(args.released_starts) != "none":
        try:
            released_starts = [line.strip() for line in args.released_starts.read_text().splitlines()
                               if line.strip() and not line.startswith("#")]
        except OSError as error:
            return f"--released-starts {args.released_starts}: {error.strerror or error}", None
        if not released_starts or not all(seed.isdigit() for seed in released_starts):
            return f"--released-starts {args.released_starts}: not a list of non-negative integer env seeds", None
    runs = found_runs(args.study)
    unknown = sorted(set(args.seeds or ()) - {run.seed for run in runs})
    if unknown:
        return f"--seeds {' '.join(map(str, unknown))}: no run of {'that seed' if len(unknown) == 1 else 'those seeds'} in " \
               f"{args.study / 'runs'}", None
    if args.seeds:
        runs = {run: checkpoint for run, checkpoint in runs.items() if run.seed in args.seeds}
    finished = {run: checkpoint for run, checkpoint in runs.items() if checkpoint}
    if not finished:
        seeds = f" of seed(s) {' '.join(map(str, args.seeds))}" if args.seeds else ""
        return f"no finished run{seeds} in {args.study / 'runs'} ({len(runs)} found; a finished run has its <variant>.pt)", None
    if args.qfield_seed is not None and args.qfield_seed not in {run.seed for run in finished}:
        return f"--qfield-seed {args.qfield_seed}: no finished run of that seed in {args.study / 'runs'}", None
    import torch  # here, not at the top: --help and the checks above need neither torch nor the tools

    import eval_smoothness

    learning_starts = {}
    for run, checkpoint in finished.items():  # a checkpoint every step can read, or a line naming the one that is not
        try:
            eval_smoothness.load_policy(checkpoint)
        except eval_smoothness.CheckpointError as error:
            return f"{checkpoint}: {error}", None
        learning_starts[run] = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["args"].get("learning_starts", 0))
    return None, (runs, finished, released_starts, learning_starts)


def publish(argv):
    """`python benchmark.py publish`: the module docstring's Publish paragraph; returns the exit status."""
    args = parse_publish_args(argv)
    problem, inputs = publish_inputs(args)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    runs, finished, released_starts, learning_starts = inputs
    out = args.out or args.study.resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    print(f"publish: {len(finished)} finished run(s) of {len(runs)} found in {args.study}; writing into {out}")
    for run, why in missing_runs(runs, args.study):
        print(f"missing: {run.name} ({why})")

    import matplotlib  # here, not at the top: --help and bad input need neither it nor torch

    matplotlib.use("Agg")
    import eval_smoothness

    def tool(name, argv):  # a tool's CLI (plot_qfield, critic_geometry), imported here so that a problem with it is one failed step
        return importlib.import_module(name).main(argv)

    qfield_seed = eval_smoothness.RELEASED_SEEDS[0] if args.qfield_seed is None else args.qfield_seed
    released = eval_smoothness.RELEASED_SEEDS

    def order(run):  # the tables' order: env, TD3 then SAC, Base CAPS Grad-CAPS ASAP PAVE then others, released seeds first
        return (run.env_id, *method_key(run.variant.name), released.index(run.seed) if run.seed in released else len(released),
                run.seed)

    finished = {run: finished[run] for run in sorted(finished, key=order)}
    checkpoints = list(map(str, finished.values()))
    loaded, evaluated = {}, {}  # evaluated: {evaluation: its folder} once it succeeded here (never an older run's files)

    def events(run):  # each run's TensorBoard events, read once for the curves and the runs table
        if run not in loaded:
            loaded[run] = run_events(finished[run].parent)
        return loaded[run]

    def evaluate(name, folder, flags):  # eval_smoothness.py's CLI on every checkpoint into folder; remembered if it succeeded
        status = eval_smoothness.main([*checkpoints, *flags, "--out-dir", str(folder), "--no-progress-bar"])
        if not status:
            evaluated[name] = folder
        return status

    def evaluate_tables():  # the table (clean and noisy) and, if it succeeded, the released start states
        status = evaluate("table", out, ["--episodes", str(args.episodes), "--noise", "0", *map(str, args.noise), "--plot"])
        return status or (evaluate("released_starts", out / "released_starts", ["--env-seeds", *released_starts])
                          if released_starts else 0)

    steps = [("evaluation (eval_smoothness.py: the tables, released start states)", evaluate_tables)]
    if args.more_episodes:
        steps.append((f"start-state check, {args.more_episodes} episodes (eval_smoothness.py)",
                      lambda: evaluate("more_episodes", out / "more_episodes", ["--episodes", str(args.more_episodes)])))
    steps += [("statistics over seeds (rliable): intervals.md, paired.md, vs_paper.md, per_seed.md, return_vs_sm.png",
               lambda: publish_statistics(out, evaluated, args.paper_tables, args.bootstrap_reps)),
              ("learning curves", lambda: publish_learning_curves(finished, events, learning_starts, out))]
    for algo in dict.fromkeys(algo_of(run) for run in finished):
        family_checkpoints = [str(path) for run, path in finished.items() if algo_of(run) == algo and run.seed == qfield_seed]
        if not family_checkpoints:
            print(f"note: no {algo} checkpoint of seed {qfield_seed}; qfield_{algo}.png not drawn (--qfield-seed picks the seed)")
            continue
        steps.append((f"Q-gradient field of {algo} (plot_qfield.py)", lambda c=family_checkpoints, a=algo: tool("plot_qfield",
            [*c, "--out", str(out / f"qfield_{a}.png"), "--csv", str(out / f"qfield_{a}.csv")])))
    steps.append(("critic geometry (critic_geometry.py)", lambda: tool("critic_geometry",
        [*checkpoints, "--episodes", str(args.episodes), "--out-dir", str(out / "geometry")])))
    steps.append(("runs table", lambda: publish_runs_table(finished, events, out)))

    def files():  # what publish writes: files in --out and in its more_episodes/, released_starts/ and geometry/ folders
        return [path for folder in (out, out / "more_episodes", out / "released_starts", out / "geometry") if folder.is_dir()
                for path in folder.iterdir() if path.is_file()]

    failed = []
    for name, work in steps:
        before = {path: path.stat().st_mtime_ns for path in files()}
        try:
            status, problem = work(), "its messages are above"
        except SystemExit as stop:  # a tool's own exit (tyro on bad flags)
            status, problem = (stop.code if isinstance(stop.code, int) or stop.code is None else 1), "its messages are above"
        except Exception as error:
            status, problem = 1, f"{type(error).__name__}: {error}"
        for path in sorted(p for p in files() if before.get(p) != p.stat().st_mtime_ns):
            print(f"wrote {path}")
        if status:
            failed.append(name)
            print(f"{PROG}: error: publish: {name} failed (exit status {status}; {problem})", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(steps)} step(s) failed: {', '.join(failed)}")
        return 1
    print(f"published {len(finished)} run(s) into {out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
def parse_study_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                                     epilog="Throughput or publishing a finished study instead: python benchmark.py throughput --help, "
                                            "python benchmark.py publish --help")
    study = parser.add_mutually_exclusive_group(required=True)
    study.add_argument("--suite", help=f"a named study: {', '.join(SUITES)}")
    study.add_argument("--scripts", nargs="+", help="training scripts of an explicit study (relative to the repository, or paths)")
    parser.add_argument("--env-ids", nargs="+", help="override the suite's envs")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="training seeds (default: the released runs' five in their order, eval_smoothness.RELEASED_SEEDS)")
    parser.add_argument("--extra", default="", help='flags for every run, one string: --extra "--total-timesteps 20000"')
    parser.add_argument("--noise-levels", nargs="+", type=float,
                        help="observation noise levels evaluated for Table 3 (noise suite: 0.01 0.05 0.1)")
    parser.add_argument("--paper-text-activations", action="store_true",
                        help="the paper text's ReLU for every method but PAVE (default: the released code's SiLU everywhere)")
    parser.add_argument("--grid", nargs="+", type=float, help=f"sensitivity suite: the values of each lambda (default {SENSITIVITY_GRID})")
    parser.add_argument("--out", type=Path, help="the study folder (default: studies/<suite>)")
    parser.add_argument("--backend", default="local", choices=["local", "ray"])
    parser.add_argument("--workers", type=int, help="local backend: runs at once (default: CPU cores / --cpus-per-run)")
    parser.add_argument("--address", default="auto",
                        help="ray backend: the cluster to join (auto: the one started on this node; local: a new one just for this study)")
    parser.add_argument("--ray-ship-code", action=argparse.BooleanOptionalAction, default=True,
                        help="ray backend: send this repository with the tasks (no: it is at the same path on every node)")
    parser.add_argument("--cpus-per-run", type=int, default=1, help="CPUs a run declares to Ray and its OMP_NUM_THREADS")
    parser.add_argument("--gpus-per-run", type=float, default=0, help="GPUs a run declares to Ray (fractions share a GPU)")
    parser.add_argument("--checkpoint-freq", type=int, default=10_000,
                        help="env steps between the runs' resumable states, from which an interrupted run resumes (0: only when stopped)")
    parser.add_argument("--stages", type=int, nargs="+",
                        help="advance every run to each of these steps in turn (each run stops there with its resumable state; "
                             "a stage is started when every run has reached the one before); the last is normally the runs' "
                             "--total-timesteps (docs/studies.md)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="skip runs whose checkpoint exists (the default)")
    again.add_argument("--force", action="store_true", help="rerun every run, replacing what it wrote before")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--report-only", action="store_true", help="no training: report on the runs already in --out")
    parser.add_argument("--no-report", action="store_true", help="train only")
    parser.add_argument("--episodes", type=int, default=10, help="clean evaluation episodes per run for the tables (the paper's 10)")
    parser.add_argument("--noise-episodes", type=int,
                        help="evaluation episodes per run and noise level (default: Table 3's 20, eval_smoothness.NOISE_EPISODES)")
    args = parser.parse_args(argv)
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


def stop_as_on_ctrl_c(signum, frame):
    """SIGTERM handler: stop as Ctrl-C does (the runs save their resumable states); by default SIGTERM would kill this
    process alone and leave its runs, each in its own session, training on unwatched."""
    raise KeyboardInterrupt


def stop_on_sigint_and_sigterm():
    """Every command stops on SIGINT and SIGTERM alike, as on Ctrl-C (KeyboardInterrupt: the runs it started, each in its
    own session, save their resumable states), however it was started: a background job of a non-interactive shell
    (`cmd &` in a script, nohup, many job runners) starts with SIGINT ignored, and Python then keeps it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)


def main(argv=None):
    """Run one command; returns its exit status, with the SIGINT and SIGTERM handlers it found restored (for callers in
    Python, such as the tests)."""
    argv = sys.argv[1:] if argv is None else argv
    found = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop_on_sigint_and_sigterm()
    try:
        if argv[:1] == ["throughput"]:
            return throughput(argv[1:])
        if argv[:1] == ["threads"]:
            return threads(argv[1:])
        if argv[:1] == ["publish"]:
            return publish(argv[1:])
        return study_command(argv)
    finally:
        for signum, handler in found.items():
            signal.signal(signum, handler)


def study_command(argv):
    args = parse_study_args(argv)
    study = build_study(args)
    out = (args.out or Path("studies") / study.name).resolve()
    if args.report_only:
        if not (out / "runs").is_dir():
            fail(f"--report-only: no runs folder in {out}")
        write_report(study, out, args)
        return 0
    for stage in args.stages or [None]:
        failed = run_study(study, out, args, stage)
        if failed and not args.dry_run:
            break  # a later stage starts only when every run has reached this one
    if not args.dry_run and not args.no_report:
        write_report(study, out, args)
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(run.name for run in failed)} (logs in {out / 'logs'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
