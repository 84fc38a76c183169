"""The critic analyses of the PAVE paper's released code, on any of our checkpoints: does the critic have a small M
and a kept mu, and does its action gradient turn smoothly along the greedy policy's own trajectories?

Every checkpoint (TD3 or SAC, any env) runs the deterministic episodes of eval_smoothness.py (--episodes 10, env seeds
10 000, 10 001, ...: the same states whose smoothness score that tool reports). At every visited state s, with
a = pi(s) the actor's deterministic normalized action (SAC: tanh(mean)), the exact derivatives of the critic Q1
(float64, torch.func, all states of an episode in one vmapped call) give:
- M = ||grad2_sa Q(s, a)||_2 (spectral norm) and mu = |tr grad2_aa Q(s, a)|; per checkpoint M_sup = max over steps and
  mu_inf = min over steps (Proposition 4.2's sup and inf). mu is the released code's stand-in for the curvature
  -lambda_max(grad2_aa Q) of the bound L <= M / mu: it ignores the sign (a convex critic has a large mu too), so read it
  with the concavity rates.
- the gradient flip rate: cos(grad_a Q(s_t, pi(s_t)), grad_a Q(s_t+1, pi(s_t+1))) for consecutive steps of one episode
  (never across episodes); the share with cos < 0, and the cosine's mean and median (one action dim: cos is the sign
  of the product of the two derivatives, so the flip rate is the share of sign changes).
- the concavity rate: share of steps with tr grad2_aa Q < -delta (--delta 1.0, PAVE's margin), and the negative-definite
  rate: share of steps where every eigenvalue of grad2_aa Q (symmetrized) is < 0.
Checkpoints are grouped by (method, env), method = the run's exp_name; a cell is mean (std) over the group's training
seeds (numpy's std, ddof 0) of the per-seed values. checkpoints.csv keeps the per-seed values (and the means of M and mu
over steps), table.csv the groups, table.md both tables and the protocol.

Where we differ from the released scripts (our choices): their episodes start from one reset seed per training seed
and continue unseeded; ours are eval_smoothness.py's, seeded per episode and the same for every checkpoint. Their
concavity rate pools the steps of all seeds (ours is per seed, then mean (std); the pooled rate is in table.csv as
concave_rate_pooled). They run float32; we run float64.

Every record also holds the mean return and smoothness score sm of the same episodes (eval_smoothness.py's score).

Along training (--during): the files a training script saves with --model-checkpoints N (each a checkpoint like the
final one, at N evenly spaced steps) or --model-checkpoint-every N (at every multiple of N) are grouped by (method, env,
training step) instead, a (run, step) given twice counted once (a run's final checkpoint is its last such file).
during.png plots the evaluation return, sm, M_sup, mu_inf, the concavity rate and the flip rate against the step, a
panel per statistic and a row per env, a line per method: the mean over seeds with a band of +- one std. The released
code measured M_sup and the concavity rates this way, on the five intermediate models its runs keep
(eval_during_training_full.py), for Base and PAVE TD3 on LunarLander and Walker.

An earlier report's checkpoints.csv given in place of checkpoints brings its rows as they were measured (it must have
been measured on --episodes episodes): the tables and during.png are redrawn, or reports joined (say, one per env into
one figure with a row per env), without evaluating anything again.

Paired by seed (paired.csv, and a table in table.md): each PAVE method (<algo>_pave) against each other method of its
algorithm and env (with --during, of its training step too), on the training seeds both have: per statistic, the mean
per-seed difference with its 95% t-interval over seeds, the seeds on which PAVE's value is lower, and for positive sizes
(M_sup, mu_inf, sm) the geometric mean of the per-seed ratios with its t-interval on the logs, each read as a tie when
its interval includes 0 (or 1).

Every input is checked before anything is written, as in eval_smoothness.py (a directory given as a checkpoint stands
for the *.pt files directly in it): bad input gets one error line per problem and a non-zero exit, and an earlier report
in --out-dir stays as it was.

A separate file from plot_qfield.py, which draws the landscape: these are statistics over full evaluation episodes,
grouped across seeds with a table CLI like eval_smoothness.py's, and one file holding both CLIs would be two tools in
one. plot_qfield.py reuses this file's loader and exact derivatives.

    python critic_geometry.py runs/*/td3.pt runs/*/td3_pave.pt --out-dir reports/geometry
    python critic_geometry.py --during runs/*/checkpoints/*.pt --out-dir reports/during
    python critic_geometry.py --during walker/during/checkpoints.csv hopper/during/checkpoints.csv --out-dir both
"""

