"""Smoothness of a trained policy: the paper's FFT score `sm` and the mean absolute action change.

(Skeleton: the evaluation CLI, observation-noise sweep and tables are issue 3.)
"""

import numpy as np


def smoothness_score(actions) -> float:
    """The paper's FFT smoothness score `sm` of one episode (lower is smoother).

    actions: array (T, action_dim) or (T,), in ENV units. Per action dimension j, with Y the unnormalized
    DFT of a[:, j] and only bins k = 0 .. T//2 - 1 kept,
        sm_j = 2 / (T * fs) * sum_k f_k |Y_k|,  f_k = k fs / T   =>   sm_j = (2 / T^2) * sum_k k |Y_k|
    (fs cancels); sm is the mean of sm_j over action dimensions (REFERENCE.md, CAPS paper).
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


def evaluate(checkpoint_path, episodes=10, obs_noise=0.0, seed=10_000, device="cpu"):
    """Deterministic episodes of a checkpoint's policy; per-episode return, length, sm and action change.

    (First version: one env, episodes in sequence. Issue 3 replaces it with the vectorized, noise-aware one.)
    """
    import importlib
    from pathlib import Path

    import torch

    ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
    module = importlib.import_module(Path(ckpt["script"]).stem)
    args = ckpt["args"]
    actor = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_dim"], args["actor_activation"]).to(device)
    actor.load_state_dict(ckpt["actor"])
    env = module.make_env(ckpt["env_id"], seed)()
    low, high = env.action_space.low, env.action_space.high
    result = {"return": [], "length": [], "sm": [], "action_change": []}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total, actions = False, 0.0, []
        while not done:
            with torch.no_grad():
                a = actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
            env_action = low + (a + 1.0) * 0.5 * (high - low)
            obs, reward, terminated, truncated, _ = env.step(env_action)
            total += float(reward)
            actions.append(env_action)
            done = terminated or truncated
        result["return"].append(total)
        result["length"].append(len(actions))
        result["sm"].append(smoothness_score(actions))
        result["action_change"].append(action_change(actions))
    env.close()
    return result
