"""plot_qfield.py: the landscape's heights, axes and centre against quadratic critics and a real Base critic, Lemma 4.1,
a real one- and two-env figure (the z clip written on it) and table, old checkpoints, and bad input refused in one line
per problem before anything is written."""

import csv
import math
import re
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from quadratic_critic import LinearActor, QuadraticCritic
from runs import run_script
from tiny_checkpoints import write_checkpoint, write_old_checkpoint
from tool_checks import BAD_CASES, bad_checkpoint, figure_texts, old_report, snapshot
from trained_checkpoints import SHARES_TRAINED, trained

import critic_geometry
import plot_qfield

OBS_DIM, ACT_DIM = 5, 3
F64 = torch.float64


def random_case(seed=0, concave=True):
    g = torch.Generator().manual_seed(seed)
    C = torch.randn(OBS_DIM, ACT_DIM, generator=g, dtype=F64)
    A = torch.randn(ACT_DIM, ACT_DIM, generator=g, dtype=F64)
    P = -(A @ A.T) - 0.5 * torch.eye(ACT_DIM, dtype=F64) if concave else A + A.T
    obs = torch.randn(16, OBS_DIM, generator=g, dtype=F64)
    actions = torch.rand(16, ACT_DIM, generator=g, dtype=F64) * 2 - 1
    return C, P, obs, actions


def test_finite_difference_mixed_partial_equals_the_known_matrix():
    C, P, obs, actions = random_case()
    mixed = plot_qfield.fd_mixed_partial(QuadraticCritic(C, P), obs, actions, 1e-3, range(OBS_DIM))
    assert mixed.shape == (16, ACT_DIM, OBS_DIM)
    torch.testing.assert_close(mixed, C.T.expand(16, -1, -1), atol=1e-8, rtol=0)
    only_dim_2 = plot_qfield.fd_mixed_partial(QuadraticCritic(C, P), obs, actions, 1e-3, [2])
    torch.testing.assert_close(only_dim_2[:, :, 0], C[2].expand(16, -1), atol=1e-8, rtol=0)


def test_dominant_pair_is_the_largest_mixed_partial():
    C, _, _, _ = random_case()
    C = C.clamp(-1, 1)
    C[3, 1] = -4.0  # d2Q / (da_1 ds_3): the strongest interaction, negative to check that magnitudes count
    assert plot_qfield.dominant_pair(C.T) == (3, 1)  # (state dim, action dim) of H_sa = C^T


@pytest.mark.parametrize("height", ["spectral", "fd"])
def test_landscape_heights_of_a_quadratic_critic(height):
    """Q = (C^T s + B^T sin s)^T a + 0.5 a^T P a: grad2_sa Q = C^T + B^T diag(cos s) changes with s_i only. spectral:
    its spectral norm; fd: the norm of its column i, (C[i] + B[i] cos s_i) (Eq. 17 is exact up to O(eps))."""
    C, P, obs, actions = random_case()
    B = torch.randn(OBS_DIM, ACT_DIM, generator=torch.Generator().manual_seed(1), dtype=F64)
    centre, action, i, j = obs[0], actions[0], 2, 1
    args = SimpleNamespace(height=height, grid=50, state_range=1.0, action_range=1.5, epsilon=1e-6)
    X, Y, Z = plot_qfield.surface(QuadraticCritic(C, P, B), centre, action, i, j, args)
    assert X.shape == Y.shape == Z.shape == (50, 50)
    np.testing.assert_allclose(X[:, 0], np.linspace(centre[i] - 1.0, centre[i] + 1.0, 50))
    np.testing.assert_allclose(Y[0], np.linspace(action[j] - 1.5, action[j] + 1.5, 50))
    states = centre.repeat(50, 1)
    states[:, i] = torch.as_tensor(X[:, 0])
    h_sa = C.T + B.T * torch.cos(states)[:, None, :]
    expected = torch.linalg.matrix_norm(h_sa, ord=2) if height == "spectral" else h_sa[:, :, i].norm(dim=-1)
    np.testing.assert_allclose(Z, expected[:, None].expand(50, 50).numpy(), rtol=1e-5 if height == "fd" else 1e-12)


def test_implicit_policy_jacobian_matches_finite_differences_of_the_argmax():
    """Lemma 4.1 on a critic whose argmax is known and nonlinear in s: -H_aa^-1 H_sa = d a*(s) / d s."""
    C, P, obs, _ = random_case()
    B = torch.randn(OBS_DIM, ACT_DIM, generator=torch.Generator().manual_seed(1), dtype=F64)
    qf = QuadraticCritic(C, P, B)
    greedy = qf.argmax(obs)
    _, h_sa, h_aa = critic_geometry.derivatives(qf, obs, greedy)
    h = 1e-5
    fd_jacobian = torch.stack([(qf.argmax(obs + h * e) - qf.argmax(obs - h * e)) / (2 * h)
                               for e in torch.eye(OBS_DIM, dtype=F64)], dim=-1)
    torch.testing.assert_close(plot_qfield.implicit_policy_jacobian(h_aa, h_sa), fd_jacobian, atol=1e-7, rtol=1e-6)
    assert not torch.allclose(fd_jacobian[0], fd_jacobian[1])  # the Jacobian really changes with the state


