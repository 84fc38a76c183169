"""The Q-gradient field of trained critics: the PAVE paper's landscape of ||grad2_sa Q|| (Appendix A, Figures 1-3),
made as the released code makes it, and Lemma 4.1's check of the greedy policy's sensitivity.

1. Landscape. Checkpoints are grouped by env and algorithm family (TD3, SAC): one row each, one column per method
   (method = the run's exp_name; of several seeds of a method, the one of the reference's training seed, else the first
   seed). Per row the reference is the Base critic: --reference, else the first-seed td3.py/sac.py checkpoint of the
   row.
   As in the released code (td3/tests/viz_hessian_autograd.py):
   - the reference's deterministic policy runs --warmup-steps (20) env steps from env.reset(seed=--seed) (reset with the
     same seed if an episode ends); the state s it reaches is the centre for EVERY method of the row;
   - on the reference critic at (s, pi_ref(s)), the pair (state dim i, action dim j) with the largest |d2Q / ds_i da_j|
     gives the axes, reused for every method (--state-dim / --action-dim force them);
   - each method is drawn around its OWN action at that state, (s, pi_method(s)): a --grid x --grid (50 x 50) sweep of
     s_i +- 1.0 and a_j +- 1.5 (normalized action units; the sweep may leave [-1, 1]), the other coordinates fixed;
   - height (--height spectral): the exact spectral norm of the full mixed Hessian grad2_sa Q (act_dim x obs_dim) at
     each grid point; or (--height fd) the paper text's finite difference (Eq. 17),
         ||D_i(s, a)||,  D_i = (grad_a Q(s + eps e_i, a) - grad_a Q(s, a)) / eps,  eps = --epsilon (1e-3),
     the column of grad2_sa Q along the swept state dim only;
   - z is clipped at the 99th percentile of the reference's own surface, the same limit for the whole row (--clip sets
     one number instead; the paper text says 300).
2. Table (paper Section 4), exact by autograd over --rollout-steps (300) states each checkpoint's own policy visits, at
   a = pi(s): M = ||grad2_sa Q||_2, mu = -lambda_max(grad2_aa Q), the bound M / mu (only where mu > 0), the greedy
   policy's Jacobian -H_aa^-1 H_sa (Lemma 4.1) and the actor's real Jacobian ||d pi / d s||_2; medians over the states.
   Printed and saved as CSV. critic_geometry.py computes the released code's statistics (M_sup, mu_inf, gradient flip
   rate, concavity rates) over full evaluation episodes, grouped across seeds.

The critic is qf1 (--critic qf2 for the other twin), in float64. Every input is checked before anything is written, as
in eval_smoothness.py (a directory given as a checkpoint stands for the *.pt files directly in it): bad input gets one
error line per problem and a non-zero exit, and an earlier figure and table stay as they were. A row that fails while
it is drawn gets one error line and the other rows are still drawn; the exit status is then 1.

    python plot_qfield.py runs/A/td3.pt runs/B/td3_pave.pt --out qfield.png
"""

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from torch.func import jacrev, vmap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the training scripts sit next to this file
from critic_geometry import derivatives, load_critic  # noqa: E402
from eval_smoothness import (  # noqa: E402
    EVAL_SEED,
    NO_CHECKPOINTS,
    CheckpointError,
    load_checkpoints,
    output_problem,
    reason,
    refuse,
    seed_order,
    wrap_title,
)

PROG = Path(__file__).name