import copy
import csv
import importlib
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.func import jacrev, vmap

REPO = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the training scripts whose classes rebuild the networks sit next to this file
from eval_smoothness import (  # noqa: E402
    EPISODES,
    EVAL_SEED,
    NO_CHECKPOINTS,
    CheckpointError,
    Policy,
    hidden_sizes_of,
    load_checkpoints,
    load_policy,
    method_color,
    output_problem,
    reason,
    refuse,
    rollout,
    seed_order,
)
from statistics_over_seeds import ratio_interval, t_interval, verdict  # noqa: E402

PROG = Path(__file__).name
DELTA = 1.0  # the concavity margin: PAVE's Curv term and the released concavity rate use tr grad2_aa Q < -1.0


@dataclass(eq=False)  # compared by identity
class Critic:
    """A checkpoint rebuilt for geometry: eval_smoothness's Policy (its float32 actor steps the env) plus float64 frozen
    copies of the actor and of one critic, for exact derivatives."""

    policy: Policy
    actor: torch.nn.Module
    qf: torch.nn.Module
    step: int


def rebuild_critic(ckpt, script, critic="qf1"):
    """A loaded checkpoint's critic `critic` as the QNetwork of `script` (float32, trainable), its weights loaded."""
    args = ckpt["args"]
    module = importlib.import_module(Path(script).stem)
    layer_norm = {"layer_norm": True} if args.get("critic_layer_norm") else {}  # only scripts with the flag take it
    qf = module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], hidden_sizes_of(args), args["critic_activation"],
                         **layer_norm)
    qf.load_state_dict(ckpt[critic])
    return qf


