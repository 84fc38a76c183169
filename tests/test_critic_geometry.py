"""critic_geometry.py: every statistic against critics with closed-form Hessians, flips built by hand, the exact kernel
against autograd's own Hessian on real networks, the CLI on real TD3 and SAC checkpoints, and bad input refused in one
line per problem before anything is written."""

import csv
import math

import numpy as np
import pytest
import torch
from quadratic_critic import LinearActor, QuadraticCritic
from runs import run_script
from tiny_checkpoints import write_checkpoint
from tool_checks import BAD_CASES, bad_checkpoint, old_report, snapshot
from trained_checkpoints import SHARES_TRAINED, trained

import critic_geometry

OBS_DIM, ACT_DIM = 5, 3
F64 = torch.float64


def generator(seed):
    return torch.Generator().manual_seed(seed)


def rotated(eigenvalues, seed=0):
    """A symmetric matrix with these eigenvalues, in a random orthonormal basis."""
    basis, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=generator(seed), dtype=F64))
    return basis @ torch.diag(torch.tensor(eigenvalues, dtype=F64)) @ basis.T


def episodes_of(*lengths, seed=0):
    g = generator(seed)
    return [torch.randn(n, OBS_DIM, generator=g, dtype=F64).numpy() for n in lengths]


ZERO_ACTOR = LinearActor(torch.zeros(ACT_DIM, OBS_DIM, dtype=F64))


def test_exact_derivatives_of_a_quadratic_critic():
    C = torch.randn(OBS_DIM, ACT_DIM, generator=generator(0), dtype=F64)
    P = rotated([-3.0, 1.0, 0.5])
    obs = torch.randn(16, OBS_DIM, generator=generator(1), dtype=F64)
    actions = torch.rand(16, ACT_DIM, generator=generator(2), dtype=F64) * 2 - 1
    grad, h_sa, h_aa = critic_geometry.derivatives(QuadraticCritic(C, P), obs, actions)
    torch.testing.assert_close(grad, obs @ C + actions @ P.T)
    torch.testing.assert_close(h_sa, C.T.expand(16, -1, -1))
    torch.testing.assert_close(h_aa, P.expand(16, -1, -1))


@pytest.mark.parametrize("eigenvalues, negdef", [([-3.0, -2.0, -0.5], 1.0), ([-3.0, -2.0, 0.5], 0.0)])
def test_constant_hessians_give_the_closed_forms(eigenvalues, negdef):
    """Q = s^T C a + 0.5 a^T P a: M = ||C||_2 and tr grad2_aa Q = tr P at every step; negative definite iff P is. The
    second P has a negative trace (-4.5) but one positive eigenvalue: concave by the trace test, not negative
    definite."""
    C = torch.randn(OBS_DIM, ACT_DIM, generator=generator(3), dtype=F64)
    P = rotated(eigenvalues, seed=4)
    actor = LinearActor(torch.randn(ACT_DIM, OBS_DIM, generator=generator(5), dtype=F64))
    episodes = episodes_of(7, 5)
    stats = critic_geometry.trajectory_statistics(QuadraticCritic(C, P), actor, episodes)
    M, trace = float(torch.linalg.matrix_norm(C, ord=2)), sum(eigenvalues)
    assert stats["steps"] == 12 and stats["pairs"] == 6 + 4  # consecutive pairs within each episode only
    for key in ("M_sup", "M_mean"):
        assert stats[key] == pytest.approx(M, rel=1e-12)
    for key in ("mu_inf", "mu_mean"):
        assert stats[key] == pytest.approx(abs(trace), rel=1e-12)
    assert stats["trace_mean"] == pytest.approx(trace, rel=1e-12)
    assert stats["concave_rate"] == 1.0 and stats["negdef_rate"] == negdef
    # the margin: tr P < -delta fails once delta exceeds |tr P|
    stricter = critic_geometry.trajectory_statistics(QuadraticCritic(C, P), actor, episodes, delta=abs(trace) + 0.1)
    assert stricter["concave_rate"] == 0.0 and stricter["negdef_rate"] == negdef


