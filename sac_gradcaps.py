"""SAC + Grad-CAPS (Lee et al., 2024), a policy-side baseline of PAVE: penalize the policy's second difference in time.

Grad-CAPS changes ONLY the actor loss. On three consecutive states of one trajectory (s_{t-1}, s_t, s_{t+1}) the
deterministic policy pi(s) = tanh(mean(s)) (the squashed mean, normalized actions in [-1, 1]) should move along a
straight line, except where it must turn:
    L(phi) = mean (alpha log pi(a|s) - min_j Q_j(s, a)) + lambda_T * L_T,   a ~ pi(s)
    L_T = mean( 0.5 * (2 pi(s_t) - pi(s_{t+1}) - pi(s_{t-1}))^2 * w ),   w = tanh(1 / (pi(s_{t+1}) - pi(s_{t-1}) + 1e-4)^2)
The weight w (elementwise, detached) relaxes the penalty where the action moves a lot between s_{t-1} and s_{t+1}. The
replay buffer also stores s_{t-1}, as the PAVE paper's released code does (docs/protocol.md); at an episode's first step
it is s_t itself (our choice: the released buffer gives the previous episode's last observation there, an artefact).
`diff sac.py sac_gradcaps.py` shows what Grad-CAPS adds. Stopping and resuming: docs/studies.md.

    python sac_gradcaps.py --env-id Hopper-v5 --lambda-t 1.0
"""

import difflib
import math
import os
import random
import signal
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from eval_smoothness import action_change, evaluate

CHECKPOINT_FORMAT = "pave-checkpoint/1"
RESUME_FORMAT = "pave-resume/1"


@dataclass
class Args:
    # --- the algorithm ---
    env_id: str = "Hopper-v5"
    """the Gymnasium id of the environment (continuous actions)"""
    total_timesteps: Optional[int] = None
    """env steps to train for (default: the reference budget of the env, see ENV_PRESETS)"""
    learning_rate: float = 1e-3
    """Adam learning rate of actor and critics"""
    buffer_size: int = 1_000_000
    """replay buffer capacity"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak coefficient of the target networks"""
    batch_size: int = 100
    """replay batch size"""
    learning_starts: int = 10_000
    """uniform random actions for this many steps before learning starts"""
    train_freq: int = 50
    """env steps between training bursts"""
    gradient_steps: int = 50
    """gradient steps per training burst"""
    policy_frequency: int = 1
    """the actor (and alpha) are updated every this many critic updates"""
    target_network_frequency: int = 1
    """the target critics are updated every this many critic updates"""
    alpha: float = 0.2
    """entropy coefficient (fixed, as in the reference; unused with --autotune)"""
    autotune: bool = False
    """learn alpha towards the target entropy -action_dim (starts at alpha = 1, as CleanRL)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """widths of the hidden layers of actor and critics (any number of layers)"""
    actor_activation: Literal["relu", "silu"] = "silu"
    """activation of the actor's hidden layers (the released code's SiLU; the paper text's baselines: relu)"""
    critic_activation: Literal["relu", "silu"] = "silu"
    """activation of the critics' hidden layers (ReLU critics have a zero action Hessian almost everywhere)"""
    critic_layer_norm: bool = False
    """LayerNorm after each hidden linear layer of the critics (before the activation)"""
    lambda_t: Optional[float] = None
    """weight of Grad-CAPS's temporal term L_T (default: paper Table 8 for the env, see ENV_PRESETS)"""
    mpr_sigma: float = 0.01
    """geometry probe: std of the observation noise of MPR (the released code's 0.01)"""
    curv_delta: float = 1.0
    """geometry probe: curvature margin delta of Curv (the released code's 1.0)"""

    # --- running it ---
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment (run directory and checkpoint name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """sets `torch.backends.cudnn.deterministic`"""
    cuda: bool = True
    """use CUDA when it is available"""
    torch_threads: Optional[int] = None
    """torch threads on CPU (default: $OMP_NUM_THREADS if set, else 1; docs/performance.md measures why)"""
    track: bool = False
    """log to Weights & Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "pave"
    """the wandb project name"""
    wandb_entity: Optional[str] = None
    """the wandb entity (team)"""
    capture_video: bool = False
    """record videos of episodes into the run directory's `videos/`"""
    save_model: bool = False
    """save a checkpoint to the run directory, then evaluate it (eval/return, eval/sm)"""
    eval_episodes: int = 10
    """evaluation episodes after training with --save-model"""
    progress_bar: bool = True
    """show a progress bar with steps, recent return and SPS"""
    log_freq: int = 1_000
    """env steps between loss/SPS logs"""
    geometry_freq: int = 5_000
    """env steps between critic geometry measurements"""
    geometry_batch: int = 256
    """replay transitions per geometry measurement"""
    checkpoint_freq: int = 0
    """env steps between resumable states (<run dir>/resume.pt, the one before kept as resume.prev.pt); 0: only on stop"""
    model_checkpoints: int = 0
    """save the --save-model checkpoint at N evenly spaced steps, to <run dir>/checkpoints/ (docs/studies.md); 0: none"""
    model_checkpoint_every: int = 0
    """also save it at every multiple of this step (fixed steps: a run extended later keeps them); 0: none"""
    resume: Optional[str] = None
    """continue the run that saved this resumable state, in its run directory and with its flags (docs/studies.md)"""
    stop_at_step: Optional[int] = None
    """simulate an interruption at this step: save the resumable state and exit as on SIGTERM (splits a run in two)"""


# The released protocol (docs/protocol.md): training budget per env (every other setting is the same in all of them);
# Grad-CAPS lambda of the paper's Tables 7/8. Unset fields come from here, or from DEFAULT_PRESET for an env the paper did
# not use (our choice for its lambda: 1.0, the paper's value on all six envs).
ENV_PRESETS = {
    "LunarLanderContinuous-v3": dict(total_timesteps=500_000, lambda_t=1.0),
    "Pendulum-v1": dict(total_timesteps=100_000, lambda_t=1.0),
    "Reacher-v5": dict(total_timesteps=500_000, lambda_t=1.0),
    "Ant-v5": dict(total_timesteps=1_000_000, lambda_t=1.0),
    "Hopper-v5": dict(total_timesteps=1_000_000, lambda_t=1.0),
    "Walker2d-v5": dict(total_timesteps=1_000_000, lambda_t=1.0),
}
DEFAULT_PRESET = dict(total_timesteps=1_000_000, lambda_t=1.0)
# The actor's log std is clamped into this range, as Stable-Baselines3 (the released code's base) does.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def make_env(env_id, seed, capture_video=False, run_dir="."):
    """A thunk that builds one env (CleanRL style, so vector envs can reuse it); the caller seeds reset()."""

    def thunk():
        if capture_video and not os.environ.get("DISPLAY"):
            os.environ.setdefault("MUJOCO_GL", "egl")  # MuJoCo renders offscreen on a headless machine
        env = gym.make(env_id, render_mode="rgb_array" if capture_video else None)
        if capture_video:
            env = gym.wrappers.RecordVideo(env, f"{run_dir}/videos", episode_trigger=lambda ep: ep % 50 == 0)
        env.action_space.seed(seed)
        return env

    return thunk


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}