def load_critic(path, critic="qf1"):
    """Rebuild a checkpoint's actor and critic `critic` with the script that wrote it; CheckpointError (one line) on
    anything unusable. eval_smoothness.load_policy checks the file and rebuilds the actor; the critic comes from the
    same file, read again (weights_only: no code in it runs)."""
    policy = load_policy(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if critic not in ckpt:
        raise CheckpointError(f"holds no {critic!r} state dict: without a critic there is no Q-field to analyze")
    try:
        qf = rebuild_critic(ckpt, policy.script, critic)
    except Exception as e:
        raise CheckpointError(f"cannot rebuild its {critic} with {policy.script} ({reason(e)})") from None
    # float64 so that second derivatives measure the network, not round-off; frozen: only the inputs are differentiated
    actor = copy.deepcopy(policy.actor).double().eval().requires_grad_(False)
    return Critic(policy, actor, qf.double().eval().requires_grad_(False), int(ckpt.get("global_step", 0)))


def derivatives(qf, obs, actions):
    """Exact derivatives of Q at each row (s, a), one vmapped call for the whole batch: grad_a Q (B, act_dim),
    H_sa = grad2_sa Q (B, act_dim, obs_dim) with H_sa[b, j, i] = d2Q / (da_j ds_i), and H_aa = grad2_aa Q (B, act,
    act)."""

    def action_grad(s, a):
        grad = jacrev(lambda a: qf(s[None], a[None])[0, 0])(a)
        return grad, grad  # the second copy comes back as aux: one pass gives the gradient and both Jacobians of it

    (h_sa, h_aa), grad = vmap(jacrev(action_grad, argnums=(0, 1), has_aux=True))(obs, actions)
    return grad, h_sa, h_aa


def state_geometry(qf, obs, actions):
    """Per state (1-D tensors of length B): M = ||H_sa||_2, trace = tr H_aa, lambda_max = the largest eigenvalue of
    H_aa (symmetrized, as the released code does), and grad = grad_a Q (B, act_dim)."""
    grad, h_sa, h_aa = derivatives(qf, obs, actions)
    return {"grad": grad, "M": torch.linalg.matrix_norm(h_sa, ord=2), "trace": h_aa.diagonal(dim1=-2, dim2=-1).sum(-1),
            "lambda_max": torch.linalg.eigvalsh(0.5 * (h_aa + h_aa.transpose(-1, -2)))[:, -1]}


def consecutive_cosines(grad):
    """cos(g_t, g_t+1) for consecutive rows of one episode's action gradients (T, act_dim): shape (T - 1,). A zero
    gradient gives cos 0 (torch's cosine_similarity, eps 1e-8), as in the released code."""
    return F.cosine_similarity(grad[:-1], grad[1:], dim=-1)


def trajectory_statistics(qf, actor, episodes, delta=DELTA):
    """The released analyses of one checkpoint over its deterministic episodes.

    episodes: a list of observation arrays, one (T_k, obs_dim) per episode, in visiting order. Returns a dict: steps,
    pairs (consecutive-step pairs), M_sup, M_mean, mu_inf, mu_mean, flip_rate, cos_mean, cos_median, concave_rate,
    negdef_rate, trace_mean (NaN where there is nothing to count, e.g. no pairs)."""
    per_step, cosines = defaultdict(list), []
    for observations in episodes:
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float64)
        if len(obs) == 0:
            continue
        geometry = state_geometry(qf, obs, actor.act(obs))
        for key in ("M", "trace", "lambda_max"):
            per_step[key].append(geometry[key])
        cosines.append(consecutive_cosines(geometry["grad"]))
    if not per_step:
        raise ValueError("no visited states")
    M, trace, lambda_max = (torch.cat(per_step[key]).numpy() for key in ("M", "trace", "lambda_max"))
    cos = torch.cat(cosines).numpy()
    mu = np.abs(trace)

    def share(mask):
        return float(mask.mean()) if mask.size else math.nan

    return {"steps": len(M), "pairs": len(cos), "M_sup": float(M.max()), "M_mean": float(M.mean()),
            "mu_inf": float(mu.min()), "mu_mean": float(mu.mean()), "flip_rate": share(cos < 0),
            "cos_mean": float(cos.mean()) if cos.size else math.nan,
            "cos_median": float(np.median(cos)) if cos.size else math.nan,
            "concave_rate": share(trace < -delta), "negdef_rate": share(lambda_max < 0),
            "trace_mean": float(trace.mean())}


def evaluate_checkpoint(path, episodes=EPISODES, seed=EVAL_SEED, delta=DELTA, critic="qf1"):
    """Load one checkpoint, run its deterministic episodes (env seeds seed, seed + 1, ...) and return its record:
    identity (checkpoint, method, algo, env_id, train_seed, step), the episodes' mean return and smoothness score sm,
    and trajectory_statistics(). Raises CheckpointError."""
    loaded = load_critic(path, critic)
    policy = loaded.policy
    episodes_run = rollout(policy, episodes, seed)
    return {"checkpoint": str(path), "method": policy.method, "algo": policy.algo, "env_id": policy.env_id,
            "train_seed": policy.train_seed, "step": loaded.step, "episodes": episodes,
            "return": float(np.mean(episodes_run["return"])), "sm": float(np.mean(episodes_run["sm"])),
            **trajectory_statistics(loaded.qf, loaded.actor, episodes_run["observations"], delta)}


STATISTICS = ("M_sup", "mu_inf", "flip_rate", "cos_mean", "cos_median", "concave_rate", "negdef_rate", "M_mean",
              "mu_mean",
              "sm", "return")


IDENTITY = ("checkpoint", "method", "algo", "env_id")  # a record's text fields; train_seed .. pairs are whole numbers
COUNTS = ("train_seed", "step", "episodes", "steps", "pairs")
RECORD = ("checkpoint", "method", "algo", "env_id", "train_seed", "step", "episodes", "return", "sm", "steps", "pairs",
          "M_sup", "M_mean", "mu_inf", "mu_mean", "flip_rate", "cos_mean", "cos_median", "concave_rate", "negdef_rate",
          "trace_mean")  # evaluate_checkpoint's keys, in its order (checkpoints.csv's columns)


