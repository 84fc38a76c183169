"""td3.py and td3_pave.py: PAVE's terms against closed forms, real short runs, reproducibility, clear errors."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from runs import all_finite, read_scalars, run_script, train

import td3
import td3_pave

OBS_DIM, ACT_DIM = 5, 3


class QuadraticCritic(nn.Module):
    """Q(s, a) = s^T C a + 0.5 a^T P a: grad_a Q = C^T s + P a, grad2_sa Q = C^T, grad2_aa Q = P (all known)."""

    def __init__(self, C, P):
        super().__init__()
        self.C, self.P = nn.Parameter(C), nn.Parameter(P)

    def forward(self, obs, act):
        return ((obs @ self.C) * act).sum(-1, keepdim=True) + 0.5 * ((act @ self.P) * act).sum(-1, keepdim=True)


def quadratic_case(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(OBS_DIM, ACT_DIM, generator=g)
    A = torch.randn(ACT_DIM, ACT_DIM, generator=g)
    P = -(A @ A.T) / 2 + 0.3 * torch.eye(ACT_DIM)  # symmetric, indefinite: some v^T P v above -delta, some below
    obs, next_obs = torch.randn(batch, OBS_DIM, generator=g), torch.randn(batch, OBS_DIM, generator=g)
    actions = torch.rand(batch, ACT_DIM, generator=g) * 2 - 1
    return QuadraticCritic(C, P), obs, actions, next_obs


def test_both_scripts_share_the_same_regularizer():
    """td3.py measures exactly what td3_pave.py trains on."""
    qf, obs, actions, next_obs = quadratic_case(64)
    torch.manual_seed(3)
    q_a, terms_a = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.2)
    torch.manual_seed(3)
    q_b, terms_b = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.2)
    assert torch.equal(q_a, q_b)
    for name in terms_a:
        assert torch.equal(terms_a[name], terms_b[name]), name


def test_q_is_the_critic_value_at_the_replay_pair():
    qf, obs, actions, next_obs = quadratic_case(32)
    q, _ = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.1)
    torch.testing.assert_close(q, qf(obs, actions).squeeze(-1))


def test_vfc_equals_closed_form_exactly():
    """VFC = mean ||grad_a Q(s, a) - grad_a Q(s', a)||^2 = mean ||C^T (s - s')||^2 (the P a part cancels)."""
    qf, obs, actions, next_obs = quadratic_case(128)
    _, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.1)
    expected = ((obs - next_obs) @ qf.C.detach()).square().sum(-1).mean()
    torch.testing.assert_close(terms["vfc"], expected, rtol=1e-5, atol=1e-6)


def test_mpr_monte_carlo_mean_approaches_sigma2_frobenius():
    """MPR = mean ||C^T eps||^2 with eps ~ N(0, sigma^2 I): expectation sigma^2 ||C||_F^2 (paper Eq. 12, exact here)."""
    sigma, batch = 0.3, 40_000
    qf, obs, actions, next_obs = quadratic_case(batch)
    torch.manual_seed(0)
    _, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, sigma, 0.1)
    expected = sigma**2 * qf.C.detach().square().sum()
    # std of ||C^T eps||^2 / its mean is below sqrt(2) here: 40 000 samples give a relative error well under 3%
    assert abs(terms["mpr"].item() - expected.item()) / expected.item() < 0.03
    # and with no noise there is nothing to penalize
    _, terms0 = td3_pave.pave_regularizer(qf, obs[:64], actions[:64], next_obs[:64], 0.0, 0.1)
    assert terms0["mpr"].item() == 0.0


def test_curv_equals_hinge_of_vPv_for_the_drawn_v():
    """Curv = mean max(0, v^T P v + delta) for the Rademacher v the function draws (replayed from the same seed)."""
    delta, batch = 0.5, 256
    qf, obs, actions, next_obs = quadratic_case(batch)
    torch.manual_seed(11)
    _, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, delta)
    torch.manual_seed(11)
    torch.randn_like(obs)  # the MPR noise is drawn first
    v = torch.randint(0, 2, actions.shape).float() * 2 - 1
    vPv = ((v @ qf.P.detach()) * v).sum(-1)
    assert (vPv + delta > 0).any() and (vPv + delta < 0).any(), "the case must exercise both sides of the hinge"
    torch.testing.assert_close(terms["curv"], F.relu(vPv + delta).mean())
    torch.testing.assert_close(terms["vhv"], vPv.mean())
    expected_grad = obs @ qf.C.detach() + actions @ qf.P.detach()
    torch.testing.assert_close(terms["grad_norm"], expected_grad.norm(dim=-1).mean())


def test_curv_with_isotropic_curvature_does_not_depend_on_v():
    """P = p I: v^T P v = p * d for every Rademacher v, so Curv = max(0, p d + delta) exactly."""
    qf, obs, actions, next_obs = quadratic_case(50)
    with torch.no_grad():
        qf.P.copy_(-0.2 * torch.eye(ACT_DIM))
    for delta, expected in [(0.1, 0.0), (1.0, 1.0 - 0.2 * ACT_DIM)]:
        _, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, delta)
        assert terms["curv"].item() == pytest.approx(expected, abs=1e-6)


def _silu_critic_case():
    torch.manual_seed(0)
    qf = td3_pave.QNetwork(OBS_DIM, ACT_DIM, 64, "silu")
    obs, next_obs = torch.randn(100, OBS_DIM), torch.randn(100, OBS_DIM)
    actions = torch.rand(100, ACT_DIM) * 2 - 1
    return qf, obs, actions, next_obs


@pytest.mark.parametrize("term", ["mpr", "vfc", "curv"])
def test_each_term_trains_every_layer_of_a_silu_critic(term):
    """create_graph keeps the action gradients differentiable: each term alone yields parameter gradients."""
    qf, obs, actions, next_obs = _silu_critic_case()
    _, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, 1.0)
    assert terms[term].item() > 0
    grads = torch.autograd.grad(terms[term], list(qf.parameters()), allow_unused=True)
    weights = [g for g, (name, _) in zip(grads, qf.named_parameters()) if name.endswith("weight")]
    assert all(g is not None and g.abs().sum() > 0 for g in weights), term


def test_zero_lambdas_give_exactly_the_td3_critic_gradient():
    """With lambda1 = lambda2 = lambda3 = 0 the PAVE critic loss has TD3's gradient (the shared evaluation changes nothing)."""
    qf, obs, actions, next_obs = _silu_critic_case()
    td_target = torch.randn(100)
    td3_loss = F.mse_loss(qf(obs, actions).squeeze(-1), td_target)
    td3_grads = torch.autograd.grad(td3_loss, list(qf.parameters()))
    q, terms = td3_pave.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.1)
    pave_loss = F.mse_loss(q, td_target) + 0.0 * terms["mpr"] + 0.0 * terms["vfc"] + 0.0 * terms["curv"]
    pave_grads = torch.autograd.grad(pave_loss, list(qf.parameters()))
    for a, b in zip(td3_grads, pave_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_presets_fill_only_unset_fields():
    args = td3_pave.resolve_args(td3_pave.Args(env_id="Walker2d-v5", lambda3=0.01))
    assert (args.lambda1, args.lambda2, args.lambda3, args.total_timesteps) == (0.1, 0.1, 0.01, 1_000_000)
    args = td3_pave.resolve_args(td3_pave.Args(env_id="Pendulum-v1", lambda1=0.0, total_timesteps=5))
    assert (args.lambda1, args.lambda2, args.lambda3, args.total_timesteps) == (0.0, 0.005, 2.0, 5)
    args = td3_pave.resolve_args(td3_pave.Args(env_id="HalfCheetah-v5"))  # not in the paper: documented defaults
    assert (args.lambda1, args.lambda2, args.lambda3) == tuple(td3_pave.DEFAULT_PRESET[k] for k in ("lambda1", "lambda2", "lambda3"))
    assert td3.resolve_args(td3.Args(env_id="Pendulum-v1")).total_timesteps == 100_000


def test_paper_env_ids_map_to_gymnasium_1x(capsys):
    assert td3.resolve_args(td3.Args(env_id="LunarLanderContinuous-v2")).env_id == "LunarLanderContinuous-v3"
    assert td3_pave.resolve_args(td3_pave.Args(env_id="Reacher-v2")).env_id == "Reacher-v5"
    assert "Reacher-v5" in capsys.readouterr().out


# ---- real runs ------------------------------------------------------------------------------------------------------

COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/action_change", "charts/SPS",
               "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "eval/return", "eval/sm",
               "geometry/mpr", "geometry/vfc", "geometry/curv", "geometry/grad_norm", "geometry/vhv"]


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_short_real_run_writes_checkpoint_and_scalars(script, env_id, tmp_path):
    extra = ["--lambda3", "0.01"] if (script, env_id) == ("td3_pave.py", "Hopper-v5") else []
    run_dir, ckpt = train(script, env_id, tmp_path, *extra)
    assert ckpt["format"] == td3.CHECKPOINT_FORMAT
    assert (ckpt["script"], ckpt["algo"], ckpt["env_id"], ckpt["global_step"]) == (script, "td3", env_id, 400)
    assert ckpt["args"]["exp_name"] == script[:-3] and ckpt["args"]["seed"] == 1
    for net in ("actor", "qf1", "qf2"):
        assert all(torch.isfinite(t).all() for t in ckpt[net].values()), net
    # the checkpoint rebuilds with the script's own classes
    module = td3_pave if script == "td3_pave.py" else td3
    args = ckpt["args"]
    module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_dim"], args["actor_activation"]).load_state_dict(ckpt["actor"])
    module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_dim"], args["critic_activation"]).load_state_dict(ckpt["qf1"])

    scalars = read_scalars(run_dir)
    tags = COMMON_TAGS + (["losses/mpr", "losses/vfc", "losses/curv"] if script == "td3_pave.py" else [])
    for tag in tags:
        assert all_finite(scalars.get(tag, [])), f"{tag} missing or not finite"
    if script == "td3_pave.py":
        assert (args["actor_activation"], args["critic_activation"]) == ("silu", "silu")
        expected = {"Pendulum-v1": (2.0, 0.005, 2.0), "Hopper-v5": (0.1, 0.005, 0.01)}[env_id]  # --lambda3 0.01 wins
        assert (args["lambda1"], args["lambda2"], args["lambda3"]) == expected
        assert max(scalars["losses/mpr"]) > 0 and max(scalars["losses/vfc"]) > 0
    else:
        assert "losses/mpr" not in scalars and args["critic_activation"] == "relu"
        assert all(v == 0 for v in scalars["geometry/vhv"]), "a ReLU critic has zero action curvature"