def test_sup_and_inf_are_taken_over_steps():
    """Hessians that change with the state: at a = 0, grad2_sa Q = C^T + B^T diag(cos s) and grad2_aa Q = (1 + s_2^2) P,
    so M_sup, mu_inf (and the means) follow from the visited states by hand."""
    C = torch.randn(OBS_DIM, ACT_DIM, generator=generator(6), dtype=F64)
    B = torch.randn(OBS_DIM, ACT_DIM, generator=generator(7), dtype=F64)
    P = rotated([-2.0, -1.0, -0.5], seed=8)
    qf = QuadraticCritic(C, P, B, curvature_dim=2)
    episodes = episodes_of(9, 4, 6, seed=9)
    obs = torch.as_tensor(np.concatenate(episodes))
    M = torch.linalg.matrix_norm(qf.mixed_hessian(obs), ord=2).numpy()
    mu = ((1 + obs[:, 2] ** 2) * 3.5).numpy()  # |tr P| = 3.5
    stats = critic_geometry.trajectory_statistics(qf, ZERO_ACTOR, episodes, delta=1.0)
    assert M.max() > 1.2 * M.min() and mu.max() > 1.2 * mu.min()  # the states really differ
    assert stats["M_sup"] == pytest.approx(M.max(), rel=1e-12) and stats["M_mean"] == pytest.approx(M.mean(), rel=1e-12)
    assert stats["mu_inf"] == pytest.approx(mu.min(), rel=1e-12) and stats["mu_mean"] == pytest.approx(mu.mean(),
                                                                                                       rel=1e-12)
    assert stats["concave_rate"] == 1.0 and stats["negdef_rate"] == 1.0  # tr = -(1 + s^2) 3.5 < -1 everywhere


def test_flip_rate_on_trajectories_built_by_hand():
    """At a = 0, grad_a Q = C^T s: states +-s0 make the gradient keep (cos 1) or flip (cos -1) its direction."""
    C = torch.randn(OBS_DIM, ACT_DIM, generator=generator(10), dtype=F64)
    qf = QuadraticCritic(C, -torch.eye(ACT_DIM, dtype=F64))
    s0 = torch.randn(OBS_DIM, generator=generator(11), dtype=F64).numpy()
    first, second = np.array([1, 1, -1])[:, None] * s0, np.array([1, 1, 1, -1])[:, None] * s0
    stats = critic_geometry.trajectory_statistics(qf, ZERO_ACTOR, [first, second])
    # cosines (1, -1) and (1, 1, -1); the step from `first`'s last state (-s0) to `second`'s first (+s0) is no pair
    assert stats["pairs"] == 5
    assert stats["flip_rate"] == pytest.approx(2 / 5)
    assert stats["cos_mean"] == pytest.approx(1 / 5) and stats["cos_median"] == pytest.approx(1.0)

    # general directions: the cosines computed here by numpy
    episodes = episodes_of(8, 6, seed=12)
    cosines = []
    for states in episodes:
        g = states @ C.numpy()
        cosines += list((g[:-1] * g[1:]).sum(1) / np.linalg.norm(g[:-1], axis=1) / np.linalg.norm(g[1:], axis=1))
    cosines = np.array(cosines)
    stats = critic_geometry.trajectory_statistics(qf, ZERO_ACTOR, episodes)
    assert 0 < (cosines < 0).mean() < 1
    assert stats["flip_rate"] == pytest.approx((cosines < 0).mean())
    assert stats["cos_mean"] == pytest.approx(cosines.mean())
    assert stats["cos_median"] == pytest.approx(np.median(cosines))


def test_summary_is_mean_and_std_over_seeds_grouped_by_method_and_env():
    def record(method, env_id, seed, steps, value):
        stats = {key: value for key in critic_geometry.STATISTICS}
        return {"method": method, "env_id": env_id, "train_seed": seed, "checkpoint": f"{method}{seed}.pt",
                "steps": steps, **stats}

    records = [record("td3", "Pendulum-v1", 1, 100, 0.2), record("td3_pave", "Pendulum-v1", 1, 100, 0.5),
               record("td3", "Pendulum-v1", 2, 300, 0.6), record("td3", "Hopper-v5", 1, 50, 0.9)]
    rows = {(r["env_id"], r["method"]): r for r in critic_geometry.summarize(records)}
    assert list(rows) == [("Hopper-v5", "td3"), ("Pendulum-v1", "td3"), ("Pendulum-v1", "td3_pave")]
    td3 = rows["Pendulum-v1", "td3"]
    assert td3["seeds"] == 2 and td3["steps"] == 400 and td3["train_seeds"] == "1 2"
    for key in critic_geometry.STATISTICS:
        assert td3[f"{key}_mean"] == pytest.approx(0.4) and td3[f"{key}_std"] == pytest.approx(0.2)
    assert td3["concave_rate_pooled"] == pytest.approx((0.2 * 100 + 0.6 * 300) / 400)  # the released code's pooling
    assert rows["Pendulum-v1", "td3_pave"]["flip_rate_std"] == 0.0


