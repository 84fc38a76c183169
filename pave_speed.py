"""The speed path of the PAVE scripts: the same math as `pave_regularizer`, faster, where it applies.

Written-out derivatives: for the released critic (2 hidden layers, SiLU or ReLU, no LayerNorm), grad_a Q and v^T H_aa v
are written out layer by layer over the twin critics' stacked weights (`StackedCritics`), so one plain backward trains
them instead of autograd's double and triple backward; `compile_or_not` adds torch.compile for long runs. A PAVE script
takes it up in one line of train() (`take_up`), with `--pave-impl auto` (the default) where it applies; every other
critic, and `--pave-impl autograd`, runs the script's `pave_regularizer`. Nothing here changes what is learned: tests
pin the two paths equal (terms, parameter gradients, Adam updates); docs/performance.md has the speeds. This module
imports no training script (the plain regularizer comes from the caller).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def applies(args):
    """Whether the critic is the one the written-out derivatives are written for."""
    return len(args.hidden_sizes) == 2 and args.critic_activation in ("silu", "relu") and not args.critic_layer_norm


def chosen(args):
    """Whether the run takes the speed path: --pave-impl written-out (or its old name fused), or auto where it
    applies."""
    return args.pave_impl in ("written-out", "fused") or (args.pave_impl == "auto" and applies(args))


def note(args):
    """The line a run prints about the path its PAVE terms take."""
    return "PAVE terms: " + ("the speed path (written-out derivatives, pave_speed.py)" if chosen(args)
                             else "pave_regularizer (autograd)")


def refusal(args):
    """Why --pave-impl written-out (or fused) cannot run this critic, or None."""
    if args.pave_impl in ("written-out", "fused") and not applies(args):
        return ("--pave-impl written-out (alias fused) is written for 2 hidden layers, SiLU or ReLU and no LayerNorm; "
                f"use --pave-impl autograd (or auto) for --hidden-sizes {' '.join(map(str, args.hidden_sizes))}"
                + (" --critic-layer-norm" if args.critic_layer_norm else ""))
    return None


def take_up(args, qf, qf_target, regularize):
    """(critics, target critics, regularizer) of the run: StackedCritics of both and `written_out` on the speed path,
    else the caller's own critics and its `regularize` (pave_regularizer); says which. The initial weights are the same
    either way."""
    print(note(args))
    if not chosen(args):
        return qf, qf_target, regularize
    return StackedCritics(qf), StackedCritics(qf_target), written_out


class StackedCritics(nn.Module):
    """Critics of 2-hidden-layer MLPs with each layer's weights stacked along a leading critic dimension: one bmm per
    layer evaluates every critic and the optimizer updates 6 tensors, not 6 per critic (3-16% off a PAVE critic step on
    CPU, measured). Built from a Critics module, whose initial weights it takes (a copy); checkpoints store each critic
    back in QNetwork's format (member_state_dict)."""

    def __init__(self, critics):
        super().__init__()
        assert all(len(qf.net) == 5 for qf in critics), "QNetwork's 2-hidden-layer MLP without LayerNorm"
        self.activation = critics[0].net[1]
        layers = [[qf.net[i] for qf in critics] for i in (0, 2, 4)]
        weights = (nn.Parameter(torch.stack([lin.weight.detach() for lin in layer])) for layer in layers)
        biases = (nn.Parameter(torch.stack([lin.bias.detach()[None] for lin in layer])) for layer in layers)
        (self.w1, self.w2, self.w3), (self.b1, self.b2, self.b3) = weights, biases

    def forward(self, obs, act, n=None):
        """Q(s, a) of the first n critics (all by default), shape (n, B)."""
        n = len(self.w1) if n is None else n
        x = torch.cat([obs, act], -1).expand(n, -1, -1)
        h1 = self.activation(torch.baddbmm(self.b1[:n], x, self.w1[:n].mT))
        h2 = self.activation(torch.baddbmm(self.b2[:n], h1, self.w2[:n].mT))
        return torch.baddbmm(self.b3[:n], h2, self.w3[:n].mT).squeeze(-1)

    def member_state_dict(self, i):
        """Critic i as a QNetwork state dict (a copy)."""
        state = {}
        for j, (w, b) in zip((0, 2, 4), ((self.w1, self.b1), (self.w2, self.b2), (self.w3, self.b3))):
            state[f"net.{j}.weight"], state[f"net.{j}.bias"] = w[i].detach().clone(), b[i, 0].detach().clone()
        return state


def activation_derivatives(kind, z, k):
    """sigma(z) and sigma'(z) of the critics' hidden activation at every row of z (n, rows, width), and sigma''(z) at
    the first k rows only (the rows Curv needs); elementwise and differentiable.

    SiLU: sigma = z s with s = sigmoid(z), sigma' = s (1 + z (1 - s)), sigma'' = s (1 - s) (2 + z (1 - 2 s)).
    ReLU: sigma' = 1[z > 0], sigma'' = 0 (autograd's convention at the kink).
    """
    if kind is nn.SiLU:
        s = torch.sigmoid(z)
        s_k, z_k = s[:, :k], z[:, :k]
        return z * s, s * (1 + z * (1 - s)), s_k * (1 - s_k) * (2 + z_k * (1 - 2 * s_k))
    return F.relu(z), (z > 0).to(z.dtype), torch.zeros_like(z[:, :k])


