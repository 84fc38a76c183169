"""The policy-side baselines (CAPS, Grad-CAPS, ASAP on TD3 and SAC): each script is its base plus the method, each loss
against a linear actor's closed form, what must receive no gradient, ASAP's target step, the replay buffer's previous
observation, short real runs, clear errors."""

import dataclasses
import importlib
import inspect
import math

import pytest
import torch
import torch.nn as nn
from runs import all_finite, assert_one_line_error, read_scalars, run_in_process, run_script, train
from trained_checkpoints import SMALL

import td3
from run_control import BadInput

CAPS = ["td3_caps", "sac_caps"]
GRADCAPS = ["td3_gradcaps", "sac_gradcaps"]
ASAP = ["td3_asap", "sac_asap"]
BASELINES = CAPS + GRADCAPS + ASAP
# the term each method logs under losses/ (ASAP's L_T is the Grad-CAPS term and logs under its name)
METHOD_TAGS = {"caps": ["caps_t", "caps_s"], "gradcaps": ["gradcaps_t"], "asap": ["gradcaps_t", "asap_s", "asap_p"]}
# the released coefficients on Pendulum-v1 and Hopper-v5 (tests/test_presets.py pins every env): CAPS and Grad-CAPS as
# Tables 7/8, identical for TD3 and SAC; ASAP's SAC runs used their own (Table 8 reprints the TD3 ones)
CAPS_PRESETS = {"Pendulum-v1": dict(lambda_t=1.0, lambda_s=5.0), "Hopper-v5": dict(lambda_t=0.1, lambda_s=0.5)}
GRADCAPS_PRESETS = {"Pendulum-v1": dict(lambda_t=1.0), "Hopper-v5": dict(lambda_t=1.0)}
PRESETS = {
    "td3_caps": CAPS_PRESETS, "sac_caps": CAPS_PRESETS, "td3_gradcaps": GRADCAPS_PRESETS,
    "sac_gradcaps": GRADCAPS_PRESETS,
    "td3_asap": {"Pendulum-v1": dict(lambda_t=0.005, lambda_s=0.03, lambda_p=2.0),
                 "Hopper-v5": dict(lambda_t=0.07, lambda_s=0.3, lambda_p=2.0)},
    "sac_asap": {"Pendulum-v1": dict(lambda_t=0.5, lambda_s=5.0, lambda_p=2.0),
                 "Hopper-v5": dict(lambda_t=0.5, lambda_s=10.0, lambda_p=2.0)},
}


def method_of(name):
    return name.split("_", 1)[1]


def temporal_term(name, actor, prev, cur, nxt):
    """L_T of Grad-CAPS, alone or as ASAP's first term (ASAP's target plays no part in it)."""
    module = importlib.import_module(name)
    if method_of(name) == "asap":
        return module.asap_loss(actor, actor, prev, cur, nxt)[0]
    return module.gradcaps_loss(actor, prev, cur, nxt)


class LinearActor(nn.Module):
    """pi(s) = W s and mu_next(s) = V s: every baseline term has a closed form
    (small inputs keep actions inside [-1, 1])."""

    def __init__(self, W, V=None):
        super().__init__()
        self.W = nn.Parameter(torch.as_tensor(W, dtype=torch.float32))
        self.V = nn.Parameter(torch.zeros_like(self.W) if V is None else torch.as_tensor(V, dtype=torch.float32))

    def act(self, obs):
        return obs @ self.W.T

    def act_and_predict(self, obs):
        return obs @ self.W.T, obs @ self.V.T


def column(*values):
    return torch.tensor(values, dtype=torch.float32)[:, None]


# ---- each script is its base plus the method -----------------------------------------------------------------------

# what no baseline changes: its base script's code, byte for byte (run control and the geometry probe are shared
# modules)
SHARED = ["make_env", "mlp", "QNetwork", "Critics"]
OWN = {"caps": [], "gradcaps": ["ReplayBuffer"],
       "asap": ["ReplayBuffer", "Actor"]}  # the s_{t-1} buffer, ASAP's two heads