def mlp(in_dim, out_dim, hidden_sizes, activation, layer_norm=False):
    """Linear, [LayerNorm,] activation, ..., Linear: one hidden layer per entry of hidden_sizes."""
    widths = [in_dim, *hidden_sizes]
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), *([nn.LayerNorm(width_out)] if layer_norm else []), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out_dim))


class QNetwork(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden_sizes=(256, 256), activation="silu", layer_norm=False):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1, hidden_sizes, activation, layer_norm)

    def forward(self, obs, act):
        return self.net(torch.cat([obs, act], -1))


class Critics(nn.ModuleList):
    """The twin critics as one module: Q of every critic (or of the first n) at (s, a), shape (n, B)."""

    def forward(self, obs, act, n=None):
        return torch.stack([critic(obs, act).squeeze(-1) for critic in self[:n]])

    def member_state_dict(self, i):
        """Critic i as a QNetwork state dict (what checkpoints store)."""
        return self[i].state_dict()


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy: a shared trunk whose last layer holds the mean head and the log-std head side by side."""

    def __init__(self, obs_dim, act_dim, hidden_sizes=(256, 256), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden_sizes, activation)

    def forward(self, obs):
        """(mean, log_std) of the Gaussian before the tanh."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def get_action(self, obs):
        """(a, log pi(a|s), tanh(mean)): a = tanh(mean + std * noise) is a reparameterized sample, so gradients reach the actor.

        log pi(a|s) = sum_j [log N(u_j; mean_j, std_j^2) - log(1 - tanh(u_j)^2)]  (change of variables through the tanh),
        with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): the same value, without the log(0) that float32 hits once |u| > 9.
        """
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        gaussian_log_prob = -0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)  # (u - mean) / std = noise
        log_det_tanh = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), (gaussian_log_prob - log_det_tanh).sum(-1), torch.tanh(mean)

    def act(self, obs):
        """The deterministic action tanh(mean) in [-1, 1] (evaluation tools call this)."""
        return torch.tanh(self(obs)[0])