def written_out(critics, obs, actions, next_obs, mpr_sigma, curv_delta, pave_batch=None):
    """pave_regularizer's (q, terms) for StackedCritics, with the derivatives written out instead of autograd's double
    and triple backward (docs/performance.md: the critic step about 1.5x faster). For Q = w3 . sigma(z2) + b3, z2 = W2
    sigma(z1) + b2, z1 = W1 [s, a] + b1 (Wa: the columns of W1 that take a):
        dQ/dh1     = W2^T (sigma'(z2) * w3),   grad_a Q = Wa^T (sigma'(z1) * dQ/dh1)       backpropagation by hand
        v^T H_aa v = w3 . (sigma''(z2) * r2^2) + dQ/dh1 . (sigma''(z1) * r1^2),   r1 = Wa v,  r2 = W2 (sigma'(z1) * r1)
    (d^2/dt^2 Q(s, a + t v) at t = 0 pushed forward through the layers). They are ordinary differentiable tensors, so
    ONE plain backward of the loss trains the critics. The rows s, s + eps, s' go through as one batch, Curv reuses the
    s rows' activations, and one bmm per layer serves every critic. eps and v are drawn as pave_regularizer draws them,
    so both agree on the same seed. pave_batch: the terms of the first pave_batch transitions only (as the scripts'
    `regularize`). """
    n, batch, obs_dim = len(critics.w1), obs.shape[0], obs.shape[1]
    k = batch if pave_batch is None else min(pave_batch, batch)
    kind = type(critics.activation)
    w1, b1, w2, b2, w3, b3 = critics.w1, critics.b1, critics.w2, critics.b2, critics.w3, critics.b3
    wa = w1[:, :, obs_dim:]
    eps = mpr_sigma * torch.randn(k, obs_dim, dtype=obs.dtype, device=obs.device)
    v = torch.randint(0, 2, (k, actions.shape[1]), device=obs.device).to(obs.dtype) * 2 - 1

    # rows: s, s + eps, s' of the k regularized transitions, then s of the others (their Q only)
    states = torch.cat([obs[:k], obs[:k] + eps, next_obs[:k], obs[k:]])
    row_actions = torch.cat([actions[:k], actions[:k], actions[:k], actions[k:]])
    z1 = torch.baddbmm(b1, torch.cat([states, row_actions], -1).expand(n, -1, -1), w1.mT)
    h1, d1, dd1 = activation_derivatives(kind, z1, k)
    z2 = torch.baddbmm(b2, h1, w2.mT)
    h2, d2, dd2 = activation_derivatives(kind, z2, k)
    q_rows = torch.baddbmm(b3, h2, w3.mT).squeeze(-1)
    q = torch.cat([q_rows[:, :k], q_rows[:, 3 * k :]], 1)

    grad_h1 = torch.bmm(d2[:, : 3 * k] * w3, w2)  # dQ/dh1 = W2^T (sigma'(z2) * w3)
    # dQ/da = Wa^T (sigma'(z1) * dQ/dh1)
    grad, grad_noisy, grad_next = torch.bmm(d1[:, : 3 * k] * grad_h1, wa).split(k, 1)
    r1 = torch.bmm(v.expand(n, -1, -1), wa.mT)  # d z1 / dt along a + t v
    r2 = torch.bmm(d1[:, :k] * r1, w2.mT)  # d z2 / dt
    vhv = (dd2 * r2.square() * w3).sum(-1) + (dd1 * r1.square() * grad_h1[:, :k]).sum(-1)

    terms = {
        "mpr": (grad_noisy - grad).square().mean((1, 2)),  # mean over batch and action dims: F.mse_loss per critic
        "vfc": (grad - grad_next).square().mean((1, 2)),
        "curv": F.relu(vhv + curv_delta).mean(-1),
        "grad_norm": grad.detach().norm(dim=-1).mean(-1),
        "vhv": vhv.detach().mean(-1),
    }
    return q, terms


COMPILE_MIN_STEPS = 10_000  # --compile auto: a run this long (after learning starts) earns back the compilation time


def compile_or_not(fn, mode, training_steps):
    """torch.compile(fn) for --compile yes, or auto with at least COMPILE_MIN_STEPS training steps; else fn itself.

    Compilation happens at the first call. Where it fails (say, no C++ compiler for the CPU backend), the run goes on
    with fn in eager mode, the same math, after one printed note. """
    if mode == "no" or (mode == "auto" and training_steps < COMPILE_MIN_STEPS):
        return fn
    print(f"note: the critic loss runs through torch.compile (--compile {mode}); the first training burst compiles it "
          "(up to 40 s)")
    compiled = torch.compile(fn)

    def call(*args):
        nonlocal compiled
        try:
            return compiled(*args)
        except Exception as error:
            if compiled is fn:
                raise
            first_line = str(error).splitlines()[0][:200]
            print(f"note: torch.compile failed ({type(error).__name__}: {first_line}); running eagerly")
            compiled = fn
            return fn(*args)

    return call
