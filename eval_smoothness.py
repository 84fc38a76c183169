"""Return, smoothness and observation-noise robustness of trained policies, as the PAVE paper reports them (Tables 1-3).

Every checkpoint written by a training script with --save-model is rebuilt with that script's own `Actor` and run for
deterministic episodes (TD3: the actor's output; SAC: tanh of the mean), all episodes of a checkpoint in parallel in one
vector env with one batched policy call per step. Per episode: return, length, the FFT smoothness score `sm` and the
mean absolute action change, both on actions in ENV units. Evaluation seeds are EVAL_SEED + episode index (10 000 on),
far from the training seeds (our choice); --env-seeds gives the clean episodes explicit seeds instead, e.g. the released
evaluation's start states (results/released_eval_seeds.txt). Checkpoints are grouped by (method, env) across training
seeds; a directory given as a checkpoint stands for the *.pt files directly in it.

Every input is checked before anything is written (each checkpoint: exists, a readable torch file of this project's
format, written by a known training script; the flags; --out-dir): bad input gets one error line per problem and a
non-zero exit, and an earlier report in --out-dir stays as it was.

Clean rows (sigma = 0, Tables 1-2): --episodes (10) episodes per checkpoint; as the reference code does, a cell is
mean (std) over the pooled episodes of all seeds (numpy's std, ddof = 0).

Noisy rows (sigma > 0, Table 3), the released protocol (docs/protocol.md): --noise-episodes (20) episodes per checkpoint
and sigma; per step and dimension the policy sees clip(o + u * sigma_base, obs_low, obs_high), u ~ U(-sigma, sigma), and
the env's own state is never touched; a cell is the mean over seeds of each seed's mean (std over those per-seed means).
sigma_base is the per-dimension std (floored at 1e-6) of the observations of --scale-episodes (20) clean episodes of the
first-seed Base model of the env's algorithm family (td3.py run as `td3` for every td3_* method, sac.py as `sac` for
sac_*; first seed = the earliest of RELEASED_SEEDS, else the lowest), locked for every method of that env and family.
The base model comes from --base-checkpoint, else from the evaluated checkpoints. Without one (our fallback, reported in
the printed notes, table.md and results.json) sigma_base is the std of the pooled clean observations of the evaluated
checkpoints of that env and family. table.csv and results.json keep both statistics for every row. Our choices where the
released protocol is silent: the sigma_base episodes use the evaluation seeds (EVAL_SEED on); every checkpoint gets the
same noise stream (--noise-seed), so methods differ by policy, not by draw.

    python eval_smoothness.py runs/*/*.pt --noise 0 0.01 0.05 0.1 --plot
"""

import csv
import difflib
import importlib
import json
import os
import re
import sys
import textwrap
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import tyro
from tqdm import tqdm

CHECKPOINT_FORMAT = "pave-checkpoint/1"
CHECKPOINT_KEYS = ("script", "env_id", "args", "obs_dim", "act_dim", "actor")
EVAL_SEED = 10_000  # episode i of an evaluation resets its env with EVAL_SEED + i
EPISODES = 10  # clean episodes per checkpoint (Tables 1-2)
NOISE_EPISODES = 20  # episodes per checkpoint and noise level sigma > 0 (Table 3)
SCALE_EPISODES = 20  # clean episodes of the first-seed base model that sigma_base is measured on (Table 3)
SCALE_FLOOR = 1e-6  # sigma_base is floored here per dimension (a constant observation dimension gets no zero scale)
RELEASED_SEEDS = (178132, 410580, 922852, 787576, 660993)  # training seeds of the released runs, in their order
PROG = Path(__file__).name
REPO = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the training scripts whose classes rebuild the policies sit next to this file