@dataclass
class Args:
    checkpoints: tyro.conf.Positional[list[str]]
    """checkpoint files (.pt) written by the training scripts with --save-model (one or more envs, TD3 or SAC); a
    directory stands for the *.pt files directly in it"""
    out: str = "qfield.png"
    """the figure: one row per env (and algorithm family), one 3D surface per method; its suffix gives the file type"""
    csv: str | None = None
    """the geometry table as CSV (None: --out with the suffix .csv)"""
    reference: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """Base checkpoint (or a directory of them) that picks the axes, the centre state and the z clip of its env and
    algorithm family (repeat it for several envs; drawn as a column too). Default: the first-seed td3.py/sac.py
    checkpoint of that env"""
    height: Literal["spectral", "fd"] = "spectral"
    """surface height: exact ||grad2_sa Q||_2 (released figures) or the finite-difference ||D_i|| of paper Eq. 17"""
    critic: Literal["qf1", "qf2"] = "qf1"
    """which twin critic to analyze"""
    epsilon: float = 1e-3
    """finite-difference step on the state (--height fd; paper Eq. 17)"""
    state_range: float = 1.0
    """the state dim is swept over centre +- this (released: 1.0)"""
    action_range: float = 1.5
    """the action dim is swept over centre +- this, normalized units (released: 1.5)"""
    sweep: Literal["released", "visited"] = "released"
    """released: centre +- --state-range and --action-range (may leave the states a policy reaches and the action box);
    visited: the state dim over the 1st-99th percentiles of the states the row's policies visit (--rollout-steps each
    from env seed --seed), the action dim over the action box [-1, 1]"""
    clip: float | None = None
    """clip surfaces at this height (None: the 99th percentile of the row's reference surface, as released)"""
    grid: int = 50
    """grid points per swept axis (released: 50)"""
    state_dim: int | None = None
    """force the swept state dim i (None: the dominant one of each row's reference)"""
    action_dim: int | None = None
    """force the swept action dim j (None: the dominant one of each row's reference)"""
    warmup_steps: int = 20
    """deterministic steps of the reference's policy from env.reset(seed) to the centre state (released: 20)"""
    seed: int = EVAL_SEED
    """env seed of the centre state's episode and of the table's rollouts"""
    rollout_steps: int = 300
    """env steps of each policy's deterministic rollout for the table"""


def error(message):
    print(f"{PROG}: error: {message}", file=sys.stderr)


def to_env_units(env, action):
    low, high = env.action_space.low, env.action_space.high
    return (low + (action + 1.0) * 0.5 * (high - low)).astype(np.float32)


def rollout_states(critic, steps, seed):
    """States the deterministic policy visits in `steps` env steps (reset at episode ends), shape (steps, obs_dim)."""
    env = critic.policy.make_env(critic.policy.env_id, seed)()
    obs, _ = env.reset(seed=seed)
    states = []
    for _ in range(steps):
        states.append(obs)
        action = critic.actor.act(torch.as_tensor(obs, dtype=torch.float64)).numpy()
        obs, _, terminated, truncated, _ = env.step(to_env_units(env, action))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.array(states), dtype=torch.float64)


def centre_state(critic, steps, seed):
    """The landscape's centre, as the released code picks it: the state reached after `steps` deterministic steps from
    env.reset(seed=seed), the episode restarting from the same seed if it ends; a float64 vector (obs_dim,)."""
    env = critic.policy.make_env(critic.policy.env_id, seed)()
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = critic.actor.act(torch.as_tensor(obs, dtype=torch.float64)).numpy()
        obs, _, terminated, truncated, _ = env.step(to_env_units(env, action))
        if terminated or truncated:
            obs, _ = env.reset(seed=seed)
    env.close()
    return torch.as_tensor(obs, dtype=torch.float64)


def action_gradient(qf, obs, actions):
    """grad_a Q(s, a) for a batch, shape (B, act_dim)."""
    actions = actions.detach().requires_grad_(True)
    return torch.autograd.grad(qf(obs, actions).sum(), actions)[0]


