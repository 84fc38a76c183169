"""eval_smoothness.py: sm and action change against closed forms, evaluation of checkpoints (clean, noisy,
deterministic, old format), Table 3's noise protocol (sigma_base from the first-seed base model, clipping to the
observation bounds, its own episode count, std over per-seed means), the CLI's grouped tables, files and figures, and
bad input refused in one line per problem before anything is written. Checkpoints are untrained networks saved
in-process (tiny_checkpoints)."""

import csv
import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from runs import run_script
from tiny_checkpoints import write_checkpoint, write_old_checkpoint
from tool_checks import BAD_CASES, bad_checkpoint, figure_texts, old_report, snapshot

import eval_smoothness
from eval_smoothness import action_change, evaluate, load_policy, rollout, smoothness_score

EPISODES = 3
PENDULUM_STEPS = 200  # Pendulum-v1's time limit: every episode has this length


def sinusoid(amplitude, cycles, n, phase=0.3):
    """`cycles` whole periods over n steps: its DFT has |Y_cycles| = amplitude * n / 2 and no other bin in 0..n//2-1,
    so sm = (2 / n^2) * cycles * amplitude * n / 2 = amplitude * cycles / n."""
    return amplitude * np.sin(2 * np.pi * cycles * np.arange(n) / n + phase)


@pytest.fixture(scope="session")
def td3_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("td3") / "td3.pt", "td3.py", seed=1)


@pytest.fixture(scope="session")
def sac_checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sac") / "sac.pt", "sac.py", seed=1)


def clean_std(path, episodes):
    """sigma_base by hand: per-dimension std of the observations of `episodes` clean episodes of one checkpoint."""
    return np.concatenate(rollout(load_policy(path), episodes)["observations"]).std(axis=0)


def by_algo(results):
    return {entry["algo"]: entry for entry in results["obs_scale"]}


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


def test_the_action_trace_figure_shows_the_episode_hardest_on_average():
    # episode 1 is the lowest on average (-300) though no single record has its lowest return there alone
    records = [{"return": [-100.0, -250.0, -260.0]}, {"return": [-120.0, -350.0, -200.0, -999.0]}]
    assert eval_smoothness.hardest_episode(records) == 1  # episode 3 exists in one record only: not a candidate


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


