"""Run control for the training scripts: what running needs but learning does not.

Flag checks and presets, logging setup, the progress bar and log lines, model checkpoints, resumable states with an
exact resume, stop signals, and the command line entry point. Nothing here decides what is learned: every training
script keeps its networks, presets, replay buffer, loss and update loop inline and hands this module what it needs
(its Args, presets, state dicts, checkpoint format). Imports run one way: this module imports no training script.
docs/studies.md describes stopping and resuming.
"""

import difflib
import os
import random
import signal
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from eval_smoothness import action_change, evaluate

CHECKPOINT_FORMAT = "pave-checkpoint/1"
RESUME_FORMAT = "pave-resume/1"
# The paper's ids that Gymnasium 1.x cannot run, mapped to the same task (MuJoCo -v2/-v3 ids by modern_env_id's rule).
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
MUST_BE_POSITIVE = {"total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_frequency",
                    "target_network_frequency", "geometry_freq", "geometry_batch", "log_freq", "pave_batch",
                    "torch_threads"}
# Flags a resumed run may change: they cannot change what is learned (docs/studies.md says why each); --cuda and
# --torch-threads and --flush-denormal are exact only with the values that saved the state.
RESUME_MAY_CHANGE = {"resume", "stop_at_step", "checkpoint_freq", "model_checkpoints", "model_checkpoint_every",
                     "log_freq", "progress_bar", "total_timesteps", "track", "wandb_project_name", "wandb_entity",
                     "cuda", "torch_threads", "flush_denormal", "save_model", "eval_episodes"}
# Flag values renamed since states were saved: the old name still works and means the new one.
RENAMED_VALUES = {"pave_impl": {"fused": "written-out"}}
LOOP_KEYS = ("global_step", "n_updates", "last_log", "losses", "recent_returns", "elapsed", "train_elapsed",
             "episode_return", "episode_rng_state")


@dataclass
class RunFlags:
    """The flags of running a training script, not of what it learns: every script's Args extends this (they come
    first on the command line). Logging, model checkpoints, resumable states and stops: docs/studies.md."""

    track: bool = False
    """log to Weights & Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "pave"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""
    save_model: bool = False
    """save a checkpoint to the run directory, then evaluate it (eval/return, eval/sm)"""
    eval_episodes: int = 10
    """evaluation episodes after training with --save-model"""
    progress_bar: bool = True
    """show a progress bar with steps, recent return and SPS"""
    log_freq: int = 1_000
    """env steps between loss/SPS logs"""
    checkpoint_freq: int = 0
    """env steps between resumable states (<run dir>/resume.pt, the one before kept as resume.prev.pt); 0: only on
    stop"""
    model_checkpoints: int = 0
    """save the --save-model checkpoint at N evenly spaced steps, to <run dir>/checkpoints/ (docs/studies.md); 0:
    none"""
    model_checkpoint_every: int = 0
    """also save it at every multiple of this step (fixed steps: a run extended later keeps them); 0: none"""
    resume: Optional[str] = None
    """continue the run that saved this resumable state, in its run directory and with its flags (docs/studies.md)"""
    stop_at_step: Optional[int] = None
    """simulate an interruption at this step: save the resumable state and exit as on SIGTERM (splits a run in two)"""
    flush_denormal: bool = False
    """speed path on CPU: compute with floats below 1.2e-38 (denormals) as 0; SiLU critics late in training make them,
    and each costs the CPU many cycles (docs/performance.md); not bit-identical to a run without it"""


class BadInput(ValueError):
    """A flag, env or file that a run refuses; its message is the one line the command line prints."""


def refuse(prog, message):
    raise BadInput(f"{prog}: error: {message}")


def modern_env_id(env_id):
    """The id Gymnasium 1.x runs for the paper's task: LunarLanderContinuous-v2 and Reacher-v2 as PAPER_ENV_IDS says,
    and a MuJoCo -v2/-v3 id (they need the retired mujoco-py) as its -v5."""
    name, _, version = env_id.rpartition("-v")
    if env_id in PAPER_ENV_IDS:
        return PAPER_ENV_IDS[env_id]
    if version in ("2", "3") and f"{name}-v5" in gym.registry:
        return f"{name}-v5"
    return env_id


def renamed(name, value):
    """A flag's value under its current name (RENAMED_VALUES)."""
    return RENAMED_VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value