@pytest.mark.parametrize("name", BASELINES)
def test_a_baseline_is_its_base_script_plus_the_method(name):
    module, base = importlib.import_module(name), importlib.import_module(name.split("_")[0])
    for piece in SHARED + [piece for piece in ("Actor", "ReplayBuffer") if piece not in OWN[method_of(name)]]:
        assert inspect.getsource(getattr(module, piece)) == inspect.getsource(getattr(base, piece)), piece
    # the base's flags in the base's order and with its defaults, the method's coefficients after the critic's
    fields, base_fields = dataclasses.fields(module.Args), dataclasses.fields(base.Args)
    own = [f.name for f in fields if f.name not in {b.name for b in base_fields}]
    order = [f.name for f in base_fields]
    at = order.index("critic_layer_norm") + 1
    assert [f.name for f in fields] == order[:at] + own + order[at:]
    assert all(f.default == b.default for f, b in zip([f for f in fields if f.name not in own], base_fields)
               if f.name != "exp_name")


# ---- CAPS -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPS)
def test_caps_temporal_term_by_hand(name):
    """W = diag(0.5, -0.25), s' = s + (0.2, 0.4) on every row: pi(s) - pi(s') = (-0.1, 0.1), so L_T = 0.5 * 0.01."""
    caps_loss = importlib.import_module(name).caps_loss
    actor = LinearActor([[0.5, 0.0], [0.0, -0.25]])
    obs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-0.5, 0.3]])
    l_t, l_s = caps_loss(actor, obs, obs + torch.tensor([0.2, 0.4]), sigma=0.0)
    assert l_t.item() == pytest.approx(0.005, rel=1e-5)
    assert l_s.item() == 0.0  # no noise, nothing to penalize
    # both sides keep their graph (as the reference code does): dL_T/dW = mean_b (W u_b) u_b^T / act_dim, u = s - s'
    l_t.backward()
    u = -torch.tensor([0.2, 0.4])
    torch.testing.assert_close(actor.W.grad, torch.outer(actor.W.detach() @ u, u) / 2)


@pytest.mark.parametrize("name", CAPS)
def test_caps_spatial_term_is_half_sigma2_frobenius_over_act_dim(name):
    """L_S = 0.5 mean (W eps)^2 with eps ~ N(0, sigma^2 I): expectation 0.5 sigma^2 ||W||_F^2 / act_dim = 0.003125
    here."""
    caps_loss = importlib.import_module(name).caps_loss
    actor = LinearActor([[0.5, 0.0], [0.0, -0.25]])
    obs = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    _, l_s = caps_loss(actor, obs, obs, sigma=0.2)
    assert abs(l_s.item() - 0.003125) / 0.003125 < 0.03  # 40 000 rows: relative std well under 1%
    torch.manual_seed(1)  # and exactly, for the noise the function draws
    eps = 0.2 * torch.randn_like(obs)
    torch.testing.assert_close(l_s, 0.5 * (eps @ actor.W.detach().T).square().mean())


# ---- Grad-CAPS and ASAP's L_T ---------------------------------------------------------------------------------------

# Triples (s_{t-1}, s_t, s_{t+1}) of a 1-d observation; pi(s) = (s, 0.5 s). Rows: a straight line (no penalty), a small
# kink, a turnaround (pi(s_{t+1}) = pi(s_{t-1}): w = tanh(1e8) = 1) and a large move (w well below 1).
TRIPLES = [(0.0, 0.1, 0.2), (0.0, 0.1, 0.1), (0.0, 0.3, 0.0), (-0.8, 0.2, 0.8)]
W_GRADCAPS = [[1.0], [0.5]]


def gradcaps_by_hand():
    terms, weights = [], []
    for prev, cur, nxt in TRIPLES:
        for scale in (1.0, 0.5):
            second = scale * (2 * cur - nxt - prev)
            weight = math.tanh(1 / (scale * (nxt - prev) + 1e-4) ** 2)
            terms.append(0.5 * second**2 * weight)
            weights.append(weight)
    return sum(terms) / len(terms), weights


