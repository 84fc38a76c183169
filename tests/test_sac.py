"""sac.py and sac_pave.py: the squashed-Gaussian log-probability against closed forms, the regularizer shared with
td3_pave.py, Table 8 presets, real short runs, reproducibility, clear errors."""

import math

import pytest
import torch
from runs import all_finite, assert_one_line_error, read_scalars, run_in_process, run_script, train

import sac
import sac_pave
from eval_smoothness import evaluate
from run_control import BadInput

OBS_DIM, ACT_DIM = 5, 3


def _actor(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return sac.Actor(OBS_DIM, ACT_DIM, (64, 48)).to(dtype), torch.randn(256, OBS_DIM, dtype=dtype)


def test_log_prob_is_the_change_of_variables_density():
    """log pi(a|s) = log N(u; mean, std^2) - log |det da/du| at u = atanh(a), the Jacobian taken by autograd
    (float64)."""
    actor, obs = _actor(torch.float64)
    with torch.no_grad():
        a, log_prob, _ = actor.get_action(obs)
        mean, log_std = actor(obs)
    u = torch.atanh(a)
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1)
    log_det = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(torch.tanh, ui))[1] for ui in u])
    torch.testing.assert_close(log_prob, gaussian - log_det, rtol=1e-9, atol=1e-9)
    assert log_prob.shape == (256,) and a.abs().max() < 1


def test_log_prob_stays_finite_where_log_of_one_minus_tanh_squared_fails():
    """mean 12, std e^-20: tanh(u) rounds to 1 in float32, so log(1 - a^2) = -inf; the stable form matches float64
    math."""
    actor, obs = _actor()
    head = actor.net[-1]  # mean rows first, log-std rows second
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([12.0] * ACT_DIM + [-30.0] * ACT_DIM))  # log_std -30, clamped to its floor -20
        torch.manual_seed(5)
        a, log_prob, _ = actor.get_action(obs)
    torch.manual_seed(5)
    noise = torch.randn(obs.shape[0], ACT_DIM).double()  # the draw get_action made
    u = 12.0 + math.exp(-20.0) * noise
    # log N(u; 12, e^-40) - log(1 - tanh(u)^2), with 1 - tanh(u)^2 = 1 / cosh(u)^2
    expected = (-0.5 * noise.square() + 20.0 - 0.5 * math.log(2 * math.pi) + 2.0 * torch.log(torch.cosh(u))).sum(-1)
    assert torch.equal(a, torch.ones_like(a)) and not torch.isfinite(torch.log(1 - a.square())).any()
    torch.testing.assert_close(log_prob.double(), expected, rtol=1e-6, atol=1e-4)


def test_log_std_is_clamped_into_the_released_range():
    """SB3's clamp to [-20, 2] (the released code's), not CleanRL's tanh squash: values inside pass unchanged."""
    assert (sac.LOG_STD_MIN, sac.LOG_STD_MAX) == (-20.0, 2.0)
    actor, obs = _actor()
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        for raw, expected in [(-30.0, -20.0), (-19.5, -19.5), (0.0, 0.0), (1.5, 1.5), (30.0, 2.0)]:
            actor.net[-1].bias.fill_(raw)
            assert torch.allclose(actor(obs)[1], torch.full((256, ACT_DIM), expected)), raw


def test_deterministic_action_is_tanh_of_the_mean():
    actor, obs = _actor()
    with torch.no_grad():
        deterministic = actor.act(obs)
        sampled, _, mean_action = actor.get_action(obs)
        torch.testing.assert_close(deterministic, torch.tanh(actor(obs)[0]))
    assert torch.equal(deterministic, mean_action) and torch.equal(deterministic, actor.act(obs))
    assert not torch.equal(sampled, deterministic) and deterministic.abs().max() <= 1


TABLE_8 = {"LunarLanderContinuous-v3": (0.1, 0.5, 0.05), "Pendulum-v1": (0.1, 0.005, 0.5),
           "Reacher-v5": (0.1, 5e-4, 1.0), "Ant-v5": (0.1, 5e-4, 1.0), "Hopper-v5": (2.0, 5e-4, 3.0),
           "Walker2d-v5": (2.0, 0.005, 2.0)}