def pave_regularizer(critics, obs, actions, next_obs, mpr_sigma, curv_delta):
    """PAVE's three critic terms at replay transitions (s, a, s'), for every critic in `critics` (paper Eq. 11, 13, 15).

        MPR  = mean_{b,j} (d_a_j Q(s + eps, a) - d_a_j Q(s, a))^2,   eps ~ N(0, mpr_sigma^2 I) on the raw observation
        VFC  = mean_{b,j} (d_a_j Q(s, a) - d_a_j Q(s', a))^2,         the replay action a at both s and s'
        Curv = mean_b max(0, v^T grad2_aa Q(s, a) v + curv_delta),    v ~ Rademacher, exact Hessian-vector product
    MPR is a finite difference of grad_a Q along eps: it penalizes the mixed Hessian grad2_sa Q. VFC penalizes the change of
    grad_a Q from s_t to s_{t+1}. Curv pushes v^T H_aa v below -delta, so the action-space curvature mu stays >= delta.
    MPR and VFC are means over the batch AND the action dimensions j (F.mse_loss), as the authors' released code computes
    them: the paper's E ||.||^2 divided by the action dimension, the form its lambdas were tuned on.

    Wiring: critic loss = TD loss + lambda1 * sum_i mpr_i + lambda2 * sum_i vfc_i + lambda3 * sum_i curv_i, the TD loss as
    the algorithm has it (TD3: mse(Q1, y) + mse(Q2, y); SAC: half of that); the actor is untouched. a is the stored replay
    action (exploration noise included), the critics are the current ones (not the targets), s' has no done mask, and ONE
    eps and ONE v serve every critic.
    critics: a sequence of modules, each called as critic(obs, actions) -> Q of shape (B,) or (B, 1), twice differentiable
    in the action (any depth; SiLU, tanh, GELU, LayerNorm; ReLU makes grad2_aa Q zero, so Curv is just delta). Rows must
    not interact: s, s + eps and s' share one batch, which BatchNorm's batch statistics would mix into each other.
    Returns (q, terms): q = Q(s, a), shape (n_critics, B), the TD prediction from the same evaluation; terms maps mpr, vfc,
    curv (differentiable) and the detached diagnostics grad_norm = mean_b ||grad_a Q(s, a)|| and vhv = mean_b v^T
    grad2_aa Q(s, a) v to tensors of shape (n_critics,).
    """
    batch = obs.shape[0]
    eps = mpr_sigma * torch.randn_like(obs)
    v = torch.randint(0, 2, actions.shape, device=actions.device).to(actions.dtype) * 2 - 1
    states = torch.cat([obs, obs + eps, next_obs])  # rows s, s + eps, s': one evaluation per critic
    shared_actions = actions.detach().repeat(3, 1).requires_grad_(True)  # the replay action a at all three
    curv_actions = actions.detach().clone().requires_grad_(True)
    q, terms = [], {"mpr": [], "vfc": [], "curv": [], "grad_norm": [], "vhv": []}
    for critic in critics:
        q_rows = critic(states, shared_actions).reshape(-1)
        # grad_a Q at every row; create_graph keeps it differentiable in the critic's parameters
        grad, grad_noisy, grad_next = torch.autograd.grad(q_rows.sum(), shared_actions, create_graph=True)[0].split(batch)
        # v^T grad2_aa Q v: the derivative of grad_a Q . v, on its own B rows (through the 3B rows above it costs 3x)
        curv_grad = torch.autograd.grad(critic(obs, curv_actions).sum(), curv_actions, create_graph=True)[0]
        hessian_v = torch.autograd.grad((curv_grad * v).sum(), curv_actions, create_graph=True)[0]
        vhv = (hessian_v * v).sum(-1)

        q.append(q_rows[:batch])
        terms["mpr"].append(F.mse_loss(grad_noisy, grad))
        terms["vfc"].append(F.mse_loss(grad, grad_next))
        terms["curv"].append(F.relu(vhv + curv_delta).mean())
        terms["grad_norm"].append(grad.detach().norm(dim=-1).mean())
        terms["vhv"].append(vhv.detach().mean())
    return torch.stack(q), {name: torch.stack(values) for name, values in terms.items()}


def gradcaps_loss(actor, prev_obs, obs, next_obs):
    """Grad-CAPS's actor term at replay triples (s_{t-1}, s_t, s_{t+1}) of one trajectory, on normalized actions in [-1, 1].

        d2  = 0.5 * (2 pi(s_t) - pi(s_{t+1}) - pi(s_{t-1}))^2            squared second difference, per action dimension
        w   = tanh(1 / (pi(s_{t+1}) - pi(s_{t-1}) + 1e-4)^2), detached      near 1 for a small displacement, ~1/disp^2 for a large one
        L_T = mean(d2 * w)                                                  mean over batch and action dimensions

    pi is `actor.act`, the deterministic action; w is a weight, not a path for gradients. The three states go through the
    actor as ONE batch of 3B rows. Returns l_t.
    """
    batch = obs.shape[0]
    prev_action, action, next_action = actor.act(torch.cat([prev_obs, obs, next_obs])).split(batch)
    second_difference = 0.5 * (2 * action - next_action - prev_action).square()
    weight = torch.tanh(1.0 / (next_action - prev_action + 1e-4).square()).detach()
    return (second_difference * weight).mean()