def fd_mixed_partial(qf, obs, actions, epsilon, state_dims):
    """Paper Eq. 17 for each state dim i in `state_dims`: (grad_a Q(s + eps e_i, a) - grad_a Q(s, a)) / eps.

    Returns (B, act_dim, len(state_dims)): entry [b, j, k] estimates d^2 Q / (d a_j d s_i) with i = state_dims[k].
    """
    batch, k = obs.shape[0], len(state_dims)
    shifts = epsilon * torch.eye(obs.shape[1], dtype=obs.dtype)[list(state_dims)]  # (k, obs_dim)
    shifted = (obs[:, None, :] + shifts).reshape(batch * k, -1)
    grad_shifted = action_gradient(qf, shifted, actions.repeat_interleave(k, dim=0)).reshape(batch, k, -1)
    return ((grad_shifted - action_gradient(qf, obs, actions)[:, None, :]) / epsilon).transpose(1, 2)


def dominant_pair(h_sa):
    """(state dim i, action dim j) of the largest |h_sa[j, i]| = |d2Q / da_j ds_i| of one mixed Hessian (act, obs)."""
    j, i = np.unravel_index(int(h_sa.abs().argmax()), tuple(h_sa.shape))
    return int(i), int(j)


def surface(qf, obs, action, i, j, args, bounds=None):
    """Grid (X, Y, Z), unclipped: X = s_i, Y = a_j swept around (obs, action), the other coordinates fixed; Z = the
    height chosen by args.height at each grid point. bounds = (s_i low, s_i high, a_j low, a_j high), else centre +-
    args.state_range and args.action_range."""
    if bounds is None:
        bounds = (float(obs[i]) - args.state_range, float(obs[i]) + args.state_range,
                  float(action[j]) - args.action_range, float(action[j]) + args.action_range)
    xs = torch.linspace(bounds[0], bounds[1], args.grid, dtype=torch.float64)
    ys = torch.linspace(bounds[2], bounds[3], args.grid, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    grid_obs, grid_actions = obs.repeat(X.numel(), 1), action.repeat(X.numel(), 1)
    grid_obs[:, i], grid_actions[:, j] = X.flatten(), Y.flatten()
    if args.height == "spectral":
        Z = torch.linalg.matrix_norm(derivatives(qf, grid_obs, grid_actions)[1], ord=2)
    else:
        Z = fd_mixed_partial(qf, grid_obs, grid_actions, args.epsilon, [i])[:, :, 0].norm(dim=-1)
    return X.numpy(), Y.numpy(), Z.reshape(X.shape).numpy()


def is_reference_candidate(critic):
    """A plain run: written by td3.py or sac.py."""
    return critic.policy.script == f"{critic.policy.algo}.py"


def landscape_rows(critics, references):
    """Group checkpoints by (env, algorithm family); per group the reference and one checkpoint per method.

    Returns a list of (key, reference, columns, note): columns = [(method, critic)], the reference first, then the other
    methods in the order first given, each by the checkpoint of the reference's training seed, else its first seed;
    note = None or one sentence (no Base checkpoint in the group)."""
    groups = {}
    for critic in critics:
        groups.setdefault((critic.policy.env_id, critic.policy.algo), []).append(critic)
    rows = []
    for key, group in groups.items():
        note = None
        given = [r for r in references if (r.policy.env_id, r.policy.algo) == key]
        candidates = given or [c for c in group if is_reference_candidate(c)]
        if candidates:
            # the plain run under its own name (td3, sac) before a renamed one; first seed in the released order
            reference = min(candidates, key=lambda c: (c.policy.method != c.policy.algo, seed_order(c.policy)))
        else:
            reference = min(group, key=lambda c: seed_order(c.policy))
            note = (f"no {key[1]}.py checkpoint of {key[0]} given; {reference.policy.path} picks the axes "
                    "(use --reference)")
        columns = [(reference.policy.method, reference)]  # the reference is drawn, first, also when only --reference
        for method in dict.fromkeys(c.policy.method for c in group if c.policy.method != reference.policy.method):
            runs = [c for c in group if c.policy.method == method]
            same_seed = [c for c in runs if c.policy.train_seed == reference.policy.train_seed]
            columns.append((method, min(same_seed or runs, key=lambda c: seed_order(c.policy))))
        rows.append((key, reference, columns, note))
    return rows


def plot_landscapes(rows, args):
    """rows: one dict per env and algorithm family: "heading" (its title, saying its z clip), "z_top" (the clip) and
    "panels" (dicts: surface, title, i, j). One 3D surface per method, a row's panels on one z-limit and color scale."""
    n_rows, n_cols = len(rows), max(len(row["panels"]) for row in rows)
    width = 5.2 * n_cols + 1.4
    fig = plt.figure(figsize=(width, 5.2 * n_rows + 1.2), layout="constrained")
    height_label = (r"$\|\nabla^2_{sa} Q\|_2$" if args.height == "spectral"
                    else r"$\|\partial \nabla_a Q / \partial s_i\|$ (FD)")
    what = ("exact spectral norm of grad2_sa Q" if args.height == "spectral"
            else f"finite difference, eps={args.epsilon:g}")
    fig.suptitle(wrap_title(f"Q-gradient field ({what}). Per row: axes = the dominant (state, action) pair of the "
                            f"reference critic; centre = the state after {args.warmup_steps} steps of its policy from "
                            f"env seed {args.seed}, each method at its own action there; z clipped at the row's "
                            "limit. A ReLU critic is piecewise linear: its mixed derivative is zero almost "
                            "everywhere, so its flat panel says nothing of a stable learning signal "
                            "(critic_geometry.py's flip rate does).", width, 12),
                 fontsize=12)
    for row, subfig in zip(rows, np.atleast_1d(fig.subfigures(n_rows, 1))):  # a subfigure per row: its own heading
        z_top = row["z_top"] or 1.0  # a critic with no mixed curvature (ReLU, spectral height) is flat at 0
        norm = matplotlib.colors.Normalize(0.0, z_top)
        subfig.suptitle(row["heading"], fontsize=12, fontweight="bold")
        axes = []
        for c, panel in enumerate(row["panels"]):
            X, Y, Z = panel["surface"]
            ax = subfig.add_subplot(1, n_cols, c + 1, projection="3d")
            ax.plot_surface(X, Y, np.clip(Z, 0.0, z_top), cmap="magma", norm=norm, rstride=1, cstride=1, linewidth=0,
                            antialiased=False)
            ax.set_zlim(0.0, z_top)
            ax.set_title(panel["title"], fontsize=11)
            ax.set_xlabel(f"s[{panel['i']}]", fontsize=10)
            ax.set_ylabel(f"a[{panel['j']}] (normalized)", fontsize=10)
            ax.zaxis.set_rotate_label(False)  # keep the formula upright
            ax.set_zlabel(height_label, rotation=90, fontsize=10, labelpad=8)  # labelpad: clear of the tick labels
            ax.tick_params(labelsize=9)
            ax.view_init(elev=45, azim=225)  # the released figures' view
            axes.append(ax)
        subfig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="magma"), ax=axes, shrink=0.7, pad=0.04).set_label(
            f"{height_label}, clipped at {z_top:.3g}", fontsize=11)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)


