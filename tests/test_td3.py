"""td3.py and td3_pave.py: PAVE's terms against closed forms, real short runs, reproducibility, clear errors."""

import unittest.mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from runs import all_finite, read_scalars, run_script, train

import sac_pave
import td3
import td3_pave

OBS_DIM, ACT_DIM = 5, 3
HIDDEN = (64, 48)  # two hidden layers of different widths, as the released [400, 300]


class QuadraticCritic(nn.Module):
    """Q(s, a) = s^T C a + 0.5 a^T P a: grad_a Q = C^T s + P a, grad2_sa Q = C^T, grad2_aa Q = P (all known)."""

    def __init__(self, C, P):
        super().__init__()
        self.C, self.P = nn.Parameter(C), nn.Parameter(P)

    def forward(self, obs, act):
        return ((obs @ self.C) * act).sum(-1, keepdim=True) + 0.5 * ((act @ self.P) * act).sum(-1, keepdim=True)


def quadratic_case(batch, seed=0, act_dim=ACT_DIM):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(OBS_DIM, act_dim, generator=g)
    A = torch.randn(act_dim, act_dim, generator=g)
    P = -(A @ A.T) / 2 + 0.3 * torch.eye(act_dim)  # symmetric, indefinite: some v^T P v above -delta, some below
    obs, next_obs = torch.randn(batch, OBS_DIM, generator=g), torch.randn(batch, OBS_DIM, generator=g)
    actions = torch.rand(batch, act_dim, generator=g) * 2 - 1
    return QuadraticCritic(C, P), obs, actions, next_obs


def test_q_is_the_critic_value_at_the_replay_pair():
    qf, obs, actions, next_obs = quadratic_case(32)
    q, _ = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.1)
    torch.testing.assert_close(q, qf(obs, actions).squeeze(-1))


def test_vfc_equals_closed_form_exactly():
    """VFC = mean over batch and action dims of (grad_a Q(s, a) - grad_a Q(s', a))^2 = mean ||C^T (s - s')||^2 / action_dim
    (the P a part cancels; the released code's F.mse_loss form)."""
    qf, obs, actions, next_obs = quadratic_case(128)
    _, terms = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.1)
    expected = ((obs - next_obs) @ qf.C.detach()).square().sum(-1).mean() / ACT_DIM
    torch.testing.assert_close(terms["vfc"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act_dim", [2, 3])
def test_mpr_monte_carlo_mean_approaches_sigma2_frobenius_over_action_dim(act_dim):
    """MPR = mean over batch and action dims of (C^T eps)_j^2 with eps ~ N(0, sigma^2 I): expectation
    sigma^2 ||C||_F^2 / action_dim (paper Eq. 12 in the released code's mean-over-dimensions form, exact here)."""
    sigma, batch = 0.3, 40_000
    qf, obs, actions, next_obs = quadratic_case(batch, act_dim=act_dim)
    torch.manual_seed(0)
    _, terms = td3.pave_regularizer(qf, obs, actions, next_obs, sigma, 0.1)
    expected = sigma**2 * qf.C.detach().square().sum() / act_dim
    # std of ||C^T eps||^2 / its mean is below sqrt(2) here: 40 000 samples give a relative error well under 3%
    assert abs(terms["mpr"].item() - expected.item()) / expected.item() < 0.03
    # and with no noise there is nothing to penalize
    _, terms0 = td3.pave_regularizer(qf, obs[:64], actions[:64], next_obs[:64], 0.0, 0.1)
    assert terms0["mpr"].item() == 0.0


def test_curv_equals_hinge_of_vPv_for_the_drawn_v():
    """Curv = mean max(0, v^T P v + delta) for the Rademacher v the function draws (replayed from the same seed)."""
    delta, batch = 0.5, 256
    qf, obs, actions, next_obs = quadratic_case(batch)
    torch.manual_seed(11)
    _, terms = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, delta)
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
        _, terms = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, delta)
        assert terms["curv"].item() == pytest.approx(expected, abs=1e-6)


def _critic_case(activation="silu", n_critics=1, batch=100, seed=0):
    """n QNetworks (as td3.py makes them), the same critics as td3_pave.py's Critics module, and a random batch."""
    torch.manual_seed(seed)
    critics = [td3_pave.QNetwork(OBS_DIM, ACT_DIM, HIDDEN, activation) for _ in range(n_critics)]
    obs, next_obs = torch.randn(batch, OBS_DIM), torch.randn(batch, OBS_DIM)
    actions = torch.rand(batch, ACT_DIM) * 2 - 1
    return critics, td3_pave.Critics(critics), obs, actions, next_obs