def gradcaps_triples():
    prev, cur, nxt = (column(*values) for values in zip(*TRIPLES))
    return prev, cur, nxt


def test_the_hand_case_exercises_every_regime():
    _, weights = gradcaps_by_hand()
    assert weights[2] == weights[3] == weights[4] == weights[5] == 1.0  # kink and turnaround: w = 1
    assert 0.3 < weights[6] < 0.4 and 0.9 < weights[7] < 0.95  # large move: w = tanh(1 / 1.6^2), tanh(1 / 0.8^2)


@pytest.mark.parametrize("name", GRADCAPS + ASAP)
def test_gradcaps_term_by_hand(name):
    actor = LinearActor(W_GRADCAPS)
    expected, _ = gradcaps_by_hand()
    assert temporal_term(name, actor, *gradcaps_triples()).item() == pytest.approx(expected, rel=1e-5)
    # straight lines alone cost nothing
    line = (column(0.0, 0.5), column(0.1, 0.3), column(0.2, 0.1))
    assert temporal_term(name, actor, *line).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", GRADCAPS + ASAP)
def test_gradcaps_weight_receives_no_gradient(name):
    """dL_T/dW_j = mean_b w_bj u_bj x_b / act_dim with u = W_j x, x = 2 s_t - s_{t+1} - s_{t-1}, and w a constant."""
    actor = LinearActor(W_GRADCAPS)
    prev, cur, nxt = gradcaps_triples()
    temporal_term(name, actor, prev, cur, nxt).backward()
    x = (2 * cur - nxt - prev).squeeze(-1)
    _, weights = gradcaps_by_hand()
    w = torch.tensor(weights).reshape(len(TRIPLES), 2)
    u = x[:, None] * torch.tensor([1.0, 0.5])
    expected = (w * u * x[:, None]).mean(0)[:, None] / 2
    torch.testing.assert_close(actor.W.grad, expected)
    # a weight that let gradients through would add d(w)/dW terms: on the large-move row they are far from zero
    assert actor.W.grad.abs().sum() > 0


# ---- ASAP -----------------------------------------------------------------------------------------------------------


def asap_case():
    """pi(s) = (s, 0.5 s), mu_next(s) = (0.5 s, 0), target's mu_next(s) = (0.25 s, 0.25 s); one triple (0, 0.2, 0.4)."""
    actor = LinearActor(W_GRADCAPS, V=[[0.5], [0.0]])
    target = LinearActor([[9.0], [9.0]], V=[[0.25], [0.25]])  # the target's action head must play no part
    return actor, target, column(0.0), column(0.2), column(0.4)


@pytest.mark.parametrize("name", ASAP)
def test_asap_alignment_and_predictor_terms_by_hand(name):
    """pi(s') = (0.4, 0.2); target prediction (0.05, 0.05): L_S = 0.5 (0.35^2 + 0.15^2) / 2 = 0.03625;
    prediction (0.1, 0): L_P = 0.5 (0.3^2 + 0.2^2) / 2 = 0.0325; a straight line: L_T = 0."""
    actor, target, prev, cur, nxt = asap_case()
    l_t, l_s, l_p = importlib.import_module(name).asap_loss(actor, target, prev, cur, nxt)
    assert l_t.item() == pytest.approx(0.0, abs=1e-12)
    assert l_s.item() == pytest.approx(0.03625, rel=1e-5)
    assert l_p.item() == pytest.approx(0.0325, rel=1e-5)