def critic_of(qf, actor, method="quadratic", env_id="None-v0", algo="td3", seed=1, script=None):
    policy = SimpleNamespace(method=method, env_id=env_id, algo=algo, train_seed=seed, path=f"{method}-{seed}.pt",
                             script=script or f"{method}.py")
    return critic_geometry.Critic(policy, actor, qf, 0)


def test_geometry_statistics_match_closed_forms():
    C, P, obs, _ = random_case()
    M, mu = torch.linalg.matrix_norm(C.T, ord=2), -torch.linalg.eigvalsh(P)[-1]
    for scale, holds in [(0.5, 1.0), (2.0, 0.0)]:  # an actor inside the bound, then one twice beyond it
        K = torch.randn(ACT_DIM, OBS_DIM, generator=torch.Generator().manual_seed(2), dtype=F64)
        K = K / torch.linalg.matrix_norm(K, ord=2) * scale * M / mu
        row = plot_qfield.geometry_statistics(critic_of(QuadraticCritic(C, P), LinearActor(K)), obs)
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
    P = torch.diag(torch.tensor([-2.0, -1.0, 0.5], dtype=F64))  # lambda_max = 0.5: mu = -0.5
    still_actor = LinearActor(torch.zeros(ACT_DIM, OBS_DIM, dtype=F64))
    row = plot_qfield.geometry_statistics(critic_of(QuadraticCritic(C, P), still_actor), obs)
    assert row["mu"] == pytest.approx(-0.5) and row["mu_nonpos"] == 16
    assert math.isnan(row["M_over_mu"]) and math.isnan(row["greedy_jacobian"]) and math.isnan(row["bound_holds"])
    assert row["policy_jacobian"] == 0.0


