"""plot_qfield.py: Eq. 17 and Lemma 4.1 against quadratic critics, a real figure and table, old checkpoints, clear errors."""

import csv
import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn as nn
from runs import run_script
from tiny_checkpoints import write_checkpoint, write_old_checkpoint

import plot_qfield

OBS_DIM, ACT_DIM = 5, 3


class QuadraticCritic(nn.Module):
    """Q(s, a) = (C^T s + B^T sin s)^T a + 0.5 a^T P a: quadratic in a, with grad2_aa Q = P,
    grad2_sa Q = C^T + B^T diag(cos s), and for negative definite P the maximizer a*(s) = -P^-1 (C^T s + B^T sin s)."""

    def __init__(self, C, P, B=None):
        super().__init__()
        self.C, self.P = C, P
        self.B = torch.zeros_like(C) if B is None else B

    def forward(self, obs, act):
        linear = obs @ self.C + torch.sin(obs) @ self.B
        return (linear * act).sum(-1, keepdim=True) + 0.5 * ((act @ self.P) * act).sum(-1, keepdim=True)

    def argmax(self, obs):
        return -torch.linalg.solve(self.P, (obs @ self.C + torch.sin(obs) @ self.B).T).T


class LinearActor(nn.Module):
    """pi(s) = s K^T, so d pi / d s = K everywhere."""

    def __init__(self, K):
        super().__init__()
        self.K = K

    def act(self, obs):
        return obs @ self.K.T


def random_case(seed=0, concave=True):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(OBS_DIM, ACT_DIM, generator=g, dtype=torch.float64)
    A = torch.randn(ACT_DIM, ACT_DIM, generator=g, dtype=torch.float64)
    P = -(A @ A.T) - 0.5 * torch.eye(ACT_DIM, dtype=torch.float64) if concave else A + A.T
    obs = torch.randn(16, OBS_DIM, generator=g, dtype=torch.float64)
    actions = torch.rand(16, ACT_DIM, generator=g, dtype=torch.float64) * 2 - 1
    return C, P, obs, actions


def test_finite_difference_mixed_partial_equals_the_known_matrix():
    C, P, obs, actions = random_case()
    mixed = plot_qfield.fd_mixed_partial(QuadraticCritic(C, P), obs, actions, 1e-3, range(OBS_DIM))
    assert mixed.shape == (16, ACT_DIM, OBS_DIM)
    torch.testing.assert_close(mixed, C.T.expand(16, -1, -1), atol=1e-8, rtol=0)
    only_dim_2 = plot_qfield.fd_mixed_partial(QuadraticCritic(C, P), obs, actions, 1e-3, [2])
    torch.testing.assert_close(only_dim_2[:, :, 0], C[2].expand(16, -1), atol=1e-8, rtol=0)


def test_dominant_pair_is_the_largest_mixed_partial():
    C, P, obs, actions = random_case()
    C = C.clamp(-1, 1)
    C[3, 1] = -4.0  # d2Q / (da_1 ds_3): the strongest interaction, negative to check that magnitudes count
    mixed = plot_qfield.fd_mixed_partial(QuadraticCritic(C, P), obs, actions, 1e-3, range(OBS_DIM))
    _, i, j = plot_qfield.dominant_pair(mixed)
    assert (i, j) == (3, 1)
    planted = torch.zeros(4, ACT_DIM, OBS_DIM)
    planted[2, 0, 4] = -7.0
    assert plot_qfield.dominant_pair(planted) == (2, 4, 0)  # (transition, state dim, action dim)


def test_exact_geometry_of_a_quadratic_critic():
    C, P, obs, actions = random_case(concave=False)
    grad, h_sa, h_aa = plot_qfield.critic_geometry(QuadraticCritic(C, P), obs, actions)
    torch.testing.assert_close(grad, obs @ C + actions @ P.T)
    torch.testing.assert_close(h_sa, C.T.expand(16, -1, -1))
    torch.testing.assert_close(h_aa, P.expand(16, -1, -1))