def test_env_seeds_give_each_clean_episode_its_own_start(td3_checkpoint, tmp_path):
    """--env-seeds 10005 10002: episode i on env seed i of the list, the same episode as --seed 10005 (or 10002) gives;
    noisy rows keep --seed; a negative seed is one line and exit 2."""
    result = run_script("eval_smoothness.py", td3_checkpoint, "--env-seeds", 10005, 10002, "--noise", 0, 0.1,
                        "--noise-episodes", 2, "--out-dir", tmp_path, "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    episodes = json.loads((tmp_path / "results.json").read_text())["episodes"]
    clean = [e for e in episodes if e["obs_noise"] == 0]
    assert [e["eval_seed"] for e in clean] == [10005, 10002]
    for e in clean:  # the same episode, up to rounding (the actor ran on 2 rows there, 1 here)
        alone = evaluate(td3_checkpoint, episodes=1, seed=e["eval_seed"])
        assert e["return"] == pytest.approx(alone["return"][0], rel=1e-6) and e["sm"] == pytest.approx(alone["sm"][0],
                                                                                                       rel=1e-6)
    assert [e["eval_seed"] for e in episodes if e["obs_noise"] == 0.1] == [10000, 10001]
    assert ("2 clean deterministic episodes per checkpoint on the 2 env seed(s) of --env-seeds (10005, 10002)"
            in result.stdout)
    bad = run_script("eval_smoothness.py", td3_checkpoint, "--env-seeds", -1, "--out-dir", tmp_path, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "eval_smoothness.py: error: --env-seeds must be " \
        "non-negative (Gymnasium's env seeds)"


def test_the_actor_runs_on_one_thread_and_the_callers_count_comes_back(td3_checkpoint):
    """A matrix product's rounding depends on the thread count, and a chattering policy turns it into other episodes:
    rollouts use one thread whatever the machine, and restore the caller's setting."""
    policy, seen = load_policy(td3_checkpoint), []
    act = policy.actor.act
    policy.actor.act = lambda obs: (seen.append(torch.get_num_threads()), act(obs))[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rollout(policy, 2)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_observation_noise_reaches_the_policy_only(td3_checkpoint):
    clean = evaluate(td3_checkpoint, episodes=2)
    noisy = evaluate(td3_checkpoint, episodes=2, obs_noise=0.1, scale_episodes=3)
    # a td3.py checkpoint run as td3 is a base model: sigma_base from its own 3 clean episodes on the same seeds
    assert noisy["obs_scale"] == pytest.approx(clean_std(td3_checkpoint, 3).tolist())
    assert "600 observations of 3 clean episodes of the first-seed base model td3" in noisy["obs_scale_note"]
    assert noisy["obs_scale_fallback"] is False
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
    # without an episode count, the paper's: 10 clean, 20 under noise
    assert len(evaluate(td3_checkpoint)["return"]) == 10
    assert len(evaluate(td3_checkpoint, obs_noise=0.1, obs_scale=np.ones(3))["return"]) == 20


class Recorder:
    """Wraps an actor and keeps every observation batch the policy is shown."""

    def __init__(self, actor):
        self.actor, self.seen = actor, []

    def act(self, obs):
        self.seen.append(obs.numpy().copy())
        return self.actor.act(obs)


def test_noisy_observations_are_clipped_to_the_observation_bounds(td3_checkpoint):
    high = np.array([1.0, 1.0, 8.0])  # Pendulum-v1: cos, sin, angular velocity; low = -high
    policy = load_policy(td3_checkpoint)
    policy.actor = Recorder(policy.actor)
    result = rollout(policy, 2, obs_noise=0.1, obs_scale=np.full(3, 1000.0), noise_seed=5)
    seen = np.concatenate(policy.actor.seen)
    assert seen.shape == (2 * PENDULUM_STEPS, 3)
    assert np.all(np.abs(seen) <= high)
    assert np.isclose(np.abs(seen), high).mean() > 0.9  # |u| * 1000 is mostly far beyond the bounds: clipped onto them
    # the first step by hand: clip(o + u * sigma_base, low, high) with u from the noise seed
    u = np.random.default_rng(5).uniform(-0.1, 0.1, (2, 3))
    first_obs = np.stack([obs[0] for obs in result["observations"]])
    assert seen[:2] == pytest.approx(np.clip(first_obs + u * 1000.0, -high, high), abs=1e-6)
    # a small scale: o + u * sigma_base itself where it stays inside the bounds (here all but cos near 1)
    policy.actor.seen.clear()
    rollout(policy, 2, obs_noise=0.1, obs_scale=np.full(3, 0.5), noise_seed=5)
    unclipped = first_obs + u * 0.5
    assert policy.actor.seen[0] == pytest.approx(np.clip(unclipped, -high, high), abs=1e-6)
    assert (np.abs(unclipped) < high).sum() >= 4


def test_first_seed_is_the_earliest_released_seed_else_the_lowest():
    def first(*seeds):
        return min([SimpleNamespace(train_seed=seed, path=f"{i}.pt") for i, seed in enumerate(seeds)],
                   key=eval_smoothness.seed_order).train_seed

    assert eval_smoothness.RELEASED_SEEDS == (178132, 410580, 922852, 787576, 660993)
    assert first(660993, 922852, 410580) == 410580  # the released order, not the numeric one
    assert first(1, 787576) == 787576  # a released seed comes before any other
    assert first(7, 3, None, 12) == 3


def test_sigma_base_comes_from_the_first_seed_base_model(tmp_path):
    td3_second = write_checkpoint(tmp_path / "td3_410580.pt", "td3.py", seed=410580)
    td3_first = write_checkpoint(tmp_path / "td3_178132.pt", "td3.py", seed=178132)
    pave = write_checkpoint(tmp_path / "pave_178132.pt", "td3_pave.py", seed=178132)
    sac_third = write_checkpoint(tmp_path / "sac_922852.pt", "sac.py", seed=922852)
    sac_second = write_checkpoint(tmp_path / "sac_410580.pt", "sac.py", seed=410580)
    out = tmp_path / "out"
    status = eval_smoothness.main([str(p) for p in (td3_second, pave, td3_first, sac_third, sac_second)] + [
        "--noise", "0.1", "--episodes", "1", "--noise-episodes", "2", "--scale-episodes", "3", "--out-dir", str(out),
        "--no-progress-bar"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    scales = by_algo(results)
    # one sigma_base per algorithm family: td3 and td3_pave share the td3 base's of seed 178132, not seed 410580's
    expected, other = clean_std(td3_first, 3), clean_std(td3_second, 3)
    assert not np.allclose(expected, other, rtol=0.05)
    td3 = scales["td3"]
    assert (td3["checkpoint"], td3["train_seed"], td3["method"], td3["fallback"]) == (str(td3_first), 178132, "td3",
                                                                                      False)
    assert (td3["episodes"], td3["samples"]) == (3, 3 * PENDULUM_STEPS)
    assert td3["sigma_base"] == pytest.approx(expected.tolist())
    assert (scales["sac"]["checkpoint"], scales["sac"]["train_seed"]) == (str(sac_second), 410580)
    assert scales["sac"]["sigma_base"] == pytest.approx(clean_std(sac_second, 3).tolist())
    # the noisy episodes of td3_pave ran with that sigma_base
    with open(out / "episodes.csv") as f:
        pave_returns = [float(r["return"]) for r in csv.DictReader(f) if r["method"] == "td3_pave"]
    by_hand = rollout(load_policy(pave), 2, obs_noise=0.1, obs_scale=expected)["return"]
    assert pave_returns == pytest.approx(by_hand, rel=1e-6)
    assert "first-seed base model td3 (training seed 178132" in (out / "table.md").read_text()


def test_base_checkpoint_flag_names_the_base_model(tmp_path, capsys):
    td3_second = write_checkpoint(tmp_path / "td3_410580.pt", "td3.py", seed=410580)
    td3_first = write_checkpoint(tmp_path / "td3_178132.pt", "td3.py", seed=178132)
    pave = write_checkpoint(tmp_path / "pave.pt", "td3_pave.py", seed=178132)
    common = ["--noise", "0.1", "--noise-episodes", "1", "--scale-episodes", "2", "--no-progress-bar"]
    # the evaluated checkpoints hold no base model: the flag names it (the first seed of those it names)
    assert eval_smoothness.main([str(pave), "--base-checkpoint", str(td3_second), "--base-checkpoint", str(td3_first),
                                 "--out-dir", str(tmp_path / "a"), *common]) == 0
    scale = by_algo(json.loads((tmp_path / "a" / "results.json").read_text()))["td3"]
    assert (scale["checkpoint"], scale["fallback"]) == (str(td3_first), False)
    assert scale["sigma_base"] == pytest.approx(clean_std(td3_first, 2).tolist())
    assert f"--base-checkpoint {td3_second} not used" in capsys.readouterr().out
    # a named base model takes precedence over an evaluated one
    assert eval_smoothness.main([str(td3_second), str(pave), "--base-checkpoint", str(td3_first),
                                 "--out-dir", str(tmp_path / "b"), *common]) == 0
    assert by_algo(json.loads((tmp_path / "b" / "results.json").read_text()))["td3"]["checkpoint"] == str(td3_first)
    # evaluate() takes it too
    assert evaluate(pave, episodes=1, obs_noise=0.1, base_checkpoint=td3_first, scale_episodes=2)["obs_scale"] == \
        pytest.approx(scale["sigma_base"])
    # one that cannot be loaded is one line and exit 1, before anything runs
    capsys.readouterr()
    assert eval_smoothness.main([str(pave), "--base-checkpoint", str(tmp_path / "nowhere.pt"), *common]) == 1
    assert (capsys.readouterr().err.strip()
            == f"eval_smoothness.py: error: --base-checkpoint {tmp_path / 'nowhere.pt'}: no such file")


def test_without_a_base_model_the_fallback_is_said(tmp_path, capsys):
    paves = [write_checkpoint(tmp_path / f"pave_{seed}.pt", "td3_pave.py", seed=seed) for seed in (178132, 410580)]
    out = tmp_path / "out"
    assert eval_smoothness.main([*map(str, paves), "--noise", "0", "0.05", "--episodes", "2", "--noise-episodes", "1",
                                 "--out-dir", str(out), "--no-progress-bar"]) == 0
    results = json.loads((out / "results.json").read_text())
    scale = by_algo(results)["td3"]
    # the pooled clean episodes (--episodes of them) of the evaluated checkpoints of the env and family
    pooled = np.concatenate([obs for p in paves for obs in rollout(load_policy(p), 2)["observations"]]).std(axis=0)
    assert (scale["fallback"], scale["checkpoint"], scale["episodes"]) == (True, None, 4)
    assert scale["sigma_base"] == pytest.approx(pooled.tolist())
    printed = capsys.readouterr().out
    for text in (printed, (out / "table.md").read_text(), " ".join(results["notes"])):
        assert "sigma_base of Pendulum-v1 (td3): FALLBACK, not the paper's protocol: no usable base model " \
               "(td3.py run as td3) of this env" in text and "(name a base model with --base-checkpoint)." in text
    assert evaluate(paves[0], episodes=1, obs_noise=0.05, scale_episodes=2)["obs_scale_fallback"] is True


def record(seed, sigma, returns, sm):
    return {"method": "m", "env_id": "E-v0", "obs_noise": sigma, "train_seed": seed, "return": returns, "sm": sm,
            "action_change": sm, "length": [10] * len(returns)}


def test_noisy_rows_show_the_std_over_per_seed_means():
    records = [record(seed, sigma, returns, sm) for sigma in (0.0, 0.1)
               for seed, returns, sm in ((1, [1.0, 3.0], [0.1, 0.3]), (2, [5.0, 7.0], [0.5, 0.7]))]
    clean, noisy = eval_smoothness.summarize(records)
    # pooled episodes: returns 1 3 5 7 -> mean 4, std sqrt(5) (ddof 0); per-seed means 2 and 6 -> mean 4, std 2 sqrt(2)
    # (ddof 1, as the t-intervals over seeds)
    for row in (clean, noisy):
        assert (row["return_mean"], row["return_std"]) == pytest.approx((4.0, 5**0.5))
        assert (row["return_seed_mean"], row["return_seed_std"]) == pytest.approx((4.0, 2 * 2**0.5))
        assert (row["sm_std"], row["sm_seed_std"]) == pytest.approx((0.05**0.5, 0.2 * 2**0.5))
    assert (clean["cell_statistic"], noisy["cell_statistic"]) == ("episodes", "seed means")
    lines = eval_smoothness.markdown_table([clean, noisy], per_seed=False).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][5:8] == ["episodes", "4.0 (2.2)", "0.400 (0.224)"]
    assert cells[1][5:8] == ["seed means", "4.0 (2.8)", "0.400 (0.283)"]


@pytest.mark.parametrize("script", ["td3.py", "sac.py"])
def test_old_checkpoint_with_hidden_dim_evaluates(script, tmp_path):
    path, actor_net, _ = write_old_checkpoint(tmp_path / "old.pt", script, hidden_dim=256)
    args = torch.load(path, weights_only=True)["args"]
    assert "hidden_sizes" not in args and eval_smoothness.hidden_sizes_of(args) == (256, 256)
    result = evaluate(path, episodes=2)
    assert result["length"] == [PENDULUM_STEPS] * 2 and all(np.isfinite(result["return"]))
    with torch.no_grad():
        output = actor_net(torch.as_tensor(result["observations"][0][:1], dtype=torch.float32))[0]
    expected = 2.0 * torch.tanh(output[:1]).numpy()  # TD3: tanh of the output; SAC: tanh of the mean (first half)
    assert result["actions"][0][0] == pytest.approx(expected, rel=1e-5)


# ---- the command line -------------------------------------------------------------------------------------------


def test_cli_groups_seeds_one_row_per_noise_level(td3_checkpoint, sac_checkpoint, tmp_path, capsys, monkeypatch):
    second_seed = variant(td3_checkpoint, tmp_path / "td3_seed2.pt", args={"seed": 2})
    out = tmp_path / "out"
    figures = figure_texts(monkeypatch)
    status = eval_smoothness.main([str(td3_checkpoint), str(second_seed), str(sac_checkpoint), "--episodes", "2",
                                   "--noise", "0", "0.05", "--noise-episodes", "3", "--scale-episodes", "2",
                                   "--out-dir", str(out), "--per-seed", "--plot", "--no-progress-bar"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["obs_noise"]): r for r in results["rows"]}
    assert sorted(rows) == [("sac", 0.0), ("sac", 0.05), ("td3", 0.0), ("td3", 0.05)]
    td3_clean, td3_noisy = rows[("td3", 0.0)], rows[("td3", 0.05)]
    assert (td3_clean["seeds"], td3_clean["episodes"], td3_clean["train_seeds"]) == (2, 4, "1 2")
    assert (td3_noisy["seeds"], td3_noisy["episodes"]) == (2, 6)  # --noise-episodes, not --episodes
    # both "seeds" are the same policy on the same evaluation seeds: pooled mean = one seed's mean, seed std = 0
    single = evaluate(td3_checkpoint, episodes=2)
    assert td3_clean["return_mean"] == pytest.approx(np.mean(single["return"]))
    assert td3_clean["return_std"] == pytest.approx(np.std(single["return"]))
    assert td3_clean["sm_mean"] == pytest.approx(np.mean(single["sm"])) and td3_clean["sm_seed_std"] == 0.0
    assert td3_noisy["return_seed_std"] == 0.0 and td3_noisy["return_std"] > 0.0
    # sigma_base per algorithm family, from the first seed's base model (seeds 1 and 2: the lowest)
    scales = by_algo(results)
    assert (scales["td3"]["checkpoint"], scales["td3"]["samples"]) == (str(td3_checkpoint), 2 * PENDULUM_STEPS)
    assert scales["sac"]["checkpoint"] == str(sac_checkpoint)
    with open(out / "episodes.csv") as f:
        episodes = list(csv.DictReader(f))
    assert len(episodes) == 3 * 2 + 3 * 3
    assert sorted({int(r["eval_seed"]) for r in episodes if r["obs_noise"] == "0.05"}) == [10_000, 10_001, 10_002]
    with open(out / "table.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    printed = capsys.readouterr().out
    for text in (printed, (out / "table.md").read_text()):
        assert f"| episodes   | {td3_clean['return_mean']:.1f} ({td3_clean['return_std']:.1f})" in text
        assert f"| seed means | {td3_noisy['return_seed_mean']:.1f} (0.0)" in text  # noisy rows: std over seed means
        assert "sigma_base" in text and "cell = mean over seeds of each seed's mean" in text
    for name in ("spectrum_Pendulum-v1.png", "actions_Pendulum-v1.png"):
        assert (out / name).stat().st_size > 10_000
    # the spectrum's legend says what its std is taken over: the pooled clean episodes of all seeds, as the table's
    # cells
    spectrum = figures[0]
    assert "sm: mean +- std over the pooled\nepisodes of all seeds (ep.: count)" in spectrum
    assert f"td3: sm {td3_clean['sm_mean']:.3f} +- {td3_clean['sm_std']:.3f} (4 ep.)" in spectrum


def test_the_action_figure_title_is_wrapped_to_the_figure_width():
    """A one-column figure is 6.5 inches wide: its title, one line of over 120 characters, would be cut at both
    edges."""
    title = ("Pendulum-v1: actions (env units) of one clean episode, eval seed 10006 (the lowest mean return), each "
             "method's first checkpoint")
    lines = eval_smoothness.wrap_title(title, 6.5).splitlines()
    assert len(lines) == 2 and " ".join(lines) == title
    assert all(len(line) <= 6.5 * 72 / 6 for line in lines)  # 0.6 em per character at 10 points
    assert eval_smoothness.wrap_title(title, 13.0) == title  # two columns: one line


def test_every_bad_checkpoint_gets_one_line_and_nothing_is_written(td3_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    torch.save([1, 2, 3], tmp_path / "foreign.pt")
    (tmp_path / "a_folder").mkdir()
    bad = {
        "missing.pt": "no such file",
        "notes.txt": "not a torch checkpoint",
        "foreign.pt": "not a checkpoint of this project",
        "unknown_script.pt": "written by 'nosuch.py', which is not a training script",
        "unknown_env.pt": "unknown env id 'Pendulum-v9'; did you mean Pendulum-v1",
        "a_folder": "a directory holding no checkpoint files (*.pt)",
    }
    variant(td3_checkpoint, tmp_path / "unknown_script.pt", script="nosuch.py")
    variant(td3_checkpoint, tmp_path / "unknown_env.pt", env_id="Pendulum-v9")
    status = eval_smoothness.main([*(str(tmp_path / name) for name in bad), str(td3_checkpoint), "--episodes", "2",
                                   "--no-progress-bar", "--out-dir", str(tmp_path / "out")])
    assert status == 1
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.splitlines()
    assert len(lines) == len(bad)
    for line, (name, message) in zip(lines, bad.items()):
        assert line.startswith(f"eval_smoothness.py: error: {tmp_path / name}: {message}"), name
    assert not (tmp_path / "out").exists()


REPORT = ["table.csv", "episodes.csv", "results.json", "table.md", "spectrum_Pendulum-v1.png",
          "actions_Pendulum-v1.png"]


@pytest.mark.parametrize("case", [*BAD_CASES, "no argument"])
def test_bad_input_is_one_line_and_leaves_the_earlier_report(case, td3_checkpoint, tmp_path, monkeypatch, capsys):
    """The default --out-dir holds a report; a command with bad input beside a good checkpoint (or with no argument at
    all) prints one error line, exits non-zero and leaves every file of that report as it was."""
    monkeypatch.chdir(tmp_path)
    before = old_report(tmp_path / "reports" / "smoothness", REPORT)
    if case == "no argument":
        argv, status, line = [], 2, f"eval_smoothness.py: error: {eval_smoothness.NO_CHECKPOINTS}"
    else:
        path, message = bad_checkpoint(case, tmp_path / "bad", td3_checkpoint)
        argv, status, line = [str(td3_checkpoint), str(path)], 1, f"eval_smoothness.py: error: {path}: {message}"
    assert eval_smoothness.main([*argv, "--plot", "--no-progress-bar"]) == status
    printed = capsys.readouterr()
    assert (printed.out + printed.err).splitlines() == [line]
    assert snapshot(tmp_path / "reports" / "smoothness") == before


def test_no_argument_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    result = run_script("eval_smoothness.py", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"eval_smoothness.py: error: {eval_smoothness.NO_CHECKPOINTS}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value, message", [
    ("--out-dir", "taken", "--out-dir taken: is a file, not a directory"),
    ("--out-dir", "taken/out", "--out-dir taken/out: cannot be created: taken is a file"),
    ("--device", "tpu", "--device tpu: RuntimeError: "),
])
def test_bad_flags_are_one_line_before_anything_is_written(flag, value, message, td3_checkpoint, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file\n")
    before = old_report(tmp_path / "reports" / "smoothness", REPORT)
    assert eval_smoothness.main([str(td3_checkpoint), flag, value, "--no-progress-bar"]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1
    assert printed.err.startswith(f"eval_smoothness.py: error: {message}")
    assert snapshot(tmp_path / "reports" / "smoothness") == before and (tmp_path / "taken").read_text() == "a file\n"


def test_a_directory_stands_for_the_checkpoints_in_it(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    paths = [write_checkpoint(folder / f"td3_{seed}.pt", "td3.py", seed=seed) for seed in (2, 1)]
    (folder / "notes.txt").write_text("not a checkpoint\n")  # not a *.pt file: not taken
    (folder / "nested").mkdir()
    write_checkpoint(folder / "nested" / "td3_3.pt", "td3.py", seed=3)  # in a sub-directory: not taken
    out = tmp_path / "out"
    assert eval_smoothness.main([str(folder), "--episodes", "1", "--out-dir", str(out), "--no-progress-bar"]) == 0
    episodes = json.loads((out / "results.json").read_text())["episodes"]
    assert sorted(e["checkpoint"] for e in episodes) == sorted(map(str, paths))
    with pytest.raises(eval_smoothness.CheckpointError, match="is a directory, not a checkpoint file"):
        load_policy(folder)  # from Python, a directory is no checkpoint


def test_one_colour_per_method_in_every_figure():
    """method_color: 18 methods (TD3 and SAC: Base, CAPS, Grad-CAPS, ASAP, PAVE and the -relu runs) get 18 colours, the
    same on every call; a name it does not know gets grey."""
    methods = [f"{algo}{suffix}{relu}" for algo in ("td3", "sac")
               for suffix in ("", "_caps", "_gradcaps", "_asap", "_pave")
               for relu in ("", "-relu") if not (suffix == "_pave" and relu)]
    colours = [eval_smoothness.method_color(method) for method in methods]
    assert len(set(colours)) == len(methods) == 18 and colours == [eval_smoothness.method_color(m) for m in methods]
    assert eval_smoothness.method_color("ppo") == "0.45"
