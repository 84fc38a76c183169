"""TD3 + ASAP: Aligning actions with predictions from preceding states (Kwak & Hwang, 2026), a baseline of PAVE.

ASAP changes ONLY the actor. The actor gets a second head mu_next on its hidden layers that predicts the NEXT action
from the current state; a Polyak-averaged copy of the whole actor (tau 0.01, after every gradient step) supplies that
prediction as a slowly moving target the next action is pulled towards. On normalized actions in [-1, 1]:
    L(phi) = -mean Q_1(s, pi(s)) + lambda_T * L_T + lambda_S * L_S + lambda_P * L_P
    L_T = the Grad-CAPS term on (s_{t-1}, s_t, s_{t+1})       (see asap_loss; the buffer also stores s_{t-1})
    L_S = 0.5 * mse(pi(s_{t+1}), mu_next_target(s_t))         align the next action with the target's prediction
    L_P = 0.5 * mse(mu_next(s_t), pi(s_{t+1}) detached)       train the predictor
as the PAVE paper's released code computes them; unset lambdas are the paper's Table 7 (docs/protocol.md). mu_next never
acts: the checkpoint evaluates like any other. L_T is logged as losses/gradcaps_t (it IS the Grad-CAPS term), L_S and
L_P as losses/asap_s and losses/asap_p. `diff td3.py td3_asap.py` shows what ASAP adds. Stopping and resuming:
docs/studies.md.

    python td3_asap.py --env-id Hopper-v5 --lambda-t 0.07 --lambda-s 0.3 --lambda-p 2.0
"""

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
    buffer_size: Optional[int] = None
    """replay buffer capacity (default: per env, see ENV_PRESETS)"""
    gamma: Optional[float] = None
    """discount factor (default: per env, see ENV_PRESETS)"""
    tau: float = 0.005
    """Polyak coefficient of the target networks"""
    batch_size: int = 256
    """replay batch size"""
    learning_starts: int = 10_000
    """uniform random actions for this many steps before learning starts"""
    train_freq: int = 1
    """env steps between training bursts"""
    gradient_steps: int = 1
    """gradient steps per training burst"""
    policy_frequency: int = 2
    """the actor and targets are updated every this many critic updates"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise (normalized action units)"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise (normalized action units)"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise"""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """widths of the hidden layers of actor and critics (any number of layers)"""
    actor_activation: Literal["relu", "silu"] = "silu"
    """activation of the actor's hidden layers (the released code's SiLU; the paper text's baselines: relu)"""
    critic_activation: Literal["relu", "silu"] = "silu"
    """activation of the critics' hidden layers (ReLU critics have a zero action Hessian almost everywhere)"""
    critic_layer_norm: bool = False
    """LayerNorm after each hidden linear layer of the critics (before the activation)"""
    lambda_t: Optional[float] = None
    """weight of ASAP's temporal (Grad-CAPS) term L_T (default: paper Table 7 for the env, see ENV_PRESETS)"""
    lambda_s: Optional[float] = None
    """weight of ASAP's alignment term L_S (default: paper Table 7 for the env)"""
    lambda_p: Optional[float] = None
    """weight of ASAP's predictor term L_P (default: paper Table 7 for the env)"""
    asap_tau: float = 0.01
    """Polyak coefficient of ASAP's target actor, updated after every gradient step (the released code's 0.01)"""
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


# The released protocol (docs/protocol.md): training budget, discount and buffer per env; ASAP lambdas of the paper's
# Tables 7/8. Unset fields come from here, or from DEFAULT_PRESET for an env the paper did not use (our choice for its
# lambdas: the paper's Ant/Walker values, its most common MuJoCo locomotion setting).
ENV_PRESETS = {
    "LunarLanderContinuous-v3": dict(total_timesteps=500_000, gamma=0.98, buffer_size=200_000,
                                     lambda_t=0.005, lambda_s=0.03, lambda_p=2.0),
    "Pendulum-v1": dict(total_timesteps=100_000, gamma=0.98, buffer_size=200_000,
                        lambda_t=0.005, lambda_s=0.03, lambda_p=2.0),
    "Reacher-v5": dict(total_timesteps=500_000, gamma=0.99, buffer_size=1_000_000,
                       lambda_t=0.1, lambda_s=0.1, lambda_p=2.0),
    "Ant-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000,
                   lambda_t=0.05, lambda_s=0.3, lambda_p=2.0),
    "Hopper-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000,
                      lambda_t=0.07, lambda_s=0.3, lambda_p=2.0),
    "Walker2d-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000,
                        lambda_t=0.05, lambda_s=0.3, lambda_p=2.0),
}
DEFAULT_PRESET = dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000,
                      lambda_t=0.05, lambda_s=0.3, lambda_p=2.0)


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
    def __init__(self, obs_dim, act_dim, hidden_sizes=(400, 300), activation="silu", layer_norm=False):
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
    """TD3's actor plus ASAP's next-action head `mu_next` on the same hidden layers; only the action head acts."""

    def __init__(self, obs_dim, act_dim, hidden_sizes=(400, 300), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_sizes, activation)
        self.mu_next = nn.Linear(hidden_sizes[-1], act_dim)

    def forward(self, obs):
        return torch.tanh(self.net(obs))

    def act(self, obs):
        """The deterministic action in [-1, 1] (evaluation tools call this)."""
        return self.forward(obs)

    def act_and_predict(self, obs):
        """(pi(s), mu_next(s)): the action and the predicted next action, both tanh-squashed, from one pass of the
        trunk."""
        hidden = self.net[:-1](obs)
        return torch.tanh(self.net[-1](hidden)), torch.tanh(self.mu_next(hidden))