def implicit_policy_jacobian(h_aa, h_sa):
    """Lemma 4.1: the greedy action a*(s) = argmax_a Q(s, a) has the Jacobian -H_aa^-1 H_sa (H_aa negative definite)."""
    return -torch.linalg.solve(h_aa, h_sa)


def geometry_statistics(critic, obs):
    """One row of the geometry table: Proposition 4.2's bound checked state by state at a = pi(s), medians over states.

    M = ||H_sa||_2; mu = -lambda_max(H_aa); mu_nonpos = states with mu <= 0 (Q not strictly concave in a: no bound);
    M_over_mu = the bound; greedy_jacobian = ||-H_aa^-1 H_sa||_2 (Lemma 4.1); both over states with mu > 0 only.
    policy_jacobian = ||d pi / d s||_2 of the actor; bound_holds = share of the mu > 0 states where it is <= M / mu;
    grad_a_Q = ||grad_a Q(s, pi(s))||, zero where pi(s) is the stationary point that Lemma 4.1 assumes.
    """
    actions = critic.actor.act(obs).detach()
    grad, h_sa, h_aa = derivatives(critic.qf, obs, actions)
    M = torch.linalg.matrix_norm(h_sa, ord=2)
    mu = -torch.linalg.eigvalsh(h_aa)[:, -1]
    policy_jacobian = torch.linalg.matrix_norm(vmap(jacrev(critic.actor.act))(obs), ord=2)
    concave = mu > 0  # the bound and Lemma 4.1 only apply where Q is strictly concave in the action
    bound = M[concave] / mu[concave]
    greedy_jacobian = torch.linalg.matrix_norm(implicit_policy_jacobian(h_aa[concave], h_sa[concave]), ord=2)

    def median(x):
        return float(x.median()) + 0.0 if x.numel() else math.nan  # + 0.0 turns -0.0 into 0.0

    policy = critic.policy
    return {
        "method": policy.method, "env": policy.env_id, "seed": policy.train_seed, "step": critic.step,
        "states": len(obs),
        "M": median(M), "mu": median(mu), "mu_nonpos": int((~concave).sum()), "M_over_mu": median(bound),
        "greedy_jacobian": median(greedy_jacobian), "policy_jacobian": median(policy_jacobian),
        "bound_holds": float((policy_jacobian[concave] <= bound).double().mean()) if concave.any() else math.nan,
        "grad_a_Q": median(grad.norm(dim=-1)),
    }


