"""TD3 + Grad-CAPS (Lee et al., 2024), a policy-side baseline of PAVE: penalize the policy's second difference in time.

Grad-CAPS changes ONLY the actor loss. On three consecutive states of one trajectory (s_{t-1}, s_t, s_{t+1}) the
deterministic policy pi (normalized actions in [-1, 1]) should move along a straight line, except where it must turn:
    L(phi) = -mean Q_1(s, pi(s)) + lambda_T * L_T
    L_T = mean( 0.5 * (2 pi(s_t) - pi(s_{t+1}) - pi(s_{t-1}))^2 * w ),   w = tanh(1 / (pi(s_{t+1}) - pi(s_{t-1}) + 1e-4)^2)
The weight w (elementwise, detached) relaxes the penalty where the action moves a lot between s_{t-1} and s_{t+1}. The
replay buffer also stores s_{t-1}, as the PAVE paper's released code does (REFERENCE.md); at an episode's first step it
is s_t itself (our choice: the released buffer gives the previous episode's last observation there, an artefact).
Everything else is td3.py (`diff td3.py td3_gradcaps.py` shows exactly what Grad-CAPS adds).

    python td3_gradcaps.py --env-id Hopper-v5 --lambda-t 1.0
"""

import difflib
import os
import random
import sys
import time
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


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of this experiment (run directory and checkpoint name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """sets `torch.backends.cudnn.deterministic`"""
    cuda: bool = True
    """use CUDA when it is available"""
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
    progress_bar: bool = True
    """show a progress bar with steps, recent return and SPS"""

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
    """widths of the hidden layers of actor and critics"""
    actor_activation: Literal["relu", "silu"] = "silu"
    """activation of the actor's hidden layers (the released code's SiLU; the paper text's baselines: relu)"""
    critic_activation: Literal["relu", "silu"] = "silu"
    """activation of the critics' hidden layers (ReLU critics have a zero action Hessian almost everywhere)"""

    lambda_t: Optional[float] = None
    """weight of Grad-CAPS's temporal term L_T (default: paper Table 7 for the env, see ENV_PRESETS)"""
    mpr_sigma: float = 0.01
    """geometry probe: std of the observation noise of MPR (the released code's 0.01)"""
    curv_delta: float = 1.0
    """geometry probe: curvature margin delta of Curv (the released code's 1.0)"""
    geometry_freq: int = 5_000
    """env steps between critic geometry measurements"""
    geometry_batch: int = 256
    """replay transitions per geometry measurement"""
    log_freq: int = 1_000
    """env steps between loss/SPS logs"""
    eval_episodes: int = 10
    """evaluation episodes after training with --save-model"""


# Released protocol (REFERENCE.md): training budget, discount and buffer per env; Grad-CAPS lambda of the paper's Tables 7/8. Fields a user
# leaves unset come from here, or from DEFAULT_PRESET for an env the paper did not use (our choice for its lambda:
# 1.0, the paper's value on all six envs).
ENV_PRESETS = {
    "LunarLanderContinuous-v3": dict(total_timesteps=500_000, gamma=0.98, buffer_size=200_000, lambda_t=1.0),
    "Pendulum-v1": dict(total_timesteps=100_000, gamma=0.98, buffer_size=200_000, lambda_t=1.0),
    "Reacher-v5": dict(total_timesteps=500_000, gamma=0.99, buffer_size=1_000_000, lambda_t=1.0),
    "Ant-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000, lambda_t=1.0),
    "Hopper-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000, lambda_t=1.0),
    "Walker2d-v5": dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000, lambda_t=1.0),
}
DEFAULT_PRESET = dict(total_timesteps=1_000_000, gamma=0.99, buffer_size=1_000_000, lambda_t=1.0)
# The paper's ids that Gymnasium 1.x no longer has, mapped to the same task.
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
MUST_BE_POSITIVE = {"total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_frequency",
                    "geometry_freq", "geometry_batch", "log_freq"}


def resolve_args(args: Args) -> Args:
    """Validate the flags and fill every field the user left unset from the env's presets; exit with one line on bad input."""
    prog = os.path.basename(__file__)
    if args.env_id in PAPER_ENV_IDS:
        print(f"note: {args.env_id} (the paper's id) is not in Gymnasium 1.x; running {PAPER_ENV_IDS[args.env_id]}, the same task")
        args.env_id = PAPER_ENV_IDS[args.env_id]
    if args.env_id not in gym.registry:
        close = difflib.get_close_matches(args.env_id, list(gym.registry) + list(PAPER_ENV_IDS), n=3, cutoff=0.6)
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
    return args


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


def mlp(in_dim, out_dim, hidden_sizes, activation):
    """Linear, activation, ..., Linear: one hidden layer per entry of hidden_sizes."""
    widths = [in_dim, *hidden_sizes]
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], out_dim))