def asap_loss(actor, asap_target, prev_obs, obs, next_obs):
    """ASAP's three actor terms at replay triples (s_{t-1}, s_t, s_{t+1}) of one trajectory, on normalized actions in
    [-1, 1].

        L_T = mean(0.5 * (2 pi(s_t) - pi(s_{t+1}) - pi(s_{t-1}))^2 * w),   w = tanh(1 / (pi(s_{t+1}) - pi(s_{t-1}) +
        1e-4)^2)
              (the Grad-CAPS term; w elementwise and detached; mean over batch and action dimensions)
        L_S = 0.5 * mse(pi(s_{t+1}), mu_next_target(s_t))      the target's prediction is a constant (no gradient)
        L_P = 0.5 * mse(mu_next(s_t), pi(s_{t+1}).detach())     only the mu_next head (and the trunk under it) learns
        from it

    mse is F.mse_loss: the mean over batch AND action dimensions. pi is the action head, mu_next the prediction head
    (`act_and_predict`); asap_target is the Polyak-averaged copy of the actor. The three states go through the actor as
    ONE batch of 3B rows (both heads on the shared trunk). Returns (l_t, l_s, l_p).
    """
    batch = obs.shape[0]
    actions, predictions = actor.act_and_predict(torch.cat([prev_obs, obs, next_obs]))
    prev_action, action, next_action = actions.split(batch)
    predicted_next_action = predictions[batch : 2 * batch]
    second_difference = 0.5 * (2 * action - next_action - prev_action).square()
    weight = torch.tanh(1.0 / (next_action - prev_action + 1e-4).square()).detach()
    with torch.no_grad():
        _, target_prediction = asap_target.act_and_predict(obs)
    l_t = (second_difference * weight).mean()
    l_s = 0.5 * F.mse_loss(next_action, target_prediction)
    l_p = 0.5 * F.mse_loss(predicted_next_action, next_action.detach())
    return l_t, l_s, l_p


