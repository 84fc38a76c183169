"""The critic geometry that PAVE regularizes, MEASURED (never trained on) by the scripts that do not train it.

The Base and baseline scripts log it under geometry/, as the PAVE scripts log their own terms, so that all runs share
those TensorBoard charts. `measure_geometry` computes the terms of PAVE's `pave_regularizer` (td3_pave.py) for one
critic, with the same random draws from torch's global generator (tests/test_pave_regularizer.py pins the two equal).
"""

import torch
import torch.nn.functional as F


def measure_geometry(critic, obs, actions, next_obs, mpr_sigma, curv_delta):
    """PAVE's terms of one critic at replay transitions (s, a, s'), as floats: mpr, vfc, curv, grad_norm, vhv.

    MPR = mean (d_a Q(s + eps, a) - d_a Q(s, a))^2, VFC = mean (d_a Q(s, a) - d_a Q(s', a))^2, Curv = mean max(0, v^T
    grad2_aa Q(s, a) v + delta), grad_norm = mean ||d_a Q(s, a)||, vhv = mean v^T grad2_aa Q v, with eps ~ N(0,
    mpr_sigma^2 I) and v ~ Rademacher drawn in pave_regularizer's order. """
    batch = obs.shape[0]
    eps = mpr_sigma * torch.randn_like(obs)
    v = torch.randint(0, 2, actions.shape, device=actions.device).to(actions.dtype) * 2 - 1
    shared_actions = actions.detach().repeat(3, 1).requires_grad_(True)
    q_rows = critic(torch.cat([obs, obs + eps, next_obs]), shared_actions).reshape(-1)
    # create_graph as in pave_regularizer: the same backward formulas, so the same floats
    grad_rows = torch.autograd.grad(q_rows.sum(), shared_actions, create_graph=True)[0]
    grad, grad_noisy, grad_next = grad_rows.split(batch)
    curv_actions = actions.detach().clone().requires_grad_(True)
    curv_grad = torch.autograd.grad(critic(obs, curv_actions).sum(), curv_actions, create_graph=True)[0]
    vhv = (torch.autograd.grad((curv_grad * v).sum(), curv_actions, create_graph=True)[0] * v).sum(-1)
    terms = {"mpr": F.mse_loss(grad_noisy, grad), "vfc": F.mse_loss(grad, grad_next),
             "curv": F.relu(vhv + curv_delta).mean(), "grad_norm": grad.norm(dim=-1).mean(), "vhv": vhv.mean()}
    return {name: value.item() for name, value in terms.items()}


def log_geometry(writer, critic, rb, args, generator, step, measure=measure_geometry):
    """Measure the geometry of `critic` on --geometry-batch replay transitions and log it under geometry/. `measure`
    (critic, obs, actions, next_obs, mpr_sigma, curv_delta) -> {term: float}: the PAVE scripts pass their own."""
    obs, actions, _, next_obs, *_ = (x[0] for x in rb.sample(1, args.geometry_batch, generator))  # ASAP: + s_{t-1}
    for name, value in measure(critic, obs, actions, next_obs, args.mpr_sigma, args.curv_delta).items():
        writer.add_scalar(f"geometry/{name}", value, step)