class QNetwork(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden_sizes=(400, 300), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1, hidden_sizes, activation)

    def forward(self, obs, act):
        return self.net(torch.cat([obs, act], -1))


class Actor(nn.Module):
    def __init__(self, obs_dim, act_dim, hidden_sizes=(400, 300), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_sizes, activation)

    def forward(self, obs):
        return torch.tanh(self.net(obs))

    def act(self, obs):
        """The deterministic action in [-1, 1] (evaluation tools call this)."""
        return self.forward(obs)


def pave_regularizer(qf, obs, actions, next_obs, mpr_sigma, curv_delta):
    """PAVE's three critic terms at replay transitions (s, a, s'), paper Eq. 11, 13, 15 (here only measured).

        MPR  = mean_{b,j} (d_a_j Q(s + eps, a) - d_a_j Q(s, a))^2,   eps ~ N(0, mpr_sigma^2 I) on the observation
        VFC  = mean_{b,j} (d_a_j Q(s, a) - d_a_j Q(s', a))^2,         the replay action a at both s and s'
        Curv = mean_b max(0, v^T grad2_aa Q(s, a) v + curv_delta),    v ~ Rademacher, exact Hessian-vector product
    MPR and VFC are means over batch AND action dimensions j (`F.mse_loss`), as the released code computes them: the
    paper's E ||.||^2 divided by the action dimension, the form its lambdas were tuned on (REFERENCE.md).

    The base point, the noisy point and the next state go through the critic as ONE batch of 3B rows; the action
    gradients keep their graph (create_graph) so every term is differentiable in the critic's parameters. Curv gets its
    own B-row evaluation: a Hessian-vector product through the shared 3B-row graph would cost three times as much.
    Returns (q, terms): q = Q(s, a) of shape (B,), the TD prediction from the shared evaluation; terms holds the
    differentiable scalars mpr, vfc, curv and the detached diagnostics grad_norm = mean ||grad_a Q(s, a)|| and
    vhv = mean v^T grad2_aa Q(s, a) v.
    """
    batch = obs.shape[0]
    states = torch.cat([obs, obs + mpr_sigma * torch.randn_like(obs), next_obs])
    shared_actions = actions.detach().repeat(3, 1).requires_grad_(True)
    q_all = qf(states, shared_actions).squeeze(-1)
    grads = torch.autograd.grad(q_all.sum(), shared_actions, create_graph=True)[0]
    grad, grad_noisy, grad_next = grads.split(batch)

    curv_actions = actions.detach().clone().requires_grad_(True)
    curv_grad = torch.autograd.grad(qf(obs, curv_actions).sum(), curv_actions, create_graph=True)[0]
    v = torch.randint(0, 2, actions.shape, device=actions.device).to(actions.dtype) * 2 - 1
    hessian_v = torch.autograd.grad((curv_grad * v).sum(), curv_actions, create_graph=True)[0]
    vhv = (hessian_v * v).sum(-1)

    terms = {
        "mpr": F.mse_loss(grad_noisy, grad),
        "vfc": F.mse_loss(grad, grad_next),
        "curv": F.relu(vhv + curv_delta).mean(),
        "grad_norm": grad.detach().norm(dim=-1).mean(),
        "vhv": vhv.detach().mean(),
    }
    return q_all[:batch], terms


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


def log_geometry(writer, qf, rb, args, generator, step):
    """Measure the critic geometry PAVE is about on a small replay sub-batch and log it under geometry/."""
    obs, actions, _, next_obs, _, _ = (x[0] for x in rb.sample(1, args.geometry_batch, generator))
    _, terms = pave_regularizer(qf, obs, actions, next_obs, args.mpr_sigma, args.curv_delta)
    for name, value in terms.items():
        writer.add_scalar(f"geometry/{name}", value.item(), step)