def test_implicit_policy_jacobian_matches_finite_differences_of_the_argmax():
    """Lemma 4.1 on a critic whose argmax is known and nonlinear in s: -H_aa^-1 H_sa = d a*(s) / d s."""
    C, P, obs, _ = random_case()
    B = torch.randn(OBS_DIM, ACT_DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    qf = QuadraticCritic(C, P, B)
    greedy = qf.argmax(obs)
    _, h_sa, h_aa = plot_qfield.critic_geometry(qf, obs, greedy)
    h = 1e-5
    fd_jacobian = torch.stack([(qf.argmax(obs + h * e) - qf.argmax(obs - h * e)) / (2 * h)
                               for e in torch.eye(OBS_DIM, dtype=torch.float64)], dim=-1)
    torch.testing.assert_close(plot_qfield.implicit_policy_jacobian(h_aa, h_sa), fd_jacobian, atol=1e-7, rtol=1e-6)
    assert not torch.allclose(fd_jacobian[0], fd_jacobian[1])  # the Jacobian really changes with the state


def checkpoint_of(qf, actor):
    return plot_qfield.Checkpoint("mem.pt", "quadratic", "None-v0", "none.py", 0, actor, qf, None)


def test_geometry_statistics_match_closed_forms():
    C, P, obs, _ = random_case()
    M, mu = torch.linalg.matrix_norm(C.T, ord=2), -torch.linalg.eigvalsh(P)[-1]
    for scale, holds in [(0.5, 1.0), (2.0, 0.0)]:  # an actor inside the bound, then one twice beyond it
        K = torch.randn(ACT_DIM, OBS_DIM, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        K = K / torch.linalg.matrix_norm(K, ord=2) * scale * M / mu
        row = plot_qfield.geometry_statistics(checkpoint_of(QuadraticCritic(C, P), LinearActor(K)), obs)
        assert row["states"] == 16 and row["mu_nonpos"] == 0
        assert row["M"] == pytest.approx(float(M)) and row["mu"] == pytest.approx(float(mu))
        assert row["M_over_mu"] == pytest.approx(float(M / mu))
        greedy = torch.linalg.matrix_norm(torch.linalg.solve(P, C.T), ord=2)
        assert row["greedy_jacobian"] == pytest.approx(float(greedy))
        assert row["greedy_jacobian"] <= row["M_over_mu"]  # Proposition 4.2
        assert row["policy_jacobian"] == pytest.approx(scale * float(M / mu))
        assert row["bound_holds"] == holds
        actions = obs @ K.T
        assert row["grad_a_Q"] == pytest.approx(float((obs @ C + actions @ P.T).norm(dim=-1).median()))


def test_no_bound_where_the_critic_is_not_concave_in_the_action():
    C, _, obs, _ = random_case()
    P = torch.diag(torch.tensor([-2.0, -1.0, 0.5], dtype=torch.float64))  # lambda_max = 0.5: mu = -0.5
    still_actor = LinearActor(torch.zeros(ACT_DIM, OBS_DIM, dtype=torch.float64))
    row = plot_qfield.geometry_statistics(checkpoint_of(QuadraticCritic(C, P), still_actor), obs)
    assert row["mu"] == pytest.approx(-0.5) and row["mu_nonpos"] == 16
    assert math.isnan(row["M_over_mu"]) and math.isnan(row["greedy_jacobian"]) and math.isnan(row["bound_holds"])
    assert row["policy_jacobian"] == 0.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Three Pendulum checkpoints of untrained 64-64 networks, saved in-process: TD3 with SiLU and with ReLU, SAC with
    SiLU (what is checked holds for any weights: finite statistics, and zero second derivatives for ReLU)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    runs = [("td3.py", "td3_silu", "silu"), ("td3.py", "td3_relu", "relu"), ("sac.py", "sac_silu", "silu")]
    return {name: write_checkpoint(folder / f"{name}.pt", script, exp_name=name, hidden_sizes=(64, 64), activation=activation)
            for script, name, activation in runs}


def test_real_checkpoints_give_a_figure_and_a_finite_table(checkpoints, tmp_path):
    out = tmp_path / "figs" / "qfield.png"
    result = run_script("plot_qfield.py", *checkpoints.values(), "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "dominant pair on td3_silu" in result.stdout  # the first plain td3.py checkpoint is the reference
    image = plt.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 3 * 300 and image[..., :3].std() > 0.05  # three drawn panels

    with open(out.with_suffix(".csv")) as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(checkpoints)
    for row in rows.values():
        assert row["env"] == "Pendulum-v1" and int(row["states"]) == 300
        for column in ["M", "mu", "policy_jacobian", "grad_a_Q"]:
            assert math.isfinite(float(row[column])), (row["method"], column)
        if int(row["mu_nonpos"]) < 300:
            assert math.isfinite(float(row["M_over_mu"])) and 0.0 <= float(row["bound_holds"]) <= 1.0
    # A ReLU critic is piecewise linear: both second derivatives vanish, so there is no bound at any state.
    relu = rows["td3_relu"]
    assert float(relu["M"]) == 0.0 and float(relu["mu"]) == 0.0 and int(relu["mu_nonpos"]) == 300
    assert float(rows["td3_silu"]["M"]) > 0.0 and float(rows["sac_silu"]["M"]) > 0.0


@pytest.mark.parametrize("script", ["td3.py", "sac.py"])
def test_old_checkpoint_with_hidden_dim_loads_and_is_analyzed(script, tmp_path):
    """A checkpoint written before --hidden-sizes (args hold hidden_dim 256, ReLU networks) is rebuilt exactly."""
    path, actor_net, qf_net = write_old_checkpoint(tmp_path / "old.pt", script, hidden_dim=256)
    ckpt = plot_qfield.load_checkpoint(str(path), "qf1")
    states = plot_qfield.rollout_states(ckpt, 20, seed=1)
    actions = ckpt.actor.act(states)
    torch.testing.assert_close(ckpt.qf(states, actions), qf_net.double()(torch.cat([states, actions], -1)))
    mean = actor_net.double()(states)[:, :1]  # TD3: the whole output (one action dim); SAC: the mean half
    torch.testing.assert_close(actions, torch.tanh(mean))
    row = plot_qfield.geometry_statistics(ckpt, states)
    # ReLU networks are piecewise linear: both second derivatives vanish at every visited state
    assert row["states"] == 20 and row["M"] == 0.0 and row["mu"] == 0.0 and row["mu_nonpos"] == 20
    assert math.isfinite(row["policy_jacobian"]) and row["policy_jacobian"] > 0.0


def test_missing_file_is_one_clear_line(tmp_path):
    result = run_script("plot_qfield.py", tmp_path / "nowhere.pt", cwd=tmp_path)
    assert result.returncode != 0
    expected = f"plot_qfield.py: error: no such checkpoint file: {tmp_path / 'nowhere.pt'}"
    assert result.stderr.strip().splitlines() == [expected]


def test_checkpoint_without_critics_is_one_clear_line(checkpoints, tmp_path):
    ckpt = torch.load(checkpoints["td3_silu"], weights_only=False)
    del ckpt["qf1"], ckpt["qf2"]
    torch.save(ckpt, tmp_path / "actor_only.pt")
    with pytest.raises(SystemExit) as exit_info:
        plot_qfield.main([str(tmp_path / "actor_only.pt"), "--out", str(tmp_path / "q.png")])
    message = str(exit_info.value)
    assert "has no critics" in message and "\n" not in message


def test_foreign_file_is_one_clear_line(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    cases = [("notes.pt", "not a readable torch checkpoint"), ("other.pt", "not a checkpoint of this project")]
    for name, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            plot_qfield.main([str(tmp_path / name)])
        assert expected in str(exit_info.value) and "\n" not in str(exit_info.value)