@torch.no_grad()
def update_asap_target(asap_target, actor, tau):
    """Polyak step of ASAP's target actor, every parameter: theta' <- theta' + tau * (theta - theta')."""
    torch._foreach_lerp_(list(asap_target.parameters()), list(actor.parameters()), tau)


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
        """For a resumable state: the filled rows only (clones: a slice would save the whole preallocated tensor), pos,
        size, and mid_episode."""
        return {"pos": self.pos, "size": self.size, "mid_episode": self.mid_episode,
                **{name: getattr(self, name)[: self.size].clone() for name in self.FIELDS}}

    def load_state_dict(self, state):
        self.pos, self.size, self.mid_episode = state["pos"], state["size"], state["mid_episode"]
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
    actor_target = Actor(obs_dim, act_dim, args.hidden_sizes, args.actor_activation).to(device)
    qf_target = make_critics()
    actor_target.load_state_dict(actor.state_dict())
    qf_target.load_state_dict(qf.state_dict())
    # ASAP's own slow copy of the whole actor (its mu_next head gives L_S's target); TD3's actor_target stays as it is
    asap_target = Actor(obs_dim, act_dim, args.hidden_sizes, args.actor_activation).to(device)
    asap_target.load_state_dict(actor.state_dict())
    # fused Adam: one kernel updates all parameters (much less per-step overhead than a loop over them)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    online = list(actor.parameters()) + list(qf.parameters())
    targets = list(actor_target.parameters()) + list(qf_target.parameters())
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    # run control (run_control.py): what a resumable state holds, by its names; a resumed run restores it here
    stateful = {"actor": actor, "qf": qf, "actor_target": actor_target, "qf_target": qf_target,
                "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer, "rb": rb, "asap_target": asap_target}
    run = run_control.Run(args, SCRIPT, run_dir, env, device, writer, stateful, {"sample": sample_rng},
                          lambda step: model_checkpoint(args, step, obs_dim, act_dim, actor, qf, asap_target),
                          resumed=resumed)
    obs, n_updates, losses = run.obs, run.n_updates, run.losses
    with run:
        for global_step in run.steps():
            # ALGO LOGIC: act, store the transition
            if global_step <= args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                action = np.clip(action + np.random.normal(0.0, args.exploration_noise, act_dim), -1.0, 1.0)
                action = action.astype(np.float32)
            env_action = to_env(action)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            rb.add(obs, action, reward, next_obs, terminated, truncated)
            obs = run.episode_step(global_step, env_action, reward, next_obs, terminated, truncated)

            # ALGO LOGIC: training
            if global_step > args.learning_starts and global_step % args.train_freq == 0:
                burst = rb.sample(args.gradient_steps, args.batch_size, sample_rng)
                for b_obs, b_actions, b_rewards, b_next_obs, b_terminated, b_prev_obs in zip(*burst):
                    with torch.no_grad():
                        noise = torch.randn_like(b_actions) * args.policy_noise
                        clipped_noise = noise.clamp(-args.noise_clip, args.noise_clip)
                        next_actions = (actor_target(b_next_obs) + clipped_noise).clamp(-1.0, 1.0)
                        qf_next = qf_target(b_next_obs, next_actions).min(0).values
                        td_target = b_rewards + (1.0 - b_terminated) * args.gamma * qf_next
                    qf1_loss, qf2_loss = (F.mse_loss(q, td_target) for q in qf(b_obs, b_actions))
                    qf_loss = qf1_loss + qf2_loss
                    q_optimizer.zero_grad()
                    qf_loss.backward()
                    q_optimizer.step()
                    n_updates += 1

                    if n_updates % args.policy_frequency == 0:
                        asap_t, asap_s, asap_p = asap_loss(actor, asap_target, b_prev_obs, b_obs, b_next_obs)
                        actor_loss = -qf(b_obs, actor(b_obs), n=1).mean()  # TD3's actor follows the first critic
                        actor_loss = (actor_loss + args.lambda_t * asap_t + args.lambda_s * asap_s
                                      + args.lambda_p * asap_p)
                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        with torch.no_grad():
                            torch._foreach_lerp_(targets, online, args.tau)
                        losses["actor_loss"] = actor_loss.detach()
                        # L_T is the Grad-CAPS term: logged under its name, gradcaps_t
                        losses.update(gradcaps_t=asap_t.detach(), asap_s=asap_s.detach(), asap_p=asap_p.detach())
                    update_asap_target(asap_target, actor, args.asap_tau)  # every gradient step, as the released code
                losses.update(qf1_loss=qf1_loss.detach(), qf2_loss=qf2_loss.detach())

            if global_step % args.geometry_freq == 0 and rb.size >= args.geometry_batch:
                log_geometry(writer, qf[0], rb, args, sample_rng, global_step)  # measured, never trained on
            if run.end_step(global_step, obs, n_updates):  # logs, checkpoints, resumable states; True on a stop
                break
    return run.finish()


def model_checkpoint(args, step, obs_dim, act_dim, actor, qf, asap_target):
    """The model as --save-model and --model-checkpoints save it, in the format that eval_smoothness.py,
    critic_geometry.py and plot_qfield.py read: the networks to evaluate and analyze, no training state."""
    return {**run_control.checkpoint_header(args, step, SCRIPT, "td3"), "obs_dim": obs_dim, "act_dim": act_dim,
            "actor": actor.state_dict(), "qf1": qf.member_state_dict(0), "qf2": qf.member_state_dict(1),
            "asap_target": asap_target.state_dict()}


def check(args):
    """The script's own flag checks: the message for a bad flag, or None."""
    if args.asap_tau > 1:
        return f"--asap-tau must be at most 1, got {args.asap_tau}"


def resolve_args(args: Args, resumed: Optional[dict] = None) -> Args:
    """The flags checked and completed from ENV_PRESETS (run_control.resolve_args); raises BadInput on bad input."""
    return run_control.resolve_args(args, SCRIPT, ENV_PRESETS, DEFAULT_PRESET, resumed, check)


if __name__ == "__main__":
    run_control.main(train, Args, SCRIPT)
