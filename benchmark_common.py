"""What benchmark.py's commands share (the study runner, publish.py and the timing commands import it; it imports none
of them): the names of a study's runs (Variant, Run) and finding them in a study folder (at a step, too), the method
list, running one process, reading a run's TensorBoard scalars and wall time, learning curves averaged over seeds, and
how every command stops on SIGINT and SIGTERM."""

import glob
import logging
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parent
PROG = "benchmark.py"
METHODS = {"": "Base", "_caps": "CAPS", "_gradcaps": "Grad-CAPS", "_asap": "ASAP", "_pave": "PAVE"}
NOISE_LEVELS = (0.01, 0.05, 0.1)
LOG_TAIL_LINES = 15
STOP_POLL_SECONDS = 2  # Ray backend: how often a task asks whether the study was stopped


def fail(message):
    sys.exit(f"{PROG}: error: {message}")



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
    # an interrupted run's resumable state, relative to --out
    resume: Optional[Path] = field(default=None, compare=False)
    # --stages: the step this run is advanced to, then stops
    stop_at: Optional[int] = field(default=None, compare=False)

    @property
    def name(self):
        return f"{self.env_id}__{self.variant.name}__{self.seed}"

    def arguments(self, extra):
        """The training script's command-line arguments (the interpreter and script path depend on the node)."""
        return ["--env-id", self.env_id, "--seed", str(self.seed), "--exp-name", self.variant.name, "--save-model",
                "--no-progress-bar", *self.variant.flags, *extra,
                *(["--resume", str(self.resume)] if self.resume else []),
                *(["--stop-at-step", str(self.stop_at)] if self.stop_at else [])]

    def folders(self, out):
        return sorted(glob.glob(f"{out}/runs/{self.name}__*"))

    def checkpoint(self, out):
        """The newest checkpoint of this run in the study folder, or None while it has not finished."""
        found = sorted(glob.glob(f"{out}/runs/{self.name}__*/{self.variant.name}.pt"))
        return Path(found[-1]) if found else None




def script_path(script):
    path = Path(script)
    return path if path.is_absolute() else REPO / path



def family(method):
    """A method's algorithm family: its name up to the first '-' or '_' (td3_pave: td3, sac-relu: sac)."""
    return method.split("-")[0].split("_")[0]