QNETWORK_NAMES = {"w1": "net.0.weight", "b1": "net.0.bias", "w2": "net.2.weight", "b2": "net.2.bias", "w3": "net.4.weight",
                  "b3": "net.4.bias"}


def member(tensors, i):
    """Critic i's slice of tensors shaped like Critics' parameters ({"w1": ..., ...}), under QNetwork's parameter names."""
    return {QNETWORK_NAMES[name]: t[i, 0] if name.startswith("b") else t[i] for name, t in tensors.items()}


def test_critics_module_is_its_qnetworks():
    """Critics (stacked weights) starts from its QNetworks' weights, computes their Q, and gives each back as a state dict."""
    critics, ensemble, obs, actions, _ = _critic_case(n_critics=2)
    q = ensemble(obs, actions)
    assert q.shape == (2, len(obs)) and len(list(ensemble.parameters())) == 6
    torch.testing.assert_close(ensemble(obs, actions, n=1), q[:1])
    for i, qf in enumerate(critics):
        torch.testing.assert_close(q[i], qf(obs, actions).squeeze(-1), rtol=1e-5, atol=1e-6)
        state = ensemble.member_state_dict(i)
        assert all(torch.equal(state[name], p) for name, p in qf.state_dict().items())
        fresh = td3_pave.QNetwork(OBS_DIM, ACT_DIM, HIDDEN, "silu")
        fresh.load_state_dict(state)  # checkpoints store these: they load into td3.py's QNetwork
    with torch.no_grad():
        ensemble.w2[0] += 1.0  # a copy: training the module leaves the QNetworks it was built from alone
    assert not torch.equal(ensemble.member_state_dict(0)["net.2.weight"], critics[0].net[2].weight)


def autograd_reference(qf, obs, actions, next_obs, eps, v, curv_delta):
    """PAVE's terms the straightforward way, for given noise: autograd's double backward for grad_a Q, triple for v^T H v."""
    actions = actions.detach().requires_grad_(True)

    def action_grad(states):
        return torch.autograd.grad(qf(states, actions).sum(), actions, create_graph=True)[0]

    grad, grad_noisy, grad_next = action_grad(obs), action_grad(obs + eps), action_grad(next_obs)
    vhv = (torch.autograd.grad((grad * v).sum(), actions, create_graph=True)[0] * v).sum(-1)
    terms = {"mpr": F.mse_loss(grad_noisy, grad), "vfc": F.mse_loss(grad, grad_next),
             "curv": F.relu(vhv + curv_delta).mean(), "grad_norm": grad.norm(dim=-1).mean(), "vhv": vhv.mean()}
    return qf(obs, actions).squeeze(-1), terms


def critic_loss(q, terms, td_target):
    """A loss that weighs every term (and the TD part) differently, so a mix-up between them would show."""
    return ((q - td_target).square().mean(-1) + 0.7 * terms["mpr"] + 1.3 * terms["vfc"] + 0.4 * terms["curv"]).sum()