class ReplayBuffer:
    """Transitions (s_{t-1}, s, a, r, s', terminated) in preallocated tensors; actions normalized to [-1, 1].

    `terminated` only, never `truncated`: a time-limit cut bootstraps from s', which is the true final observation.
    Grad-CAPS also needs the previous observation s_{t-1}: the buffer takes it from the transition added just before,
    unless that one ended an episode (terminated or truncated), and then uses s itself (the episode's first step: our
    choice; the released code's buffer gives the previous episode's last observation there, an artefact of its layout).
    """

    def __init__(self, capacity, obs_dim, act_dim, device):
        self.capacity, self.device, self.pos, self.size = capacity, device, 0, 0
        self.mid_episode = False  # whether the next add continues the episode of the last one
        self.prev_obs = torch.zeros((capacity, obs_dim), dtype=torch.float32)
        self.obs = torch.zeros((capacity, obs_dim), dtype=torch.float32)
        self.next_obs = torch.zeros((capacity, obs_dim), dtype=torch.float32)
        self.actions = torch.zeros((capacity, act_dim), dtype=torch.float32)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        self.terminated = torch.zeros(capacity, dtype=torch.float32)

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        i = self.pos
        # the last add wrote slot i - 1 (index -1 wraps around the ring); read it before slot i is overwritten
        self.prev_obs[i] = self.obs[i - 1] if self.mid_episode else torch.as_tensor(obs)
        self.mid_episode = not (terminated or truncated)
        self.obs[i] = torch.as_tensor(obs)
        self.actions[i] = torch.as_tensor(action)
        self.rewards[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.terminated[i] = float(terminated)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n_batches, batch_size, generator):
        """n_batches batches at once (one index draw and one host-to-device copy per training burst)."""
        idx = torch.randint(0, self.size, (n_batches, batch_size), generator=generator)
        fields = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated, self.prev_obs)
        return [f[idx].to(self.device, non_blocking=True) for f in fields]

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated", "prev_obs")

    def state_dict(self):
        """For a resumable state: the filled rows only (clones: a slice would save the whole preallocated tensor), pos, size,
        and mid_episode."""
        return {"pos": self.pos, "size": self.size, "mid_episode": self.mid_episode,
                **{name: getattr(self, name)[: self.size].clone() for name in self.FIELDS}}

    def load_state_dict(self, state):
        self.pos, self.size, self.mid_episode = state["pos"], state["size"], state["mid_episode"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = state[name]


def train(args: Args, run_dir: str, resumed: Optional[dict] = None):
    env = make_env(args.env_id, args.seed, args.capture_video, run_dir)()
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    writer = start_logging(args, run_dir, env, device, resumed)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    sample_rng = torch.Generator().manual_seed(args.seed)

    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_low, action_high = env.action_space.low, env.action_space.high

    def to_env(action):
        """[-1, 1] -> the env's bounds: the only place actions leave normalized units."""
        return action_low + (action + 1.0) * 0.5 * (action_high - action_low)

    def make_critics():
        return Critics(QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation, args.critic_layer_norm).to(device)
                       for _ in range(2))

    actor = Actor(obs_dim, act_dim, args.hidden_sizes, args.actor_activation).to(device)
    qf = make_critics()
    qf_target = make_critics()
    qf_target.load_state_dict(qf.state_dict())
    # fused Adam: one kernel updates all parameters (much less per-step overhead than a loop over them)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    online = list(qf.parameters())
    targets = list(qf_target.parameters())

    if args.autotune:
        target_entropy = -float(act_dim)
        log_alpha = torch.zeros((), device=device, requires_grad=True)
        alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate, fused=True)
        alpha = log_alpha.exp().detach()
    else:
        log_alpha, alpha = None, torch.tensor(args.alpha, device=device)

    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    # what has a state_dict and must be saved for an exact resume, by the names of the resumable state
    stateful = {"actor": actor, "qf": qf, "qf_target": qf_target, "q_optimizer": q_optimizer,
                "actor_optimizer": actor_optimizer, "rb": rb,
                **({"alpha_optimizer": alpha_optimizer} if args.autotune else {})}
    rngs, tensors = {"sample": sample_rng}, ({"log_alpha": log_alpha} if args.autotune else {})
    loop = restore_run(resumed, stateful, rngs, tensors, env, device, args) if resumed else fresh_loop_state(env, args)
    if resumed and args.autotune:
        alpha = log_alpha.exp().detach()
    obs, episode_return, episode_actions = loop["obs"], loop["episode_return"], loop["episode_actions"]
    n_updates, losses, last_log = loop["n_updates"], loop["losses"], loop["last_log"]
    start_time = time.time() - loop["elapsed"]  # SPS charts go on as if a resumed run had not stopped
    train_start_time = None if loop["train_elapsed"] is None else time.time() - loop["train_elapsed"]
    checkpoint_steps = {args.total_timesteps * k // args.model_checkpoints for k in range(1, args.model_checkpoints + 1)}
    stop_signal, stop, global_step = StopSignal(), False, loop["global_step"]
    progress = tqdm(total=args.total_timesteps, initial=loop["global_step"], disable=not args.progress_bar, unit="step", mininterval=1.0)
    try:
        for global_step in range(loop["global_step"] + 1, args.total_timesteps + 1):
            # ALGO LOGIC: act, store the transition
            if global_step <= args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():  # the policy's own sample is the exploration: no added noise
                    action = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()
            env_action = to_env(action)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            rb.add(obs, action, reward, next_obs, terminated, truncated)
            episode_return += float(reward)
            episode_actions.append(env_action)
            obs = next_obs
            if terminated or truncated:
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_length", len(episode_actions), global_step)
                writer.add_scalar("charts/action_change", action_change(np.array(episode_actions)), global_step)
                loop["recent_returns"] = (loop["recent_returns"] + [episode_return])[-10:]
                loop["episode_rng_state"] = env.unwrapped.np_random.bit_generator.state
                obs, _ = env.reset()
                episode_return, episode_actions = 0.0, []

            # ALGO LOGIC: training
            if global_step > args.learning_starts and global_step % args.train_freq == 0:
                train_start_time = train_start_time or time.time()
                burst = rb.sample(args.gradient_steps, args.batch_size, sample_rng)
                for b_obs, b_actions, b_rewards, b_next_obs, b_terminated, b_prev_obs in zip(*burst):
                    with torch.no_grad():
                        next_actions, next_log_prob, _ = actor.get_action(b_next_obs)
                        qf_next = qf_target(b_next_obs, next_actions).min(0).values
                        qf_next = qf_next - alpha * next_log_prob
                        td_target = b_rewards + (1.0 - b_terminated) * args.gamma * qf_next
                    qf1_loss, qf2_loss = (F.mse_loss(q, td_target) for q in qf(b_obs, b_actions))
                    qf_loss = 0.5 * (qf1_loss + qf2_loss)  # the released code's (SB3's) halved sum
                    q_optimizer.zero_grad()
                    qf_loss.backward()
                    q_optimizer.step()
                    n_updates += 1

                    if n_updates % args.policy_frequency == 0:
                        pi_actions, log_prob, _ = actor.get_action(b_obs)
                        qf_pi = qf(b_obs, pi_actions).min(0).values
                        gradcaps_t = gradcaps_loss(actor, b_prev_obs, b_obs, b_next_obs)
                        actor_loss = (alpha * log_prob - qf_pi).mean()
                        actor_loss = actor_loss + args.lambda_t * gradcaps_t
                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        losses["actor_loss"] = actor_loss.detach()
                        losses.update(gradcaps_t=gradcaps_t.detach())
                        if args.autotune:  # alpha rises while the policy's entropy -log pi is below the target, falls above it
                            alpha_loss = -(log_alpha * (log_prob.detach() + target_entropy)).mean()
                            alpha_optimizer.zero_grad()
                            alpha_loss.backward()
                            alpha_optimizer.step()
                            alpha = log_alpha.exp().detach()
                            losses["alpha_loss"] = alpha_loss.detach()
                    if n_updates % args.target_network_frequency == 0:
                        with torch.no_grad():
                            torch._foreach_lerp_(targets, online, args.tau)
                losses.update(qf1_loss=qf1_loss.detach(), qf2_loss=qf2_loss.detach(), alpha=alpha)

            if global_step - last_log >= args.log_freq and losses:
                last_log = global_step
                for name, value in losses.items():  # .item() only here: no device sync per gradient step
                    writer.add_scalar(f"losses/{name}", value.item(), global_step)
                sps = global_step / (time.time() - start_time)
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/SPS_train", (global_step - args.learning_starts) / (time.time() - train_start_time), global_step)
                recent = f"{np.mean(loop['recent_returns']):.1f}" if loop["recent_returns"] else "-"
                progress.set_postfix(ret=recent, sps=f"{sps:.0f}")
                if not args.progress_bar:  # a log file (benchmark.py, a batch job) still shows the run advancing
                    print(f"step {global_step}/{args.total_timesteps}: SPS {sps:.0f}, return of the last 10 episodes {recent}",
                          flush=True)
            if global_step % args.geometry_freq == 0 and rb.size >= args.geometry_batch:
                log_geometry(writer, qf, rb, args, sample_rng, global_step)
            progress.update(1)

            # before a stop at this step saves: a resumed run starts after it
            if global_step in checkpoint_steps or (args.model_checkpoint_every and global_step % args.model_checkpoint_every == 0):
                save_atomically(model_checkpoint(args, global_step, obs_dim, act_dim, actor, qf, log_alpha),
                                f"{run_dir}/checkpoints/{args.exp_name}_step{global_step}.pt")
            stop = stop_signal.reason or (global_step == args.stop_at_step and "--stop-at-step")
            if stop or (args.checkpoint_freq and global_step % args.checkpoint_freq == 0):
                loop.update(global_step=global_step, n_updates=n_updates, last_log=last_log, losses=losses, obs=obs,
                            episode_return=episode_return, episode_actions=episode_actions, elapsed=time.time() - start_time,
                            train_elapsed=None if train_start_time is None else time.time() - train_start_time)
                resume_path = save_run(f"{run_dir}/resume.pt", args, stateful, rngs, tensors, env, device, loop)
                if stop:
                    break
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM
        sys.exit(f"\n{os.path.basename(__file__)}: aborted at step {global_step}; the last resumable state (if any) is in {run_dir}")
    finally:
        progress.close()
        env.close()
        stop_signal.release()

    if stop:  # an interrupted run leaves its resumable state, never a final checkpoint (that one means finished)
        writer.close()
        print(f"stopped at step {global_step} ({stop}): resumable state saved to {resume_path}; "
              f"resume with: python {sys.argv[0]} --resume {resume_path}"
              + (f" (to step {args.total_timesteps}; --stop-at-step N stops it again at N)" if stop == "--stop-at-step" else ""))
        sys.exit(0)
    if args.save_model:
        model_path = save_atomically(model_checkpoint(args, global_step, obs_dim, act_dim, actor, qf, log_alpha),
                                     f"{run_dir}/{args.exp_name}.pt")
        print(f"model saved to {model_path}")
        result = evaluate(model_path, episodes=args.eval_episodes, device=str(device))
        writer.add_scalar("eval/return", float(np.mean(result["return"])), global_step)
        writer.add_scalar("eval/sm", float(np.mean(result["sm"])), global_step)
        print(f"eval over {args.eval_episodes} episodes: return {np.mean(result['return']):.2f}, sm {np.mean(result['sm']):.4f}")
    writer.close()


def log_geometry(writer, qf, rb, args, generator, step):
    """Measure the critic geometry PAVE is about on a small replay sub-batch and log the first critic's under geometry/."""
    obs, actions, _, next_obs, _, _ = (x[0] for x in rb.sample(1, args.geometry_batch, generator))
    _, terms = pave_regularizer(qf[:1], obs, actions, next_obs, args.mpr_sigma, args.curv_delta)
    for name, value in terms.items():
        writer.add_scalar(f"geometry/{name}", value[0].item(), step)


# ======================================================================================================================
# RUN CONTROL: flags, logging, checkpoints, exact stop and resume (docs/studies.md)
# ======================================================================================================================

# The paper's ids that Gymnasium 1.x cannot run, mapped to the same task (MuJoCo -v2/-v3 ids by modern_env_id's rule).
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
MUST_BE_POSITIVE = {"total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_frequency",
                    "target_network_frequency", "geometry_freq", "geometry_batch", "log_freq", "torch_threads"}
# Flags a resumed run may change: they cannot change what is learned (docs/studies.md says why each); --cuda and
# --torch-threads are exact only with the values that saved the state.
RESUME_MAY_CHANGE = {"resume", "stop_at_step", "checkpoint_freq", "model_checkpoints", "model_checkpoint_every", "log_freq",
                     "progress_bar", "total_timesteps",
                     "track", "wandb_project_name", "wandb_entity", "cuda", "torch_threads", "save_model", "eval_episodes"}


def modern_env_id(env_id):
    """The id Gymnasium 1.x runs for the paper's task: LunarLanderContinuous-v2 and Reacher-v2 as PAPER_ENV_IDS says, and a
    MuJoCo -v2/-v3 id (they need the retired mujoco-py) as its -v5."""
    name, _, version = env_id.rpartition("-v")
    if env_id in PAPER_ENV_IDS:
        return PAPER_ENV_IDS[env_id]
    if version in ("2", "3") and f"{name}-v5" in gym.registry:
        return f"{name}-v5"
    return env_id


def parse_args():
    """The flags, checked and completed from the presets; with --resume, the saved run's flags are the defaults. Returns
    (args, run_dir, resumed state or None); exits with one line on bad input."""
    args = tyro.cli(Args)
    resumed = load_resumable(args.resume) if args.resume else None
    if resumed:  # parse again with the saved run's flags as defaults; resolve_args refuses any that changed
        args = tyro.cli(Args, default=Args(**resumed["args"]))
    args = resolve_args(args, resumed)
    if resumed:  # the same run folder; TensorBoard drops what the stopped process logged after the saved step
        return args, os.path.dirname(args.resume) or ".", resumed
    return args, f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}", None


