"""The Q-gradient field of trained critics: the paper's landscape of ||grad2_sa Q|| and the geometry behind L <= M / mu.

1. Landscape (paper Appendix A, Figures 1-3). Each checkpoint's deterministic policy is rolled out; on the reference
   checkpoint's states s and actions a = pi(s), the finite-difference mixed partial of Eq. 17
       D_i(s, a) = (grad_a Q(s + eps e_i, a) - grad_a Q(s, a)) / eps      (a vector over action dims; eps = 1e-3)
   is computed for every state dimension i. The dominant pair (state dim i, action dim j) and the reference transition
   (s*, a*) are where |D_i(s, a)[j]| is largest. Every method is then drawn on these same axes, around that same
   transition: z = ||D_i(s* + x e_i, a* + y e_j)|| (norm over action dims: the paper's ||grad2_sa Q||),
   x in [-1, 1], y in [-1.5, 1.5] (normalized action units), clipped at 300.
2. Geometry (paper Section 4), exact by autograd over the states each checkpoint's own policy visits, at a = pi(s):
   M = ||grad2_sa Q||_2, mu = -lambda_max(grad2_aa Q), the bound M / mu (only where mu > 0), the greedy policy's
   Jacobian -H_aa^-1 H_sa (Lemma 4.1) and the actor's real Jacobian ||d pi / d s||_2. Printed and saved as CSV.

The critic is qf1 (--critic qf2 for the other twin), evaluated in float64 so the finite difference measures the
network, not float32 round-off.

    python plot_qfield.py runs/A/td3.pt runs/B/td3_pave.pt --out qfield.png
"""

import csv
import importlib
import math
import os
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
from torch.func import jacrev, vmap  # noqa: E402

CHECKPOINT_FORMAT = "pave-checkpoint/1"
BASE_SCRIPTS = ("td3.py", "sac.py")  # the reference checkpoint is a plain one, as in the paper
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the training scripts sit next to this file
from eval_smoothness import hidden_sizes_of  # noqa: E402


@dataclass
class Args:
    checkpoints: tyro.conf.Positional[list[str]]
    """checkpoint files (.pt) written by the training scripts with --save-model, one per method, same env"""
    out: str = "qfield.png"
    """the figure: one 3D surface per checkpoint, side by side"""
    csv: str | None = None
    """the geometry table as CSV (None: --out with the suffix .csv)"""
    reference: str | None = None
    """checkpoint that picks the dominant axes and the reference transition (None: the first td3.py/sac.py one)"""
    critic: Literal["qf1", "qf2"] = "qf1"
    """which twin critic to analyze"""
    epsilon: float = 1e-3
    """finite-difference step on the state (paper Eq. 17)"""
    state_range: float = 1.0
    """the state dim is swept over reference +- this (paper: [-1, 1])"""
    action_range: float = 1.5
    """the action dim is swept over reference +- this, normalized units (paper: [-1.5, 1.5])"""
    clip: float = 300.0
    """surface values are clipped here (paper: 300)"""
    grid: int = 51
    """grid points per swept axis"""
    state_dim: int | None = None
    """force the swept state dim i (None: the dominant one)"""
    action_dim: int | None = None
    """force the swept action dim j (None: the dominant one)"""
    rollout_steps: int = 300
    """env steps of each policy's deterministic rollout (reference transitions and geometry states)"""
    seed: int = 1
    """seed of the rollouts' env resets"""


def fail(message):
    sys.exit(f"plot_qfield.py: error: {message}")