@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_closed_form_equals_autograd_in_terms_gradients_and_adam_updates(activation):
    """td3_pave.py's written-out derivatives (both critics in one bmm pass) = autograd's, in every term, every parameter
    gradient of a loss that mixes them, and the parameters after two Adam steps, to float tolerance."""
    sigma, delta = 0.3, 0.2
    reference, critics, obs, actions, next_obs = _critic_case(activation, n_critics=2)
    td_target = torch.randn(len(obs))
    fast_opt = torch.optim.Adam(critics.parameters(), lr=1e-3)
    ref_opt = torch.optim.Adam([p for qf in reference for p in qf.parameters()], lr=1e-3)
    for step in range(2):
        torch.manual_seed(100 + step)
        q, terms = td3_pave.pave_regularizer(critics, obs, actions, next_obs, sigma, delta)
        torch.manual_seed(100 + step)  # replay the noise the function drew: eps first, then v, one draw for both critics
        eps = sigma * torch.randn(len(obs), OBS_DIM)
        v = torch.randint(0, 2, (len(obs), ACT_DIM)).float() * 2 - 1
        ref_q, ref_terms = zip(*[autograd_reference(qf, obs, actions, next_obs, eps, v, delta) for qf in reference])
        torch.testing.assert_close(q, torch.stack(ref_q), rtol=1e-5, atol=1e-6)
        for name in terms:
            torch.testing.assert_close(terms[name], torch.stack([t[name] for t in ref_terms]), rtol=1e-4, atol=1e-8, msg=name)
        if activation == "silu":
            assert (terms["curv"] > 0).all() and (terms["vhv"] != 0).all(), "the case must exercise the curvature term"
        fast_opt.zero_grad()
        critic_loss(q, terms, td_target).backward()
        ref_opt.zero_grad()
        critic_loss(torch.stack(ref_q), {k: torch.stack([t[k] for t in ref_terms]) for k in ("mpr", "vfc", "curv")}, td_target).backward()
        grads = {name: p.grad for name, p in critics.named_parameters()}
        for i, ref in enumerate(reference):
            for name, r in ref.named_parameters():
                assert member(grads, i)[name].abs().sum() > 0, name
                torch.testing.assert_close(member(grads, i)[name], r.grad, rtol=1e-4, atol=1e-7, msg=name)
        fast_opt.step()
        ref_opt.step()
    # Adam divides by sqrt(v) + 1e-8: where a gradient is itself ~1e-8, its float-level difference moves that element's
    # step visibly (2e-6 seen), so parameters are compared to 1% of one step (lr 1e-3), gradients above to float tolerance
    for i, ref in enumerate(reference):
        for name, r in ref.named_parameters():
            torch.testing.assert_close(critics.member_state_dict(i)[name], r.detach(), rtol=0, atol=1e-5, msg=name)


def test_td3_measures_what_td3_pave_trains_on():
    """td3.py's geometry probe (autograd) and td3_pave.py's training terms (closed form) agree on one critic and seed."""
    (qf,), critics, obs, actions, next_obs = _critic_case()
    torch.manual_seed(3)
    q_a, terms_a = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, 0.2)
    torch.manual_seed(3)
    q_b, terms_b = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.2)
    torch.testing.assert_close(q_b[0], q_a)
    for name in terms_a:
        torch.testing.assert_close(terms_b[name][0], terms_a[name], rtol=1e-4, atol=1e-8, msg=name)


def test_one_noise_draw_serves_both_critics():
    """The released code draws eps and v once per step for both critics: two identical critics get identical terms, and
    td3_pave.py draws exactly what td3.py's single-critic version draws (same seed, same terms for each critic)."""
    (qf,), _, obs, actions, next_obs = _critic_case()
    twins = td3_pave.Critics([qf, qf])
    _, terms = td3_pave.pave_regularizer(twins, obs, actions, next_obs, 0.1, 1.0)
    for name in ("mpr", "curv", "vhv"):  # the noisy terms
        assert torch.equal(terms[name][0], terms[name][1]), name
    torch.manual_seed(5)
    _, terms = td3_pave.pave_regularizer(twins, obs, actions, next_obs, 0.1, 1.0)
    torch.manual_seed(5)
    _, single = td3.pave_regularizer(qf, obs, actions, next_obs, 0.1, 1.0)
    for name in single:
        torch.testing.assert_close(terms[name], single[name].expand(2), rtol=1e-4, atol=1e-8, msg=name)


def test_pave_batch_regularizes_exactly_the_first_transitions():
    """--pave-batch k: Q at all B transitions as before, the terms exactly those of the first k transitions (same noise)."""
    _, critics, obs, actions, next_obs = _critic_case(n_critics=2)
    q_full, _ = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1)
    torch.manual_seed(4)
    q, terms = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1, pave_batch=25)
    torch.manual_seed(4)
    _, terms_head = td3_pave.pave_regularizer(critics, obs[:25], actions[:25], next_obs[:25], 0.1, 0.1)
    torch.testing.assert_close(q, q_full)
    for name in terms:
        torch.testing.assert_close(terms[name], terms_head[name], msg=name)
    torch.manual_seed(4)
    _, terms_all = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1, pave_batch=100)
    torch.manual_seed(4)
    _, terms_none = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1)
    assert all(torch.equal(terms_all[name], terms_none[name]) for name in terms)


def test_pave_batch_estimates_are_unbiased():
    """Sub-batches of a uniformly sampled batch: the mean of the estimates over the 4 disjoint quarters is the full-batch
    term (exactly for VFC, which draws no noise); one quarter's estimate is off by the sampling noise alone."""
    _, critics, obs, actions, next_obs = _critic_case(n_critics=2, batch=100)
    _, full = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1)
    quarters = [td3_pave.pave_regularizer(critics, obs.roll(-25 * i, 0), actions.roll(-25 * i, 0), next_obs.roll(-25 * i, 0),
                                          0.1, 0.1, pave_batch=25)[1] for i in range(4)]
    torch.testing.assert_close(torch.stack([t["vfc"] for t in quarters]).mean(0), full["vfc"])
    assert not torch.allclose(quarters[0]["vfc"], full["vfc"])