def run_process(command, cwd, log_path, env, on_start=None, stop_requested=None):
    """Run one command with its output appended to log_path, in its own session (Ctrl-C in the terminal does not reach
    it). With `stop_requested`, a function polled every STOP_POLL_SECONDS while the command runs: once it returns True,
    the command gets SIGTERM (a training script then saves its resumable state and exits)."""
    with open(log_path, "a") as log:
        log.write(f"$ cd {cwd} && {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
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




def short_env(env_id):
    return env_id.split("-v")[0]


def run_events(run_dir):
    """A run's TensorBoard events, read once, every scalar point kept (an EventAccumulator). A resumed run repeats the
    steps after its last saved state in a new events file; the reader keeps the later file's points and drops the
    earlier ones (TensorBoard's purge), which is right, so its warning about it is not printed."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    tensorboard_log = logging.getLogger("tensorboard")
    level = tensorboard_log.level
    tensorboard_log.setLevel(logging.ERROR)
    try:
        events.Reload()
    finally:
        tensorboard_log.setLevel(level)
    return events


def scalars(run_dir, tag, events=None):
    """(steps, values) of one TensorBoard scalar of a run, empty arrays if it was never logged (events:
    run_events(run_dir) when already read)."""
    events = run_events(run_dir) if events is None else events
    if tag not in events.Tags()["scalars"]:
        return np.array([]), np.array([])
    points = events.Scalars(tag)
    return np.array([p.step for p in points]), np.array([p.value for p in points])


CURVE_BINS = 50  # learning curves: at most this many bins over the steps (no more than the longest curve has points)


def run_folder(checkpoint):
    """The run folder of a final checkpoint (<run>/<variant>.pt) or of a model checkpoint (<run>/checkpoints/...)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


class EventsUpTo:
    """A run's events (run_events) as far as training step `step`: publish --step cuts curves, steps and SPS there."""

    def __init__(self, events, step):
        self.events, self.step = events, step

    def Tags(self):  # noqa: N802 (EventAccumulator's names)
        return self.events.Tags()

    def Scalars(self, tag):  # noqa: N802
        return [point for point in self.events.Scalars(tag) if point.step <= self.step]

    def FirstEventTimestamp(self):  # noqa: N802
        return self.events.FirstEventTimestamp()


def training_seconds(run_dir, step=None):
    """(seconds, segments) of a run: per TensorBoard events file (a script writes one per start, so a resumed run has
    one per segment), its last scalar's wall time minus its first event's, which the SummaryWriter writes as it starts;
    summed, so the pauses between segments are left out (the steps a resumed run repeats after its last saved state are
    counted). Start-up, torch.compile and the final evaluation are included. With `step`, only scalars logged at steps
    up to it count (a segment with none is left out)."""
    seconds, segments = 0.0, 0
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        segment = run_events(path) if step is None else EventsUpTo(run_events(path), step)
        times = [point.wall_time for tag in segment.Tags()["scalars"] for point in segment.Scalars(tag)]
        if times:
            seconds, segments = seconds + max(times) - segment.FirstEventTimestamp(), segments + 1
    return seconds, segments


def step_checkpoint(run, study, step):
    """A run's model checkpoint at training step `step`: checkpoints/<variant>_step<step>.pt of its newest folder, or
    its final <variant>.pt if the run ended at that step; None if it has neither."""
    folders = run.folders(study)
    saved = Path(folders[-1], "checkpoints", f"{run.variant.name}_step{step}.pt") if folders else None
    final = Path(folders[-1], f"{run.variant.name}.pt") if folders else None
    if saved is None or saved.is_file():
        return saved
    if final.is_file():
        import torch

        try:
            return final if torch.load(final, map_location="cpu",
                                       weights_only=True).get("global_step") == step else None
        except Exception:  # unreadable: publish's checks report it
            return final
    return None


def found_runs(study, step=None):
    """{Run: checkpoint or None} of every run a study folder shows by benchmark.py's names: a run folder
    runs/<env>__<variant>__<seed>__<unix time>/ or a log logs/<env>__<variant>__<seed>.log. The checkpoint is
    Run.checkpoint's (the newest folder's <variant>.pt), with `step` step_checkpoint's; the Run's script is the variant
    name up to its first '-'."""
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
            runs[run] = run.checkpoint(study) if step is None else step_checkpoint(run, study, step)
    return runs


def missing_runs(runs, study, step=None):
    """[(run, why)]: per env, every method x seed of the runs found there that has no checkpoint (at `step`, if
    given)."""
    missing = []
    for env_id in sorted({run.env_id for run in runs}):
        variants = {run.variant for run in runs if run.env_id == env_id}
        seeds = sorted({run.seed for run in runs if run.env_id == env_id})
        for run in (Run(variant, env_id, seed) for variant in sorted(variants, key=lambda v: v.name) for seed in seeds):
            if runs.get(run):
                continue
            if run.folders(study) and step is not None:
                why = f"no model checkpoint at step {step} in its run folder: not there yet, or saved at other steps"
            elif run.folders(study):
                why = f"its run folder has no {run.variant.name}.pt: unfinished or failed"
            elif (study / "logs" / f"{run.name}.log").exists():
                why = "a log but no run folder: failed at start"
            else:
                why = "no run folder or log: not started"
            missing.append((run, why))
    return missing


def mean_over_seeds(curves, bins=CURVE_BINS, start=0, spread="std"):
    """(steps, mean, std) of one method's learning curve from its seeds' curves [(steps, values)], on a common grid:
    [start, the last step of any seed] cut into equal bins (e_k, e_k+1] (at most `bins`, no more than the longest curve
    has points; an episode counts at the step it ended, and episodes that ended by `start` are left out); each seed's
    points are averaged per bin, then mean and std (ddof 0) go over the seeds with points in the bin. A bin is shown at
    its centre; bins no seed has points in are left out. spread="range": (steps, mean, (lowest, highest seed))."""
    curves = [(np.asarray(steps), np.asarray(values)) for steps, values in curves]
    curves = [(steps[steps > start], values[steps > start]) for steps, values in curves if (steps > start).any()]
    if not curves:
        return np.array([]), np.array([]), (np.array([]), np.array([])) if spread == "range" else np.array([])
    n = min(bins, max(len(steps) for steps, _ in curves))
    edges = np.linspace(start, max(steps[-1] for steps, _ in curves), n + 1)
    per_seed = np.full((len(curves), n), np.nan)
    for k, (steps, values) in enumerate(curves):
        index = np.clip(np.searchsorted(edges, steps, side="left") - 1, 0, n - 1)
        counts = np.bincount(index, minlength=n)
        per_seed[k, counts > 0] = (np.bincount(index, weights=values, minlength=n) / np.maximum(counts, 1))[counts > 0]
    kept = ~np.isnan(per_seed).all(axis=0)
    per_seed = per_seed[:, kept]
    return ((edges[:-1] + edges[1:])[kept] / 2, np.nanmean(per_seed, axis=0),
            (np.nanmin(per_seed, axis=0), np.nanmax(per_seed, axis=0)) if spread == "range"
            else np.nanstd(per_seed, axis=0))


def plot_mean_curves(ax, curves, ylabel, title, start=0, colors=None, band="std"):
    """One line per label of curves = {label: [(steps, values) per seed]}: mean_over_seeds (from `start`) with a +- one
    std band, or with band="range" one from the lowest to the highest seed (it stays positive on a log axis);
    colors = {label: colour} (default: matplotlib's cycle)."""
    for label, seed_curves in curves.items():
        steps, mean, spread = mean_over_seeds(seed_curves, start=start, spread=band)
        if len(steps):
            color = (colors or {}).get(label)
            ax.plot(steps, mean, marker="o" if len(steps) == 1 else None, label=label, color=color)
            lower, upper = spread if band == "range" else (mean - spread, mean + spread)
            ax.fill_between(steps, lower, upper, alpha=0.2, color=ax.get_lines()[-1].get_color())
    ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
    ax.grid(alpha=0.3)




def stop_as_on_ctrl_c(signum, frame):
    """SIGTERM handler: stop as Ctrl-C does (the runs save their resumable states); by default SIGTERM would kill this
    process alone and leave its runs, each in its own session, training on unwatched."""
    raise KeyboardInterrupt


def stop_on_sigint_and_sigterm():
    """Every command stops on SIGINT and SIGTERM alike, as on Ctrl-C (KeyboardInterrupt: the runs it started, each in
    its own session, save their resumable states), however it was started: a background job of a non-interactive shell
    (`cmd &` in a script, nohup, many job runners) starts with SIGINT ignored, and Python then keeps it ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)