@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_same_seed_gives_identical_weights(script, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, first = train(script, "Pendulum-v1", tmp_path / "a", seed=7)
    _, second = train(script, "Pendulum-v1", tmp_path / "b", seed=7)
    for net in ("actor", "qf1", "qf2"):
        for name, tensor in first[net].items():
            assert torch.equal(tensor, second[net][name]), f"{net}.{name}"


# ---- clear errors ---------------------------------------------------------------------------------------------------


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last and all(n in last for n in needles), last


@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_unknown_env_id_suggests_close_ids(script, tmp_path):
    assert_one_line_error(run_script(script, "--env-id", "Hoper-v5", cwd=tmp_path), "Hoper-v5", "Hopper-v5")
    assert not (tmp_path / "runs").exists()


def test_discrete_action_space_is_refused(tmp_path):
    assert_one_line_error(run_script("td3_pave.py", "--env-id", "CartPole-v1", cwd=tmp_path), "CartPole-v1", "Discrete")


@pytest.mark.parametrize("flag", ["--lambda1", "--lambda2", "--lambda3", "--mpr-sigma"])
def test_negative_coefficient_is_refused(flag, tmp_path):
    assert_one_line_error(run_script("td3_pave.py", flag, "-0.5", cwd=tmp_path), flag)


def test_capture_video_records_an_episode(tmp_path):
    result = run_script("td3.py", "--env-id", "Pendulum-v1", "--total-timesteps", "250", "--learning-starts", "100",
                        "--capture-video", "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    videos = list(tmp_path.glob("runs/*/videos/*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_track_without_wandb_says_how_to_install(tmp_path):
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed: --track would really log")
    except ImportError:
        pass
    assert_one_line_error(run_script("td3.py", "--env-id", "Pendulum-v1", "--track", cwd=tmp_path), "pip install wandb")