@pytest.mark.parametrize("term", ["mpr", "vfc", "curv"])
def test_each_term_trains_every_layer_of_a_silu_critic(term):
    """Each term alone yields gradients in every weight of the critic (the derivatives are differentiable tensors)."""
    _, critics, obs, actions, next_obs = _critic_case()
    _, terms = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 1.0)
    assert terms[term].item() > 0
    grads = torch.autograd.grad(terms[term].sum(), list(critics.parameters()), allow_unused=True)
    weights = [g for g, (name, _) in zip(grads, critics.named_parameters()) if name.startswith("w")]
    assert all(g is not None and g.abs().sum() > 0 for g in weights), term


def test_zero_lambdas_give_exactly_the_td3_critic_gradient():
    """With lambda1 = lambda2 = lambda3 = 0 the PAVE critic loss has TD3's gradient (the shared evaluation changes nothing)."""
    (qf,), critics, obs, actions, next_obs = _critic_case()
    td_target = torch.randn(100)
    td3_loss = F.mse_loss(qf(obs, actions).squeeze(-1), td_target)
    td3_grads = dict(zip([name for name, _ in qf.named_parameters()], torch.autograd.grad(td3_loss, list(qf.parameters()))))
    q, terms = td3_pave.pave_regularizer(critics, obs, actions, next_obs, 0.1, 0.1)
    pave_loss = F.mse_loss(q[0], td_target) + (0.0 * terms["mpr"] + 0.0 * terms["vfc"] + 0.0 * terms["curv"]).sum()
    names = [name for name, _ in critics.named_parameters()]
    pave_grads = member(dict(zip(names, torch.autograd.grad(pave_loss, list(critics.parameters())))), 0)
    for name in td3_grads:
        torch.testing.assert_close(pave_grads[name], td3_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_compiled_critic_loss_equals_eager():
    """--compile: torch.compile of the regularizer gives the same terms and parameter gradients as eager mode (the
    compiled graph draws its noise through the same generator when fallback_random is set)."""
    import torch._inductor.config as inductor_config

    _, critics, obs, actions, next_obs = _critic_case(n_critics=2)
    params = list(critics.parameters())
    td_target = torch.randn(len(obs))

    def loss_and_terms(fn):
        torch.manual_seed(7)
        q, terms = fn(critics, obs, actions, next_obs, 0.1, 0.2)
        loss = critic_loss(q, terms, td_target)
        return loss, terms, torch.autograd.grad(loss, params)

    eager = loss_and_terms(td3_pave.pave_regularizer)
    with unittest.mock.patch.object(inductor_config, "fallback_random", True):
        compiled = loss_and_terms(torch.compile(td3_pave.pave_regularizer))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-6)
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=1e-4, atol=1e-7, msg=name)
    for a, b in zip(compiled[2], eager[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module", [td3_pave, sac_pave])
def test_bad_pave_batch_is_refused(module):
    batch = module.Args().batch_size
    for value, message in [(0, "--pave-batch must be positive"), (batch + 1, f"--pave-batch must be at most --batch-size ({batch})")]:
        with pytest.raises(SystemExit) as exit_info:
            module.resolve_args(module.Args(env_id="Pendulum-v1", pave_batch=value))
        assert message in str(exit_info.value.code)


@pytest.mark.parametrize("module", [td3_pave, sac_pave])
def test_pave_needs_two_hidden_layers_and_the_base_takes_any(module):
    """PAVE's derivatives are written out for the 2-hidden-layer critic; the plain scripts build any depth."""
    with pytest.raises(SystemExit, match="--hidden-sizes must name two hidden layers"):
        module.resolve_args(module.Args(env_id="Pendulum-v1", hidden_sizes=(64, 64, 64)))
    with pytest.raises(SystemExit, match="--hidden-sizes must be one or more positive widths"):
        td3.resolve_args(td3.Args(env_id="Pendulum-v1", hidden_sizes=(64, 0)))
    qf = td3.QNetwork(OBS_DIM, ACT_DIM, (32, 16, 8))
    assert [layer.weight.shape for layer in qf.net if isinstance(layer, nn.Linear)] == [(32, 8), (16, 32), (8, 16), (1, 8)]
    assert qf(torch.zeros(4, OBS_DIM), torch.zeros(4, ACT_DIM)).shape == (4, 1)


def test_compile_or_not_follows_the_flag_and_falls_back_to_eager(monkeypatch, capsys):
    def eager(x):
        return x + 1

    assert td3_pave.compile_or_not(eager, "no", 10**6) is eager
    assert td3_pave.compile_or_not(eager, "auto", td3_pave.COMPILE_MIN_STEPS - 1) is eager
    calls = []

    def failing_compile(fn):
        def compiled(*args):
            calls.append(args)
            raise RuntimeError("no C++ compiler found\nlong details")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    wrapped = td3_pave.compile_or_not(eager, "auto", td3_pave.COMPILE_MIN_STEPS)
    assert wrapped is not eager
    assert wrapped(1) == 2 and wrapped(2) == 3 and len(calls) == 1  # one failed try, then eager for good
    out = capsys.readouterr().out
    assert "note: torch.compile failed (RuntimeError: no C++ compiler found); running eagerly" in out


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


# the paper text's ReLU variant of the base on Hopper; the Hopper PAVE run also takes the compiled path (--compile auto
# leaves a run this short eager) and overrides one preset lambda
EXTRA = {("td3.py", "Hopper-v5"): ["--actor-activation", "relu", "--critic-activation", "relu"],
         ("td3_pave.py", "Hopper-v5"): ["--lambda3", "0.01", "--compile", "yes"]}


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_short_real_run_writes_checkpoint_and_scalars(script, env_id, tmp_path):
    run_dir, ckpt = train(script, env_id, tmp_path, *EXTRA.get((script, env_id), []))
    assert ckpt["format"] == td3.CHECKPOINT_FORMAT
    assert (ckpt["script"], ckpt["algo"], ckpt["env_id"], ckpt["global_step"]) == (script, "td3", env_id, 400)
    assert ckpt["args"]["exp_name"] == script[:-3] and ckpt["args"]["seed"] == 1
    for net in ("actor", "qf1", "qf2"):
        assert all(torch.isfinite(t).all() for t in ckpt[net].values()), net
    # the checkpoint rebuilds with the script's own classes, [400, 300] as the released code
    module = td3_pave if script == "td3_pave.py" else td3
    args = ckpt["args"]
    assert tuple(args["hidden_sizes"]) == (400, 300) and ckpt["qf1"]["net.2.weight"].shape == (300, 400)
    module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"], args["actor_activation"]).load_state_dict(ckpt["actor"])
    module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"], args["critic_activation"]).load_state_dict(ckpt["qf1"])

    scalars = read_scalars(run_dir)
    tags = COMMON_TAGS + (["losses/mpr", "losses/vfc", "losses/curv"] if script == "td3_pave.py" else [])
    for tag in tags:
        assert all_finite(scalars.get(tag, [])), f"{tag} missing or not finite"
    relu = (script, env_id) == ("td3.py", "Hopper-v5")
    assert (args["actor_activation"], args["critic_activation"]) == (("relu", "relu") if relu else ("silu", "silu"))
    if script == "td3_pave.py":
        expected = {"Pendulum-v1": (2.0, 0.005, 2.0), "Hopper-v5": (0.1, 0.005, 0.01)}[env_id]  # --lambda3 0.01 wins
        assert (args["lambda1"], args["lambda2"], args["lambda3"]) == expected
        assert max(scalars["losses/mpr"]) > 0 and max(scalars["losses/vfc"]) > 0
    else:
        assert "losses/mpr" not in scalars
    if relu:
        assert all(v == 0 for v in scalars["geometry/vhv"]), "a ReLU critic has zero action curvature"
    else:
        assert all(v != 0 for v in scalars["geometry/vhv"]), "a SiLU critic has action curvature"


@pytest.mark.parametrize("script,extra", [("td3.py", []), ("td3_pave.py", []), ("td3_pave.py", ["--compile", "yes"])])
def test_same_seed_gives_identical_weights(script, extra, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small = ["--batch-size", "64", "--hidden-sizes", "64", "64", *extra]  # reproducibility does not depend on size
    _, first = train(script, "Pendulum-v1", tmp_path / "a", *small, seed=7)
    _, second = train(script, "Pendulum-v1", tmp_path / "b", *small, seed=7)
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
