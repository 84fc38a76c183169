"""Critics whose derivatives are known in closed form, and linear actors: the ground truth of the geometry tools'
tests."""

import torch
import torch.nn as nn


class QuadraticCritic(nn.Module):
    """Q(s, a) = (C^T s + B^T sin s)^T a + 0.5 (1 + s_k^2) a^T P a, with k = `curvature_dim` (None: the factor is 1).

    grad_a Q = C^T s + B^T sin s + (1 + s_k^2) P a, grad2_aa Q = (1 + s_k^2) P, and where a = 0 (or without the factor)
    grad2_sa Q = C^T + B^T diag(cos s). With B = 0 and no factor it is s^T C a + 0.5 a^T P a, whose Hessians are C^T and
    P at every point; for negative definite P and no factor the maximizer is a*(s) = -P^-1 (C^T s + B^T sin s)."""

    def __init__(self, C, P, B=None, curvature_dim=None):
        super().__init__()
        self.C, self.P, self.k = C, P, curvature_dim
        self.B = torch.zeros_like(C) if B is None else B

    def forward(self, obs, act):
        linear = obs @ self.C + torch.sin(obs) @ self.B
        scale = 1.0 if self.k is None else 1.0 + obs[..., self.k : self.k + 1] ** 2
        return (linear * act).sum(-1, keepdim=True) + 0.5 * scale * ((act @ self.P) * act).sum(-1, keepdim=True)

    def argmax(self, obs):
        return -torch.linalg.solve(self.P, (obs @ self.C + torch.sin(obs) @ self.B).T).T

    def mixed_hessian(self, obs):
        """grad2_sa Q at a = 0 for each row of obs: (B, act_dim, obs_dim)."""
        return self.C.T + self.B.T * torch.cos(obs)[:, None, :]


class LinearActor(nn.Module):
    """pi(s) = s K^T, so d pi / d s = K everywhere (K = 0: the action 0 at every state)."""

    def __init__(self, K):
        super().__init__()
        self.K = K

    def act(self, obs):
        return obs @ self.K.T
