"""Checkpoints built in-process from untrained networks, in the format the training scripts write with --save-model:
fast stand-ins where a test needs checkpoint files with known seeds and weights, not a trained policy."""

import importlib
import sys
from pathlib import Path

import gymnasium as gym
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHECKPOINT_FORMAT = "pave-checkpoint/1"


def space_dims(env_id):
    env = gym.make(env_id)
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return dims


def save(path, script, env_id, args, networks, step=0):
    """torch.save a checkpoint dict as the training scripts write it (global_step `step`); returns the path."""
    obs_dim, act_dim = space_dims(env_id)
    torch.save({"format": CHECKPOINT_FORMAT, "script": script, "algo": Path(script).stem.split("_")[0],
                "env_id": env_id,
                "args": args, "global_step": step, "obs_dim": obs_dim, "act_dim": act_dim,
                **{name: net.state_dict() for name, net in networks.items()}}, path)
    return Path(path)


def write_checkpoint(path, script="td3.py", env_id="Pendulum-v1", seed=1, exp_name=None, hidden_sizes=(32, 32),
                     activation="silu", init_seed=None, step=0):
    """A checkpoint of `script`'s own (untrained) networks, initialized with torch seed `init_seed` (default: `seed`),
    as if saved at training step `step`."""
    module = importlib.import_module(Path(script).stem)
    obs_dim, act_dim = space_dims(env_id)
    torch.manual_seed(seed if init_seed is None else init_seed)
    networks = {"actor": module.Actor(obs_dim, act_dim, hidden_sizes, activation),
                "qf1": module.QNetwork(obs_dim, act_dim, hidden_sizes, activation),
                "qf2": module.QNetwork(obs_dim, act_dim, hidden_sizes, activation)}
    args = {"env_id": env_id, "seed": seed, "exp_name": exp_name or Path(script).stem,
            "hidden_sizes": list(hidden_sizes),
            "actor_activation": activation, "critic_activation": activation}
    return save(path, script, env_id, args, networks, step)


class OldMLP(nn.Module):
    """The networks of checkpoints written before --hidden-sizes, written out here (not the scripts' current classes):
    `net` = Linear, ReLU, Linear, ReLU, Linear with two hidden layers of one width."""

    def __init__(self, in_dim, out_dim, hidden_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, out_dim))


def write_old_checkpoint(path, script="td3.py", env_id="Pendulum-v1", hidden_dim=256, seed=0):
    """An old-format checkpoint: args hold `hidden_dim` (an int) and no `hidden_sizes`; ReLU networks.

    Returns (path, actor_net, qf1_net): the raw Sequentials, to compare the rebuilt networks' outputs with."""
    obs_dim, act_dim = space_dims(env_id)
    torch.manual_seed(seed)
    actor_out = 2 * act_dim if Path(script).stem.startswith("sac") else act_dim  # SAC: mean and log std side by side
    networks = {"actor": OldMLP(obs_dim, actor_out, hidden_dim), "qf1": OldMLP(obs_dim + act_dim, 1, hidden_dim),
                "qf2": OldMLP(obs_dim + act_dim, 1, hidden_dim)}
    args = {"env_id": env_id, "seed": seed, "exp_name": Path(script).stem, "hidden_dim": hidden_dim,
            "actor_activation": "relu", "critic_activation": "relu"}
    return save(path, script, env_id, args, networks), networks["actor"].net, networks["qf1"].net