@pytest.mark.parametrize("name", ASAP)
def test_asap_gradients_go_where_they_should(name):
    """L_S trains only the action head (dL_S/dW = (pi(s') - target) s' / 2), L_P only the predictor
    (dL_P/dV = (mu_next(s) - pi(s')) s / 2); the target network receives nothing."""
    module = importlib.import_module(name)
    actor, target, prev, cur, nxt = asap_case()
    _, l_s, l_p = module.asap_loss(actor, target, prev, cur, nxt)
    grad_w, grad_v = torch.autograd.grad(l_s, [actor.W, actor.V], allow_unused=True)
    torch.testing.assert_close(grad_w, column(0.35, 0.15) * 0.4 / 2)
    assert grad_v is None or not grad_v.any()
    grad_w, grad_v = torch.autograd.grad(l_p, [actor.W, actor.V], allow_unused=True)
    assert grad_w is None or not grad_w.any()
    torch.testing.assert_close(grad_v, column(-0.3, -0.2) * 0.2 / 2)

    # the same with the script's own actor: one backward of all three terms leaves the target untouched
    torch.manual_seed(0)
    actor, target = module.Actor(3, 2, (16, 16)), module.Actor(3, 2, (16, 16))
    prev, cur, nxt = torch.randn(3, 8, 3).unbind(0)
    sum(module.asap_loss(actor, target, prev, cur, nxt)).backward()
    assert all(p.grad is None for p in target.parameters())
    assert actor.mu_next.weight.grad.abs().sum() > 0 and actor.net[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ASAP)
def test_asap_actor_acts_with_its_action_head_only(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    actor = module.Actor(3, 2, (16, 16))
    obs = torch.randn(5, 3)
    action, prediction = actor.act_and_predict(obs)
    torch.testing.assert_close(actor.act(obs), action)
    # the prediction head: tanh-squashed in TD3, a plain linear layer in SAC (the released code's)
    raw_prediction = actor.mu_next(actor.net[:-1](obs))
    torch.testing.assert_close(prediction, raw_prediction if name == "sac_asap" else torch.tanh(raw_prediction))
    assert action.abs().max() <= 1
    with torch.no_grad():
        actor.mu_next.weight.add_(1.0)
    torch.testing.assert_close(actor.act(obs), action)  # the prediction head never changes an action


@pytest.mark.parametrize("name", ASAP)
@pytest.mark.parametrize("tau", [0.01, 0.3])
def test_asap_target_moves_by_exactly_tau_per_update(name, tau):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    actor, target = module.Actor(3, 2, (16, 16)), module.Actor(3, 2, (16, 16))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    online = {k: v.clone() for k, v in actor.state_dict().items()}
    module.update_asap_target(target, actor, tau)
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, before[key] + tau * (online[key] - before[key]), rtol=0, atol=1e-7)
        assert torch.equal(actor.state_dict()[key], online[key]), "the online actor must not move"
    assert all(p.grad is None for p in target.parameters())


# ---- replay buffer with the previous observation --------------------------------------------------------------------


@pytest.mark.parametrize("name", GRADCAPS + ASAP)
def test_replay_buffer_previous_observation_at_episode_boundaries(name):
    """Episodes [1, 2, 3] (terminated), [10, 11] (truncated), [20, 21, 22] into a 4-slot ring that wraps twice:
    s_{t-1} is the observation added just before, and s_t itself at every episode's first step."""
    rb = importlib.import_module(name).ReplayBuffer(4, 1, 1, "cpu")
    steps = [(1, 2, False, False), (2, 3, False, False), (3, 4, True, False),  # (obs, next_obs, terminated, truncated)
             (10, 11, False, False), (11, 12, False, True),
             (20, 21, False, False), (21, 22, False, False), (22, 23, False, False)]
    expected_prev = [1, 1, 2, 10, 10, 20, 20, 21]
    for k, ((obs, next_obs, terminated, truncated), prev) in enumerate(zip(steps, expected_prev)):
        rb.add([float(obs)], [0.0], 0.0, [float(next_obs)], terminated, truncated)
        slot = k % 4
        assert (rb.prev_obs[slot].item() == prev and rb.obs[slot].item() == obs
                and rb.next_obs[slot].item() == next_obs), k
    # sampled triples come out aligned: every row of a batch is (prev, obs, next) of one transition
    obs, _, _, next_obs, _, prev_obs = (x[0] for x in rb.sample(1, 64, torch.Generator().manual_seed(0)))
    by_obs = {22: (21, 23), 21: (20, 22), 20: (20, 21), 11: (10, 12)}
    for o, p, n in zip(obs.squeeze(-1).tolist(), prev_obs.squeeze(-1).tolist(), next_obs.squeeze(-1).tolist()):
        assert (p, n) == by_obs[o]