if __name__ == "__main__":
    args = resolve_args(tyro.cli(Args))
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = f"runs/{run_name}"
    env = make_env(args.env_id, args.seed, args.capture_video, run_dir)()
    if not isinstance(env.action_space, gym.spaces.Box):
        sys.exit(f"{os.path.basename(__file__)}: error: {args.env_id} has a {type(env.action_space).__name__} action space; "
                 "this algorithm needs continuous (Box) actions")
    print(f"{args.exp_name} configuration:\n" + "\n".join(f"  {k} = {v}" for k, v in asdict(args).items()))
    if args.track:
        try:
            import wandb
        except ImportError:
            sys.exit(f"{os.path.basename(__file__)}: error: --track needs Weights & Biases: pip install wandb")
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                   config=vars(args), name=run_name, monitor_gym=True, save_code=True)
    writer = SummaryWriter(run_dir)
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in asdict(args).items()))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    sample_rng = torch.Generator().manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    action_low, action_high = env.action_space.low, env.action_space.high

    def to_env(action):
        """[-1, 1] -> the env's bounds: the only place actions leave normalized units."""
        return action_low + (action + 1.0) * 0.5 * (action_high - action_low)

    actor = Actor(obs_dim, act_dim, args.hidden_sizes, args.actor_activation).to(device)
    qf1 = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    qf2 = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    actor_target = Actor(obs_dim, act_dim, args.hidden_sizes, args.actor_activation).to(device)
    qf1_target = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    qf2_target = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    actor_target.load_state_dict(actor.state_dict())
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    # fused Adam: one kernel updates all parameters (much less per-step overhead than a loop over them)
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    online = list(actor.parameters()) + list(qf1.parameters()) + list(qf2.parameters())
    targets = list(actor_target.parameters()) + list(qf1_target.parameters()) + list(qf2_target.parameters())

    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    obs, _ = env.reset(seed=args.seed)
    episode_return, episode_actions, recent_returns = 0.0, [], []
    n_updates, global_step, losses = 0, 0, {}
    start_time, train_start_time, last_log = time.time(), None, 0
    progress = tqdm(total=args.total_timesteps, disable=not args.progress_bar, unit="step", mininterval=1.0)
    try:
        for global_step in range(1, args.total_timesteps + 1):
            if global_step <= args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():
                    action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
                action = np.clip(action + np.random.normal(0.0, args.exploration_noise, act_dim), -1.0, 1.0).astype(np.float32)
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
                recent_returns = (recent_returns + [episode_return])[-10:]
                obs, _ = env.reset()
                episode_return, episode_actions = 0.0, []

            if global_step > args.learning_starts and global_step % args.train_freq == 0:
                train_start_time = train_start_time or time.time()
                burst = rb.sample(args.gradient_steps, args.batch_size, sample_rng)
                for b_obs, b_actions, b_rewards, b_next_obs, b_terminated, b_prev_obs in zip(*burst):
                    with torch.no_grad():
                        clipped_noise = (torch.randn_like(b_actions) * args.policy_noise).clamp(-args.noise_clip, args.noise_clip)
                        next_actions = (actor_target(b_next_obs) + clipped_noise).clamp(-1.0, 1.0)
                        qf_next = torch.min(qf1_target(b_next_obs, next_actions), qf2_target(b_next_obs, next_actions)).squeeze(-1)
                        td_target = b_rewards + (1.0 - b_terminated) * args.gamma * qf_next
                    qf1_loss = F.mse_loss(qf1(b_obs, b_actions).squeeze(-1), td_target)
                    qf2_loss = F.mse_loss(qf2(b_obs, b_actions).squeeze(-1), td_target)
                    qf_loss = qf1_loss + qf2_loss
                    q_optimizer.zero_grad()
                    qf_loss.backward()
                    q_optimizer.step()
                    n_updates += 1

                    if n_updates % args.policy_frequency == 0:
                        gradcaps_t = gradcaps_loss(actor, b_prev_obs, b_obs, b_next_obs)
                        actor_loss = -qf1(b_obs, actor(b_obs)).mean() + args.lambda_t * gradcaps_t
                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        with torch.no_grad():
                            torch._foreach_lerp_(targets, online, args.tau)
                        losses.update(actor_loss=actor_loss.detach(), gradcaps_t=gradcaps_t.detach())
                losses.update(qf1_loss=qf1_loss.detach(), qf2_loss=qf2_loss.detach())

            if global_step - last_log >= args.log_freq and losses:
                last_log = global_step
                for name, value in losses.items():  # .item() only here: no device sync per gradient step
                    writer.add_scalar(f"losses/{name}", value.item(), global_step)
                sps = global_step / (time.time() - start_time)
                writer.add_scalar("charts/SPS", sps, global_step)
                writer.add_scalar("charts/SPS_train", (global_step - args.learning_starts) / (time.time() - train_start_time), global_step)
                progress.set_postfix(ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-", sps=f"{sps:.0f}")
            if global_step % args.geometry_freq == 0 and rb.size >= args.geometry_batch:
                log_geometry(writer, qf1, rb, args, sample_rng, global_step)
            progress.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted at step {global_step}; saving what there is")
    finally:
        progress.close()
        env.close()

    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.pt"
        torch.save({
            "format": CHECKPOINT_FORMAT, "script": os.path.basename(__file__), "algo": "td3",
            "env_id": args.env_id, "args": asdict(args), "global_step": global_step,
            "obs_dim": obs_dim, "act_dim": act_dim,
            "actor": actor.state_dict(), "qf1": qf1.state_dict(), "qf2": qf2.state_dict(),
        }, model_path)
        print(f"model saved to {model_path}")
        result = evaluate(model_path, episodes=args.eval_episodes, device=str(device))
        writer.add_scalar("eval/return", float(np.mean(result["return"])), global_step)
        writer.add_scalar("eval/sm", float(np.mean(result["sm"])), global_step)
        print(f"eval over {args.eval_episodes} episodes: return {np.mean(result['return']):.2f}, sm {np.mean(result['sm']):.4f}")
    writer.close()