@SHARES_TRAINED
@pytest.mark.parametrize("script", ["td3.py", "sac.py"])
def test_vmapped_derivatives_match_autograd_hessian_on_a_trained_critic(script):
    """On a real trained SiLU critic: the one-call kernel against torch.autograd.functional.hessian, state by state."""
    critic = critic_geometry.load_critic(str(trained(script)))
    obs = torch.randn(6, critic.policy.obs_dim, generator=generator(13), dtype=F64)
    actions = critic.actor.act(obs)
    grad, h_sa, h_aa = critic_geometry.derivatives(critic.qf, obs, actions)
    obs_dim = obs.shape[1]
    for b in range(len(obs)):
        full = torch.autograd.functional.hessian(lambda x: critic.qf(x[None, :obs_dim], x[None, obs_dim:])[0, 0],
                                                 torch.cat([obs[b], actions[b]]))
        torch.testing.assert_close(h_sa[b], full[obs_dim:, :obs_dim])
        torch.testing.assert_close(h_aa[b], full[obs_dim:, obs_dim:])
    assert h_aa.abs().max() > 0 and h_sa.abs().max() > 0


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@SHARES_TRAINED
def test_cli_on_real_td3_and_sac_checkpoints(tmp_path):
    """Trained TD3 and SAC, a second TD3 seed and a ReLU TD3 are evaluated (10 Pendulum episodes of 200 steps each)."""
    paths = [trained("td3.py"), trained("sac.py"),
             write_checkpoint(tmp_path / "td3_s2.pt", "td3.py", seed=410580, hidden_sizes=(64, 64)),
             write_checkpoint(tmp_path / "relu.pt", "td3.py", exp_name="td3_relu", hidden_sizes=(64, 64),
                              activation="relu")]
    out = tmp_path / "report"
    result = run_script("critic_geometry.py", *paths, "--out-dir", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "error" not in result.stderr

    per_seed = {(r["method"], r["train_seed"]): r for r in read_csv(out / "checkpoints.csv")}
    assert set(per_seed) == {("td3", "178132"), ("td3", "410580"), ("sac", "178132"), ("td3_relu", "1")}
    for r in per_seed.values():
        assert int(r["steps"]) == 2000 and int(r["pairs"]) == 1990 and r["env_id"] == "Pendulum-v1"
        for key in critic_geometry.STATISTICS:
            assert math.isfinite(float(r[key])), (r["method"], key)
        for key in ("flip_rate", "concave_rate", "negdef_rate"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["mu_inf"]) <= float(r["mu_mean"]) and float(r["M_mean"]) <= float(r["M_sup"])
    relu = per_seed["td3_relu", "1"]  # a ReLU critic is piecewise linear: no second derivatives at all
    assert float(relu["M_sup"]) == 0.0 and float(relu["mu_inf"]) == 0.0
    assert float(relu["concave_rate"]) == 0.0 and float(relu["negdef_rate"]) == 0.0
    assert float(per_seed["td3", "178132"]["M_sup"]) > 0 and float(per_seed["sac", "178132"]["M_sup"]) > 0

    groups = {r["method"]: r for r in read_csv(out / "table.csv")}
    td3 = groups["td3"]
    assert int(td3["seeds"]) == 2 and int(td3["steps"]) == 4000 and td3["train_seeds"] == "178132 410580"
    for key in ("M_sup", "mu_inf", "flip_rate", "concave_rate"):
        values = [float(per_seed["td3", seed][key]) for seed in ("178132", "410580")]
        assert float(td3[f"{key}_mean"]) == pytest.approx(np.mean(values))
        assert float(td3[f"{key}_std"]) == pytest.approx(np.std(values))
    table = (out / "table.md").read_text()
    cells = [[cell.strip() for cell in line.split("|")[1:5]] for line in table.splitlines()
             if line.startswith("| td3 ")]
    assert ["td3", "Pendulum-v1", "2", "4000"] in cells and "failed: " not in table
    assert table.split("\n\n")[3] in result.stdout  # the across-seeds table is printed too


def test_during_training_rows_are_each_checkpoints_own_values_grouped_by_step(tmp_path, capsys, monkeypatch):
    """--during on in-process checkpoints of two methods x two seeds at steps 100 and 200, one of them passed twice:
    every per-checkpoint row is what evaluate_checkpoint gives that checkpoint alone, the groups are per (method, env,
    step) with mean and std over the seeds, the duplicate counts once, and during.png is drawn, each method's lines in
    its method_color (the colour it has in every other figure)."""
    import matplotlib.colors
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    paths = {(method, seed, step): write_checkpoint(tmp_path / f"{method}_{seed}_{step}.pt", f"{method}.py", seed=seed,
                                                    init_seed=seed + step + len(method), step=step)
             for method in ("td3", "td3_pave") for seed in (1, 2) for step in (100, 200)}
    out = tmp_path / "during"
    argv = [*map(str, paths.values()), str(paths["td3", 1, 200]), "--during", "--episodes", "1", "--out-dir", str(out)]
    assert critic_geometry.main(argv) == 0
    assert "counted once" in capsys.readouterr().err
    alone = {key: critic_geometry.evaluate_checkpoint(path, episodes=1) for key, path in paths.items()}
    rows = read_csv(out / "checkpoints.csv")
    assert sorted((r["method"], int(r["train_seed"]), int(r["step"])) for r in rows) == sorted(paths)
    for r in rows:
        own = alone[r["method"], int(r["train_seed"]), int(r["step"])]
        for key in ("sm", "M_sup", "mu_inf", "concave_rate", "flip_rate", "return"):
            assert float(r[key]) == pytest.approx(own[key], rel=1e-12), key
    groups = {(r["method"], int(r["step"])): r for r in read_csv(out / "table.csv")}
    assert sorted(groups) == [("td3", 100), ("td3", 200), ("td3_pave", 100), ("td3_pave", 200)]
    for (method, step), group in groups.items():
        assert int(group["seeds"]) == 2
        for key in ("sm", "M_sup", "concave_rate"):
            values = [alone[method, seed, step][key] for seed in (1, 2)]
            assert float(group[f"{key}_mean"]) == pytest.approx(np.mean(values))
            assert float(group[f"{key}_std"]) == pytest.approx(np.std(values))
    assert "| td3_pave | Pendulum-v1 | 200 " in (out / "table.md").read_text()
    assert (out / "during.png").read_bytes()[:4] == b"\x89PNG"
    (figure,) = figures
    lines = [line for ax in figure.axes for line in ax.get_lines()]
    assert len(lines) == 2 * len(figure.axes) == 2 * len(critic_geometry.DURING_COLUMNS)
    assert [tick.get_text() for tick in figure.axes[0].get_xticklabels()] == ["100", "200"]  # a tick per checkpoint
    for line in lines:
        assert matplotlib.colors.same_color(line.get_color(),
                                            critic_geometry.method_color(line.get_label())), line.get_label()


def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys):
    assert critic_geometry.main([str(tmp_path / "x.pt"), "--episodes", "0", "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "critic_geometry.py: error: --episodes must be positive and --delta non-negative"]


def test_during_per_seed_rows_are_in_numeric_step_order():
    """One seed's checkpoints at steps 500, 1000 and 2500 (files td3_step500.pt ...): the step orders them, not the file
    name, whose string order is 1000, 2500, 500."""
    def record(step, seed=1):
        return {"method": "td3", "env_id": "Pendulum-v1", "train_seed": seed, "step": step, "steps": 200,
                "checkpoint": f"runs/td3_{seed}/checkpoints/td3_step{step}.pt",
                **{key: 0.5 for key, _, _ in critic_geometry.DURING_COLUMNS}}

    records = [record(step, seed) for seed in (410580, 178132) for step in (1000, 2500, 500)]
    lines = critic_geometry.seed_table(records, during=True).splitlines()[2:]
    rows = [[cell.strip() for cell in line.split("|")[3:5]] for line in lines]
    assert rows == [[seed, step] for seed in ("178132", "410580") for step in ("500", "1000", "2500")]


REPORT = ["table.csv", "checkpoints.csv", "table.md", "during.png"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "td3.pt", "td3.py", seed=1)


@pytest.mark.parametrize("case", [*BAD_CASES, "no critic", "no argument"])
def test_bad_input_is_one_line_and_leaves_the_earlier_report(case, tiny, tmp_path, monkeypatch, capsys):
    """The default --out-dir holds a report; a command with bad input beside a good checkpoint (or with no argument at
    all) prints one error line, exits non-zero and leaves every file of that report as it was."""
    monkeypatch.chdir(tmp_path)
    before = old_report(tmp_path / "reports" / "geometry", REPORT)
    if case == "no argument":
        argv, status, line = [], 2, f"critic_geometry.py: error: {critic_geometry.NO_CHECKPOINTS}"
    else:
        if case == "no critic":
            actor_only = torch.load(tiny, weights_only=False)
            del actor_only["qf1"], actor_only["qf2"]
            path, message = (tmp_path / "actor_only.pt",
                             "holds no 'qf1' state dict: without a critic there is no Q-field to analyze")
            torch.save(actor_only, path)
        else:
            path, message = bad_checkpoint(case, tmp_path / "bad", tiny)
        argv, status, line = [str(tiny), str(path)], 1, f"critic_geometry.py: error: {path}: {message}"
    assert critic_geometry.main([*argv, "--during"]) == status
    printed = capsys.readouterr()
    assert (printed.out + printed.err).splitlines() == [line]
    assert snapshot(tmp_path / "reports" / "geometry") == before


def test_a_directory_stands_for_the_checkpoints_in_it(tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    paths = [write_checkpoint(folder / f"td3_step{step}.pt", "td3.py", step=step) for step in (500, 1000)]
    (folder / "notes.txt").write_text("not a checkpoint\n")
    out = tmp_path / "out"
    assert critic_geometry.main([str(folder), "--during", "--episodes", "1", "--out-dir", str(out)]) == 0
    assert sorted(r["checkpoint"] for r in read_csv(out / "checkpoints.csv")) == sorted(map(str, paths))
    capsys.readouterr()
    # --out-dir a file: one line, exit 2, the file untouched
    (tmp_path / "taken").write_text("a file\n")
    assert critic_geometry.main([str(folder), "--out-dir", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"critic_geometry.py: error: --out-dir {tmp_path / 'taken'}: is a file, not a directory"]
    assert (tmp_path / "taken").read_text() == "a file\n"


def test_paired_by_seed_is_pave_minus_its_own_algorithms_methods_on_common_seeds():
    """PAVE minus TD3 per seed on the seeds both have (seed 3 has no TD3 run: left out), checked against the t-interval
    written out by hand (mean +- t_0.975,2 * sd / sqrt 3); sizes also as the geometric mean of the ratios; SAC's PAVE is
    not paired with TD3, and --during pairs within a training step only."""
    from scipy import stats

    def record(method, seed, value, step=100):
        algo = method.split("_")[0]
        return {"method": method, "algo": algo, "env_id": "Hopper-v5", "train_seed": seed, "step": step,
                **{key: value for key, _, _ in critic_geometry.PAIRED}}

    base = {1: 4.0, 2: 8.0, 4: 2.0}
    pave = {1: 1.0, 2: 4.0, 3: 9.0, 4: 1.5}
    records = [record("td3", seed, value) for seed, value in base.items()] + \
        [record("td3_pave", seed, value) for seed, value in pave.items()] + \
        [record("sac_pave", 1, 0.5), record("td3", 1, 100.0, step=200), record("td3_pave", 1, 1.0, step=200)]
    rows = critic_geometry.paired_rows(records)
    assert {(r["pave"], r["other"]) for r in rows} == {("td3_pave", "td3")}  # sac_pave has no SAC method beside it
    assert len(rows) == len(critic_geometry.PAIRED)
    differences = np.array([pave[s] - base[s] for s in (1, 2, 4)])  # -3, -4, -0.5
    half = stats.t.ppf(0.975, 2) * differences.std(ddof=1) / math.sqrt(3)
    # without --during: one checkpoint per run, the step-100 records
    for row in critic_geometry.paired_rows([r for r in records if r["step"] == 100]):
        assert row["seeds"] == 3 and row["pave_lower_seeds"] == 3
        assert row["diff"] == pytest.approx(differences.mean())
        mean = differences.mean()
        assert (row["diff_low"], row["diff_high"]) == pytest.approx((mean - half, mean + half))
        if row["statistic"] in ("M_sup", "mu_inf", "sm", "return"):
            logs = np.log([pave[s] / base[s] for s in (1, 2, 4)])
            log_half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
            assert (row["ratio"], row["ratio_low"], row["ratio_high"]) == pytest.approx(
                tuple(np.exp([logs.mean(), logs.mean() - log_half, logs.mean() + log_half])))
        else:
            assert math.isnan(row["ratio"])
    during = critic_geometry.paired_rows(records, during=True)
    at_200 = [row for row in during if row["step"] == 200]
    assert len(at_200) == len(critic_geometry.PAIRED) and all(row["seeds"] == 1 for row in at_200)
    assert at_200[0]["diff"] == pytest.approx(-99.0) and math.isnan(at_200[0]["diff_low"])
    table = critic_geometry.paired_table(during, during=True)
    assert "| Hopper-v5 | 200           | td3_pave vs td3 | M_sup " in table and "1 seed" in table
    assert " PAVE lower " in critic_geometry.paired_table([r for r in during if r["step"] == 100])


def test_an_earlier_reports_rows_redraw_it_without_evaluating(tmp_path, capsys, monkeypatch):
    """A --during report of two methods x two seeds x two steps, then the same report from its checkpoints.csv alone
    (evaluate_checkpoint never called): every file but the figure byte-identical; paired.csv pairs PAVE with TD3 per
    step. A CSV of another number of episodes, or without a column, is one line and exit 1 before anything is
    written; a report with nothing to pair removes an earlier paired.csv."""
    paths = [write_checkpoint(tmp_path / f"{method}_{seed}_{step}.pt", f"{method}.py", seed=seed,
                              init_seed=seed + step + len(method), step=step)
             for method in ("td3", "td3_pave") for seed in (1, 2) for step in (100, 200)]
    first, again = tmp_path / "first", tmp_path / "again"
    assert critic_geometry.main([*map(str, paths), "--during", "--episodes", "1", "--out-dir", str(first)]) == 0
    paired = read_csv(first / "paired.csv")
    assert sorted({(r["step"], r["pave"], r["other"], r["seeds"]) for r in paired}) == [
        ("100", "td3_pave", "td3", "2"), ("200", "td3_pave", "td3", "2")]
    monkeypatch.setattr(critic_geometry, "evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated again"))
    argv = [str(first / "checkpoints.csv"), "--during", "--episodes", "1", "--out-dir", str(again)]
    assert critic_geometry.main(argv) == 0
    for name in ("checkpoints.csv", "table.csv", "paired.csv", "table.md"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert (again / "during.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    before = snapshot(again)
    rows = (first / "checkpoints.csv").read_text().splitlines()
    (tmp_path / "no_sm.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in rows) + "\n")  # no trace_mean
    for argv, line in [(["--episodes", "2"], f"{first / 'checkpoints.csv'}: was measured on 1 episodes per "
                                                "checkpoint, not --episodes 2"),
                       ([str(tmp_path / "no_sm.csv")], f"{tmp_path / 'no_sm.csv'}: is not an earlier report's "
                                                       "checkpoints.csv: no trace_mean column")]:
        base = [str(first / "checkpoints.csv"), "--during", "--episodes", "1"] if argv[0] == "--episodes" else \
            ["--during", "--episodes", "1"]
        assert critic_geometry.main([*base, *argv, "--out-dir", str(again)]) == 1
        assert capsys.readouterr().err.splitlines() == [f"critic_geometry.py: error: {line}"]
        assert snapshot(again) == before
    td3_only = tmp_path / "td3_only.csv"
    td3_only.write_text("\n".join(line for line in rows if ",td3_pave," not in line) + "\n")
    assert critic_geometry.main([str(td3_only), "--during", "--episodes", "1", "--out-dir", str(again)]) == 0
    assert not (again / "paired.csv").exists() and "Paired by seed" not in (again / "table.md").read_text()


def test_during_figure_ticks_each_checkpoint_step_in_thousands(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    rows = [{"env_id": "Hopper-v5", "method": "td3", "step": step,
             **{f"{key}_{what}": 1.0 for key, _, _ in critic_geometry.DURING_COLUMNS for what in ("mean", "std")}}
            for step in (100000, 200000, 300000)]
    critic_geometry.plot_during(rows, tmp_path / "during.png")
    assert [tick.get_text() for tick in figures[0].axes[-1].get_xticklabels()] == ["100k", "200k", "300k"]
