"""SAC: Soft Actor-Critic (Haarnoja et al., 2018), the base of PAVE-SAC.

Policy:   a = tanh(u), u ~ N(mean(s), std(s)^2), reparameterized; log pi(a|s) = log N(u) - sum_j log(1 - tanh(u_j)^2)
Critics:  L(theta) = 0.5 (mse(Q_1, y) + mse(Q_2, y)),
          y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s'))
Actor:    L(phi) = mean (alpha log pi(a|s) - min_j Q_j(s, a)),  a ~ pi(s); targets follow the critics by Polyak
          averaging.
Entropy:  alpha fixed at 0.2 (the reference), or with --autotune
          L(alpha) = -mean log(alpha) (log pi(a|s) - action_dim).

The protocol of the PAVE paper's released code (docs/protocol.md): MLPs with hidden layers [256, 256] and SiLU (the
paper text's section 6.1 has ReLU for the baselines: `--actor-activation relu --critic-activation relu`), Adam 1e-3,
batch 100, 10 000 uniform random steps first, then 50 gradient steps after every 50 env steps, gamma 0.99, alpha 0.2,
log std clamped to [-20, 2] as Stable-Baselines3 does. Exploration samples the policy; evaluation acts with the
deterministic tanh(mean). Actions live in [-1, 1] inside the algorithm; only the action given to `env.step` is
rescaled. This plain script also MEASURES (never trains on) the critic geometry PAVE regularizes (geometry_probe.py:
PAVE's terms), so base and PAVE runs share TensorBoard charts under `geometry/`. Run control (flags, logs, checkpoints,
stopping and resuming: docs/studies.md) is run_control.py.

    python sac.py --env-id Hopper-v5 --seed 1
"""

import math
import os
import random
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import run_control
from geometry_probe import log_geometry
from run_control import CHECKPOINT_FORMAT, modern_env_id  # noqa: F401  (the names tools and tests read here)

SCRIPT = os.path.basename(__file__)


@dataclass
class Args(run_control.RunFlags):
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
    capture_video: bool = False
    """record videos of episodes into the run directory's `videos/`"""
    geometry_freq: int = 5_000
    """env steps between critic geometry measurements"""
    geometry_batch: int = 256
    """replay transitions per geometry measurement"""


