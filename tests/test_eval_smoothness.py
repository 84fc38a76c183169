"""eval_smoothness.py: sm and action change against closed forms, evaluation of real checkpoints (clean, noisy,
deterministic), the CLI's grouped tables and files, and one-line errors that cost no other checkpoint its result."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from runs import run_script, train

import eval_smoothness
from eval_smoothness import action_change, evaluate, smoothness_score

EPISODES = 3
PENDULUM_STEPS = 200  # Pendulum-v1's time limit: every episode has this length


def sinusoid(amplitude, cycles, n, phase=0.3):
    """`cycles` whole periods over n steps: its DFT has |Y_cycles| = amplitude * n / 2 and no other bin in 0..n//2-1,
    so sm = (2 / n^2) * cycles * amplitude * n / 2 = amplitude * cycles / n."""
    return amplitude * np.sin(2 * np.pi * cycles * np.arange(n) / n + phase)


@pytest.fixture(scope="session")
def td3_checkpoint(tmp_path_factory):
    run_dir, _ = train("td3.py", "Pendulum-v1", tmp_path_factory.mktemp("td3"))
    return next(run_dir.glob("*.pt"))


@pytest.fixture(scope="session")
def sac_checkpoint(tmp_path_factory):
    run_dir, _ = train("sac.py", "Pendulum-v1", tmp_path_factory.mktemp("sac"))
    return next(run_dir.glob("*.pt"))


def variant(checkpoint, path, **changes):
    """A copy of a checkpoint with some fields changed (args fields through `args`)."""
    ckpt = torch.load(checkpoint, weights_only=False)
    ckpt["args"] = {**ckpt["args"], **changes.pop("args", {})}
    torch.save({**ckpt, **changes}, path)
    return path


# ---- the score and the action change, against closed forms -----------------------------------------------------


def test_constant_signal_has_zero_score():
    assert smoothness_score(np.full((150, 2), 0.7)) == pytest.approx(0.0, abs=1e-12)
    assert action_change(np.full((150, 2), 0.7)) == 0.0
    assert smoothness_score(np.zeros(1)) == 0.0 and action_change(np.zeros((1, 3))) == 0.0


@pytest.mark.parametrize("n", [200, 201])
@pytest.mark.parametrize("amplitude, cycles", [(0.7, 5), (2.0, 1), (1.3, 40)])
def test_sinusoid_matches_closed_form(n, amplitude, cycles):
    assert smoothness_score(sinusoid(amplitude, cycles, n)) == pytest.approx(amplitude * cycles / n, rel=1e-9)


def test_score_grows_with_frequency():
    n = 256
    scores = [smoothness_score(sinusoid(1.0, cycles, n)) for cycles in range(1, 30)]
    assert np.all(np.diff(scores) > 0)
    assert scores == pytest.approx([cycles / n for cycles in range(1, 30)], rel=1e-9)


def test_multidimensional_actions_average_per_dimension():
    n = 300
    actions = np.stack([sinusoid(1.0, 3, n), sinusoid(0.5, 7, n, phase=1.1), np.full(n, 2.0)], axis=1)
    assert smoothness_score(actions) == pytest.approx((3 / n + 3.5 / n + 0.0) / 3, rel=1e-9)
    one_dim = sinusoid(0.5, 7, n)
    assert smoothness_score(one_dim) == smoothness_score(one_dim[:, None])


def test_action_change_closed_forms():
    alternating = np.where(np.arange(100) % 2 == 0, 1.0, -1.0)
    assert action_change(alternating) == pytest.approx(2.0)
    ramps = np.stack([0.25 * np.arange(50), -0.75 * np.arange(50)], axis=1)
    assert action_change(ramps) == pytest.approx(0.5)  # mean of |0.25| and |-0.75|


# ---- evaluation of real checkpoints -----------------------------------------------------------------------------


def test_evaluate_clean_episodes(td3_checkpoint):
    result = evaluate(td3_checkpoint, episodes=EPISODES)
    assert result["length"] == [PENDULUM_STEPS] * EPISODES
    assert result["eval_seeds"] == [10_000, 10_001, 10_002]
    for i, actions in enumerate(result["actions"]):
        assert actions.shape == (PENDULUM_STEPS, 1) and np.all(np.abs(actions) <= 2.0)  # env units: [-2, 2]
        assert result["sm"][i] == smoothness_score(actions) and result["action_change"][i] == action_change(actions)
    assert all(np.isfinite(result["return"])) and max(result["return"]) < 0  # Pendulum's rewards are <= 0
    assert len(set(result["return"])) == EPISODES  # different seeds, different episodes


def test_sac_checkpoint_acts_with_tanh_of_the_mean(sac_checkpoint):
    result = evaluate(sac_checkpoint, episodes=2)
    policy = eval_smoothness.load_policy(sac_checkpoint)
    first_obs = torch.as_tensor(result["observations"][0][:1], dtype=torch.float32)
    with torch.no_grad():
        expected = 2.0 * torch.tanh(policy.actor(first_obs)[0]).numpy()  # Pendulum: [-1, 1] -> [-2, 2]
    assert result["actions"][0][0] == pytest.approx(expected[0], rel=1e-6)
    assert result["length"] == [PENDULUM_STEPS] * 2


def test_evaluation_is_deterministic(td3_checkpoint):
    first, again = evaluate(td3_checkpoint, episodes=2), evaluate(td3_checkpoint, episodes=2)
    assert first["return"] == again["return"] and first["sm"] == again["sm"]
    assert evaluate(td3_checkpoint, episodes=2, seed=20_000)["return"] != first["return"]
    noisy, noisy_again = (evaluate(td3_checkpoint, episodes=2, obs_noise=0.1) for _ in range(2))
    assert noisy["return"] == noisy_again["return"] and noisy["sm"] == noisy_again["sm"]


def test_observation_noise_reaches_the_policy_only(td3_checkpoint):
    clean = evaluate(td3_checkpoint, episodes=2)
    noisy = evaluate(td3_checkpoint, episodes=2, obs_noise=0.1)
    # sigma_base from this checkpoint's clean episodes on the same seeds
    assert noisy["obs_scale"] == pytest.approx(np.concatenate(clean["observations"]).std(axis=0).tolist())
    assert "400 observations" in noisy["obs_scale_note"]
    assert not np.allclose(noisy["actions"][0], clean["actions"][0])
    # the env was never perturbed: replaying the recorded actions in a fresh env gives the same states and return
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=noisy["eval_seeds"][0])
    total = 0.0
    for t, action in enumerate(noisy["actions"][0]):
        assert obs == pytest.approx(noisy["observations"][0][t])
        obs, reward, *_ = env.step(action)
        total += reward
    assert total == pytest.approx(noisy["return"][0], rel=1e-12)
    # the noise is u * sigma_base: a zero scale leaves the clean episode unchanged
    unscaled = evaluate(td3_checkpoint, episodes=2, obs_noise=0.1, obs_scale=np.zeros(3))
    assert unscaled["return"] == clean["return"] and unscaled["obs_scale_note"] == "given by the caller"


# ---- the command line -------------------------------------------------------------------------------------------


def test_cli_groups_seeds_one_row_per_noise_level(td3_checkpoint, sac_checkpoint, tmp_path, capsys):
    second_seed = variant(td3_checkpoint, tmp_path / "td3_seed2.pt", args={"seed": 2})
    out = tmp_path / "out"
    status = eval_smoothness.main([str(td3_checkpoint), str(second_seed), str(sac_checkpoint), "--episodes", "2",
                                   "--noise", "0", "0.05", "--out-dir", str(out), "--per-seed", "--plot",
                                   "--no-progress-bar"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["obs_noise"]): r for r in results["rows"]}
    assert sorted(rows) == [("sac", 0.0), ("sac", 0.05), ("td3", 0.0), ("td3", 0.05)]
    td3_clean = rows[("td3", 0.0)]
    assert (td3_clean["seeds"], td3_clean["episodes"], td3_clean["train_seeds"]) == (2, 4, "1 2")
    # both "seeds" are the same policy on the same evaluation seeds: pooled mean = one seed's mean, seed std = 0
    single = evaluate(td3_checkpoint, episodes=2)
    assert td3_clean["return_mean"] == pytest.approx(np.mean(single["return"]))
    assert td3_clean["return_std"] == pytest.approx(np.std(single["return"]))
    assert td3_clean["sm_mean"] == pytest.approx(np.mean(single["sm"])) and td3_clean["sm_seed_std"] == 0.0
    # one sigma_base for the env, from all clean episodes of all three checkpoints
    assert results["obs_scale"]["Pendulum-v1"]["samples"] == 3 * 2 * PENDULUM_STEPS
    with open(out / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 3 * 2 * 2
    with open(out / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    printed = capsys.readouterr().out
    for text in (printed, (out / "table.md").read_text()):
        assert f"| {td3_clean['return_mean']:.1f} ({td3_clean['return_std']:.1f})" in text and "sigma_base" in text
    for name in ("spectrum_Pendulum-v1.png", "actions_Pendulum-v1.png"):
        assert (out / name).stat().st_size > 10_000


def test_bad_checkpoints_give_one_line_each_and_the_good_one_is_reported(td3_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], tmp_path / "foreign.pt")
    bad = {
        "missing.pt": "no such file",
        "notes.txt": "not a torch checkpoint",
        "foreign.pt": "not a checkpoint of this project",
        "unknown_script.pt": "written by 'nosuch.py', which is not a training script",
        "unknown_env.pt": "unknown env id 'Pendulum-v9'; did you mean Pendulum-v1",
    }
    variant(td3_checkpoint, tmp_path / "unknown_script.pt", script="nosuch.py")
    variant(td3_checkpoint, tmp_path / "unknown_env.pt", env_id="Pendulum-v9")
    result = run_script("eval_smoothness.py", *bad, td3_checkpoint, "--episodes", "2", "--no-progress-bar",
                        "--out-dir", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(error_lines) == len(bad)
    for name, message in bad.items():
        assert any(line.startswith(f"eval_smoothness.py: error: {name}: {message}") for line in error_lines), name
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["method"], r["episodes"]) for r in results["rows"]] == [("td3", 2)]
    assert len(results["failures"]) == len(bad)
    assert "| td3 " in result.stdout
