"""PAVE's terms: the general `pave_regularizer` against closed forms (any critic), and its speed path pinned equal to
it."""

import inspect
import unittest.mock

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import geometry_probe
import pave_speed
import sac
import sac_pave
import td3
import td3_pave
from run_control import BadInput

OBS_DIM, ACT_DIM = 5, 3
HIDDEN = (64, 48)  # two hidden layers of different widths, as the released [400, 300]


def terms_of_one(qf, *args):
    """pave_regularizer on a single critic: (q, terms) without the critic dimension."""
    q, terms = td3_pave.pave_regularizer([qf], *args)
    return q[0], {name: value[0] for name, value in terms.items()}


# ---- closed forms ----------------------------------------------------------------------------------------------------


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
    q, _ = terms_of_one(qf, obs, actions, next_obs, 0.1, 0.1)
    torch.testing.assert_close(q, qf(obs, actions).squeeze(-1))


def test_vfc_equals_closed_form_exactly():
    """VFC = mean over batch and action dims of (grad_a Q(s, a) - grad_a Q(s', a))^2 = mean ||C^T (s - s')||^2 /
    action_dim (the P a part cancels; the released code's F.mse_loss form)."""
    qf, obs, actions, next_obs = quadratic_case(128)
    _, terms = terms_of_one(qf, obs, actions, next_obs, 0.1, 0.1)
    expected = ((obs - next_obs) @ qf.C.detach()).square().sum(-1).mean() / ACT_DIM
    torch.testing.assert_close(terms["vfc"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act_dim", [2, 3])
def test_mpr_monte_carlo_mean_approaches_sigma2_frobenius_over_action_dim(act_dim):
    """MPR = mean over batch and action dims of (C^T eps)_j^2 with eps ~ N(0, sigma^2 I): expectation
    sigma^2 ||C||_F^2 / action_dim (paper Eq. 12 in the released code's mean-over-dimensions form, exact here)."""
    sigma, batch = 0.3, 40_000
    qf, obs, actions, next_obs = quadratic_case(batch, act_dim=act_dim)
    torch.manual_seed(0)
    _, terms = terms_of_one(qf, obs, actions, next_obs, sigma, 0.1)
    expected = sigma**2 * qf.C.detach().square().sum() / act_dim
    # std of ||C^T eps||^2 / its mean is below sqrt(2) here: 40 000 samples give a relative error well under 3%
    assert abs(terms["mpr"].item() - expected.item()) / expected.item() < 0.03
    _, terms0 = terms_of_one(qf, obs[:64], actions[:64], next_obs[:64], 0.0, 0.1)  # no noise, nothing to penalize
    assert terms0["mpr"].item() == 0.0


def test_curv_equals_hinge_of_vPv_for_the_drawn_v():
    """Curv = mean max(0, v^T P v + delta) for the Rademacher v the function draws (replayed from the same seed)."""
    delta, batch = 0.5, 256
    qf, obs, actions, next_obs = quadratic_case(batch)
    torch.manual_seed(11)
    _, terms = terms_of_one(qf, obs, actions, next_obs, 0.1, delta)
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
        _, terms = terms_of_one(qf, obs, actions, next_obs, 0.1, delta)
        assert terms["curv"].item() == pytest.approx(expected, abs=1e-6)


class LayerNormFieldCritic(nn.Module):
    """Q(s, a) = g(s) . a - c ||a||^2 with g a 3-hidden-layer LayerNorm SiLU MLP (a critic unlike ours):
    grad_a Q = g(s) - 2 c a, grad2_aa Q = -2c I, and grad2_sa Q = J_g(s)^T, all known whatever g is."""

    def __init__(self, c=0.3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c = c
        layers, width = [], OBS_DIM
        for out in (32, 24, 16):
            layers += [nn.Linear(width, out), nn.LayerNorm(out), nn.SiLU()]
            width = out
        self.g = nn.Sequential(*layers, nn.Linear(width, ACT_DIM))

    def forward(self, obs, act):
        # shape (B,): the function takes (B,) or (B, 1)
        return (self.g(obs) * act).sum(-1) - self.c * act.square().sum(-1)


def layer_norm_case(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randn(batch, OBS_DIM, generator=g), torch.randn(batch, OBS_DIM, generator=g)
    return LayerNormFieldCritic(seed=seed), obs, torch.rand(batch, ACT_DIM, generator=g) * 2 - 1, next_obs


def pave_regularizer_cut_out():
    """td3_pave.pave_regularizer copied out of its file and run with nothing but torch and F defined, as a researcher
    pasting it into another code base would."""
    namespace = {"torch": torch, "F": F}
    exec(inspect.getsource(td3_pave.pave_regularizer), namespace)
    return namespace["pave_regularizer"]


def test_cut_out_function_gives_exact_vfc_and_curv_on_layer_norm_critics():
    """VFC = mean_{b,j} (g(s) - g(s'))_j^2 and Curv = max(0, -2 c d + delta) exactly, for two LayerNorm critics at once
    (different g, one eps and one v for both), from the function copied out alone."""
    regularizer = pave_regularizer_cut_out()
    (qf_a, obs, actions, next_obs), qf_b = layer_norm_case(256), LayerNormFieldCritic(c=0.05, seed=1)
    q, terms = regularizer([qf_a, qf_b], obs, actions, next_obs, 0.01, 1.0)
    assert q.shape == (2, 256) and all(terms[name].shape == (2,) for name in terms)
    torch.testing.assert_close(q, torch.stack([qf_a(obs, actions), qf_b(obs, actions)]))
    for i, qf in enumerate((qf_a, qf_b)):
        with torch.no_grad():
            expected_vfc = (qf.g(obs) - qf.g(next_obs)).square().mean()
        torch.testing.assert_close(terms["vfc"][i], expected_vfc, rtol=1e-5, atol=1e-7)
        vhv = -2 * qf.c * ACT_DIM  # the same for every Rademacher v
        torch.testing.assert_close(terms["vhv"][i], torch.tensor(vhv), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(terms["curv"][i], torch.tensor(max(0.0, vhv + 1.0)), rtol=1e-5, atol=1e-6)
    assert terms["curv"][0] == 0 and terms["curv"][1] > 0, "one critic on each side of the hinge"
    grads = torch.autograd.grad(terms["vfc"].sum() + terms["mpr"].sum(), list(qf_a.g.parameters()))
    assert all(g.abs().sum() > 0 for g in grads), "the terms train every layer, LayerNorm included"


def test_mpr_on_layer_norm_critic_is_sigma2_jacobian_frobenius_over_action_dim():
    """For small sigma, g(s + eps) - g(s) = J_g(s) eps + O(sigma^2): MPR = mean_b ||J_g(s_b) eps_b||^2 / d for the eps
    drawn (replayed from the seed), whose expectation is sigma^2 mean_b ||J_g(s_b)||_F^2 / d."""
    sigma, batch = 1e-3, 8192
    qf, obs, actions, next_obs = layer_norm_case(batch)
    qf, obs, actions, next_obs = qf.double(), obs.double(), actions.double(), next_obs.double()
    torch.manual_seed(0)
    _, terms = terms_of_one(qf, obs, actions, next_obs, sigma, 1.0)
    torch.manual_seed(0)
    eps = sigma * torch.randn_like(obs)
    jacobians = torch.func.vmap(torch.func.jacrev(qf.g))(obs)  # (B, d, obs_dim)
    first_order = torch.einsum("bjo,bo->bj", jacobians, eps).square().mean()
    torch.testing.assert_close(terms["mpr"], first_order, rtol=1e-2, atol=0)  # the O(sigma^3) remainder
    expected = sigma**2 * jacobians.square().sum((1, 2)).mean() / ACT_DIM
    # ||J eps||^2 / its mean has a relative std near 1 and heavy tails across states: 8192 draws land within ~10%
    assert abs(terms["mpr"].item() - expected.item()) / expected.item() < 0.1


@pytest.mark.parametrize("activation", [nn.Tanh, nn.GELU, nn.SiLU])
def test_any_depth_and_activation_matches_the_straightforward_derivatives(activation):
    """A 3-hidden-layer LayerNorm critic with tanh, GELU or SiLU: every term equals the one computed the obvious way
    (three separate autograd evaluations, an explicit Hessian), for the same eps and v."""
    torch.manual_seed(0)
    qf = nn.Sequential(nn.Linear(OBS_DIM + ACT_DIM, 32), nn.LayerNorm(32), activation(), nn.Linear(32, 32),
                       nn.LayerNorm(32), activation(), nn.Linear(32, 16), activation(), nn.Linear(16, 1)).double()
    critic = lambda s, a: qf(torch.cat([s, a], -1))  # noqa: E731
    obs, next_obs, actions = (torch.randn(20, OBS_DIM).double(), torch.randn(20, OBS_DIM).double(),
                              torch.rand(20, ACT_DIM).double())
    torch.manual_seed(3)
    q, terms = terms_of_one(critic, obs, actions, next_obs, 0.1, 0.5)
    torch.manual_seed(3)
    eps = 0.1 * torch.randn_like(obs)
    v = torch.randint(0, 2, actions.shape).double() * 2 - 1

    def grad_a(s, a):
        return torch.func.grad(lambda a_: critic(s[None], a_[None]).sum())(a)

    grad, grad_noisy, grad_next = (torch.func.vmap(grad_a)(s, actions) for s in (obs, obs + eps, next_obs))
    hessians = torch.func.vmap(torch.func.hessian(lambda s, a: critic(s[None], a[None]).sum(), argnums=1))(obs, actions)
    vhv = torch.einsum("bi,bij,bj->b", v, hessians, v)
    torch.testing.assert_close(terms["mpr"], F.mse_loss(grad_noisy, grad))
    torch.testing.assert_close(terms["vfc"], F.mse_loss(grad, grad_next))
    torch.testing.assert_close(terms["vhv"], vhv.mean())
    torch.testing.assert_close(terms["curv"], F.relu(vhv + 0.5).mean())


def test_regularizer_is_defined_in_the_pave_scripts_only_and_byte_identical():
    """One function, in the two PAVE files (copied alone into other code); the other scripts measure their geometry/
    charts with geometry_probe.measure_geometry, pinned equal to it below."""
    import importlib

    assert inspect.getsource(sac_pave.pave_regularizer) == inspect.getsource(td3_pave.pave_regularizer)
    for name in ("regularize", "Critics"):
        assert inspect.getsource(getattr(sac_pave, name)) == inspect.getsource(getattr(td3_pave, name)), name
    for name in ["td3", "td3_caps", "td3_gradcaps", "td3_asap", "sac", "sac_caps", "sac_gradcaps", "sac_asap"]:
        assert not hasattr(importlib.import_module(name), "pave_regularizer"), name
    assert inspect.getsource(td3.Critics) == inspect.getsource(td3_pave.Critics) == inspect.getsource(sac.Critics)


@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_the_geometry_probe_measures_what_pave_regularizer_computes(activation):
    """The Base and baseline scripts' probe: the same terms as pave_regularizer for one critic, from the same random
    draws of torch's global generator (moving a probe would change the weights of the runs after it)."""
    critics, _, obs, actions, next_obs = _critic_case(activation)
    torch.manual_seed(5)
    measured = geometry_probe.measure_geometry(critics[0], obs, actions, next_obs, 0.2, 0.7)
    after_probe = torch.randn(3)
    torch.manual_seed(5)
    _, terms = td3_pave.pave_regularizer(critics[:1], obs, actions, next_obs, 0.2, 0.7)
    assert torch.equal(after_probe, torch.randn(3))  # the same number of draws
    assert measured.keys() == terms.keys()
    for name, value in terms.items():
        assert measured[name] == value[0].item(), name


def regularize(critics, *args, **kwargs):
    """The script's regularize, or the speed path for stacked critics (as a run that takes it up calls it)."""
    fn = pave_speed.written_out if isinstance(critics, pave_speed.StackedCritics) else td3_pave.regularize
    return fn(critics, *args, **kwargs)


# ---- the speed path equals the general function ----------------------------------------------------------------------


def _critic_case(activation="silu", n_critics=1, batch=100, seed=0):
    """n QNetworks as one Critics module, the same critics with stacked weights (the speed path), and a random batch."""
    torch.manual_seed(seed)
    critics = td3_pave.Critics(td3_pave.QNetwork(OBS_DIM, ACT_DIM, HIDDEN, activation) for _ in range(n_critics))
    obs, next_obs = torch.randn(batch, OBS_DIM), torch.randn(batch, OBS_DIM)
    actions = torch.rand(batch, ACT_DIM) * 2 - 1
    return critics, pave_speed.StackedCritics(critics), obs, actions, next_obs


QNETWORK_NAMES = {"w1": "net.0.weight", "b1": "net.0.bias", "w2": "net.2.weight", "b2": "net.2.bias",
                  "w3": "net.4.weight", "b3": "net.4.bias"}


def member(tensors, i):
    """Critic i's slice of tensors shaped like StackedCritics' parameters ({"w1": ..., ...}), under QNetwork's names."""
    return {QNETWORK_NAMES[name]: t[i, 0] if name.startswith("b") else t[i] for name, t in tensors.items()}


def test_stacked_critics_module_is_its_qnetworks():
    """StackedCritics starts from its QNetworks' weights, computes their Q, and gives each back as a state dict."""
    critics, stacked, obs, actions, _ = _critic_case(n_critics=2)
    q = stacked(obs, actions)
    assert q.shape == (2, len(obs)) and len(list(stacked.parameters())) == 6
    torch.testing.assert_close(stacked(obs, actions, n=1), q[:1])
    torch.testing.assert_close(q, critics(obs, actions), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(critics(obs, actions, n=1), critics(obs, actions)[:1])
    for i, qf in enumerate(critics):
        state = stacked.member_state_dict(i)
        assert all(torch.equal(state[name], p) for name, p in qf.state_dict().items())
        assert all(torch.equal(critics.member_state_dict(i)[name], p) for name, p in qf.state_dict().items())
        td3.QNetwork(OBS_DIM, ACT_DIM, HIDDEN, "silu").load_state_dict(state)  # checkpoints store these
    with torch.no_grad():
        stacked.w2[0] += 1.0  # a copy: training the module leaves the QNetworks it was built from alone
    assert not torch.equal(stacked.member_state_dict(0)["net.2.weight"], critics[0].net[2].weight)


def critic_loss(q, terms, td_target):
    """A loss that weighs every term (and the TD part) differently, so a mix-up between them would show."""
    return ((q - td_target).square().mean(-1) + 0.7 * terms["mpr"] + 1.3 * terms["vfc"] + 0.4 * terms["curv"]).sum()


@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_speed_path_equals_pave_regularizer_in_terms_gradients_and_adam_updates(activation):
    """pave_speed.written_out (written-out derivatives, both critics in one bmm pass) = pave_regularizer (autograd), for
    the same seed: every term, every parameter gradient of a loss that mixes them, the parameters after two Adam
    steps."""
    sigma, delta = 0.3, 0.2
    critics, stacked, obs, actions, next_obs = _critic_case(activation, n_critics=2)
    td_target = torch.randn(len(obs))
    fast_opt = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    ref_opt = torch.optim.Adam(critics.parameters(), lr=1e-3)
    for step in range(2):
        torch.manual_seed(100 + step)
        q, terms = pave_speed.written_out(stacked, obs, actions, next_obs, sigma, delta)
        torch.manual_seed(100 + step)  # the same draws: eps first, then v, one of each for both critics
        ref_q, ref_terms = td3_pave.pave_regularizer(critics, obs, actions, next_obs, sigma, delta)
        torch.testing.assert_close(q, ref_q, rtol=1e-5, atol=1e-6)
        for name in terms:
            torch.testing.assert_close(terms[name], ref_terms[name], rtol=1e-4, atol=1e-8, msg=name)
        if activation == "silu":
            assert (terms["curv"] > 0).all() and (terms["vhv"] != 0).all(), "the case must exercise the curvature term"
        fast_opt.zero_grad()
        critic_loss(q, terms, td_target).backward()
        ref_opt.zero_grad()
        critic_loss(ref_q, ref_terms, td_target).backward()
        grads = {name: p.grad for name, p in stacked.named_parameters()}
        for i, ref in enumerate(critics):
            for name, r in ref.named_parameters():
                assert member(grads, i)[name].abs().sum() > 0, name
                torch.testing.assert_close(member(grads, i)[name], r.grad, rtol=1e-4, atol=1e-7, msg=name)
        fast_opt.step()
        ref_opt.step()
    # Adam divides by sqrt(v) + 1e-8: where a gradient is itself ~1e-8, its float-level difference moves that element's
    # step visibly (2e-6 seen), so parameters are compared to 1% of one step (lr 1e-3), gradients above to float
    # tolerance
    for i, ref in enumerate(critics):
        for name, r in ref.named_parameters():
            torch.testing.assert_close(stacked.member_state_dict(i)[name], r.detach(), rtol=0, atol=1e-5, msg=name)


def test_one_noise_draw_serves_both_critics():
    """The released code draws eps and v once per step for both critics: two identical critics get identical terms, on
    the general function and on the speed path."""
    critics, _, obs, actions, next_obs = _critic_case()
    twins = td3_pave.Critics([critics[0], critics[0]])
    for regularizer, module in ((td3_pave.pave_regularizer, twins),
                                (pave_speed.written_out, pave_speed.StackedCritics(twins))):
        _, terms = regularizer(module, obs, actions, next_obs, 0.1, 1.0)
        for name in ("mpr", "curv", "vhv"):  # the noisy terms
            assert torch.equal(terms[name][0], terms[name][1]), name


@pytest.mark.parametrize("fused", [True, False])
def test_pave_batch_regularizes_exactly_the_first_transitions(fused):
    """--pave-batch k: Q at all B transitions as before, the terms exactly those of the first k transitions (same
    noise)."""
    critics, stacked, obs, actions, next_obs = _critic_case(n_critics=2)
    module = stacked if fused else critics
    q_full, _ = regularize(module, obs, actions, next_obs, 0.1, 0.1)
    torch.manual_seed(4)
    q, terms = regularize(module, obs, actions, next_obs, 0.1, 0.1, pave_batch=25)
    torch.manual_seed(4)
    _, terms_head = regularize(module, obs[:25], actions[:25], next_obs[:25], 0.1, 0.1)
    torch.testing.assert_close(q, q_full)
    for name in terms:
        torch.testing.assert_close(terms[name], terms_head[name], msg=name)
    torch.manual_seed(4)
    _, terms_all = regularize(module, obs, actions, next_obs, 0.1, 0.1, pave_batch=100)
    torch.manual_seed(4)
    _, terms_none = regularize(module, obs, actions, next_obs, 0.1, 0.1)
    assert all(torch.equal(terms_all[name], terms_none[name]) for name in terms)


def test_pave_batch_estimates_are_unbiased():
    """Sub-batches of a uniformly sampled batch: the mean of the estimates over the 4 disjoint quarters is the
    full-batch term (exactly for VFC, which draws no noise); one quarter's estimate is off by the sampling noise
    alone."""
    _, stacked, obs, actions, next_obs = _critic_case(n_critics=2, batch=100)
    _, full = regularize(stacked, obs, actions, next_obs, 0.1, 0.1)
    quarters = [regularize(stacked, obs.roll(-25 * i, 0), actions.roll(-25 * i, 0), next_obs.roll(-25 * i, 0),
                                    0.1, 0.1, pave_batch=25)[1] for i in range(4)]
    torch.testing.assert_close(torch.stack([t["vfc"] for t in quarters]).mean(0), full["vfc"])
    assert not torch.allclose(quarters[0]["vfc"], full["vfc"])


@pytest.mark.parametrize("term", ["mpr", "vfc", "curv"])
def test_each_term_trains_every_layer_of_a_silu_critic(term):
    """Each term alone yields gradients in every weight of the critic (the derivatives are differentiable tensors)."""
    _, stacked, obs, actions, next_obs = _critic_case()
    _, terms = pave_speed.written_out(stacked, obs, actions, next_obs, 0.1, 1.0)
    assert terms[term].item() > 0
    grads = torch.autograd.grad(terms[term].sum(), list(stacked.parameters()), allow_unused=True)
    weights = [g for g, (name, _) in zip(grads, stacked.named_parameters()) if name.startswith("w")]
    assert all(g is not None and g.abs().sum() > 0 for g in weights), term


def test_zero_lambdas_give_exactly_the_td3_critic_gradient():
    """With lambda1 = lambda2 = lambda3 = 0 the PAVE critic loss has TD3's gradient (the shared evaluation changes
    nothing)."""
    critics, stacked, obs, actions, next_obs = _critic_case()
    qf = critics[0]
    td_target = torch.randn(100)
    td3_loss = F.mse_loss(qf(obs, actions).squeeze(-1), td_target)
    td3_grads = dict(zip([name for name, _ in qf.named_parameters()],
                         torch.autograd.grad(td3_loss, list(qf.parameters()))))
    q, terms = pave_speed.written_out(stacked, obs, actions, next_obs, 0.1, 0.1)
    pave_loss = F.mse_loss(q[0], td_target) + (0.0 * terms["mpr"] + 0.0 * terms["vfc"] + 0.0 * terms["curv"]).sum()
    names = [name for name, _ in stacked.named_parameters()]
    pave_grads = member(dict(zip(names, torch.autograd.grad(pave_loss, list(stacked.parameters())))), 0)
    for name in td3_grads:
        torch.testing.assert_close(pave_grads[name], td3_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_compiled_critic_loss_equals_eager():
    """--compile: torch.compile of the speed path gives the same terms and parameter gradients as eager mode (the
    compiled graph draws its noise through the same generator when fallback_random is set)."""
    import torch._inductor.config as inductor_config

    _, stacked, obs, actions, next_obs = _critic_case(n_critics=2)
    params = list(stacked.parameters())
    td_target = torch.randn(len(obs))

    def loss_and_terms(fn):
        torch.manual_seed(7)
        q, terms = fn(stacked, obs, actions, next_obs, 0.1, 0.2)
        loss = critic_loss(q, terms, td_target)
        return loss, terms, torch.autograd.grad(loss, params)

    eager = loss_and_terms(regularize)
    with unittest.mock.patch.object(inductor_config, "fallback_random", True):
        compiled = loss_and_terms(torch.compile(regularize))
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-6)
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=1e-4, atol=1e-7, msg=name)
    for a, b in zip(compiled[2], eager[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module", [td3_pave, sac_pave])
def test_auto_takes_the_speed_path_only_where_it_applies(module):
    def resolved(**flags):
        return pave_speed.chosen(module.resolve_args(module.Args(env_id="Pendulum-v1", **flags)))

    assert resolved() and resolved(critic_activation="relu") and not resolved(pave_impl="autograd")
    assert (not resolved(hidden_sizes=(64, 64, 64)) and not resolved(critic_layer_norm=True)
            and not resolved(hidden_sizes=(64,)))
    assert resolved(pave_impl="fused") and resolved(pave_impl="written-out")  # fused: the old name
    with pytest.raises(BadInput, match="--pave-impl written-out .alias fused. is written for 2 hidden layers"):
        resolved(pave_impl="fused", critic_layer_norm=True)


def test_a_critic_without_one_value_per_row_is_refused():
    """A critic giving (B, 2) would otherwise pass reshape(-1) and give a wrong q without a word."""
    _, _, obs, actions, next_obs = _critic_case(batch=10)
    two_values = nn.Linear(OBS_DIM + ACT_DIM, 2)
    with pytest.raises(ValueError, match=r"one Q value per row.*got \(30, 2\)"):
        td3_pave.pave_regularizer([lambda s, a: two_values(torch.cat([s, a], -1))], obs, actions, next_obs, 0.1, 1.0)