def read_records(path, episodes):
    """The records of an earlier report's checkpoints.csv (this tool's per-checkpoint rows), as evaluate_checkpoint
    returned them; CheckpointError (one line) when the file cannot be read, lacks a column, or was measured on another
    number of episodes than `episodes`. Its env seeds, delta and critic are not in the file: the report's table.md says
    them (publish: the defaults)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CheckpointError(f"cannot be read as an earlier report's checkpoints.csv ({reason(e)})") from None
    missing = [key for key in RECORD if not rows or key not in rows[0]]
    if missing:
        raise CheckpointError(f"is not an earlier report's checkpoints.csv: no {', '.join(missing)} column"
                              if rows else "is not an earlier report's checkpoints.csv: no rows")
    try:
        records = [{key: row[key] if key in IDENTITY else int(row[key]) if key in COUNTS else float(row[key])
                    for key in RECORD} for row in rows]
    except ValueError as e:
        raise CheckpointError(f"holds a value that is not a number ({e})") from None
    if other := sorted({r["episodes"] for r in records} - {episodes}):
        raise CheckpointError(f"was measured on {other[0]} episodes per checkpoint, not --episodes {episodes}")
    return records


def summarize(records, during=False):
    """One row per (env, method), with `during` per (env, method, training step): `<key>_mean` and `<key>_std` over the
    per-seed values of each statistic (ddof 0), the seeds in the released order, and the concavity rate pooled over all
    visited states of all seeds (the released code's)."""
    groups = defaultdict(list)
    for record in records:
        groups[(record["env_id"], record["method"], record["step"] if during else 0)].append(record)
    rows = []
    for (env_id, method, step), group in sorted(groups.items()):
        row = {"method": method, "env_id": env_id, **({"step": step} if during else {}), "seeds": len(group),
               "steps": sum(r["steps"] for r in group)}
        for key in STATISTICS:
            values = [r[key] for r in group]
            row[f"{key}_mean"], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
        row["concave_rate_pooled"] = sum(r["concave_rate"] * r["steps"] for r in group) / row["steps"]
        row["train_seeds"] = " ".join(str(r["train_seed"]) for r in group)
        rows.append(row)
    return rows


def number(value, kind, digits=4):
    """A table cell: rates and cosines with 3 decimals, M and mu with `digits` significant digits."""
    return f"{value:.3f}" if kind == "rate" else f"{value:.{digits}g}"


COLUMNS = [("M_sup", "M_sup", "size"), ("mu_inf", "mu_inf", "size"), ("flip_rate", "flip rate", "rate"),
           ("cos_mean", "cos mean", "rate"), ("cos_median", "cos median", "rate"),
           ("concave_rate", "tr < -delta", "rate"), ("negdef_rate", "neg. def.", "rate")]
# --during: the statistics plotted against the training step, one panel each, and the columns of its tables
DURING_COLUMNS = [("return", "evaluation return", "size"), ("sm", "sm", "size"), ("M_sup", "M_sup", "size"),
                  ("mu_inf", "mu_inf", "size"),
                  ("concave_rate", "concavity rate", "rate"), ("flip_rate", "flip rate", "rate")]


def markdown(lines):
    """Rows of strings (the first is the header) as an aligned Markdown table."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def seed_table(records, during=False):
    """Per checkpoint (per training seed), in (env, method, seed) order, with `during` also per training step."""
    columns = DURING_COLUMNS if during else COLUMNS
    lines = [["method", "env", "seed", *(["training step"] if during else []), "steps",
              *(title for _, title, _ in columns)]]
    # path "": the step (a number), not the file name (a string: step1000 before step500), orders one seed's checkpoints
    order = sorted(records, key=lambda r: (r["env_id"], r["method"], seed_order(SimpleNamespace(
        train_seed=r["train_seed"], path="")), r["step"], r["checkpoint"]))
    for r in order:
        lines.append([r["method"], r["env_id"], str(r["train_seed"]), *([str(r["step"])] if during else []),
                      str(r["steps"]),
                      *(number(r[key], kind) for key, _, kind in columns)])
    return markdown(lines)


def group_table(rows, during=False):
    """Per (method, env), with `during` per (method, env, training step): mean (std) over seeds."""
    columns = DURING_COLUMNS if during else COLUMNS
    lines = [["method", "env", *(["training step"] if during else []), "seeds", "steps",
              *(title for _, title, _ in columns)]]
    for row in rows:
        lines.append([row["method"], row["env_id"], *([str(row["step"])] if during else []), str(row["seeds"]),
                      str(row["steps"]),
                      *(f"{number(row[f'{key}_mean'], kind)} ({number(row[f'{key}_std'], kind, 2)})"
                        for key, _, kind in columns)])
    return markdown(lines)


# paired by training seed: PAVE against each other method of its algorithm, per statistic (sizes also as a ratio)
PAIRED = [("return", "evaluation return", "size"), ("sm", "sm", "size"), ("M_sup", "M_sup", "size"),
          ("mu_inf", "mu_inf", "size"), ("flip_rate", "flip rate", "rate"), ("cos_mean", "cos mean", "rate"),
          ("concave_rate", "tr < -delta", "rate"), ("negdef_rate", "neg. def.", "rate")]


def paired_rows(records, during=False):
    """PAVE (<algo>_pave) minus each other method of its algorithm and env (with `during` also of its training step),
    over the training seeds both have: per PAIRED statistic the two means, the mean per-seed difference with its 95%
    t-interval over seeds, the seeds on which PAVE's value is lower, and for sizes (positive: M_sup, mu_inf, sm, the
    return when every value is positive) the geometric mean of the per-seed ratios PAVE / other with its t-interval on
    the logs. One dict per (comparison, statistic)."""
    cells = defaultdict(dict)  # (env, algo, step, method) -> {train seed: record}
    for r in records:
        cells[r["env_id"], r["algo"], r["step"] if during else 0, r["method"]][r["train_seed"]] = r
    rows = []
    for (env_id, algo, step, pave), mine in sorted(cells.items()):
        if pave != f"{algo}_pave":
            continue
        for (*where, other), theirs in sorted(cells.items()):
            seeds = [seed for seed in mine if seed in theirs]
            if tuple(where) != (env_id, algo, step) or other == pave or not seeds:
                continue
            for key, _, kind in PAIRED:
                x, y = (np.array([side[seed][key] for seed in seeds], dtype=float) for side in (mine, theirs))
                row = {"env_id": env_id, **({"step": step} if during else {}), "pave": pave, "other": other,
                       "statistic": key, "seeds": len(seeds), "pave_mean": float(x.mean()),
                       "other_mean": float(y.mean()),
                       "diff": float(np.mean(x - y)), **dict(zip(("diff_low", "diff_high"), t_interval(x - y))),
                       "pave_lower_seeds": int(np.sum(x < y))}
                ratio = kind == "size" and bool(np.all(x > 0) and np.all(y > 0))
                row["ratio"], row["ratio_low"], row["ratio_high"] = ratio_interval(x / y) if ratio else (math.nan,) * 3
                rows.append(row)
    return rows


def paired_table(rows, during=False):
    """paired_rows as a Markdown table, a row per (comparison, statistic): the difference's reading and, for sizes, the
    ratio's (a size that spans orders of magnitude over seeds can tie on the difference and not on the ratio)."""
    lines = [["env", *(["training step"] if during else []), "PAVE vs", "statistic", "seeds", "PAVE", "other",
              "PAVE - other [95% t-interval]", "PAVE lower on", "reading", "PAVE / other [95% t-interval]",
              "ratio reading"]]
    kinds = {key: (title, kind) for key, title, kind in PAIRED}

    def text(value, kind, sign=""):  # sizes of 1000 and more in full, not as 1.178e+04
        if kind in ("rate", "ratio"):
            return f"{value:{sign}.{3 if kind == 'rate' else 2}f}"
        return f"{value:{sign}.0f}" if abs(value) >= 1000 else f"{value:{sign}.4g}"

    def interval(value, low, high, kind, sign=""):
        ends = "" if math.isnan(low) else f" [{text(low, kind, sign)}, {text(high, kind, sign)}]"
        return text(value, kind, sign) + ends

    for row in rows:
        title, kind = kinds[row["statistic"]]
        ratio = [] if math.isnan(row["ratio"]) else [row["ratio"], row["ratio_low"], row["ratio_high"]]
        ratio_reading = verdict(*np.log(ratio[1:])) if ratio else ""  # the ratio's interval against 1
        lines.append([row["env_id"], *([str(row["step"])] if during else []), f"{row['pave']} vs {row['other']}",
                      title, str(row["seeds"]), text(row["pave_mean"], kind), text(row["other_mean"], kind),
                      interval(row["diff"], row["diff_low"], row["diff_high"], kind, "+"),
                      f"{row['pave_lower_seeds']} of {row['seeds']}", verdict(row["diff_low"], row["diff_high"]),
                      interval(*ratio, "ratio") if ratio else "", ratio_reading])
    return markdown(lines)


