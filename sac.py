"""SAC: Soft Actor-Critic (Haarnoja et al., 2018), the base of PAVE-SAC.

Policy:   a = tanh(u), u ~ N(mean(s), std(s)^2), reparameterized; log pi(a|s) = log N(u) - sum_j log(1 - tanh(u_j)^2)
Critics:  L(theta) = 0.5 (mse(Q_1, y) + mse(Q_2, y)),  y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s'))
Actor:    L(phi) = mean (alpha log pi(a|s) - min_j Q_j(s, a)),  a ~ pi(s); targets follow the critics by Polyak averaging.
Entropy:  alpha fixed at 0.2 (the reference), or with --autotune  L(alpha) = -mean log(alpha) (log pi(a|s) - action_dim).

Protocol of the PAVE paper's released code (REFERENCE.md): MLPs with hidden layers [256, 256] and SiLU activations (the
paper text's section 6.1 has ReLU for the baselines: `--actor-activation relu --critic-activation relu`), Adam 1e-3,
batch 100, 10 000 uniform random steps first, then 50 gradient steps after every 50 env steps, gamma 0.99, alpha 0.2,
log std clamped to [-20, 2] as Stable-Baselines3 does. Exploration samples the policy; evaluation acts with the
deterministic tanh(mean). Actions live in [-1, 1] inside the algorithm; only the action given to `env.step` is
rescaled to the env's bounds. This plain script also MEASURES (never trains on) the critic geometry PAVE regularizes, so
base and PAVE runs share TensorBoard charts under `geometry/`.

Long runs: SIGTERM or Ctrl-C stops the run at the end of an env step, saves a resumable state to <run dir>/resume.pt (also
written every --checkpoint-freq steps) and writes no final checkpoint; `python sac.py --resume <run dir>/resume.pt`
continues it in the same folder, on CPU to exactly the weights of a run done in one go. The saved flags are the resumed
run's defaults and a flag given again must keep its value, except those that cannot change what is learned (the
RESUME_MAY_CHANGE list): --total-timesteps (extends the run), --checkpoint-freq, --model-checkpoints, --stop-at-step,
--log-freq and --progress-bar (when it saves, stops, logs and shows), --track and --wandb-* (where logs also go), --cuda
(the device; exact only on the one that saved), --save-model and --eval-episodes (what follows training).
Along training: --model-checkpoints N saves the --save-model checkpoint at steps total_timesteps * k / N, k = 1..N (the
released runs keep 5), as <run dir>/checkpoints/<exp_name>_step<step>.pt: small files, apart from the resumable states
(critic_geometry.py --during plots sm, M_sup and the concavity rate against the step from them).

    python sac.py --env-id Ant-v5 --seed 1
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
    checkpoint_freq: int = 0
    """env steps between resumable states (<run dir>/resume.pt, the one before kept as resume.prev.pt); 0: only on stop"""
    model_checkpoints: int = 0
    """save the --save-model checkpoint at N steps evenly spaced over the run, to <run dir>/checkpoints/ (see the docstring); 0: none"""
    resume: Optional[str] = None
    """continue the run that saved this resumable state, in its run directory and with its flags (see the docstring)"""
    stop_at_step: Optional[int] = None
    """simulate an interruption at this step: save the resumable state and exit as on SIGTERM (splits a run in two)"""

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
    """widths of the hidden layers of actor and critics"""
    actor_activation: Literal["relu", "silu"] = "silu"
    """activation of the actor's hidden layers (the released code's SiLU; the paper text's baselines: relu)"""
    critic_activation: Literal["relu", "silu"] = "silu"
    """activation of the critics' hidden layers (ReLU critics have a zero action Hessian almost everywhere)"""

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


# Released protocol (REFERENCE.md): training budget per env. Fields a user leaves unset come from here,
# or from DEFAULT_PRESET for an env the paper did not use.
ENV_PRESETS = {
    "LunarLanderContinuous-v3": dict(total_timesteps=500_000),
    "Pendulum-v1": dict(total_timesteps=100_000),
    "Reacher-v5": dict(total_timesteps=500_000),
    "Ant-v5": dict(total_timesteps=1_000_000),
    "Hopper-v5": dict(total_timesteps=1_000_000),
    "Walker2d-v5": dict(total_timesteps=1_000_000),
}
DEFAULT_PRESET = dict(total_timesteps=1_000_000)
# The paper's ids that Gymnasium 1.x no longer has, mapped to the same task.
PAPER_ENV_IDS = {"LunarLanderContinuous-v2": "LunarLanderContinuous-v3", "Reacher-v2": "Reacher-v5"}
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}
MUST_BE_POSITIVE = {"total_timesteps", "buffer_size", "batch_size", "train_freq", "gradient_steps", "policy_frequency",
                    "target_network_frequency", "geometry_freq", "geometry_batch", "log_freq"}