def test_presets_are_table_8_and_fill_only_unset_fields():
    for env_id, lambdas in TABLE_8.items():
        args = sac_pave.resolve_args(sac_pave.Args(env_id=env_id))
        assert (args.lambda1, args.lambda2, args.lambda3) == lambdas, env_id
    args = sac_pave.resolve_args(sac_pave.Args(env_id="Hopper-v5", lambda3=0.01, total_timesteps=5))
    assert (args.lambda1, args.lambda2, args.lambda3, args.total_timesteps) == (2.0, 5e-4, 0.01, 5)
    args = sac_pave.resolve_args(sac_pave.Args(env_id="HalfCheetah-v5"))  # not in the paper: documented defaults
    assert (args.lambda1, args.lambda2, args.lambda3) == TABLE_8["Ant-v5"]
    assert sac_pave.resolve_args(sac_pave.Args(env_id="Reacher-v2")).env_id == "Reacher-v5"


def test_defaults_are_the_reference_protocol():
    args = sac.Args()
    assert ((args.learning_rate, args.batch_size, args.learning_starts, args.train_freq, args.gradient_steps)
            == (1e-3, 100, 10_000, 50, 50))
    assert (args.alpha, args.autotune, args.policy_frequency, args.target_network_frequency) == (0.2, False, 1, 1)
    assert (args.hidden_sizes, args.actor_activation, args.critic_activation) == ((256, 256), "silu", "silu")
    assert (sac_pave.Args().actor_activation, sac_pave.Args().critic_activation) == ("silu", "silu")


# ---- real runs ------------------------------------------------------------------------------------------------------

COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/action_change", "charts/SPS",
               "charts/SPS_train", "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "losses/alpha",
               "eval/return", "eval/sm", "geometry/mpr", "geometry/vfc", "geometry/curv", "geometry/grad_norm",
               "geometry/vhv"]
# sac.py on Pendulum learns alpha, on Hopper runs the paper text's ReLU variant; sac_pave.py on Pendulum overrides one
# Table 8 lambda, and takes PAVE's terms on the first 64 transitions of each batch (--pave-batch; the default run is
# test_bit_identity.py's).
EXTRA = {("sac.py", "Pendulum-v1"): ["--autotune"],
         ("sac.py", "Hopper-v5"): ["--actor-activation", "relu", "--critic-activation", "relu"],
         ("sac_pave.py", "Pendulum-v1"): ["--lambda1", "0.5", "--pave-batch", "64"],
         ("sac_pave.py", "Hopper-v5"): ["--pave-batch", "64"]}


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
@pytest.mark.parametrize("script", ["sac.py", "sac_pave.py"])
def test_short_real_run_writes_checkpoint_and_scalars(script, env_id, tmp_path):
    autotune = (script, env_id) == ("sac.py", "Pendulum-v1")
    run_dir, ckpt = train(script, env_id, tmp_path, *EXTRA.get((script, env_id), []))
    assert ckpt["format"] == sac.CHECKPOINT_FORMAT
    assert (ckpt["script"], ckpt["algo"], ckpt["env_id"], ckpt["global_step"]) == (script, "sac", env_id, 400)
    assert (ckpt["args"]["exp_name"] == script[:-3] and ckpt["args"]["seed"] == 1
            and ckpt["args"]["autotune"] == autotune)
    for net in ("actor", "qf1", "qf2"):
        assert all(torch.isfinite(t).all() for t in ckpt[net].values()), net
    # the checkpoint rebuilds with the script's own classes
    module = sac_pave if script == "sac_pave.py" else sac
    args = ckpt["args"]
    assert tuple(args["hidden_sizes"]) == (256, 256)
    module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                 args["actor_activation"]).load_state_dict(ckpt["actor"])
    module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                    args["critic_activation"]).load_state_dict(ckpt["qf1"])

    scalars = read_scalars(run_dir)
    tags = COMMON_TAGS + (["losses/mpr", "losses/vfc", "losses/curv"] if script == "sac_pave.py" else [])
    tags += ["losses/alpha_loss"] if autotune else []
    for tag in tags:
        assert all_finite(scalars.get(tag, [])), f"{tag} missing or not finite"
    if autotune:
        # alpha starts at 1 and moves; the checkpoint holds log alpha
        assert scalars["losses/alpha"][0] != 1.0 and math.isfinite(ckpt["log_alpha"].item())
        # evaluation is deterministic (tanh(mean)): evaluating the checkpoint again gives the logged return
        again = evaluate(next(run_dir.glob("*.pt")), episodes=2)
        assert sum(again["return"]) / 2 == pytest.approx(scalars["eval/return"][-1], rel=1e-5)
    else:
        assert "log_alpha" not in ckpt and "losses/alpha_loss" not in scalars
        assert scalars["losses/alpha"] == pytest.approx([0.2] * len(scalars["losses/alpha"]))
    relu = (script, env_id) == ("sac.py", "Hopper-v5")
    assert (args["actor_activation"], args["critic_activation"]) == (("relu", "relu") if relu else ("silu", "silu"))
    if script == "sac_pave.py":
        expected = {"Pendulum-v1": (0.5, 0.005, 0.5), "Hopper-v5": TABLE_8["Hopper-v5"]}[env_id]  # --lambda1 0.5 wins
        assert (args["lambda1"], args["lambda2"], args["lambda3"]) == expected
        assert max(scalars["losses/mpr"]) > 0 and max(scalars["losses/vfc"]) > 0
    else:
        assert "losses/mpr" not in scalars
    if relu:
        assert all(v == 0 for v in scalars["geometry/vhv"]), "a ReLU critic has zero action curvature"
    else:
        assert all(v != 0 for v in scalars["geometry/vhv"]), "a SiLU critic has action curvature"