# ---- presets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BASELINES)
def test_presets_fill_only_unset_lambdas(name):
    module = importlib.import_module(name)
    presets = PRESETS[name]
    for env_id, expected in presets.items():
        args = module.resolve_args(module.Args(env_id=env_id))
        assert {k: getattr(args, k) for k in expected} == expected
    args = module.resolve_args(module.Args(env_id="Pendulum-v1", lambda_t=0.0))
    assert args.lambda_t == 0.0 and args.total_timesteps == 100_000
    args = module.resolve_args(module.Args(env_id="HalfCheetah-v5"))  # not in the paper: the documented defaults
    assert all(getattr(args, k) == v for k, v in module.DEFAULT_PRESET.items())
    assert module.Args().actor_activation == module.Args().critic_activation == "silu"  # the released code's SiLU


# ---- real runs ------------------------------------------------------------------------------------------------------

COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/action_change", "charts/SPS",
               "charts/SPS_train", "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "eval/return", "eval/sm",
               "geometry/mpr"]
# Pendulum has one action dimension: Hopper's three check that nothing mixes up action dimensions (SAC's mean/log-std
# halves)
# Small networks and batches (SMALL): the method's terms are under test here; the released sizes run in
# test_td3/test_sac
RUNS = [(name, "Pendulum-v1") for name in BASELINES] + [("td3_asap", "Hopper-v5"), ("sac_asap", "Hopper-v5")]


@pytest.mark.parametrize("name,env_id", RUNS)
def test_short_real_run_writes_checkpoint_and_scalars(name, env_id, tmp_path):
    script, module, method = f"{name}.py", importlib.import_module(name), method_of(name)
    run_dir, ckpt = train(script, env_id, tmp_path, *SMALL)
    assert ckpt["format"] == td3.CHECKPOINT_FORMAT
    assert ((ckpt["script"], ckpt["algo"], ckpt["env_id"], ckpt["global_step"])
            == (script, name.split("_")[0], env_id, 400))
    args = ckpt["args"]
    assert args["exp_name"] == name and {k: args[k] for k in PRESETS[name][env_id]} == PRESETS[name][env_id]
    nets = ["actor", "qf1", "qf2"] + (["asap_target"] if method == "asap" else [])
    for net in nets:
        assert all(torch.isfinite(t).all() for t in ckpt[net].values()), net
    # the checkpoint rebuilds with the script's own classes, strictly (ASAP's actor includes its mu_next head)
    actor = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"], args["actor_activation"])
    actor.load_state_dict(ckpt["actor"])
    module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                    args["critic_activation"]).load_state_dict(ckpt["qf1"])
    if method == "asap":
        target = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"], args["actor_activation"])
        target.load_state_dict(ckpt["asap_target"])
        assert any(not torch.equal(v, ckpt["actor"][k])
                   for k, v in ckpt["asap_target"].items()), "the target lags the actor"

    scalars = read_scalars(run_dir)
    sac_tags = ["losses/alpha"] if name.startswith("sac") else []
    for tag in COMMON_TAGS + sac_tags + [f"losses/{term}" for term in METHOD_TAGS[method]]:
        assert all_finite(scalars.get(tag, [])), f"{tag} missing or not finite"
    for term in METHOD_TAGS[method]:
        assert max(scalars[f"losses/{term}"]) > 0, term
    other_terms = {t for terms in METHOD_TAGS.values() for t in terms} - set(METHOD_TAGS[method])
    assert not any(f"losses/{t}" in scalars for t in other_terms)