# Flags a resumed run may change: they cannot change what is learned (the module docstring says why each).
RESUME_MAY_CHANGE = {"resume", "stop_at_step", "checkpoint_freq", "model_checkpoints", "log_freq", "progress_bar", "total_timesteps",
                     "track", "wandb_project_name", "wandb_entity", "cuda", "save_model", "eval_episodes"}

# The actor's log std is clamped into this range, as Stable-Baselines3 (the released code's base) does.
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


def resolve_args(args: Args, resumed=None) -> Args:
    """Validate the flags and fill every field the user left unset from the env's presets; with a resumed state, refuse a
    flag that differs from the saved run's (RESUME_MAY_CHANGE aside). Exit with one line on bad input."""
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
    for name, saved in (resumed["args"] if resumed else {}).items():
        if name not in RESUME_MAY_CHANGE and getattr(args, name) != saved:
            sys.exit(f"{prog}: error: --{name.replace('_', '-')} {getattr(args, name)} conflicts with {saved}, the value of the "
                     f"run resumed from {args.resume}; a resumed run keeps its flags, except --"
                     + ", --".join(sorted(flag.replace("_", "-") for flag in RESUME_MAY_CHANGE)))
    if args.model_checkpoints > args.total_timesteps:
        sys.exit(f"{prog}: error: --model-checkpoints {args.model_checkpoints} exceeds --total-timesteps {args.total_timesteps}")
    if resumed and args.total_timesteps < resumed["global_step"]:
        sys.exit(f"{prog}: error: --total-timesteps {args.total_timesteps} is below step {resumed['global_step']} of {args.resume}")
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
    def __init__(self, obs_dim, act_dim, hidden_sizes=(256, 256), activation="silu"):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, 1, hidden_sizes, activation)

    def forward(self, obs, act):
        return self.net(torch.cat([obs, act], -1))


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
        """For a resumable state: the filled rows only (clones: a slice would save the whole preallocated tensor), pos, size."""
        return {"pos": self.pos, "size": self.size, **{name: getattr(self, name)[: self.size].clone() for name in self.FIELDS}}

    def load_state_dict(self, state):
        self.pos, self.size = state["pos"], state["size"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = state[name]


def log_geometry(writer, qf, rb, args, generator, step):
    """Measure the critic geometry PAVE is about on a small replay sub-batch and log it under geometry/."""
    obs, actions, _, next_obs, _ = (x[0] for x in rb.sample(1, args.geometry_batch, generator))
    _, terms = pave_regularizer(qf, obs, actions, next_obs, args.mpr_sigma, args.curv_delta)
    for name, value in terms.items():
        writer.add_scalar(f"geometry/{name}", value.item(), step)


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
    args = tyro.cli(Args)
    resumed = load_resumable(args.resume) if args.resume else None
    if resumed:  # parse again with the saved run's flags as defaults; resolve_args refuses any that changed
        args = tyro.cli(Args, default=Args(**resumed["args"]))
    args = resolve_args(args, resumed)
    if resumed:  # the same run folder; TensorBoard drops what the stopped process logged after the saved step
        run_dir = os.path.dirname(args.resume) or "."
    else:
        run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = os.path.basename(os.path.abspath(run_dir))
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
    writer = SummaryWriter(run_dir, purge_step=resumed["global_step"] + 1 if resumed else None)
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
    qf1_target = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    qf2_target = QNetwork(obs_dim, act_dim, args.hidden_sizes, args.critic_activation).to(device)
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    # fused Adam: one kernel updates all parameters (much less per-step overhead than a loop over them)
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=args.learning_rate, fused=True)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, fused=True)
    online = list(qf1.parameters()) + list(qf2.parameters())
    targets = list(qf1_target.parameters()) + list(qf2_target.parameters())
    if args.autotune:
        target_entropy = -float(act_dim)
        log_alpha = torch.zeros((), device=device, requires_grad=True)
        alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.learning_rate, fused=True)
        alpha = log_alpha.exp().detach()
    else:
        alpha = torch.tensor(args.alpha, device=device)

    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)
    # what has a state_dict and must be saved for an exact resume, by the names of the resumable state
    stateful = {"actor": actor, "qf1": qf1, "qf2": qf2, "qf1_target": qf1_target, "qf2_target": qf2_target,
                "q_optimizer": q_optimizer, "actor_optimizer": actor_optimizer, "rb": rb,
                **({"alpha_optimizer": alpha_optimizer} if args.autotune else {})}

    def checkpoint(step):
        """The model as --save-model and --model-checkpoints save it, in the format that eval_smoothness.py, critic_geometry.py
        and plot_qfield.py read: the networks to evaluate and analyze, no training state."""
        return {
            "format": CHECKPOINT_FORMAT, "script": os.path.basename(__file__), "algo": "sac",
            "env_id": args.env_id, "args": asdict(args), "global_step": step,
            "obs_dim": obs_dim, "act_dim": act_dim,
            "actor": actor.state_dict(), "qf1": qf1.state_dict(), "qf2": qf2.state_dict(),
            **({"log_alpha": log_alpha.detach().cpu()} if args.autotune else {}),
        }

    obs, _ = env.reset(seed=args.seed)
    episode_return, episode_actions, recent_returns = 0.0, [], []
    episode_rng_state = None  # the env's RNG state just before this episode's reset (None: the first reset, seed=args.seed)
    n_updates, global_step, losses = 0, 0, {}
    start_time, train_start_time, last_log = time.time(), None, 0

    if resumed:  # continue exactly where the saved state stopped
        for name, thing in stateful.items():
            thing.load_state_dict(resumed[name])
        if args.autotune:
            with torch.no_grad():
                log_alpha.copy_(resumed["log_alpha"])
            alpha = log_alpha.exp().detach()
        n_updates, global_step, last_log, losses = resumed["n_updates"], resumed["global_step"], resumed["last_log"], resumed["losses"]
        recent_returns, episode_return = resumed["recent_returns"], resumed["episode_return"]
        start_time -= resumed["elapsed"]  # SPS charts go on as if the run had not stopped
        train_start_time = None if resumed["train_elapsed"] is None else time.time() - resumed["train_elapsed"]
        random.setstate(resumed["rng"]["python"])
        bit_generator, key, *rest = resumed["rng"]["numpy"]
        np.random.set_state((bit_generator, np.array(key, dtype=np.uint32), *rest))
        torch.set_rng_state(resumed["rng"]["torch"])
        sample_rng.set_state(resumed["rng"]["sample"])
        if device.type == "cuda" and resumed["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"])
        # The env's physical state cannot be saved in general (MuJoCo, Box2D): replay the current episode's actions from its
        # reset, which reproduces the env and its RNG exactly (env.step may draw from it, as LunarLander's does).
        episode_rng_state = resumed["episode_rng_state"]
        if episode_rng_state is not None:  # a later episode: reset from the RNG state its reset started from
            env.unwrapped.np_random.bit_generator.state = episode_rng_state
            obs, _ = env.reset()
        episode_actions = list(resumed["episode_actions"].numpy())
        for env_action in episode_actions:
            obs, *_ = env.step(env_action)
        if not np.array_equal(obs, resumed["obs"].numpy()) or env.unwrapped.np_random.bit_generator.state != resumed["env_rng_state"]:
            sys.exit(f"{os.path.basename(__file__)}: error: replaying the current episode of {args.resume} did not reproduce its "
                     f"observation; {args.env_id} cannot be resumed exactly here")
        print(f"resumed {run_dir} at step {global_step} of {args.total_timesteps}")

    def request_stop(signum, frame):
        """SIGTERM (a scheduler, Ray, benchmark.py) and Ctrl-C raise a flag that the loop reads at the end of each env step,
        so that the run stops between two steps with a consistent state to save; a second signal aborts at once."""
        global stop_requested
        if stop_requested:
            raise KeyboardInterrupt
        stop_requested = signal.Signals(signum).name

    stop_requested, stop = False, False
    checkpoint_steps = {args.total_timesteps * k // args.model_checkpoints for k in range(1, args.model_checkpoints + 1)}
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    progress = tqdm(total=args.total_timesteps, initial=global_step, disable=not args.progress_bar, unit="step", mininterval=1.0)
    try:
        for global_step in range(resumed["global_step"] + 1 if resumed else 1, args.total_timesteps + 1):
            if global_step <= args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, act_dim).astype(np.float32)
            else:
                with torch.no_grad():  # the policy's own sample is the exploration: no added noise
                    action = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()
            env_action = to_env(action)
            next_obs, reward, terminated, truncated, _ = env.step(env_action)
            rb.add(obs, action, reward, next_obs, terminated)
            episode_return += float(reward)
            episode_actions.append(env_action)
            obs = next_obs
            if terminated or truncated:
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_length", len(episode_actions), global_step)
                writer.add_scalar("charts/action_change", action_change(np.array(episode_actions)), global_step)
                recent_returns = (recent_returns + [episode_return])[-10:]
                episode_rng_state = env.unwrapped.np_random.bit_generator.state
                obs, _ = env.reset()
                episode_return, episode_actions = 0.0, []

            if global_step > args.learning_starts and global_step % args.train_freq == 0:
                train_start_time = train_start_time or time.time()
                burst = rb.sample(args.gradient_steps, args.batch_size, sample_rng)
                for b_obs, b_actions, b_rewards, b_next_obs, b_terminated in zip(*burst):
                    with torch.no_grad():
                        next_actions, next_log_prob, _ = actor.get_action(b_next_obs)
                        qf_next = torch.min(qf1_target(b_next_obs, next_actions), qf2_target(b_next_obs, next_actions)).squeeze(-1)
                        qf_next = qf_next - alpha * next_log_prob
                        td_target = b_rewards + (1.0 - b_terminated) * args.gamma * qf_next
                    qf1_loss = F.mse_loss(qf1(b_obs, b_actions).squeeze(-1), td_target)
                    qf2_loss = F.mse_loss(qf2(b_obs, b_actions).squeeze(-1), td_target)
                    qf_loss = 0.5 * (qf1_loss + qf2_loss)  # the released code's (SB3's) halved sum
                    q_optimizer.zero_grad()
                    qf_loss.backward()
                    q_optimizer.step()
                    n_updates += 1

                    if n_updates % args.policy_frequency == 0:
                        pi_actions, log_prob, _ = actor.get_action(b_obs)
                        qf_pi = torch.min(qf1(b_obs, pi_actions), qf2(b_obs, pi_actions)).squeeze(-1)
                        actor_loss = (alpha * log_prob - qf_pi).mean()
                        actor_optimizer.zero_grad()
                        actor_loss.backward()
                        actor_optimizer.step()
                        losses["actor_loss"] = actor_loss.detach()
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
                progress.set_postfix(ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-", sps=f"{sps:.0f}")
            if global_step % args.geometry_freq == 0 and rb.size >= args.geometry_batch:
                log_geometry(writer, qf1, rb, args, sample_rng, global_step)
            progress.update(1)

            if global_step in checkpoint_steps:  # before a stop at this step saves: a resumed run starts after it
                save_atomically(checkpoint(global_step), f"{run_dir}/checkpoints/{args.exp_name}_step{global_step}.pt")
            stop = stop_requested or (global_step == args.stop_at_step and "--stop-at-step")
            if stop or (args.checkpoint_freq and global_step % args.checkpoint_freq == 0):
                resume_path = save_atomically({
                    "format": RESUME_FORMAT, "script": os.path.basename(__file__), "args": {**asdict(args), "stop_at_step": None},
                    "global_step": global_step, "n_updates": n_updates, "last_log": last_log, "losses": losses,
                    "recent_returns": recent_returns, "elapsed": time.time() - start_time,
                    "train_elapsed": None if train_start_time is None else time.time() - train_start_time,
                    **{name: thing.state_dict() for name, thing in stateful.items()},
                    **({"log_alpha": log_alpha.detach()} if args.autotune else {}),
                    "rng": {"python": random.getstate(), "torch": torch.get_rng_state(), "sample": sample_rng.get_state(),
                            "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
                            "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None},
                    "obs": torch.tensor(obs), "episode_return": episode_return, "episode_rng_state": episode_rng_state,
                    "episode_actions": torch.tensor(np.array(episode_actions).reshape(-1, act_dim)),
                    "env_rng_state": env.unwrapped.np_random.bit_generator.state,
                }, f"{run_dir}/resume.pt", previous=f"{run_dir}/resume.prev.pt")
                if stop:
                    break
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM
        sys.exit(f"\n{os.path.basename(__file__)}: aborted at step {global_step}; the last resumable state (if any) is in {run_dir}")
    finally:
        progress.close()
        env.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, Ctrl-C and SIGTERM stop at once
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    if stop:  # an interrupted run leaves its resumable state, never a final checkpoint (that one means finished)
        writer.close()
        print(f"stopped at step {global_step} ({stop}): resumable state saved to {resume_path}; "
              f"resume with: python {sys.argv[0]} --resume {resume_path}")
        sys.exit(0)
    if args.save_model:
        model_path = save_atomically(checkpoint(global_step), f"{run_dir}/{args.exp_name}.pt")
        print(f"model saved to {model_path}")
        result = evaluate(model_path, episodes=args.eval_episodes, device=str(device))
        writer.add_scalar("eval/return", float(np.mean(result["return"])), global_step)
        writer.add_scalar("eval/sm", float(np.mean(result["sm"])), global_step)
        print(f"eval over {args.eval_episodes} episodes: return {np.mean(result['return']):.2f}, sm {np.mean(result['sm']):.4f}")
    writer.close()