# The released protocol (docs/protocol.md): training budget per env (every other setting is the same in all of them).
# Unset fields come from here, or from DEFAULT_PRESET for an env the paper did not use.
ENV_PRESETS = {
    "LunarLanderContinuous-v3": dict(total_timesteps=500_000),
    "Pendulum-v1": dict(total_timesteps=100_000),
    "Reacher-v5": dict(total_timesteps=500_000),
    "Ant-v5": dict(total_timesteps=1_000_000),
    "Hopper-v5": dict(total_timesteps=1_000_000),
    "Walker2d-v5": dict(total_timesteps=1_000_000),
}
DEFAULT_PRESET = dict(total_timesteps=1_000_000)
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
        norm = [nn.LayerNorm(width_out)] if layer_norm else []
        layers += [nn.Linear(width_in, width_out), *norm, ACTIVATIONS[activation]()]
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
    """Tanh-squashed Gaussian policy: a shared trunk whose last layer holds the mean head and the log-std head side by
    side."""

    def __init__(self, obs_dim, act_dim, hidden_sizes=(256, 256), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden_sizes, activation)

    def forward(self, obs):
        """(mean, log_std) of the Gaussian before the tanh."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def get_action(self, obs):
        """(a, log pi(a|s), tanh(mean)): a = tanh(mean + std * noise) is a reparameterized sample, so gradients reach
        the actor.

        log pi(a|s) = sum_j [log N(u_j; mean_j, std_j^2) - log(1 - tanh(u_j)^2)]  (change of variables through the
        tanh), with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): the same value, without the log(0) that float32
        hits once |u| > 9. """
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        gaussian_log_prob = -0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)  # (u - mean) / std = noise
        log_det_tanh = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return torch.tanh(u), (gaussian_log_prob - log_det_tanh).sum(-1), torch.tanh(mean)

    def act(self, obs):
        """The deterministic action tanh(mean) in [-1, 1] (evaluation tools call this)."""
        return torch.tanh(self(obs)[0])


class ReplayBuffer:
    """Transitions (s, a, r, s', terminated) in preallocated tensors; actions normalized to [-1, 1].

    `terminated` only, never `truncated`: a time-limit cut bootstraps from s', which is the true final observation.
    """

    def __init__(self, capacity, obs_dim, act_dim, device):
        self.capacity, self.device, self.pos, self.size = capacity, device, 0, 0
        self.obs = torch.zeros((capacity, obs_dim), dtype=torch.float32)
        self.next_obs = torch.zeros((capacity, obs_dim), dtype=torch.float32)
        self.actions = torch.zeros((capacity, act_dim), dtype=torch.float32)
        self.rewards = torch.zeros(capacity, dtype=torch.float32)
        self.terminated = torch.zeros(capacity, dtype=torch.float32)

    def add(self, obs, action, reward, next_obs, terminated):
        i = self.pos
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
        fields = (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        return [f[idx].to(self.device, non_blocking=True) for f in fields]

    FIELDS = ("obs", "next_obs", "actions", "rewards", "terminated")

    def state_dict(self):
        """For a resumable state: the filled rows only (clones: a slice would save the whole preallocated tensor), pos,
        size."""
        filled = {name: getattr(self, name)[: self.size].clone() for name in self.FIELDS}
        return {"pos": self.pos, "size": self.size, **filled}

    def load_state_dict(self, state):
        self.pos, self.size = state["pos"], state["size"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = state[name]


def train(args: Args, resumed: Optional[dict] = None) -> str:
    """Train with `args` (the presets and checks applied here, the run folder chosen as on the command line) and return
    the run folder; bad input raises run_control.BadInput. With args.resume, the run goes on from that state (`resumed`:
    that state, if the caller has loaded it). SIGTERM and Ctrl-C stop it with a resumable state, and the signal handlers
    found are put back at the end; called from a thread other than the main one, it installs no signal handlers (Python
    runs them in the main thread only), so only --stop-at-step stops it early."""
    args, run_dir, resumed = run_control.prepare(args, SCRIPT, resolve_args, resumed)
    env = make_env(args.env_id, args.seed, args.capture_video, run_dir)()
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    writer = run_control.start_logging(args, SCRIPT, run_dir, env, device, resumed)

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
        return Critics(QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation, args.critic_layer_norm)
                       .to(device) for _ in range(2))

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

    # run control (run_control.py): what a resumable state holds, by its names; a resumed run restores it here
    stateful = {"actor": actor, "qf": qf, "qf_target": qf_target, "q_optimizer": q_optimizer,
                "actor_optimizer": actor_optimizer, "rb": rb,
                **({"alpha_optimizer": alpha_optimizer} if args.autotune else {})}
    tensors = {"log_alpha": log_alpha} if args.autotune else {}
    run = run_control.Run(args, SCRIPT, run_dir, env, device, writer, stateful, {"sample": sample_rng},
                          lambda step: model_checkpoint(args, step, obs_dim, act_dim, actor, qf, log_alpha),
                          tensors=tensors, resumed=resumed)
    if resumed and args.autotune:
        alpha = log_alpha.exp().detach()
    obs, n_updates, losses = run.obs, run.n_updates, run.losses
    with run:
        for global_step in run.steps():
            # ALGO LOGIC: act, store the transition
            if global_step <= args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():  # the policy's own sample is the exploration: no added noise
                    action = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()
            env_action = to_env(action)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            rb.add(obs, action, reward, next_obs, terminated)
            obs = run.episode_step(global_step, env_action, reward, next_obs, terminated, truncated)

            # ALGO LOGIC: training
            if global_step > args.learning_starts and global_step % args.train_freq == 0:
                burst = rb.sample(args.gradient_steps, args.batch_size, sample_rng)
                for b_obs, b_actions, b_rewards, b_next_obs, b_terminated in zip(*burst):
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
                        actor_loss = (alpha * log_prob - qf_pi).mean()
                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        losses["actor_loss"] = actor_loss.detach()
                        # alpha rises while the policy's entropy -log pi is below the target, falls above it
                        if args.autotune:
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

            if global_step % args.geometry_freq == 0 and rb.size >= args.geometry_batch:
                log_geometry(writer, qf[0], rb, args, sample_rng, global_step)  # measured, never trained on
            if run.end_step(global_step, obs, n_updates):  # logs, checkpoints, resumable states; True on a stop
                break
    return run.finish()


def model_checkpoint(args, step, obs_dim, act_dim, actor, qf, log_alpha=None):
    """The model as --save-model and --model-checkpoints save it, in the format that eval_smoothness.py,
    critic_geometry.py and plot_qfield.py read: the networks to evaluate and analyze, no training state."""
    return {**run_control.checkpoint_header(args, step, SCRIPT, "sac"), "obs_dim": obs_dim, "act_dim": act_dim,
            "actor": actor.state_dict(), "qf1": qf.member_state_dict(0), "qf2": qf.member_state_dict(1),
            **({"log_alpha": log_alpha.detach().cpu()} if args.autotune else {})}


def resolve_args(args: Args, resumed: Optional[dict] = None) -> Args:
    """The flags checked and completed from ENV_PRESETS (run_control.resolve_args); raises BadInput on bad input."""
    return run_control.resolve_args(args, SCRIPT, ENV_PRESETS, DEFAULT_PRESET, resumed)


if __name__ == "__main__":
    run_control.main(train, Args, SCRIPT)