def resolve_args(args, prog, presets, default_preset, resumed=None, check=None):
    """Validate the flags and fill every field the user left unset from the env's presets; with a resumed state, refuse
    a flag that differs from the saved run's (RESUME_MAY_CHANGE aside). `check(args)` adds a script's own checks (it
    returns a message or None). Raises BadInput with one line on bad input; returns args."""
    for name, value in asdict(args).items():
        setattr(args, name, renamed(name, value))
    if modern_env_id(args.env_id) != args.env_id:
        print(f"note: {args.env_id} (the paper's id) does not run in Gymnasium 1.x; running "
              f"{modern_env_id(args.env_id)}, the same task")
        args.env_id = modern_env_id(args.env_id)
    if args.env_id not in gym.registry:
        runnable = [env_id for env_id in gym.registry if modern_env_id(env_id) == env_id]
        close = difflib.get_close_matches(args.env_id, runnable, n=3, cutoff=0.6)
        refuse(prog, f"unknown env id '{args.env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    for name, value in asdict(args).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            refuse(prog, f"--{name.replace('_', '-')} must be non-negative, got {value}")
        if name in MUST_BE_POSITIVE and value is not None and value <= 0:
            refuse(prog, f"--{name.replace('_', '-')} must be positive, got {value}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        refuse(prog, f"--hidden-sizes must be one or more positive widths, got {args.hidden_sizes}")
    if check and check(args):
        refuse(prog, check(args))
    if getattr(args, "pave_batch", None) is not None and args.pave_batch > args.batch_size:  # a part of each batch
        refuse(prog, f"--pave-batch must be at most --batch-size ({args.batch_size}), got {args.pave_batch}")
    source = f"presets for {args.env_id}" if args.env_id in presets else f"defaults ({args.env_id} has no preset)"
    preset = {**default_preset, **presets.get(args.env_id, {})}
    unset = {name: value for name, value in preset.items() if getattr(args, name) is None}
    for name, value in unset.items():
        setattr(args, name, value)
    if unset:
        print(f"{source}: " + ", ".join(f"{name}={value}" for name, value in unset.items()))
    # a flag added after the state was saved must keep its default (the saved run did not have it)
    saved_args = {**asdict(type(args)()), **resumed["args"]} if resumed else {}
    for name, saved in saved_args.items():
        if name not in RESUME_MAY_CHANGE and getattr(args, name) != renamed(name, saved):
            refuse(prog, f"--{name.replace('_', '-')} {getattr(args, name)} conflicts with {saved}, the value of the "
                   f"run resumed from {args.resume}; a resumed run keeps its flags, except --"
                   + ", --".join(sorted(flag.replace("_", "-") for flag in RESUME_MAY_CHANGE)))
    if args.model_checkpoints > args.total_timesteps:
        refuse(prog, f"--model-checkpoints {args.model_checkpoints} exceeds --total-timesteps {args.total_timesteps}")
    if args.stop_at_step is not None and args.stop_at_step > args.total_timesteps:
        refuse(prog, f"--stop-at-step {args.stop_at_step} is beyond --total-timesteps {args.total_timesteps}")
    if resumed and args.stop_at_step is not None and args.stop_at_step <= resumed["global_step"]:
        refuse(prog, f"--stop-at-step {args.stop_at_step} is not after step {resumed['global_step']}, where "
               f"{args.resume} stopped")
    if args.stop_at_step == args.total_timesteps:  # stopping at the last step is finishing: the run saves its model
        args.stop_at_step = None
    if resumed and args.total_timesteps < resumed["global_step"]:
        refuse(prog, f"--total-timesteps {args.total_timesteps} is below step {resumed['global_step']} of "
               f"{args.resume}")
    if args.total_timesteps <= args.learning_starts:
        print(f"warning: --total-timesteps {args.total_timesteps} <= --learning-starts {args.learning_starts}: no "
              "gradient step is taken, the policy stays untrained", file=sys.stderr)
    return args


def prepare(args, prog, resolve, resumed=None):
    """(args resolved, run folder, resumed state or None) for train(): the state at --resume is loaded unless given,
    and a resumed run goes on in its own folder (TensorBoard drops what the stopped process logged after that step)."""
    if args.resume and resumed is None:
        resumed = load_resumable(args.resume, prog)
    args = resolve(args, resumed)
    if resumed:
        return args, os.path.dirname(args.resume) or ".", resumed
    return args, f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}", None


def main(train, Args, prog):
    """The command line: the flags (with --resume, the saved run's flags are the defaults), then train(). Bad input
    and an abort (a second Ctrl-C) end the process with one line and a non-zero status."""
    try:
        args = tyro.cli(Args)
        resumed = load_resumable(args.resume, prog) if args.resume else None
        if resumed:  # parse again with the saved run's flags as defaults; resolve_args refuses any that changed
            args = tyro.cli(Args, default=Args(**{k: renamed(k, v) for k, v in resumed["args"].items()}))
        train(args, resumed)
    except BadInput as error:
        sys.exit(str(error))
    except KeyboardInterrupt:  # Run's exit has said where the run stands
        sys.exit(1)


def start_logging(args, prog, run_dir, env, device, resumed, note=None):
    """Check the env's action space, set torch's CPU threads (and denormal mode), print the configuration, the device
    and `note`, and open the TensorBoard writer (and Weights & Biases with --track)."""
    if not isinstance(env.action_space, gym.spaces.Box):
        refuse(prog, f"{args.env_id} has a {type(env.action_space).__name__} action space; this algorithm needs "
               "continuous (Box) actions")
    torch.set_num_threads(args.torch_threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    # the mode the flag says, whatever an earlier run in this process set (it stays set after the run); set before
    # torch's thread pool starts, as a new thread inherits the floating-point mode of the one creating it
    flushing = torch.set_flush_denormal(args.flush_denormal) and args.flush_denormal
    print(f"{args.exp_name} configuration:\n" + "\n".join(f"  {k} = {v}" for k, v in asdict(args).items()))
    print(f"device: {device}" + (f" ({torch.get_num_threads()} torch threads"
                                 f"{', denormals flushed to 0' if flushing else ''})" if device.type == "cpu" else ""))
    if args.flush_denormal and not flushing:
        print("note: --flush-denormal: this CPU cannot flush denormals (it needs SSE3); the run computes with them")
    if note:
        print(note)
    if args.track:
        try:
            import wandb
        except ImportError:
            refuse(prog, "--track needs Weights & Biases: pip install wandb")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=os.path.basename(os.path.abspath(run_dir)), monitor_gym=True, save_code=True)
    writer = SummaryWriter(run_dir, purge_step=resumed["global_step"] + 1 if resumed else None)
    writer.add_text("hyperparameters",
                    "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    return writer


def checkpoint_header(args, step, prog, algo):
    """The fields every model checkpoint starts with (eval_smoothness.py, critic_geometry.py and plot_qfield.py read
    them, then rebuild the networks by importing the script named in `script`)."""
    return {"format": CHECKPOINT_FORMAT, "script": prog, "algo": algo, "env_id": args.env_id, "args": asdict(args),
            "global_step": step}


class StopSignal:
    """SIGTERM (a scheduler, Ray, benchmark.py) and Ctrl-C set `reason`, which the loop reads at the end of each env
    step, so that the run stops between two steps with a consistent state to save; a second Ctrl-C aborts at once (a
    repeated SIGTERM does not: a scheduler may send it to every process, and benchmark.py then again to its runs).
    release() puts back the handlers it found. Off the main thread it installs nothing: Python runs signal handlers in
    the main thread only."""

    def __init__(self):
        self.reason, self.found = None, None
        if threading.current_thread() is threading.main_thread():
            self.found = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            for sig in self.found:
                signal.signal(sig, self)

    def __call__(self, signum, frame):
        if self.reason and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = self.reason or signal.Signals(signum).name

    def release(self):
        for sig, handler in (self.found or {}).items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def save_atomically(obj, path, previous=None):
    """torch.save `obj` to `path` (its folder made if need be) atomically; with `previous`, the file `path` held before
    is kept under that name. Returns the path.

    torch.save writes a temporary file in the same folder, synced to disk, and os.replace puts it in place in one step:
    a run killed while saving leaves the older files as they were, and a newest file damaged all the same (a full disk,
    a truncated copy) still has the previous one beside it.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    if previous and os.path.exists(path):
        os.replace(path, previous)
    os.replace(path + ".tmp", path)
    return path


def load_resumable(path, prog):
    """The resumable state saved at `path` (loaded with weights_only=True: plain containers and tensors only); raises
    BadInput with one line that says what is wrong with the file. The file is never modified."""
    path = str(path)
    previous = os.path.join(os.path.dirname(path), "resume.prev.pt")
    has_previous = path.endswith("resume.pt") and os.path.isfile(previous)
    fallback = f"; the state saved before it is {previous}" if has_previous else ""
    if not os.path.isfile(path):
        refuse(prog, f"--resume {path}: no such file{fallback}")
    try:
        with zipfile.ZipFile(path) as archive:  # every member against its CRC: torch.load reads damaged bytes silently
            damaged = archive.testzip()
        problem = f"bad CRC in {damaged}" if damaged else None
        state = None if damaged else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = type(error).__name__
    if problem:
        refuse(prog, f"--resume {path}: not a readable torch.save file, truncated or corrupt ({problem}){fallback}")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        refuse(prog, f"--resume {path}: not a resumable state (the resume.pt a training script saves)")
    if state["script"] != prog:
        refuse(prog, f"--resume {path}: a state of {state['script']}, not of {prog}; resume it with {state['script']}")
    return state


class Run:
    """The training loop's run control, as a context around it: the steps to take, the episodes' charts, loss and SPS
    logs (a line per --log-freq without the progress bar), model checkpoints, resumable states and stop signals.

    `stateful` maps the names of the resumable state to what has a state_dict (networks, optimizers, replay buffer),
    `rngs` the script's own torch generators, `tensors` single tensors (SAC's log alpha); `checkpoint(step)` gives the
    model checkpoint to save. A resumed run starts with all of them as they were at the saved step."""

    def __init__(self, args, prog, run_dir, env, device, writer, stateful, rngs, checkpoint, tensors=None,
                 resumed=None):
        self.args, self.prog, self.run_dir, self.env, self.device = args, prog, run_dir, env, device
        self.writer = writer
        self.stateful, self.rngs, self.checkpoint, self.tensors = stateful, rngs, checkpoint, tensors or {}
        self.loop = self.restore(resumed) if resumed else self.fresh()
        self.obs, self.n_updates, self.losses = self.loop["obs"], self.loop["n_updates"], self.loop["losses"]
        self.global_step, self.stop, self.resume_path = self.loop["global_step"], None, None
        self.checkpoint_steps = {args.total_timesteps * k // args.model_checkpoints
                                 for k in range(1, args.model_checkpoints + 1)}

    def fresh(self):
        obs, _ = self.env.reset(seed=self.args.seed)
        return {"global_step": 0, "n_updates": 0, "last_log": 0, "losses": {}, "recent_returns": [], "elapsed": 0.0,
                "train_elapsed": None, "obs": obs, "episode_return": 0.0, "episode_actions": [],
                # the env's RNG state just before this episode's reset (None: the first, reset with seed=args.seed)
                "episode_rng_state": None}

    def restore(self, resumed):
        """Load a resumable state into the networks, optimizers, buffer, tensors and RNGs, and bring the env back to the
        saved step by replaying the current episode's actions from its reset (the physical state of MuJoCo or Box2D
        cannot be saved; the replay reproduces it and the env's RNG exactly). Returns the loop's bookkeeping."""
        args, env = self.args, self.env
        for name in ("qf", "qf_target"):  # a state saved while the critics were two modules qf1, qf2 (before Critics)
            if name not in resumed and name.replace("qf", "qf1") in resumed:
                parts = [resumed.pop(name.replace("qf", f"qf{i}")) for i in (1, 2)]
                resumed[name] = {f"{i}.{key}": value for i, part in enumerate(parts) for key, value in part.items()}
        for name, thing in self.stateful.items():
            thing.load_state_dict(resumed[name])
        with torch.no_grad():
            for name, tensor in self.tensors.items():
                tensor.copy_(resumed[name])
        random.setstate(resumed["rng"]["python"])
        bit_generator, key, *rest = resumed["rng"]["numpy"]
        np.random.set_state((bit_generator, np.array(key, dtype=np.uint32), *rest))
        torch.set_rng_state(resumed["rng"]["torch"])
        for name, generator in self.rngs.items():
            generator.set_state(resumed["rng"][name])
        if self.device.type == "cuda" and resumed["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"])
        loop = {name: resumed[name] for name in LOOP_KEYS}
        obs, _ = env.reset(seed=args.seed)
        if loop["episode_rng_state"] is not None:  # a later episode: reset from the RNG state its reset started from
            env.unwrapped.np_random.bit_generator.state = loop["episode_rng_state"]
            obs, _ = env.reset()
        loop["episode_actions"] = list(resumed["episode_actions"].numpy())
        for env_action in loop["episode_actions"]:
            obs, *_ = env.step(env_action)
        if not np.array_equal(obs, resumed["obs"].numpy()) or env.unwrapped.np_random.bit_generator.state != resumed[
                "env_rng_state"]:
            refuse(self.prog, f"replaying the current episode of {args.resume} did not reproduce its observation; "
                   f"{args.env_id} cannot be resumed exactly here")
        loop["obs"] = obs
        print(f"resumed {os.path.dirname(args.resume) or '.'} at step {loop['global_step']} of {args.total_timesteps}")
        return loop

    def save(self, path):
        """Save the resumable state (networks, optimizers, replay buffer, tensors, every RNG, the loop's bookkeeping and
        the current episode's actions) atomically to `path`, the previous one kept as resume.prev.pt."""
        loop, env = self.loop, self.env
        return save_atomically({
            "format": RESUME_FORMAT, "script": self.prog, "args": {**asdict(self.args), "stop_at_step": None},
            **{name: loop[name] for name in LOOP_KEYS},
            **{name: thing.state_dict() for name, thing in self.stateful.items()},
            **{name: tensor.detach() for name, tensor in self.tensors.items()},
            "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                    **{name: generator.get_state() for name, generator in self.rngs.items()},
                    "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
                    "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None},
            "obs": torch.tensor(loop["obs"]),
            "episode_actions": torch.tensor(np.array(loop["episode_actions"]).reshape(-1, env.action_space.shape[0])),
            "env_rng_state": env.unwrapped.np_random.bit_generator.state,
        }, path, previous=os.path.join(os.path.dirname(path), "resume.prev.pt"))

    def __enter__(self):
        args, loop = self.args, self.loop
        self.start_time = time.time() - loop["elapsed"]  # SPS charts go on as if a resumed run had not stopped
        self.train_start_time = None if loop["train_elapsed"] is None else time.time() - loop["train_elapsed"]
        self.stop_signal = StopSignal()
        self.progress = tqdm(total=args.total_timesteps, initial=loop["global_step"], disable=not args.progress_bar,
                             unit="step", mininterval=1.0)
        return self

    def __exit__(self, kind, error, traceback):
        self.progress.close()
        self.env.close()
        self.stop_signal.release()
        if kind is KeyboardInterrupt:  # a second Ctrl-C
            print(f"\n{self.prog}: aborted at step {self.global_step}; the last resumable state (if any) is in "
                  f"{self.run_dir}", file=sys.stderr)
        return False

    def steps(self):
        """The env steps still to take, 1-based."""
        return range(self.loop["global_step"] + 1, self.args.total_timesteps + 1)

    def episode_step(self, step, env_action, reward, next_obs, terminated, truncated):
        """Count the step into the episode; at its end, log the episode's charts and reset the env. Returns the obs the
        next step acts on."""
        loop = self.loop
        loop["episode_return"] += float(reward)
        loop["episode_actions"].append(env_action)
        if not (terminated or truncated):
            return next_obs
        self.writer.add_scalar("charts/episodic_return", loop["episode_return"], step)
        self.writer.add_scalar("charts/episodic_length", len(loop["episode_actions"]), step)
        self.writer.add_scalar("charts/action_change", action_change(np.array(loop["episode_actions"])), step)
        loop["recent_returns"] = (loop["recent_returns"] + [loop["episode_return"]])[-10:]
        loop["episode_rng_state"] = self.env.unwrapped.np_random.bit_generator.state
        loop["episode_return"], loop["episode_actions"] = 0.0, []
        return self.env.reset()[0]

    def recent(self):
        return f"{np.mean(self.loop['recent_returns']):.1f}" if self.loop["recent_returns"] else "-"

    def end_step(self, step, obs, n_updates):
        """At the end of each env step: losses and SPS every --log-freq, the progress bar, model checkpoints, and a
        resumable state every --checkpoint-freq or on a stop. Returns True when the run stops here."""
        args, loop, writer = self.args, self.loop, self.writer
        self.global_step = step
        if step > args.learning_starts and self.train_start_time is None:
            self.train_start_time = time.time()
        if step - loop["last_log"] >= args.log_freq and self.losses:
            loop["last_log"] = step
            for name, value in self.losses.items():  # .item() only here: no device sync per gradient step
                writer.add_scalar(f"losses/{name}", value.item(), step)
            sps = step / (time.time() - self.start_time)
            writer.add_scalar("charts/SPS", sps, step)
            writer.add_scalar("charts/SPS_train", (step - args.learning_starts) / (time.time() - self.train_start_time),
                              step)
            self.progress.set_postfix(ret=self.recent(), sps=f"{sps:.0f}")
            if not args.progress_bar:  # a log file (benchmark.py, a batch job) still shows the run advancing
                print(f"step {step}/{args.total_timesteps}: SPS {sps:.0f}, return of the last 10 episodes "
                      f"{self.recent()}", flush=True)
        self.progress.update(1)
        # before a stop at this step saves: a resumed run starts after it
        if step in self.checkpoint_steps or (args.model_checkpoint_every and step % args.model_checkpoint_every == 0):
            save_atomically(self.checkpoint(step), f"{self.run_dir}/checkpoints/{args.exp_name}_step{step}.pt")
        self.stop = self.stop_signal.reason or (step == args.stop_at_step and "--stop-at-step")
        if self.stop or (args.checkpoint_freq and step % args.checkpoint_freq == 0):
            loop.update(global_step=step, n_updates=n_updates, obs=obs, elapsed=time.time() - self.start_time,
                        train_elapsed=None if self.train_start_time is None else time.time() - self.train_start_time)
            self.resume_path = self.save(f"{self.run_dir}/resume.pt")
        return bool(self.stop)

    def finish(self, evaluate_model=True):
        """After the loop: a stopped run says how to resume it (never a final checkpoint: that one means finished); a
        finished one saves its model with --save-model and evaluates it. Both print a closing summary. Returns the
        run folder."""
        args, step, writer = self.args, self.global_step, self.writer
        elapsed = time.time() - self.start_time  # a resumed run's time before its stop included, as SPS charts have it
        sps = step / max(elapsed, 1e-9)
        print(f"{self.prog}: {step} of {args.total_timesteps} steps in {elapsed:.0f} s (SPS {sps:.0f}), return of the "
              f"last 10 episodes {self.recent()}", flush=True)
        if self.stop:
            writer.close()
            command = sys.argv[0] if os.path.basename(sys.argv[0]) == self.prog else self.prog  # as it was started
            print(f"stopped at step {step} ({self.stop}): resumable state saved to {self.resume_path}; resume with: "
                  f"python {command} --resume {self.resume_path}"
                  + (f" (to step {args.total_timesteps}; --stop-at-step N stops it again at N)"
                     if self.stop == "--stop-at-step" else ""))
            return self.run_dir
        if args.save_model:
            model_path = save_atomically(self.checkpoint(step), f"{self.run_dir}/{args.exp_name}.pt")
            print(f"model saved to {model_path}")
            result = evaluate(model_path, episodes=args.eval_episodes, device=str(self.device))
            writer.add_scalar("eval/return", float(np.mean(result["return"])), step)
            writer.add_scalar("eval/sm", float(np.mean(result["sm"])), step)
            print(f"eval over {args.eval_episodes} episodes: return {np.mean(result['return']):.2f}, "
                  f"sm {np.mean(result['sm']):.4f}")
        writer.close()
        return self.run_dir