def resolve_args(args: Args, resumed=None) -> Args:
    """Validate the flags and fill every field the user left unset from the env's presets; with a resumed state, refuse a
    flag that differs from the saved run's (RESUME_MAY_CHANGE aside). Exit with one line on bad input."""
    prog = os.path.basename(__file__)
    if modern_env_id(args.env_id) != args.env_id:
        print(f"note: {args.env_id} (the paper's id) does not run in Gymnasium 1.x; running {modern_env_id(args.env_id)}, the same task")
        args.env_id = modern_env_id(args.env_id)
    if args.env_id not in gym.registry:
        runnable = [env_id for env_id in gym.registry if modern_env_id(env_id) == env_id]
        close = difflib.get_close_matches(args.env_id, runnable, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        sys.exit(f"{prog}: error: unknown env id '{args.env_id}'{hint}")
    for name, value in asdict(args).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            sys.exit(f"{prog}: error: --{name.replace('_', '-')} must be non-negative, got {value}")
        if name in MUST_BE_POSITIVE and value is not None and value <= 0:
            sys.exit(f"{prog}: error: --{name.replace('_', '-')} must be positive, got {value}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        sys.exit(f"{prog}: error: --hidden-sizes must be one or more positive widths, got {args.hidden_sizes}")
    source = f"presets for {args.env_id}" if args.env_id in ENV_PRESETS else f"defaults ({args.env_id} has no preset)"
    preset = {**DEFAULT_PRESET, **ENV_PRESETS.get(args.env_id, {})}
    unset = {name: value for name, value in preset.items() if getattr(args, name) is None}
    for name, value in unset.items():
        setattr(args, name, value)
    if unset:
        print(f"{source}: " + ", ".join(f"{name}={value}" for name, value in unset.items()))
    # a flag added after the state was saved must keep its default (the saved run did not have it)
    saved_args = {**asdict(Args()), **resumed["args"]} if resumed else {}
    for name, saved in saved_args.items():
        if name not in RESUME_MAY_CHANGE and getattr(args, name) != saved:
            sys.exit(f"{prog}: error: --{name.replace('_', '-')} {getattr(args, name)} conflicts with {saved}, the value of the "
                     f"run resumed from {args.resume}; a resumed run keeps its flags, except --"
                     + ", --".join(sorted(flag.replace("_", "-") for flag in RESUME_MAY_CHANGE)))
    if args.model_checkpoints > args.total_timesteps:
        sys.exit(f"{prog}: error: --model-checkpoints {args.model_checkpoints} exceeds --total-timesteps {args.total_timesteps}")
    if args.stop_at_step is not None and args.stop_at_step > args.total_timesteps:
        sys.exit(f"{prog}: error: --stop-at-step {args.stop_at_step} is beyond --total-timesteps {args.total_timesteps}")
    if resumed and args.stop_at_step is not None and args.stop_at_step <= resumed["global_step"]:
        sys.exit(f"{prog}: error: --stop-at-step {args.stop_at_step} is not after step {resumed['global_step']}, where "
                 f"{args.resume} stopped")
    if args.stop_at_step == args.total_timesteps:  # stopping at the last step is finishing: the run saves its model
        args.stop_at_step = None
    if resumed and args.total_timesteps < resumed["global_step"]:
        sys.exit(f"{prog}: error: --total-timesteps {args.total_timesteps} is below step {resumed['global_step']} of {args.resume}")
    if args.total_timesteps <= args.learning_starts:
        print(f"warning: --total-timesteps {args.total_timesteps} <= --learning-starts {args.learning_starts}: no gradient step "
              "is taken, the policy stays untrained", file=sys.stderr)
    return args


def start_logging(args, run_dir, env, device, resumed):
    """Check the env's action space, set torch's CPU threads, print the configuration and the device, and open the
    TensorBoard writer (and Weights & Biases with --track)."""
    prog = os.path.basename(__file__)
    if not isinstance(env.action_space, gym.spaces.Box):
        sys.exit(f"{prog}: error: {args.env_id} has a {type(env.action_space).__name__} action space; "
                 "this algorithm needs continuous (Box) actions")
    torch.set_num_threads(args.torch_threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
    print(f"{args.exp_name} configuration:\n" + "\n".join(f"  {k} = {v}" for k, v in asdict(args).items()))
    print(f"device: {device}" + (f" ({torch.get_num_threads()} torch threads)" if device.type == "cpu" else ""))
    if args.track:
        try:
            import wandb
        except ImportError:
            sys.exit(f"{prog}: error: --track needs Weights & Biases: pip install wandb")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=os.path.basename(os.path.abspath(run_dir)), monitor_gym=True, save_code=True)
    writer = SummaryWriter(run_dir, purge_step=resumed["global_step"] + 1 if resumed else None)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))
    return writer