def print_and_save_table(rows, path):
    columns = list(rows[0])
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(r[k]) for r in cells)) for k, c in enumerate(columns)]
    for line in [columns, *cells]:
        print("  ".join(c.rjust(w) if k > 1 else c.ljust(w) for k, (c, w) in enumerate(zip(line, widths))))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def csv_path_of(args):
    return args.csv or str(Path(args.out).with_suffix(".csv"))


def flag_problems(args):
    """One line per bad flag value that needs no checkpoint to be seen (ranges, the output files)."""
    problems = []
    if args.epsilon <= 0 or args.state_range <= 0 or args.action_range <= 0 or (args.clip is not None
                                                                                and args.clip <= 0):
        problems.append("--epsilon, --state-range, --action-range and --clip must be positive")
    if args.grid < 2 or args.rollout_steps < 1 or args.warmup_steps < 0:
        problems.append("--grid must be at least 2, --rollout-steps at least 1 and --warmup-steps non-negative")
    if min(args.state_dim or 0, args.action_dim or 0) < 0:
        problems.append("--state-dim and --action-dim must be non-negative")
    if Path(args.out).suffix.lstrip(".").lower() not in FigureCanvasBase.get_supported_filetypes():
        problems.append(f"--out {args.out}: its suffix must name a figure file type matplotlib writes (.png, .pdf, "
                        ".svg, ...)")
    csv_path = csv_path_of(args)
    if Path(csv_path).resolve() == Path(args.out).resolve():
        problems.append(f"--csv {csv_path}: the same file as --out")
    problems += [f"{flag} {path}: {problem}" for flag, path in (("--out", args.out), ("--csv", csv_path))
                 if (problem := output_problem(path, folder=False))]
    return problems


def dim_problems(critics, args):
    """One line per env whose dimensions --state-dim or --action-dim exceed."""
    sizes = {(c.policy.env_id, c.policy.obs_dim, c.policy.act_dim) for c in critics}
    return [f"--state-dim must be in [0, {obs_dim}) and --action-dim in [0, {act_dim}) for {env_id}"
            for env_id, obs_dim, act_dim in sorted(sizes)
            if (args.state_dim or 0) >= obs_dim or (args.action_dim or 0) >= act_dim]