def reason(e):
    """An exception as one short line, for error messages."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


@dataclass
class Checkpoint:
    path: str
    method: str
    env_id: str
    script: str
    step: int
    actor: torch.nn.Module
    qf: torch.nn.Module
    make_env: object


def load_checkpoint(path, critic):
    """Rebuild actor and critic from the script that wrote the checkpoint; one clear line on anything unusable."""
    if not os.path.isfile(path):
        fail(f"no such checkpoint file: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        fail(f"{path} is not a readable torch checkpoint ({reason(e)})")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fail(f"{path} is not a checkpoint of this project (expected format {CHECKPOINT_FORMAT!r})")
    if critic not in ckpt or "actor" not in ckpt:
        fail(f"{path} has no critics: it holds no {critic!r} (or no 'actor') state dict, so there is no Q-field")
    try:
        module = importlib.import_module(Path(ckpt["script"]).stem)
        args = ckpt["args"]
        actor = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], hidden_sizes_of(args), args["actor_activation"])
        qf = module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], hidden_sizes_of(args), args["critic_activation"])
        actor.load_state_dict(ckpt["actor"])
        qf.load_state_dict(ckpt[critic])
    except Exception as e:
        fail(f"cannot rebuild the networks of {path} with {ckpt.get('script')} ({reason(e)})")
    # float64, and frozen: nothing here trains, so only the inputs we differentiate need gradients
    actor, qf = actor.double().eval().requires_grad_(False), qf.double().eval().requires_grad_(False)
    return Checkpoint(path, args.get("exp_name", Path(path).stem), ckpt["env_id"], ckpt["script"], ckpt["global_step"],
                      actor, qf, module.make_env)


def rollout_states(ckpt, steps, seed):
    """States the deterministic policy visits in `steps` env steps (reset at episode ends), shape (steps, obs_dim)."""
    env = ckpt.make_env(ckpt.env_id, seed)()
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=seed)
    states = []
    for _ in range(steps):
        states.append(obs)
        with torch.no_grad():
            action = ckpt.actor.act(torch.as_tensor(obs, dtype=torch.float64)).numpy()
        obs, _, terminated, truncated, _ = env.step((low + (action + 1.0) * 0.5 * (high - low)).astype(np.float32))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.array(states), dtype=torch.float64)


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


def dominant_pair(mixed):
    """(transition b, state dim i, action dim j) of the largest |mixed[b, j, i]| (Appendix A's dominant axes)."""
    b, j, i = np.unravel_index(int(mixed.abs().argmax()), tuple(mixed.shape))
    return int(b), int(i), int(j)


def qfield_surface(qf, obs, action, i, j, args):
    """Grid (X, Y, Z): X = s_i, Y = a_j around (obs, action); Z = ||D_i||, the Eq. 17 vector's norm, clipped."""
    xs = obs[i] + torch.linspace(-args.state_range, args.state_range, args.grid, dtype=torch.float64)
    ys = action[j] + torch.linspace(-args.action_range, args.action_range, args.grid, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="ij")
    grid_obs, grid_actions = obs.repeat(X.numel(), 1), action.repeat(X.numel(), 1)
    grid_obs[:, i], grid_actions[:, j] = X.flatten(), Y.flatten()
    Z = fd_mixed_partial(qf, grid_obs, grid_actions, args.epsilon, [i])[:, :, 0].norm(dim=-1).clamp(max=args.clip)
    return X.numpy(), Y.numpy(), Z.reshape(X.shape).numpy()


def critic_geometry(qf, obs, actions):
    """Exact derivatives per state: grad_a Q, H_sa = grad2_sa Q (act_dim, obs_dim), H_aa = grad2_aa Q (act, act)."""

    def action_grad(s, a):
        grad = jacrev(lambda a: qf(s[None], a[None])[0, 0])(a)
        return grad, grad  # the second copy comes back as aux: one pass gives the gradient and both Jacobians of it

    (h_sa, h_aa), grad = vmap(jacrev(action_grad, argnums=(0, 1), has_aux=True))(obs, actions)
    return grad, h_sa, h_aa


def implicit_policy_jacobian(h_aa, h_sa):
    """Lemma 4.1: the greedy action a*(s) = argmax_a Q(s, a) has the Jacobian -H_aa^-1 H_sa (H_aa negative definite)."""
    return -torch.linalg.solve(h_aa, h_sa)


def geometry_statistics(ckpt, obs):
    """One row of the geometry table: Proposition 4.2's bound checked state by state at a = pi(s), medians over states.

    M = ||H_sa||_2; mu = -lambda_max(H_aa); mu_nonpos = states with mu <= 0 (Q not strictly concave in a: no bound);
    M_over_mu = the bound; greedy_jacobian = ||-H_aa^-1 H_sa||_2 (Lemma 4.1); both over states with mu > 0 only.
    policy_jacobian = ||d pi / d s||_2 of the actor; bound_holds = share of the mu > 0 states where it is <= M / mu;
    grad_a_Q = ||grad_a Q(s, pi(s))||, zero where pi(s) is the stationary point that Lemma 4.1 assumes.
    """
    actions = ckpt.actor.act(obs).detach()
    grad, h_sa, h_aa = critic_geometry(ckpt.qf, obs, actions)
    M = torch.linalg.matrix_norm(h_sa, ord=2)
    mu = -torch.linalg.eigvalsh(h_aa)[:, -1]
    policy_jacobian = torch.linalg.matrix_norm(vmap(jacrev(ckpt.actor.act))(obs), ord=2)
    concave = mu > 0  # the bound and Lemma 4.1 only apply where Q is strictly concave in the action
    bound = M[concave] / mu[concave]
    greedy_jacobian = torch.linalg.matrix_norm(implicit_policy_jacobian(h_aa[concave], h_sa[concave]), ord=2)

    def median(x):
        return float(x.median()) + 0.0 if x.numel() else math.nan  # + 0.0 turns -0.0 into 0.0

    return {
        "method": ckpt.method, "env": ckpt.env_id, "step": ckpt.step, "states": len(obs),
        "M": median(M), "mu": median(mu), "mu_nonpos": int((~concave).sum()), "M_over_mu": median(bound),
        "greedy_jacobian": median(greedy_jacobian), "policy_jacobian": median(policy_jacobian),
        "bound_holds": float((policy_jacobian[concave] <= bound).double().mean()) if concave.any() else math.nan,
        "grad_a_Q": median(grad.norm(dim=-1)),
    }


def plot_surfaces(surfaces, names, i, j, reference, center, args):
    """One 3D surface per method, side by side, on shared axes, z-limits and color scale."""
    z_top = max(float(Z.max()) for _, _, Z in surfaces) or 1.0
    norm = matplotlib.colors.Normalize(0.0, z_top)
    fig = plt.figure(figsize=(4.6 * len(surfaces) + 1.2, 5.2))
    for k, ((X, Y, Z), name) in enumerate(zip(surfaces, names)):
        ax = fig.add_subplot(1, len(surfaces), k + 1, projection="3d")
        ax.plot_surface(X, Y, Z, cmap="viridis", norm=norm, rstride=1, cstride=1, linewidth=0, antialiased=False)
        ax.set_zlim(0.0, z_top)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"s[{i}]  (state dim {i})")
        ax.set_ylabel(f"a[{j}]  (action dim {j}, normalized)")
        ax.zaxis.set_rotate_label(False)  # keep the formula upright
        ax.set_zlabel(rf"$\|\partial \nabla_a Q / \partial s_{{{i}}}\|$", rotation=90)
        ax.view_init(elev=28, azim=-130)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=fig.axes, shrink=0.6, pad=0.04,
                 label=f"mixed-partial norm (clipped at {args.clip:g})")
    fig.suptitle(rf"Q-gradient field $\|\nabla^2_{{sa}} Q\|$ by finite differences (eps={args.epsilon:g}), "
                 f"swept around the transition s[{i}]={center[0]:+.2f}, a[{j}]={center[1]:+.2f} visited by "
                 f"{reference};\n"
                 f"axes (s[{i}], a[{j}]) = the dominant pair of {reference}. Flat and low = a stable learning signal.",
                 fontsize=10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    plt.close(fig)


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


def main(argv=None):
    args = tyro.cli(Args, args=argv, description=__doc__)
    if not args.checkpoints:
        fail("give at least one checkpoint file (.pt), e.g. runs/<run>/td3.pt")
    if args.epsilon <= 0 or args.state_range <= 0 or args.action_range <= 0 or args.clip <= 0:
        fail("--epsilon, --state-range, --action-range and --clip must be positive")
    if args.grid < 2 or args.rollout_steps < 1:
        fail("--grid must be at least 2 and --rollout-steps at least 1")
    paths = list(dict.fromkeys(args.checkpoints + ([args.reference] if args.reference else [])))
    loaded = {path: load_checkpoint(path, args.critic) for path in paths}
    checkpoints = [loaded[path] for path in args.checkpoints]
    envs = sorted({c.env_id for c in loaded.values()})
    if len(envs) > 1:
        fail(f"the checkpoints come from different envs ({', '.join(envs)}); compare methods on one env at a time")
    if args.reference:
        reference = loaded[args.reference]
    else:
        reference = next((c for c in checkpoints if c.script in BASE_SCRIPTS), checkpoints[0])
        if reference.script not in BASE_SCRIPTS:
            print(f"note: no td3.py/sac.py checkpoint given; {reference.path} picks the dominant axes")
    states = {c.path: rollout_states(c, args.rollout_steps, args.seed) for c in loaded.values()}
    ref_obs = states[reference.path]
    ref_actions = reference.actor.act(ref_obs).detach()
    obs_dim, act_dim = ref_obs.shape[1], ref_actions.shape[1]
    mixed = fd_mixed_partial(reference.qf, ref_obs, ref_actions, args.epsilon, range(obs_dim))
    _, i, j = dominant_pair(mixed)
    i = i if args.state_dim is None else args.state_dim
    j = j if args.action_dim is None else args.action_dim
    if not (0 <= i < obs_dim and 0 <= j < act_dim):
        fail(f"--state-dim must be in [0, {obs_dim}) and --action-dim in [0, {act_dim}) for {reference.env_id}")
    b = int(mixed[:, j, i].abs().argmax())  # the reference transition: where the plotted pair interacts most
    chosen = "dominant pair" if args.state_dim is None and args.action_dim is None else "pair (set by flag)"
    print(f"{chosen} on {reference.method}: state dim {i}, action dim {j} (|d2Q/da_j ds_i| = "
          f"{float(mixed[b, j, i].abs()):.4g} at rollout step {b})")

    surfaces = [qfield_surface(c.qf, ref_obs[b], ref_actions[b], i, j, args) for c in checkpoints]
    names = [f"{c.method}\n({c.script}, {c.env_id}, step {c.step})" for c in checkpoints]  # two lines: panels sit close
    plot_surfaces(surfaces, names, i, j, reference.method, (float(ref_obs[b, i]), float(ref_actions[b, j])), args)
    print(f"figure saved to {args.out}")

    rows = [geometry_statistics(c, states[c.path]) for c in checkpoints]
    csv_path = args.csv or str(Path(args.out).with_suffix(".csv"))
    print_and_save_table(rows, csv_path)
    print(f"table saved to {csv_path}")


if __name__ == "__main__":
    main()