def model_checkpoint(args, step, obs_dim, act_dim, actor, qf, log_alpha=None):
    """The model as --save-model and --model-checkpoints save it, in the format that eval_smoothness.py, critic_geometry.py
    and plot_qfield.py read: the networks to evaluate and analyze, no training state."""
    return {
        "format": CHECKPOINT_FORMAT, "script": os.path.basename(__file__), "algo": "sac",
        "env_id": args.env_id, "args": asdict(args), "global_step": step,
        "obs_dim": obs_dim, "act_dim": act_dim,
        "actor": actor.state_dict(), "qf1": qf.member_state_dict(0), "qf2": qf.member_state_dict(1),
        **({"log_alpha": log_alpha.detach().cpu()} if args.autotune else {}),
    }


def fresh_loop_state(env, args):
    """The training loop's bookkeeping at step 0 (restore_run gives it at a saved step)."""
    obs, _ = env.reset(seed=args.seed)
    return {"global_step": 0, "n_updates": 0, "last_log": 0, "losses": {}, "recent_returns": [], "elapsed": 0.0,
            "train_elapsed": None, "obs": obs, "episode_return": 0.0, "episode_actions": [],
            "episode_rng_state": None}  # the env's RNG state just before this episode's reset (None: the first, seed=args.seed)