def plot_during(rows, path):
    """during.png: a row per env and a panel per DURING_COLUMNS statistic against the training step, a line per method
    in its method_color (the mean over seeds, marked at each checkpoint) with a band of +- one std over seeds. rows:
    summarize(records, during=True)."""
    import matplotlib  # imported here: only --during draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = sorted({row["env_id"] for row in rows})
    fig, axes = plt.subplots(len(env_ids), len(DURING_COLUMNS), figsize=(4 * len(DURING_COLUMNS), 3.2 * len(env_ids)),
                             squeeze=False)
    for ax_row, env_id in zip(axes, env_ids):
        for ax, (key, title, _) in zip(ax_row, DURING_COLUMNS):
            for method in sorted({row["method"] for row in rows if row["env_id"] == env_id}):
                points = [row for row in rows if (row["env_id"], row["method"]) == (env_id, method)]  # in step order
                steps = [row["step"] for row in points]
                mean, std = (np.array([row[f"{key}_{what}"] for row in points]) for what in ("mean", "std"))
                ax.plot(steps, mean, marker="o", label=method, color=method_color(method))
                ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=method_color(method))
            ax.set(title=f"{env_id}: {title}", xlabel="training step")
            steps = sorted({row["step"] for row in rows if row["env_id"] == env_id})
            if len(steps) <= 8:  # a tick at each checkpoint's step, 100000 written 100k
                ax.set_xticks(steps, [f"{step / 1000:g}k" if step >= 1000 else str(step) for step in steps])
            ax.grid(alpha=0.3)
        ax_row[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class Args:
    checkpoints: tyro.conf.Positional[list[str]]
    """checkpoint files (.pt) written by the training scripts with --save-model (TD3 or SAC, any methods, envs,
    seeds); a directory stands for the *.pt files directly in it; a .csv file is an earlier report's checkpoints.csv,
    whose rows are taken as measured (redraw tables and figures, or join reports, without evaluating again)"""
    episodes: int = EPISODES
    """deterministic episodes per checkpoint (the released analyses: 10)"""
    seed: int = EVAL_SEED
    """episode i resets its env with seed + i (eval_smoothness.py's evaluation episodes)"""
    delta: float = DELTA
    """concavity margin: a step counts as concave when tr grad2_aa Q < -delta (released: 1.0)"""
    critic: Literal["qf1", "qf2"] = "qf1"
    """which twin critic to analyze (released: Q1)"""
    during: bool = False
    """checkpoints along training (--model-checkpoints, --model-checkpoint-every): group by (method, env, training
    step), add sm, draw during.png"""
    out_dir: str = "reports/geometry"
    """where table.csv (per method and env, with --during per step too), checkpoints.csv (per checkpoint) and table.md
    go"""


def main(argv=None):
    """The CLI; returns the exit status: 2 on bad flags or no checkpoint, 1 when a checkpoint cannot be used (then
    nothing is written) or its evaluation failed (after reporting all the others)."""
    args = tyro.cli(Args, args=argv, description=__doc__)
    # every input is checked before anything is written: bad input must leave an earlier report in --out-dir as it was
    if not args.checkpoints:
        return refuse(PROG, [NO_CHECKPOINTS], 2)
    if args.episodes < 1 or args.delta < 0:
        return refuse(PROG, ["--episodes must be positive and --delta non-negative"], 2)
    if problem := output_problem(args.out_dir, folder=True):
        return refuse(PROG, [f"--out-dir {args.out_dir}: {problem}"], 2)

    def usable(path):  # loaded here to check it and again when its turn comes: one critic in memory at a time
        load_critic(path, args.critic)
        return path

    reports = [path for path in args.checkpoints if path.endswith(".csv")]
    paths, problems = load_checkpoints([path for path in args.checkpoints if path not in reports], usable)
    records = []
    for path in reports:
        try:
            records += read_records(path, args.episodes)
        except CheckpointError as e:
            problems.append(f"{path}: {e}")
    if problems:
        return refuse(PROG, problems, 1)
    start, failures = time.time(), []
    for path in paths:
        began = time.time()
        try:
            records.append(evaluate_checkpoint(path, args.episodes, args.seed, args.delta, args.critic))
        except Exception as e:  # one failed evaluation must not cost the others
            message = str(e) if isinstance(e, CheckpointError) else reason(e)
            print(f"{PROG}: error: {path}: {message}", file=sys.stderr)
            failures.append({"checkpoint": str(path), "error": message})
            continue
        r = records[-1]
        print(f"{r['method']} {r['env_id']} seed {r['train_seed']} (trained {r['step']} steps): {r['steps']} states in "
              f"{time.time() - began:.1f} s", file=sys.stderr)
    if args.during:  # a run's final checkpoint is its last --model-checkpoints file again: each (run, step) counts once
        unique = {}
        for r in records:
            first = unique.setdefault((r["env_id"], r["method"], r["train_seed"], r["step"]), r)
            if first is not r:
                print(f"{PROG}: note: {r['checkpoint']} is the same run and step as {first['checkpoint']}; "
                      "counted once", file=sys.stderr)
        records = list(unique.values())

    rows, paired = summarize(records, args.during), paired_rows(records, args.during)
    notes = [
        f"- {args.episodes} deterministic episodes per checkpoint, env seeds {args.seed} .. "
        f"{args.seed + args.episodes - 1}; exact derivatives of {args.critic} (float64) at a = pi(s) in normalized "
        "actions.",
        "- M = ||grad2_sa Q||_2, mu = |tr grad2_aa Q|: M_sup = max and mu_inf = min over the steps of a checkpoint.",
        "- flip rate: share of consecutive steps (within an episode) with cos(grad_a Q_t, grad_a Q_t+1) < 0; cos mean "
        "and median over the same pairs.",
        f"- tr < -delta: share of steps with tr grad2_aa Q < -{args.delta:g}; neg. def.: share of steps with every "
        "eigenvalue of grad2_aa Q < 0.",
        "- per seed: one checkpoint; across seeds: mean (std) over the per-seed values (ddof 0).",
        "- paired by seed: PAVE's value minus the other method's for each training seed both have, the mean with its "
        "95% t-interval over those seeds (n - 1 degrees of freedom; an interval that includes 0 reads tie); for "
        "positive sizes also the geometric mean of the per-seed ratios with its t-interval on the logs.",
    ] + (["- along training: one checkpoint per seed and training step, grouped by step; sm: the smoothness score of "
          "the same episodes (eval_smoothness.py's), mean over them."] if args.during else []) \
      + [f"- failed: {f['checkpoint']}: {f['error']}" for f in failures]
    tables = ["Per seed", seed_table(records, args.during), "Across seeds", group_table(rows, args.during)]
    if paired:
        tables += ["Paired by seed", paired_table(paired, args.during)]
    text = "\n\n".join(tables + ["\n".join(notes)]) if records else "\n".join(notes)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "table.csv", rows)
    write_csv(out_dir / "checkpoints.csv", records)
    if paired:
        write_csv(out_dir / "paired.csv", paired)
    else:  # this report pairs nothing: an earlier report's pairs must not stand beside it
        (out_dir / "paired.csv").unlink(missing_ok=True)
    (out_dir / "table.md").write_text(text + "\n")
    if args.during and records:
        plot_during(rows, out_dir / "during.png")
    print(text)
    print(f"{len(records)} checkpoint(s) in {time.time() - start:.1f} s; wrote table.csv, checkpoints.csv, "
          f"{'paired.csv, ' if paired else ''}table.md"
          f"{', during.png' if args.during and records else ''} to {out_dir}/")
    if failures:
        print(f"{PROG}: {len(failures)} checkpoint problem(s), listed above", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