@pytest.mark.parametrize("script, extra", [("sac.py", ["--autotune"]), ("sac_pave.py", [])])
def test_same_seed_gives_identical_weights(script, extra, tmp_path):
    # a shorter run than TINY (the last flag wins): 100 gradient steps are enough to see any nondeterminism
    short = ["--total-timesteps", "300", "--eval-episodes", "1", *extra]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first = train(script, "Pendulum-v1", tmp_path / "a", *short, seed=7)
    _, second = train(script, "Pendulum-v1", tmp_path / "b", *short, seed=7)
    for net in ("actor", "qf1", "qf2"):
        for name, tensor in first[net].items():
            assert torch.equal(tensor, second[net][name]), f"{net}.{name}"
    assert torch.equal(first.get("log_alpha", torch.zeros(())), second.get("log_alpha", torch.zeros(())))


# ---- clear errors ---------------------------------------------------------------------------------------------------
# each kind of refusal once through a new interpreter (run_script), as a user meets it; its other cases in this process


@pytest.mark.parametrize("script", ["sac.py", "sac_pave.py"])
def test_unknown_env_id_suggests_close_ids(script, tmp_path):
    run = run_script if script == "sac.py" else run_in_process
    assert_one_line_error(run(script, "--env-id", "Hoper-v5", cwd=tmp_path), script, "Hoper-v5", "Hopper-v5")
    assert not (tmp_path / "runs").exists()


def test_discrete_action_space_is_refused(tmp_path):
    assert_one_line_error(run_in_process("sac.py", "--env-id", "CartPole-v1", cwd=tmp_path), "CartPole-v1", "Discrete")


@pytest.mark.parametrize("script, flag", [("sac.py", "--alpha"), ("sac_pave.py", "--lambda2")])
def test_negative_coefficient_is_refused(script, flag, tmp_path):
    run = run_script if script == "sac.py" else run_in_process
    assert_one_line_error(run(script, flag, "-0.5", cwd=tmp_path), flag)


def test_zero_target_network_frequency_is_refused(capsys):
    with pytest.raises(BadInput, match="--target-network-frequency must be positive"):
        sac.resolve_args(sac.Args(env_id="Pendulum-v1", target_network_frequency=0))