def test_each_row_has_one_reference_and_one_checkpoint_per_method():
    """The plain run of the first (released-order) seed is the reference; other methods show that same seed; a given
    --reference wins and is drawn; a row without a plain run says so."""
    def make(method, seed, env_id="Pendulum-v1", algo="td3", script=None):
        return critic_of(None, None, method, env_id, algo, seed, script)

    td3_a, td3_b = make("td3", 410580), make("td3", 178132)
    pave_a, pave_b, pave_c = make("td3_pave", 410580), make("td3_pave", 178132), make("td3_pave", 5)
    renamed = make("td3-silu", 178132, script="td3.py")  # td3.py under another name: a candidate after td3 itself
    sac = make("sac_pave", 178132, algo="sac")
    lunar = make("td3_caps", 7, env_id="LunarLanderContinuous-v3")
    rows = plot_qfield.landscape_rows([pave_c, renamed, td3_a, pave_a, td3_b, pave_b, sac, lunar], [])
    by_key = {key: (reference, columns, note) for key, reference, columns, note in rows}
    reference, columns, note = by_key["Pendulum-v1", "td3"]
    assert reference is td3_b and note is None
    assert columns == [("td3", td3_b), ("td3_pave", pave_b), ("td3-silu", renamed)]
    _, columns, note = by_key["Pendulum-v1", "sac"]
    assert columns == [("sac_pave", sac)] and note.startswith("no sac.py checkpoint of Pendulum-v1 given")
    assert by_key["LunarLanderContinuous-v3", "td3"][0] is lunar

    given = make("td3", 5)  # not among the checkpoints: drawn in the td3 column, and td3_pave shows its seed
    reference, columns, _ = plot_qfield.landscape_rows([td3_a, pave_a, pave_c], [given])[0][1:]
    assert reference is given and columns == [("td3", given), ("td3_pave", pave_c)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Pendulum: a tiny trained td3 (the Base) and sac, an in-process td3_pave (same seed), a ReLU TD3 under its own
    name; LunarLander: in-process td3 and td3_caps."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {"td3": trained("td3.py"), "sac": trained("sac.py")}
    runs = [("td3_pave.py", "td3_pave", "silu", "Pendulum-v1"), ("td3.py", "td3_relu", "relu", "Pendulum-v1"),
            ("td3.py", "lunar_td3", "silu", "LunarLanderContinuous-v3"),
            ("td3_caps.py", "lunar_caps", "silu", "LunarLanderContinuous-v3")]
    for script, name, activation, env_id in runs:
        exp_name = name.removeprefix("lunar_")
        made[name] = write_checkpoint(folder / f"{name}.pt", script, env_id, seed=178132, exp_name=exp_name,
                                      hidden_sizes=(64, 64), activation=activation)
    return made


@SHARES_TRAINED
def test_real_checkpoints_give_a_figure_and_a_finite_table(checkpoints, tmp_path):
    paths = [checkpoints[name] for name in ("td3_pave", "td3", "td3_relu", "sac")]
    out = tmp_path / "figs" / "qfield.png"
    result = run_script("plot_qfield.py", *paths, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    image = plt.imread(out)  # a TD3 row of three panels (td3, td3_pave, td3_relu) over a SAC row of one
    assert image.shape[1] > 3 * 300 and image.shape[0] > 2 * 300 and image[..., :3].std() > 0.05

    # the TD3 row: the reference is td3 (given second); centre and axes as the released code picks them
    line = next(line for line in result.stdout.splitlines() if line.startswith("Pendulum-v1 (td3)"))
    assert f"reference td3 seed 178132 ({checkpoints['td3']})" in line
    base = critic_geometry.load_critic(str(checkpoints["td3"]))
    centre = plot_qfield.centre_state(base, 20, 10_000)
    env = base.policy.make_env("Pendulum-v1", 0)()
    obs, _ = env.reset(seed=10_000)
    for _ in range(20):  # Pendulum episodes last 200 steps: no reset within the 20 warm-up steps
        action = base.actor.act(torch.as_tensor(obs, dtype=F64)).numpy()
        obs, *_ = env.step(plot_qfield.to_env_units(env, action))
    np.testing.assert_allclose(centre.numpy(), obs)
    full = torch.autograd.functional.hessian(lambda x: base.qf(x[None, :3], x[None, 3:])[0, 0],
                                             torch.cat([centre, base.actor.act(centre)]))
    i = int(full[3, :3].abs().argmax())
    assert f"dominant pair: state dim {i}, action dim 0" in line
    clip = float(re.search(r"z clipped at ([0-9.e+-]+)", line).group(1))
    assert clip > 0

    with open(out.with_suffix(".csv")) as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"td3", "td3_pave", "td3_relu", "sac"}
    for row in rows.values():
        assert row["env"] == "Pendulum-v1" and int(row["states"]) == 300
        for column in ["M", "mu", "policy_jacobian", "grad_a_Q"]:
            assert math.isfinite(float(row[column])), (row["method"], column)
        if int(row["mu_nonpos"]) < 300:
            assert math.isfinite(float(row["M_over_mu"])) and 0.0 <= float(row["bound_holds"]) <= 1.0
    # A ReLU critic is piecewise linear: both second derivatives vanish, so there is no bound at any state.
    relu = rows["td3_relu"]
    assert float(relu["M"]) == 0.0 and float(relu["mu"]) == 0.0 and int(relu["mu_nonpos"]) == 300
    assert float(rows["td3"]["M"]) > 0.0 and float(rows["sac"]["M"]) > 0.0


@SHARES_TRAINED
def test_checkpoints_of_two_envs_give_a_grid_with_each_rows_z_clip_written_on_it(checkpoints, tmp_path, capsys,
                                                                                 monkeypatch):
    paths = [checkpoints[name] for name in ("td3", "td3_pave", "lunar_td3", "lunar_caps")]
    out = tmp_path / "grid.png"
    figures = figure_texts(monkeypatch)
    status = plot_qfield.main([*map(str, paths), "--out", str(out), "--height", "fd", "--grid", "12", "--rollout-steps",
                               "5"])
    assert status == 0
    printed = capsys.readouterr()
    assert "Pendulum-v1 (td3): reference td3" in printed.out
    assert "LunarLanderContinuous-v3 (td3): reference td3" in printed.out
    image = plt.imread(out)
    assert image.shape[0] > 2 * 300 and image.shape[1] > 2 * 300  # two rows of two panels
    headings = [text for text in figures[0] if " z clipped at " in text]
    assert len(headings) == 2
    for env_id, heading in zip(("Pendulum-v1", "LunarLanderContinuous-v3"), headings):
        assert re.fullmatch(rf"{env_id} \(TD3\): z clipped at [0-9.e+-]+ \(99th percentile of the reference td3's "
                            r"surface\)",
                            heading), heading
    # --clip: the number given, said on the figure
    assert plot_qfield.main([str(paths[0]), "--out", str(tmp_path / "clip.png"), "--clip", "7", "--grid", "5",
                             "--rollout-steps", "2"]) == 0
    assert "Pendulum-v1 (TD3): z clipped at 7 (--clip)" in figures[1]


REPORT = ["qfield.png", "qfield.csv"]


@SHARES_TRAINED
@pytest.mark.parametrize("case", [*BAD_CASES, "no critic", "no argument"])
def test_bad_input_is_one_line_and_leaves_the_earlier_figure(case, checkpoints, tmp_path, monkeypatch, capsys):
    """The default --out and its table exist; a command with bad input beside a good checkpoint (or with no argument
    at all) prints one error line, exits non-zero and leaves both files as they were."""
    work = tmp_path / "work"
    before = old_report(work, REPORT)
    monkeypatch.chdir(work)
    good = checkpoints["td3_pave"]
    if case == "no argument":
        argv, status, line = [], 2, f"plot_qfield.py: error: {plot_qfield.NO_CHECKPOINTS}"
    else:
        if case == "no critic":
            actor_only = torch.load(good, weights_only=False)
            del actor_only["qf1"], actor_only["qf2"]
            path, message = (tmp_path / "actor_only.pt",
                             "holds no 'qf1' state dict: without a critic there is no Q-field to analyze")
            torch.save(actor_only, path)
        else:
            path, message = bad_checkpoint(case, tmp_path / "bad", good)
        argv, status, line = [str(good), str(path)], 1, f"plot_qfield.py: error: {path}: {message}"
    assert plot_qfield.main(argv) == status
    printed = capsys.readouterr()
    assert (printed.out + printed.err).splitlines() == [line]
    assert snapshot(work) == before


@SHARES_TRAINED
@pytest.mark.parametrize("flags, message", [
    (["--out", "qfield"],
     "--out qfield: its suffix must name a figure file type matplotlib writes (.png, .pdf, .svg, ...)"),
    (["--out", "figures.png"], "--out figures.png: is a directory, not a file"),
    (["--out", "q.png", "--csv", "q.png"], "--csv q.png: the same file as --out"),
    (["--state-dim", "9"], "--state-dim must be in [0, 3) and --action-dim in [0, 1) for Pendulum-v1"),
    (["--action-dim", "-1"], "--state-dim and --action-dim must be non-negative"),
    (["--grid", "1"], "--grid must be at least 2, --rollout-steps at least 1 and --warmup-steps non-negative"),
])
def test_bad_flags_are_one_line_and_exit_2_before_anything_is_written(flags, message, checkpoints, tmp_path,
                                                                      monkeypatch,
                                                                      capsys):
    before = old_report(tmp_path, REPORT)
    (tmp_path / "figures.png").mkdir()
    monkeypatch.chdir(tmp_path)
    assert plot_qfield.main([str(checkpoints["td3_pave"]), *flags]) == 2
    printed = capsys.readouterr()
    assert (printed.out + printed.err).splitlines() == [f"plot_qfield.py: error: {message}"]
    assert snapshot(tmp_path) == before


def test_a_directory_stands_for_the_checkpoints_in_it(tmp_path):
    folder = tmp_path / "qfield_runs"
    folder.mkdir()
    for script in ("td3.py", "td3_pave.py"):
        write_checkpoint(folder / script.replace(".py", ".pt"), script, seed=178132)
    (folder / "notes.txt").write_text("not a checkpoint\n")
    out = tmp_path / "q.png"
    assert plot_qfield.main([str(folder), "--out", str(out), "--grid", "5", "--rollout-steps", "2"]) == 0
    with open(out.with_suffix(".csv")) as f:
        assert sorted(row["method"] for row in csv.DictReader(f)) == ["td3", "td3_pave"]


@pytest.mark.parametrize("script", ["td3.py", "sac.py"])
def test_old_checkpoint_with_hidden_dim_loads_and_is_analyzed(script, tmp_path):
    """A checkpoint written before --hidden-sizes (args hold hidden_dim 256, ReLU networks) is rebuilt exactly."""
    path, actor_net, qf_net = write_old_checkpoint(tmp_path / "old.pt", script, hidden_dim=256)
    critic = critic_geometry.load_critic(str(path), "qf1")
    states = plot_qfield.rollout_states(critic, 20, seed=1)
    actions = critic.actor.act(states)
    torch.testing.assert_close(critic.qf(states, actions), qf_net.double()(torch.cat([states, actions], -1)))
    mean = actor_net.double()(states)[:, :1]  # TD3: the whole output (one action dim); SAC: the mean half
    torch.testing.assert_close(actions, torch.tanh(mean))
    row = plot_qfield.geometry_statistics(critic, states)
    # ReLU networks are piecewise linear: both second derivatives vanish at every visited state
    assert row["states"] == 20 and row["M"] == 0.0 and row["mu"] == 0.0 and row["mu_nonpos"] == 20
    assert math.isfinite(row["policy_jacobian"]) and row["policy_jacobian"] > 0.0


def test_missing_file_is_one_clear_line(tmp_path):
    result = run_script("plot_qfield.py", tmp_path / "nowhere.pt", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [f"plot_qfield.py: error: {tmp_path / 'nowhere.pt'}: no such file"]
    assert list(tmp_path.iterdir()) == []