def main(argv=None):
    """The CLI; returns the exit status: 2 on bad flags or no checkpoint, 1 when a checkpoint cannot be used (then
    nothing is written) or a row failed (after drawing the others)."""
    args = tyro.cli(Args, args=argv, description=__doc__)
    # every input is checked before anything is written: bad input must leave an earlier figure and table as they were
    if not args.checkpoints:
        return refuse(PROG, [NO_CHECKPOINTS], 2)
    if problems := flag_problems(args):
        return refuse(PROG, problems, 2)

    def load(path):
        return load_critic(path, args.critic)

    references, reference_problems = load_checkpoints(args.reference, load, "--reference ")
    critics, problems = load_checkpoints(args.checkpoints, load)
    if reference_problems or problems:
        return refuse(PROG, reference_problems + problems, 1)
    if problems := dim_problems(critics, args):
        return refuse(PROG, problems, 2)
    failures = 0

    keys = {(c.policy.env_id, c.policy.algo) for c in critics}
    for r in references:
        if (r.policy.env_id, r.policy.algo) not in keys:
            print(f"note: --reference {r.policy.path} not used: no {r.policy.algo} checkpoint of {r.policy.env_id} "
                  "given")
    rows = []
    for (env_id, algo), reference, columns, note in landscape_rows(critics, references):
        if note:
            print(f"note: {note}")
        try:
            centre = centre_state(reference, args.warmup_steps, args.seed)
            _, h_sa, _ = derivatives(reference.qf, centre[None], reference.actor.act(centre[None]))
            i, j = dominant_pair(h_sa[0])
            i = i if args.state_dim is None else args.state_dim
            j = j if args.action_dim is None else args.action_dim
            bounds = None
            if args.sweep == "visited":  # the states the row's policies reach, the action box
                visited = torch.cat([rollout_states(critic, args.rollout_steps, args.seed)[:, i]
                                     for _, critic in columns])
                low, high = np.percentile(visited.numpy(), [1, 99])
                bounds = (float(low), float(high) if high > low else float(low) + 1e-3, -1.0, 1.0)
            panels = []
            for method, critic in columns:
                action = critic.actor.act(centre[None])[0]
                relu = " (ReLU: zero a.e.)" if method.endswith("-relu") else ""
                panels.append({"surface": surface(critic.qf, centre, action, i, j, args, bounds), "i": i, "j": j,
                               "title": f"{method}{relu}\n(seed {critic.policy.train_seed}, a[{j}] = "
                                        f"{float(action[j]):+.2f})"})
        except Exception as e:  # one env's failure must not cost the other rows
            error(f"{env_id} ({algo}): {e if isinstance(e, CheckpointError) else reason(e)}")
            failures += 1
            continue
        z_top = args.clip if args.clip is not None else float(np.percentile(panels[0]["surface"][2], 99))
        how = ("--clip" if args.clip is not None
               else f"99th percentile of the reference {reference.policy.method}'s surface")
        rows.append({"panels": panels, "z_top": z_top,
                     "heading": f"{env_id} ({algo.upper()}): z clipped at {z_top:.3g} ({how})"})
        chosen = "dominant pair" if args.state_dim is None and args.action_dim is None else "pair (set by flag)"
        print(f"{env_id} ({algo}): reference {reference.policy.method} seed {reference.policy.train_seed} "
              f"({reference.policy.path}); centre = state after {args.warmup_steps} steps from env seed {args.seed}, "
              f"s = {np.array2string(centre.numpy(), precision=3, max_line_width=1000)}; {chosen}: state dim {i}, "
              f"action dim {j} (|d2Q/ds_i da_j| = {float(h_sa[0, j, i].abs()):.4g}); z clipped at {z_top:.4g} ({how})")
    if rows:
        plot_landscapes(rows, args)
        print(f"figure saved to {args.out}")

    table = [geometry_statistics(c, rollout_states(c, args.rollout_steps, args.seed)) for c in critics]
    csv_path = csv_path_of(args)
    print_and_save_table(table, csv_path)
    print(f"table saved to {csv_path}")
    if failures:
        print(f"{PROG}: {failures} problem(s), listed above", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