def save_run(path, args, stateful, rngs, tensors, env, device, loop):
    """Save the resumable state (networks, optimizers, replay buffer, `tensors` such as log alpha, every RNG, the loop's
    bookkeeping and the current episode's actions) atomically to `path`, the previous one kept as resume.prev.pt. Returns the path."""
    return save_atomically({
        "format": RESUME_FORMAT, "script": os.path.basename(__file__), "args": {**asdict(args), "stop_at_step": None},
        **{name: loop[name] for name in ("global_step", "n_updates", "last_log", "losses", "recent_returns", "elapsed",
                                         "train_elapsed", "episode_return", "episode_rng_state")},
        **{name: thing.state_dict() for name, thing in stateful.items()},
        **{name: tensor.detach() for name, tensor in tensors.items()},
        "rng": {"python": random.getstate(), "torch": torch.get_rng_state(),
                **{name: generator.get_state() for name, generator in rngs.items()},
                "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
                "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None},
        "obs": torch.tensor(loop["obs"]),
        "episode_actions": torch.tensor(np.array(loop["episode_actions"]).reshape(-1, env.action_space.shape[0])),
        "env_rng_state": env.unwrapped.np_random.bit_generator.state,
    }, path, previous=os.path.join(os.path.dirname(path), "resume.prev.pt"))


def restore_run(resumed, stateful, rngs, tensors, env, device, args):
    """Load a resumable state into the networks, optimizers, buffer, `tensors` and RNGs, and bring the env back to the saved step by
    replaying the current episode's actions from its reset (the physical state of MuJoCo or Box2D cannot be saved; the
    replay reproduces it and the env's RNG exactly). Returns the loop's bookkeeping at that step."""
    for name in ("qf", "qf_target"):  # a state saved while the critics were two modules qf1, qf2 (before Critics)
        if name not in resumed:
            parts = [resumed.pop(name.replace("qf", f"qf{i}")) for i in (1, 2)]
            resumed[name] = {f"{i}.{key}": value for i, part in enumerate(parts) for key, value in part.items()}
    for name, thing in stateful.items():
        thing.load_state_dict(resumed[name])
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(resumed[name])
    random.setstate(resumed["rng"]["python"])
    bit_generator, key, *rest = resumed["rng"]["numpy"]
    np.random.set_state((bit_generator, np.array(key, dtype=np.uint32), *rest))
    torch.set_rng_state(resumed["rng"]["torch"])
    for name, generator in rngs.items():
        generator.set_state(resumed["rng"][name])
    if device.type == "cuda" and resumed["rng"]["cuda"] is not None:
        torch.cuda.set_rng_state(resumed["rng"]["cuda"])
    loop = {name: resumed[name] for name in ("global_step", "n_updates", "last_log", "losses", "recent_returns", "elapsed",
                                             "train_elapsed", "episode_return", "episode_rng_state")}
    obs, _ = env.reset(seed=args.seed)
    if loop["episode_rng_state"] is not None:  # a later episode: reset from the RNG state its reset started from
        env.unwrapped.np_random.bit_generator.state = loop["episode_rng_state"]
        obs, _ = env.reset()
    loop["episode_actions"] = list(resumed["episode_actions"].numpy())
    for env_action in loop["episode_actions"]:
        obs, *_ = env.step(env_action)
    if not np.array_equal(obs, resumed["obs"].numpy()) or env.unwrapped.np_random.bit_generator.state != resumed["env_rng_state"]:
        sys.exit(f"{os.path.basename(__file__)}: error: replaying the current episode of {args.resume} did not reproduce its "
                 f"observation; {args.env_id} cannot be resumed exactly here")
    loop["obs"] = obs
    print(f"resumed {os.path.dirname(args.resume) or '.'} at step {loop['global_step']} of {args.total_timesteps}")
    return loop


class StopSignal:
    """SIGTERM (a scheduler, Ray, benchmark.py) and Ctrl-C set `reason`, which the loop reads at the end of each env step,
    so that the run stops between two steps with a consistent state to save; a second Ctrl-C aborts at once (a repeated
    SIGTERM does not: a scheduler may send it to every process, and benchmark.py then again to its runs)."""

    def __init__(self):
        self.reason = None
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)

    def __call__(self, signum, frame):
        if self.reason and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.reason = self.reason or signal.Signals(signum).name

    def release(self):
        """From here on, Ctrl-C and SIGTERM stop at once."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def save_atomically(obj, path, previous=None):
    """torch.save `obj` to `path` (its folder made if need be) atomically; with `previous`, the file `path` held before is
    kept under that name. Returns the path.

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