@pytest.mark.parametrize("name", ASAP)
def test_asap_target_follows_every_gradient_step(name, tmp_path):
    """The released code moves ASAP's target after EVERY gradient step, actor update or not. 200 gradient steps with
    --policy-frequency 150: the actor moves once, a0 -> a1, at step 150, so the target ends at
    a1 + (1 - tau)^51 (a0 - a1) (steps 150..200 each pull it towards a1), not at a1 + (1 - tau) (a0 - a1)."""
    module, tau = importlib.import_module(name), 0.1
    _, ckpt = train(f"{name}.py", "Pendulum-v1", tmp_path, *SMALL, "--asap-tau", str(tau), "--policy-frequency", "150")
    args = ckpt["args"]
    torch.manual_seed(args["seed"])  # the actor is the first network the script builds after seeding: a0
    initial = module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                           args["actor_activation"]).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in ckpt["actor"].items()), "the actor must have moved"
    for key, a1 in ckpt["actor"].items():
        expected = a1 + (1 - tau) ** 51 * (initial[key] - a1)
        torch.testing.assert_close(ckpt["asap_target"][key], expected, rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("name", ["td3_caps", "sac_asap"])
def test_same_seed_gives_identical_weights(name, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # reproducibility does not depend on size
    _, first = train(f"{name}.py", "Pendulum-v1", tmp_path / "a", *SMALL, seed=7)
    _, second = train(f"{name}.py", "Pendulum-v1", tmp_path / "b", *SMALL, seed=7)
    for net in ("actor", "qf1", "qf2"):
        for key, tensor in first[net].items():
            assert torch.equal(tensor, second[net][key]), f"{net}.{key}"


# ---- clear errors ---------------------------------------------------------------------------------------------------
# each kind of refusal once through a new interpreter (run_script), as a user meets it; its other cases in this process


@pytest.mark.parametrize("name", BASELINES)
def test_unknown_env_id_suggests_close_ids(name, tmp_path):
    run = run_script if name == "td3_caps" else run_in_process
    assert_one_line_error(run(f"{name}.py", "--env-id", "Hoper-v5", cwd=tmp_path), "Hoper-v5", "Hopper-v5")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["td3_caps", "sac_asap"])
def test_discrete_action_space_is_refused(name, tmp_path):
    run = run_script if name == "sac_asap" else run_in_process
    assert_one_line_error(run(f"{name}.py", "--env-id", "CartPole-v1", cwd=tmp_path), "CartPole-v1", "Discrete")


FLAGS = {"caps": ["lambda_t", "lambda_s", "caps_sigma"], "gradcaps": ["lambda_t"],
         "asap": ["lambda_t", "lambda_s", "lambda_p", "asap_tau"]}


@pytest.mark.parametrize("name", BASELINES)
def test_every_negative_coefficient_is_refused_with_its_flag(name):
    module = importlib.import_module(name)
    for field in FLAGS[method_of(name)]:
        with pytest.raises(BadInput) as error:
            module.resolve_args(module.Args(env_id="Pendulum-v1", **{field: -0.5}))
        message = str(error.value)
        assert f"{name}.py: error: --{field.replace('_', '-')} must be non-negative" in message, message


# as a user meets them: one bad flag per script from the command line, and an ASAP tau above 1
BAD_FLAGS = [("td3_caps", "--caps-sigma", "-0.2"), ("sac_caps", "--lambda-s", "-0.5"),
             ("td3_gradcaps", "--lambda-t", "-1"), ("sac_gradcaps", "--lambda-t", "-1"),
             ("td3_asap", "--lambda-p", "-2"), ("sac_asap", "--asap-tau", "1.5")]


@pytest.mark.parametrize("name,flag,value", BAD_FLAGS)
def test_bad_coefficient_is_refused(name, flag, value, tmp_path):
    run = run_script if name == "sac_asap" else run_in_process
    assert_one_line_error(run(f"{name}.py", flag, value, cwd=tmp_path), flag)
    assert not (tmp_path / "runs").exists()