def smoothness_score(actions) -> float:
    """The paper's FFT smoothness score `sm` of one episode (lower is smoother).

    actions: array (T, action_dim) or (T,), in ENV units. Per action dimension j, with Y the unnormalized
    DFT of a[:, j] and only bins k = 0 .. T//2 - 1 kept,
        sm_j = 2 / (T * fs) * sum_k f_k |Y_k|,  f_k = k fs / T   =>   sm_j = (2 / T^2) * sum_k k |Y_k|
    (fs cancels); sm is the mean of sm_j over action dimensions (docs/protocol.md; the CAPS paper's score).
    """
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    n = a.shape[0]
    if n < 2:
        return 0.0
    magnitudes = np.abs(np.fft.fft(a, axis=0))[: n // 2]
    k = np.arange(n // 2)[:, None]
    return float(np.mean(2.0 / n**2 * (k * magnitudes).sum(axis=0)))


def action_change(actions) -> float:
    """Mean absolute action change mean_t |a_t - a_{t-1}| over steps and action dimensions (ENV units)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(a, axis=0)).mean())


def hidden_sizes_of(args):
    """The hidden layer widths of a checkpoint's networks, from its saved args: `hidden_sizes` (a list), or, in
    checkpoints written before that flag existed, two layers of `hidden_dim` (256-256)."""
    if "hidden_sizes" in args:
        return tuple(args["hidden_sizes"])
    return (args["hidden_dim"],) * 2


class CheckpointError(Exception):
    """A checkpoint that cannot be evaluated; the message is one line that names the problem."""


def reason(e):
    """An exception as one short line, for error messages."""
    first_line = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {first_line}"


# ---------------------------------------------------------------------------------------------------------------------
# Input checks shared by the tools (this file, critic_geometry.py, plot_qfield.py): every input is checked before a
# tool writes anything, so that bad input never costs an earlier report.

NO_CHECKPOINTS = ("give at least one checkpoint file (.pt, written by a training script with --save-model) or a "
                  "directory of them, e.g. runs/*/*.pt")


def load_checkpoints(paths, load, flag=""):
    """Every checkpoint that command-line `paths` name, loaded with `load` (path -> object; CheckpointError if
    unusable): a file as given, a directory as the *.pt files directly in it, by name.

    Returns (loaded, problems): one line per unusable path, "<flag><path>: <what is wrong>"."""
    loaded, problems = [], []
    for path in paths:
        files = [path]
        if Path(path).is_dir():
            files = sorted(str(file) for file in Path(path).glob("*.pt") if file.is_file())
            if not files:
                problems.append(f"{flag}{path}: a directory holding no checkpoint files (*.pt)")
        for file in files:
            try:
                loaded.append(load(file))
            except CheckpointError as e:
                problems.append(f"{flag}{file}: {e}")
    return loaded, problems


def output_problem(path, folder):
    """Why a tool could not write its output at `path` (a folder if `folder`, else a file), or None."""
    path = Path(path)
    if path.exists():
        if path.is_dir() != folder:
            return "is a file, not a directory" if folder else "is a directory, not a file"
        existing = path
    else:
        existing = next(parent for parent in path.parents if parent.exists())
        if not existing.is_dir():
            return f"cannot be created: {existing} is a file"
    return None if os.access(existing, os.W_OK) else f"cannot be written: no write permission on {existing}"


def refuse(prog, problems, status):
    """Print each problem as one line `<prog>: error: <problem>`; return the exit status."""
    for problem in problems:
        print(f"{prog}: error: {problem}", file=sys.stderr)
    return status


@dataclass
class Policy:
    path: str
    script: str
    method: str  # the run's exp_name (the script's stem unless the user renamed it): the grouping key
    algo: str  # the algorithm family, "td3" or "sac": the checkpoint's `algo`, else its script's name before any "_"
    env_id: str
    train_seed: int
    obs_dim: int
    act_dim: int
    actor: torch.nn.Module
    make_env: object
    device: str


def load_policy(checkpoint_path, device="cpu"):
    """Rebuild a checkpoint's actor with the training script that wrote it; CheckpointError on anything unusable.

    Loads with weights_only=True: a checkpoint holds only tensors and plain Python values, so no code in it runs.
    """
    path = Path(checkpoint_path)
    if path.is_dir():
        raise CheckpointError("is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError("no such file")
    try:  # zipfile.is_zipfile answers False for a file it cannot open: say why instead
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(f"cannot be read ({e.strerror})") from None
    if not zipfile.is_zipfile(path):
        raise CheckpointError("not a torch checkpoint (torch.save writes a zip archive; this file is not one, or is "
                              "damaged)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"not a readable torch checkpoint ({reason(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a checkpoint of this project (expected format {CHECKPOINT_FORMAT!r})")
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)}")
    script, env_id, args = str(ckpt["script"]), str(ckpt["env_id"]), ckpt["args"]
    if not re.fullmatch(r"[A-Za-z_]\w*\.py", script) or not (REPO / script).is_file():
        raise CheckpointError(f"written by {script!r}, which is not a training script in {REPO}")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
        raise CheckpointError(f"unknown env id {env_id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        module = importlib.import_module(Path(script).stem)
        actor = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], hidden_sizes_of(args), args["actor_activation"])
        actor.load_state_dict(ckpt["actor"])
    except Exception as e:
        raise CheckpointError(f"cannot rebuild its actor with {script} ({reason(e)})") from None
    return Policy(str(checkpoint_path), script, args.get("exp_name") or Path(script).stem,
                  str(ckpt.get("algo") or Path(script).stem.split("_")[0]), env_id, args.get("seed"), ckpt["obs_dim"],
                  ckpt["act_dim"], actor.to(device).eval(), module.make_env, device)


def control_period(env):
    """Seconds per env step, or None: MuJoCo and classic control envs say `dt`; Box2D ones step once per frame."""
    dt = getattr(env.unwrapped, "dt", None)
    if dt:
        return float(dt)
    fps = env.metadata.get("render_fps")
    return 1.0 / fps if fps and "box2d" in type(env.unwrapped).__module__ else None


def episode_seeds(seed, episodes):
    """The env seed of each episode: seed + i for episode i, or `seed` itself when it is a list of seeds
    (--env-seeds)."""
    return [seed + i for i in range(episodes)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]


def rollout(policy, episodes, seed=EVAL_SEED, obs_noise=0.0, obs_scale=None, noise_seed=0):
    """Deterministic episodes in parallel, episode i on env seed `seed + i` (or seed[i] for a list of seeds, whose
    length is then the episode count); each sub-env's first episode only.

    With obs_noise = sigma > 0 the policy sees clip(obs + u * obs_scale, obs_low, obs_high), u ~ U(-sigma, sigma) per
    dimension and step (drawn with `noise_seed`), the bounds being the env's observation space; the env steps
    unperturbed. Returns per-episode lists under "return", "length", "sm", "action_change", the episodes' ENV-unit
    "actions" and clean "observations" (arrays (length, dim)), and "dt".

    The actor runs on one CPU thread (our choice; the caller's thread count is restored after): a matrix product's
    rounding depends on the thread count, and a chattering policy turns that rounding into other episodes (a TD3 ASAP
    Pendulum checkpoint: sm 4.5451 on one thread, 4.5385 on two), so the numbers would depend on the machine's cores.
    """
    seeds = episode_seeds(seed, episodes)
    episodes = len(seeds)
    try:
        envs = gym.vector.SyncVectorEnv([policy.make_env(policy.env_id, s) for s in seeds])
    except Exception as e:
        raise CheckpointError(f"cannot make env {policy.env_id} ({reason(e)})") from None
    if envs.single_observation_space.shape != (policy.obs_dim,):
        raise CheckpointError(f"policy takes {policy.obs_dim} observation dims, {policy.env_id} gives "
                              f"{envs.single_observation_space.shape}")
    low, high = envs.single_action_space.low, envs.single_action_space.high
    obs_low, obs_high = envs.single_observation_space.low, envs.single_observation_space.high
    noise_rng = np.random.default_rng(noise_seed)
    obs, _ = envs.reset(seed=seeds)
    running = np.ones(episodes, dtype=bool)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=int)
    observations, actions = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while running.any():
            seen = obs
            if obs_noise > 0:
                seen = np.clip(obs + noise_rng.uniform(-obs_noise, obs_noise, obs.shape) * obs_scale, obs_low, obs_high)
            with torch.no_grad():
                action = policy.actor.act(torch.as_tensor(seen, dtype=torch.float32,
                                                          device=policy.device)).cpu().numpy()
            env_action = low + (action + 1.0) * 0.5 * (high - low)
            observations.append(obs)
            actions.append(env_action)
            # sub-envs whose episode ended keep stepping (the vector env resets them) but are no longer recorded
            obs, rewards, terminated, truncated, _ = envs.step(env_action)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        torch.set_num_threads(threads)
    dt = control_period(envs.envs[0])
    envs.close()
    actions, observations = np.stack(actions, axis=1), np.stack(observations, axis=1)  # (episodes, steps, dim)
    episode_actions = [actions[i, : lengths[i]] for i in range(episodes)]
    return {
        "return": returns.tolist(),
        "length": lengths.tolist(),
        "sm": [smoothness_score(a) for a in episode_actions],
        "action_change": [action_change(a) for a in episode_actions],
        "actions": episode_actions,
        "observations": [observations[i, : lengths[i]] for i in range(episodes)],
        "dt": dt,
    }


def is_base(policy):
    """Whether a policy is the Base model of its algorithm family: td3.py (sac.py) run under its own name td3 (sac).

    A renamed plain run (say --exp-name td3-relu) is not one: name it with --base-checkpoint."""
    return policy.script == f"{policy.algo}.py" and policy.method == policy.algo


def seed_order(policy):
    """Sort key: training seeds in the released order (178132 first), then any other seed, lowest first; then path."""
    seed = policy.train_seed
    if seed in RELEASED_SEEDS:
        return (0, RELEASED_SEEDS.index(seed), policy.path)
    return (1, seed if isinstance(seed, int) else float("inf"), policy.path)


def observation_std(observations):
    """Per-dimension std (ddof 0) of a list of observation arrays (steps, dim), floored at SCALE_FLOOR; and the
    count."""
    pooled = np.concatenate(observations)
    return np.maximum(pooled.std(axis=0), SCALE_FLOOR), len(pooled)


def sigma_base(bases, pool=(), scale_episodes=SCALE_EPISODES, seed=EVAL_SEED, clean=None, clean_episodes=EPISODES):
    """sigma_base of one (env, algorithm family) for Table 3, as a dict: "sigma_base" (a list), "fallback",
    "checkpoint", "method", "train_seed", "episodes", "samples", "how" (one sentence for the notes).

    the released protocol (docs/protocol.md): of `bases`, the candidate Base models of that env and family, the
    first-seed one (seed_order) runs `scale_episodes` clean deterministic episodes on env seeds seed, seed + 1, ...;
    sigma_base is the per-dimension std of their observations, floored at 1e-6. With no candidate, the fallback (our
    choice, flagged "fallback": True and said in "how"): the same std over the pooled clean observations of the policies
    in `pool`, their results in `clean` (path -> rollout result) where given, else `clean_episodes` fresh episodes each.
    Raises CheckpointError.
    """
    base = min(bases, key=seed_order, default=None)
    if base is not None:
        std, samples = observation_std(rollout(base, scale_episodes, seed)["observations"])
        return {"sigma_base": std.tolist(), "fallback": False, "checkpoint": base.path, "method": base.method,
                "train_seed": base.train_seed, "episodes": scale_episodes, "samples": samples,
                "how": f"per-dimension std (floored at {SCALE_FLOOR:g}) of {samples} observations of {scale_episodes} "
                       f"clean episodes of the first-seed base model {base.method} (training seed {base.train_seed}, "
                       f"{base.path}); every method of the env and family uses it"}
    if not pool:
        raise ValueError("sigma_base needs a base model or policies to pool")
    clean = clean or {}
    observations = [obs for p in pool for obs in (clean.get(p.path)
                                                  or rollout(p, clean_episodes, seed))["observations"]]
    std, samples = observation_std(observations)
    return {"sigma_base": std.tolist(), "fallback": True, "checkpoint": None, "method": None, "train_seed": None,
            "episodes": len(observations), "samples": samples,
            "how": f"FALLBACK, not the paper's protocol: no usable base model ({pool[0].algo}.py run as "
                   f"{pool[0].algo}) of this env, so sigma_base is the per-dimension std (floored at "
                   f"{SCALE_FLOOR:g}) of {samples} pooled observations of {len(observations)} clean episodes of "
                   f"{len(pool)} evaluated checkpoint(s); every method of the env and family uses it"}


def evaluate(checkpoint_path, episodes=None, obs_noise=0.0, seed=EVAL_SEED, device="cpu", obs_scale=None, noise_seed=0,
             base_checkpoint=None, scale_episodes=SCALE_EPISODES):
    """Deterministic evaluation of one checkpoint: per-episode "return", "length", "sm", "action_change" (lists).

    episodes: None for the paper's count, EPISODES (10) clean or NOISE_EPISODES (20) under noise. With obs_noise > 0,
    sigma_base is `obs_scale` when given (benchmark.py gets it once per env and family from sigma_base()), else
    sigma_base() measures it on `base_checkpoint` (a path), on this checkpoint itself when it is a Base model, or, as
    the reported fallback, on this checkpoint's own `scale_episodes` clean episodes. Also returns "actions",
    "observations", "dt", "eval_seeds", "obs_noise", "obs_scale", "obs_scale_note" and "obs_scale_fallback" (None when
    the caller gave obs_scale or there is no noise). Raises CheckpointError.
    """
    policy = load_policy(checkpoint_path, device)
    episodes = episodes or (NOISE_EPISODES if obs_noise > 0 else EPISODES)
    scale = {"sigma_base": obs_scale, "how": "given by the caller", "fallback": None} if obs_scale is not None else None
    if obs_noise > 0 and scale is None:
        base = load_policy(base_checkpoint, device) if base_checkpoint else policy
        if base.env_id != policy.env_id:
            raise CheckpointError(f"base checkpoint {base_checkpoint} is for {base.env_id}, not {policy.env_id}")
        scale = sigma_base([base] if base_checkpoint or is_base(policy) else [], [policy], scale_episodes, seed,
                           clean_episodes=scale_episodes)
    result = rollout(policy, episodes, seed, obs_noise, None if scale is None else np.asarray(scale["sigma_base"]),
                     noise_seed)
    return {**result, "eval_seeds": episode_seeds(seed, episodes), "obs_noise": obs_noise,
            "obs_scale": None if scale is None else np.asarray(scale["sigma_base"]).tolist(),
            "obs_scale_note": None if scale is None else scale["how"],
            "obs_scale_fallback": None if scale is None else scale["fallback"]}


# ---------------------------------------------------------------------------------------------------------------------
# Command line: evaluate many checkpoints, group them by (method, env) across seeds, write tables and figures.


@dataclass
class Args:
    checkpoints: tyro.conf.Positional[list[str]]
    """checkpoint files (.pt) written by the training scripts with --save-model (any methods, envs and seeds); a
    directory stands for the *.pt files directly in it"""
    episodes: int = EPISODES
    """clean deterministic episodes per checkpoint (Tables 1-2: 10)"""
    noise: tuple[float, ...] = (0.0,)
    """observation-noise levels sigma (paper Table 3: 0.01 0.05 0.1); 0 is the clean evaluation of Tables 1-2"""
    noise_episodes: int = NOISE_EPISODES
    """deterministic episodes per checkpoint and noise level sigma > 0 (Table 3: 20)"""
    scale_episodes: int = SCALE_EPISODES
    """clean episodes of the first-seed base model whose observations give sigma_base (Table 3: 20)"""
    base_checkpoint: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Base model (td3.py or sac.py checkpoint, or a directory of them) whose clean episodes give sigma_base of its env
    and algorithm family; of several for one env and family the first-seed one is used; it takes precedence over base
    checkpoints among CHECKPOINTS (ours), which are used where this names none"""
    seed: int = EVAL_SEED
    """episode i resets its env with seed + i (far from training seeds)"""
    env_seeds: tuple[int, ...] = ()
    """explicit env seeds, one per clean episode, instead of --seed and --episodes for the clean rows (e.g. the released
    evaluation's start states, results/released_eval_seeds.txt); noisy rows keep --seed"""
    noise_seed: int = 0
    """seed of the observation noise draws"""
    out_dir: str = "reports/smoothness"
    """where table.csv, episodes.csv, results.json, table.md (and with --plot the PNG figures) go"""
    per_seed: bool = False
    """also show, for every row, mean (std) over seeds of the per-seed means (noisy rows' main cells
    already are that)"""
    plot: bool = False
    """write per env: the mean FFT amplitude spectrum per method, and one episode's actions per method"""
    device: str = "cpu"
    """torch device of the policies (batches are tiny: the CPU is usually fastest)"""
    progress_bar: bool = True
    """show a progress bar"""


def fail_line(path, message):
    tqdm.write(f"{PROG}: error: {path}: {message}", file=sys.stderr)


def mean_std(values, ddof=0):
    """(mean, std) of values; std with `ddof` (0 for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=ddof)) if len(values) > ddof else 0.0


def summarize(records):
    """One row per (env, method, sigma), with mean and std over the pooled episodes of all seeds (`<key>_mean`,
    `<key>_std`, ddof 0) and over the per-seed means (`<key>_seed_mean`, `<key>_seed_std`, ddof 1); `cell_statistic`
    names the one the printed table shows: "episodes" for clean rows (Tables 1-2), "seed means" for noisy rows (Table
    3)."""
    groups = defaultdict(list)
    for record in records:
        groups[(record["env_id"], record["method"], record["obs_noise"])].append(record)
    rows = []
    for (env_id, method, sigma), group in sorted(groups.items()):
        row = {"method": method, "env_id": env_id, "obs_noise": sigma, "seeds": len(group),
               "episodes": sum(len(r["return"]) for r in group),
               "cell_statistic": "seed means" if sigma > 0 else "episodes"}
        for key in ("return", "sm", "action_change", "length"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([v for r in group for v in r[key]])
            # over seeds: ddof 1, as the t-intervals over seeds (publish.py's) take it
            row[f"{key}_seed_mean"], row[f"{key}_seed_std"] = mean_std([np.mean(r[key]) for r in group], ddof=1)
        row["train_seeds"] = " ".join(str(r["train_seed"]) for r in group)
        rows.append(row)
    return rows


def markdown_table(rows, per_seed):
    """The paper-style table as aligned Markdown: readable in a terminal, pasteable into a README or paper draft.

    A cell is mean (std) of the row's `cell_statistic` (column "std over"); per_seed adds the over-seeds columns."""
    header = ["method", "env", "sigma", "seeds", "episodes", "std over", "return", "sm", "|a_t - a_t-1|"]
    if per_seed:
        header += ["return (over seeds)", "sm (over seeds)"]
    lines = [header]
    for row in rows:
        of = "_seed" if row["cell_statistic"] == "seed means" else ""
        line = [row["method"], row["env_id"], f"{row['obs_noise']:g}", str(row["seeds"]), str(row["episodes"]),
                row["cell_statistic"], f"{row[f'return{of}_mean']:.1f} ({row[f'return{of}_std']:.1f})",
                f"{row[f'sm{of}_mean']:.3f} ({row[f'sm{of}_std']:.3f})",
                f"{row[f'action_change{of}_mean']:.3f} ({row[f'action_change{of}_std']:.3f})"]
        if per_seed:
            line += [f"{row['return_seed_mean']:.1f} ({row['return_seed_std']:.1f})",
                     f"{row['sm_seed_mean']:.3f} ({row['sm_seed_std']:.3f})"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def mean_spectrum(episode_actions, dt):
    """(frequencies, amplitudes): one-sided amplitude spectrum 2|Y_k|/T, mean over action dims and episodes.

    Episodes of different lengths have different frequency bins; each is interpolated onto the longest one's bins.
    Frequencies are in Hz when the control period dt is known, else in cycles per step.
    """
    longest = max(len(a) for a in episode_actions)
    grid = np.arange(1, longest // 2) / longest  # cycles per step; bin 0 (the mean action) carries no smoothness
    spectra = []
    for a in episode_actions:
        n = len(a)
        amplitude = (2.0 / n * np.abs(np.fft.fft(np.asarray(a, dtype=np.float64), axis=0))[: n // 2]).mean(axis=1)
        spectra.append(np.interp(grid, np.arange(n // 2) / n, amplitude))
    return grid / (dt or 1.0), np.mean(spectra, axis=0)


def hardest_episode(records):
    """Index of the clean episode with the lowest return averaged over the records (every record ran the same evaluation
    seeds): the hardest start, where policies differ most (Pendulum: the longest swing-up). Our choice of the episode
    the action-trace figure shows, so that it is picked by a rule and not by eye."""
    episodes = min(len(r["return"]) for r in records)
    return int(np.argmin([np.mean([r["return"][i] for r in records]) for i in range(episodes)]))


def wrap_title(text, width_inches, points=10):
    """`text` broken into lines that fit a figure `width_inches` wide at font size `points` (a long suptitle is
    otherwise cut at both edges)."""
    return textwrap.fill(text, max(20, int(width_inches * 72 / (0.6 * points))))  # 0.6 em: a wide average character


def method_color(method):
    """One colour per method, the same in every figure of the repository's tools: a hue of matplotlib's tab20 per
    method of each family (TD3: Base, CAPS, Grad-CAPS, ASAP, PAVE the first five hues, SAC the next five), dark for
    the script's own name, light for its -relu run; any other name gets a grey."""
    import matplotlib

    script, _, variant = method.partition("-")
    algo, _, suffix = script.partition("_")
    suffixes = ("", "caps", "gradcaps", "asap", "pave")
    if algo not in ("td3", "sac") or suffix not in suffixes or variant not in ("", "relu"):
        return "0.45"
    hue = ("td3", "sac").index(algo) * len(suffixes) + suffixes.index(suffix)
    return matplotlib.colormaps["tab20"](2 * hue + (variant == "relu"))


def plot_env(env_id, records, out_dir):
    """Two figures for one env: the mean FFT amplitude spectrum of its clean episodes, every method on the same axes,
    and the actions of one clean episode (hardest_episode of the methods' first checkpoints), one panel per method."""
    import matplotlib  # imported here: training scripts import this module and should not pay for matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_method = defaultdict(list)
    for record in records:
        by_method[record["method"]].append(record)
    dt = records[0]["dt"]
    name = re.sub(r"[^\w.-]", "_", env_id)
    paths = [out_dir / f"spectrum_{name}.png", out_dir / f"actions_{name}.png"]

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for method, group in by_method.items():
        freqs, amplitude = mean_spectrum([a for r in group for a in r["actions"]], dt)
        scores = [v for r in group for v in r["sm"]]
        sm, std = mean_std(scores)
        ax.semilogy(freqs, amplitude, label=f"{method}: sm {sm:.3f} +- {std:.3f} ({len(scores)} ep.)", lw=1.2,
                    color=method_color(method))
    ax.set(xlabel="frequency (Hz)" if dt else "frequency (cycles per step)", ylabel="amplitude (env action units)",
           title=f"{env_id}: FFT amplitude spectrum of the actions\n(clean episodes; mean over episodes, action dims)")
    ax.grid(alpha=0.3)
    # outside: the curves' high-frequency tails stay visible; the title names what the std is taken over (as the tables)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title_fontsize="small",
              title="sm: mean +- std over the pooled\nepisodes of all seeds (ep.: count)")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=130)
    plt.close(fig)

    firsts = [group[0] for group in by_method.values()]
    episode = hardest_episode(firsts)
    act_dim, cols = firsts[0]["actions"][0].shape[1], 2 if len(firsts) > 4 else 1
    rows = -(-len(firsts) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 1.1 + 1.5 * rows), sharex=True, sharey=True,
                             squeeze=False,
                             layout="constrained")  # constrained: makes room for the wrapped suptitle
    for ax, record in zip(axes.T.flat, firsts):  # column by column: with the TD3 methods first, TD3 left and SAC right
        actions = record["actions"][episode]
        t = np.arange(len(actions)) * (dt or 1.0)
        for j in range(act_dim):
            ax.plot(t, actions[:, j], lw=0.9, label=f"a[{j}]")
        ax.set_title(f"{record['method']}: return {record['return'][episode]:.1f}, sm {record['sm'][episode]:.3f}",
                     fontsize="small")
        ax.grid(alpha=0.3)
    for ax in axes.T.flat[len(firsts):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)" if dt else "step")
    for ax in axes[:, 0]:
        ax.set_ylabel("action (env units)")
    if act_dim > 1:
        axes[0, 0].legend(loc="upper right", fontsize="x-small", ncol=min(act_dim, 4))
    fig.suptitle(wrap_title(f"{env_id}: actions (env units) of one clean episode, eval seed "
                            f"{firsts[0]['eval_seeds'][episode]} (the lowest mean return), each method's first "
                            "checkpoint",
                            6.5 * cols), fontsize=10)
    fig.savefig(paths[1], dpi=130)
    plt.close(fig)
    return paths


def protocol(args, noise_levels):
    """The evaluation protocol in words: {"clean": ..., "noise": ...} (an entry only for the rows the call has)."""
    described = {}
    if 0.0 in noise_levels:
        seeds = (f"the {len(args.env_seeds)} env seed(s) of --env-seeds ({', '.join(map(str, args.env_seeds[:3]))}"
                 f"{', ...' if len(args.env_seeds) > 3 else ''})" if args.env_seeds
                 else f"env seeds {args.seed} .. {args.seed + args.episodes - 1}")
        episodes = len(args.env_seeds) or args.episodes
        described["clean"] = (f"sigma = 0 rows: {episodes} clean deterministic episodes per checkpoint on {seeds}; "
                              "cell = mean (std) over the pooled episodes of all seeds (ddof 0)")
    if any(sigma > 0 for sigma in noise_levels):
        described["noise"] = (
            f"sigma > 0 rows: {args.noise_episodes} episodes per checkpoint and sigma on env seeds {args.seed} .. "
            f"{args.seed + args.noise_episodes - 1}, noise seed {args.noise_seed}; per step and dimension the policy "
            "sees clip(o + u * sigma_base, obs_low, obs_high), u ~ U(-sigma, sigma), the env's state unchanged; cell "
            "= mean over seeds of each seed's mean (std over those per-seed means, ddof 1)")
    return described


def write_outputs(out_dir, rows, records, summary, notes, per_seed):
    """table.csv (one row per method, env, sigma), episodes.csv (one row per episode), results.json (both, the notes and
    `summary`: the protocol, the noise seed, sigma_base per env and family, the failures), table.md (table and
    notes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    episode_rows = [
        {"method": r["method"], "env_id": r["env_id"], "train_seed": r["train_seed"], "checkpoint": r["checkpoint"],
         "obs_noise": r["obs_noise"], "eval_seed": r["eval_seeds"][i], "return": r["return"][i],
         "length": r["length"][i], "sm": r["sm"][i], "action_change": r["action_change"][i]}
        for r in records for i in range(len(r["return"]))
    ]
    with open(out_dir / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(episode_rows[0]) if episode_rows else ["method"])
        writer.writeheader()
        writer.writerows(episode_rows)
    with open(out_dir / "results.json", "w") as f:
        json.dump({**summary, "notes": notes, "rows": rows, "episodes": episode_rows}, f, indent=1)
    (out_dir / "table.md").write_text(markdown_table(rows, per_seed) + "\n\n" + "\n".join(notes) + "\n")


def main(argv=None):
    """The CLI; returns the exit status: 2 on bad flags or no checkpoint, 1 when a checkpoint cannot be used (then
    nothing is written) or an evaluation failed (after reporting all the others)."""
    args = tyro.cli(Args, args=argv, description=__doc__)
    # every input is checked before anything is written: bad input must leave an earlier report in --out-dir as it was
    if not args.checkpoints:
        return refuse(PROG, [NO_CHECKPOINTS], 2)
    if min(args.episodes, args.noise_episodes, args.scale_episodes) < 1 or any(sigma < 0 for sigma in args.noise):
        return refuse(PROG,
                      ["--episodes, --noise-episodes and --scale-episodes must be positive and every --noise level "
                             "non-negative"], 2)
    if any(seed < 0 for seed in args.env_seeds):
        return refuse(PROG, ["--env-seeds must be non-negative (Gymnasium's env seeds)"], 2)
    if problem := output_problem(args.out_dir, folder=True):
        return refuse(PROG, [f"--out-dir {args.out_dir}: {problem}"], 2)
    try:  # a device this torch lacks would otherwise fail every checkpoint's load, each with a misleading line
        torch.empty(0, device=args.device)
    except Exception as e:
        return refuse(PROG, [f"--device {args.device}: {reason(e)}"], 2)

    def load(path):
        return load_policy(path, args.device)

    given_bases, base_problems = load_checkpoints(args.base_checkpoint, load, "--base-checkpoint ")
    policies, problems = load_checkpoints(args.checkpoints, load)
    if base_problems or problems:
        return refuse(PROG, base_problems + problems, 1)
    noise_levels = sorted(set(args.noise))
    noisy_levels = [sigma for sigma in noise_levels if sigma > 0]
    start = time.time()
    failures = []

    def failed(path, message):
        fail_line(path, message)
        failures.append({"checkpoint": str(path), "error": message})

    # the clean rollouts always run: they are the sigma = 0 rows and the fallback's observations
    progress = tqdm(total=len(policies) * (1 + len(noisy_levels)), unit="eval", disable=not args.progress_bar)
    clean, records, scales, interrupted = {}, [], {}, False

    clean_seeds = list(args.env_seeds) or args.seed  # what rollout takes: the seeds, or the first of consecutive ones

    def record(policy, result, sigma):
        seeds = clean_seeds if sigma == 0 else args.seed
        records.append({"method": policy.method, "env_id": policy.env_id, "train_seed": policy.train_seed,
                        "checkpoint": policy.path, "obs_noise": sigma,
                        "eval_seeds": episode_seeds(seeds, len(result["return"])), **result})

    try:
        for policy in policies:
            progress.set_description(f"{policy.method} {policy.env_id} seed {policy.train_seed} clean")
            try:
                clean[policy.path] = rollout(policy, args.episodes, clean_seeds)
                if 0.0 in noise_levels:
                    record(policy, clean[policy.path], 0.0)
            except Exception as e:  # one bad checkpoint must not cost the others
                failed(policy.path, str(e) if isinstance(e, CheckpointError) else reason(e))
            progress.update(1 + len(noisy_levels) * (policy.path not in clean))
        # sigma_base once per (env, algorithm family), locked for every method of it
        for key in sorted({(p.env_id, p.algo) for p in policies if p.path in clean} if noisy_levels else []):
            same = [p for p in policies if (p.env_id, p.algo) == key and p.path in clean]
            bases = [b for b in given_bases if (b.env_id, b.algo) == key] or [p for p in same if is_base(p)]
            progress.set_description(f"sigma_base {key[0]} {key[1]}")
            try:
                scales[key] = sigma_base(bases, same, args.scale_episodes, args.seed, clean, args.episodes)
            except Exception as e:
                for p in same:
                    failed(p.path, f"no noisy rows: sigma_base of {key[0]} {key[1]} failed "
                                   f"({e if isinstance(e, CheckpointError) else reason(e)})")
        for policy in (p for p in policies if (p.env_id, p.algo) in scales):
            scale = np.asarray(scales[policy.env_id, policy.algo]["sigma_base"])
            for sigma in noisy_levels:
                progress.set_description(f"{policy.method} {policy.env_id} seed {policy.train_seed} sigma {sigma:g}")
                try:
                    result = rollout(policy, args.noise_episodes, args.seed, sigma, scale, args.noise_seed)
                    record(policy, result, sigma)
                except Exception as e:
                    failed(policy.path, f"at sigma {sigma:g}: {e if isinstance(e, CheckpointError) else reason(e)}")
                progress.update(1)
    except KeyboardInterrupt:
        interrupted = True
        tqdm.write(f"{PROG}: interrupted; reporting what was computed", file=sys.stderr)
    finally:
        progress.close()

    rows = summarize(records)
    described = protocol(args, noise_levels)
    lines = [f"- {text}." for text in described.values()]
    lines += ["- table.csv and results.json hold both statistics for every row: `<key>_mean`/`<key>_std` over the "
              "pooled episodes, `<key>_seed_mean`/`<key>_seed_std` over the per-seed means; sm and |a_t - a_t-1| on "
              "actions in env units."]
    lines += [f"- sigma_base of {env_id} ({algo}): {s['how']}"
              + (" (name a base model with --base-checkpoint)." if s["fallback"]
              else ".") for (env_id, algo), s in scales.items()]
    used = {s["checkpoint"] for s in scales.values()}
    lines += [f"- --base-checkpoint {b.path} not used (no {b.algo} checkpoint of {b.env_id} evaluated under noise, or "
              "another given base of an earlier seed was used)." for b in given_bases if b.path not in used]
    lines += [f"- failed: {f['checkpoint']}: {f['error']}" for f in failures]
    summary = {"protocol": described, "noise_seed": args.noise_seed, "failures": failures,
               "obs_scale": [{"env_id": env_id, "algo": algo, **s} for (env_id, algo), s in scales.items()]}
    out_dir = Path(args.out_dir)
    write_outputs(out_dir, rows, records, summary, lines, args.per_seed)
    print(markdown_table(rows, args.per_seed) + "\n" + "\n".join(lines))
    written = ["table.csv", "episodes.csv", "results.json", "table.md"]
    if args.plot:
        for env_id in sorted({r["env_id"] for r in records}):
            clean_records = [{"method": p.method, "eval_seeds": episode_seeds(clean_seeds,
                                                                              len(clean[p.path]["return"])),
                              **clean[p.path]} for p in policies if p.env_id == env_id and p.path in clean]
            if clean_records:
                written += [p.name for p in plot_env(env_id, clean_records, out_dir)]
    print(f"{len(records)} evaluations of {len(clean)} checkpoint(s) in {time.time() - start:.1f} s; "
          f"wrote {', '.join(written)} to {out_dir}/")
    if failures:
        print(f"{PROG}: {len(failures)} checkpoint problem(s), listed above", file=sys.stderr)
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