def load_resumable(path):
    """The resumable state saved at `path` (loaded with weights_only=True: plain containers and tensors only), or exit with
    one line that says what is wrong with the file. The file is never modified."""
    prog = os.path.basename(__file__)
    previous = os.path.join(os.path.dirname(path), "resume.prev.pt")
    fallback = f"; the state saved before it is {previous}" if path.endswith("resume.pt") and os.path.isfile(previous) else ""
    if not os.path.isfile(path):
        sys.exit(f"{prog}: error: --resume {path}: no such file{fallback}")
    try:
        with zipfile.ZipFile(path) as archive:  # every member against its CRC: torch.load reads damaged tensor bytes silently
            damaged = archive.testzip()
        problem = f"bad CRC in {damaged}" if damaged else None
        state = None if damaged else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = type(error).__name__
    if problem:
        sys.exit(f"{prog}: error: --resume {path}: not a readable torch.save file, truncated or corrupt ({problem}){fallback}")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        sys.exit(f"{prog}: error: --resume {path}: not a resumable state (the resume.pt a training script saves)")
    if state["script"] != prog:
        sys.exit(f"{prog}: error: --resume {path}: a state of {state['script']}, not of {prog}; resume it with {state['script']}")
    return state


if __name__ == "__main__":
    train(*parse_args())
