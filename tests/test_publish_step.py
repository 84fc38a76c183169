"""benchmark.py publish --step: a stage of a study published from the runs' model checkpoints at that step, with their
curves, steps, wall times and SPS cut there, and --env-ids keeping one env's runs, on a tiny hand-written study."""

import json

import numpy as np
import pytest
import torch
from test_benchmark import benchmark
from test_publish import ENV, LEARNING_STARTS, read_csv, write_run
from tiny_checkpoints import write_checkpoint

STAGE = 400  # the stage published: test_publish's runs log episodes at steps 200, 400, 600, 800
EARLIER = 200  # an earlier stage's model checkpoint, for the critic geometry along training
SEEDS = (178132, 410580)


def write_staged_run(study, method, seed, stage_checkpoint=True):
    """test_publish's finished run (events to step 800: SPS_train 50.25 at 400, 60.5 at 800; its final checkpoint), a
    model checkpoint at EARLIER and one at the stage unless told not."""
    write_run(study, method, seed)
    (folder,) = (study / "runs").glob(f"{ENV}__{method}__{seed}__*")
    (folder / "checkpoints").mkdir()
    for step in (EARLIER, STAGE) if stage_checkpoint else (EARLIER,):
        path = folder / "checkpoints" / f"{method}_step{step}.pt"
        write_checkpoint(path, f"{method}.py", seed=seed, exp_name=method, init_seed=seed + step, step=step)
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["args"]["learning_starts"] = LEARNING_STARTS
        torch.save(checkpoint, path)


def test_publish_at_a_step_reads_the_checkpoints_and_curves_of_that_step(tmp_path):
    study, out = tmp_path / "study", tmp_path / "stage400"
    for method in ("td3", "td3_pave"):
        for seed in SEEDS:
            write_staged_run(study, method, seed, stage_checkpoint=(method, seed) != ("td3_pave", 410580))
    result = benchmark("publish", "--study", study, "--out", out, "--step", STAGE, "--env-ids", ENV, "--episodes", 1,
                       "--noise", 0.05, "--more-episodes", 0, "--released-starts", "none", "--bootstrap-reps", 50,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"3 finished run(s) at step {STAGE} of 4 found" in result.stdout
    assert f"missing: {ENV}__td3_pave__410580 (no model checkpoint at step {STAGE} in its run folder" in result.stdout
    checkpoints = {episode["checkpoint"] for episode in json.loads((out / "results.json").read_text())["episodes"]}
    assert len(checkpoints) == 3 and all(path.endswith(f"checkpoints/{path.split('/')[-1]}")
                                         and f"_step{STAGE}.pt" in path
                                         for path in checkpoints)
    curves = read_csv(out / "learning_curves.csv")
    assert curves and max(int(row["step"]) for row in curves) == STAGE
    runs = {(row["method"], row["seed"]): row for row in read_csv(out / "runs.csv")}
    assert set(runs) == {("td3", "178132"), ("td3", "410580"), ("td3_pave", "178132")}
    for row in runs.values():  # the SPS and wall time of the stage, not of the whole run
        assert row["steps"] == str(STAGE) and row["sps_train"] == "50.2" and 15 < float(row["wall_seconds"]) <= 20
        assert not row["run_folder"].endswith("checkpoints")
    # the critic geometry along training: each published run's checkpoints up to the stage, none of the later final one
    during = read_csv(out / "during" / "checkpoints.csv")
    assert sorted((row["method"], row["train_seed"], row["step"]) for row in during) == sorted(
        (method, seed, str(step)) for method, seed in runs for step in (EARLIER, STAGE))
    assert (out / "during" / "during.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the published checkpoints are evaluated once: --during takes their rows from geometry/checkpoints.csv
    assert [row for row in during if row["step"] == str(STAGE)] == read_csv(out / "geometry" / "checkpoints.csv")
    assert [result.stderr.count(f"(trained {step} steps)") for step in (EARLIER, STAGE)] == [3, 3]


def test_publish_without_a_step_evaluates_a_runs_copy_at_its_final_step_once(tmp_path):
    """A study folder as the runs leave it keeps a model checkpoint at the final step beside the final <variant>.pt:
    the same model, so the critic along training takes its row from geometry/ and evaluates only the earlier ones."""
    study, out, final = tmp_path / "study", tmp_path / "published", 800
    for seed in SEEDS:
        write_staged_run(study, "td3", seed)
        (folder,) = (study / "runs").glob(f"{ENV}__td3__{seed}__*")
        checkpoint = torch.load(folder / "td3.pt", weights_only=True)
        checkpoint["global_step"] = final
        torch.save(checkpoint, folder / "td3.pt")
        torch.save(checkpoint, folder / "checkpoints" / f"td3_step{final}.pt")
    result = benchmark("publish", "--study", study, "--out", out, "--episodes", 1, "--noise", 0.05,
                       "--more-episodes", 0, "--released-starts", "none", "--bootstrap-reps", 50, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    during = read_csv(out / "during" / "checkpoints.csv")
    assert sorted((row["train_seed"], row["step"]) for row in during) == sorted(
        (str(seed), str(step)) for seed in SEEDS for step in (EARLIER, STAGE, final))
    assert [row for row in during if row["step"] == str(final)] == read_csv(out / "geometry" / "checkpoints.csv")
    assert [result.stderr.count(f"(trained {step} steps)") for step in (EARLIER, STAGE, final)] == [2, 2, 2]


def test_publish_at_a_step_no_run_reached_and_an_unknown_env_are_one_line(tmp_path):
    study = tmp_path / "study"
    write_staged_run(study, "td3", 178132)
    for flags, message in ((["--step", 300], "no run with a model checkpoint at step 300"),
                           (["--step", 0], "--step 0: must be a positive training step"),
                           (["--env-ids", "Hopper-v5"], "--env-ids Hopper-v5: no run of that env")):
        result = benchmark("publish", "--study", study, "--out", tmp_path / "out", *flags, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_the_papers_table_3_is_kept_as_printed():
    """results/paper_table3.csv, for the MuJoCo study's noise sweep: 5 TD3 methods x LunarLander and Walker x 3 noise
    levels, with the figures the paper's text quotes (Walker PAVE: return about 5570 at every level, sm 1.29 to
    1.77)."""
    from runs import REPO

    rows = read_csv(REPO / "results" / "paper_table3.csv")
    assert len(rows) == 30 and {row["obs_noise"] for row in rows} == {"0.01", "0.05", "0.1"}
    pave = [row for row in rows if (row["method"], row["env_id"]) == ("td3_pave", "Walker2d-v5")]
    assert [round(float(row["return_mean"]), -1) for row in pave] == [5570.0, 5580.0, 5580.0]
    assert [row["sm_mean"] for row in pave] == ["1.293", "1.478", "1.775"]


def test_a_resumed_runs_repeated_steps_are_read_from_its_later_segment_without_a_warning(tmp_path, capfd, caplog):
    """A resumed run logs again the steps after its last saved state, in a second events file: the reader keeps the
    second file's points for them, and TensorBoard's purge warning is not printed."""
    import time

    from torch.utils.tensorboard import SummaryWriter

    import benchmark_common

    run_dir = tmp_path / "run"
    segments = ((None, {100: 1.0, 200: 2.0, 300: 3.0}), (201, {201: 20.0, 300: 30.0, 400: 40.0}))  # saved at 200
    for purge_step, values in segments:  # the scripts open a resumed run's writer with purge_step = saved step + 1
        writer = SummaryWriter(run_dir, purge_step=purge_step)
        for step, value in values.items():
            writer.add_scalar("charts/episodic_return", value, step)
        writer.close()
        time.sleep(1.1)  # events file names carry the second they were opened in
    with caplog.at_level("WARNING"):
        steps, values = benchmark_common.scalars(run_dir, "charts/episodic_return")
    assert steps.tolist() == [100, 200, 201, 300, 400] and values.tolist() == [1.0, 2.0, 20.0, 30.0, 40.0]
    assert "out of order" not in capfd.readouterr().err and not caplog.records


TERMS = ("mpr", "vfc", "curv", "grad_norm", "vhv")
LAMBDAS = (2.0, 0.5, 0.25)


def term_value(method, seed, term, step):
    """A distinct positive geometry/ value per run, term and step (vhv negative), exact in float32."""
    value = (1 + TERMS.index(term)) * (2.0 if method == "td3" else 1.0) * (1 + SEEDS.index(seed) / 4) + step / 1024
    return -value if term == "vhv" else value


def test_publish_draws_paves_terms_from_the_runs_geometry_and_losses(tmp_path):
    """critic_terms: each run's geometry/ terms averaged over the last 20% of its steps up to the stage, PAVE over Base
    as the geometric mean of the per-seed ratios, and a PAVE run's lambda-weighted losses/ terms over its TD loss."""
    from torch.utils.tensorboard import SummaryWriter

    study, out = tmp_path / "study", tmp_path / "stage400"
    steps = range(50, 801, 50)
    for method in ("td3", "td3_pave"):
        for seed in SEEDS:
            write_staged_run(study, method, seed)
            (folder,) = (study / "runs").glob(f"{ENV}__{method}__{seed}__*")
            writer = SummaryWriter(folder)
            for step in steps:
                for term in TERMS:
                    writer.add_scalar(f"geometry/{term}", term_value(method, seed, term, step), step)
                if method == "td3_pave":
                    writer.add_scalar("losses/qf1_loss", 8.0 + step / 64, step)
                    for term in ("mpr", "vfc", "curv"):
                        writer.add_scalar(f"losses/{term}", term_value(method, seed, term, step) / 2, step)
            writer.close()
            if method == "td3_pave":
                checkpoint = torch.load(folder / "checkpoints" / f"td3_pave_step{STAGE}.pt", weights_only=True)
                checkpoint["args"].update(zip(("lambda1", "lambda2", "lambda3"), LAMBDAS))
                torch.save(checkpoint, folder / "checkpoints" / f"td3_pave_step{STAGE}.pt")
    result = benchmark("publish", "--study", study, "--out", out, "--step", STAGE, "--episodes", 1, "--noise", 0.05,
                       "--more-episodes", 0, "--released-starts", "none", "--bootstrap-reps", 50, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    window = [step for step in steps if 0.8 * STAGE <= step <= STAGE]  # the last 20% of the steps up to the stage
    assert window == [350, 400]
    rows = {(row["method"], int(row["seed"])): row for row in read_csv(out / "critic_terms.csv")}
    assert set(rows) == {(method, seed) for method in ("td3", "td3_pave") for seed in SEEDS}
    for (method, seed), row in rows.items():
        for term in TERMS:
            assert float(row[term]) == pytest.approx(np.mean([term_value(method, seed, term, s) for s in window]))
        if method == "td3_pave":
            td_loss = np.mean([8.0 + s / 64 for s in window])
            assert float(row["td_loss"]) == pytest.approx(td_loss)
            for weight, term in zip(LAMBDAS, ("mpr", "vfc", "curv")):
                assert float(row[f"weighted_{term}"]) == pytest.approx(
                    weight * np.mean([term_value(method, seed, term, s) / 2 for s in window]))
        else:
            assert row["td_loss"] == "" and row["weighted_mpr"] == ""
    text = (out / "critic_terms.md").read_text()
    ratio = np.exp(np.mean([np.log(float(rows["td3_pave", s]["vfc"]) / float(rows["td3", s]["vfc"])) for s in SEEDS]))
    assert "| td3_pave / td3 | 2 | " in text and f"{ratio:.3f} [" in text
    pave = rows["td3_pave", SEEDS[0]]
    shares = [float(pave[f"weighted_{t}"]) / float(pave["td_loss"]) for t in ("mpr", "vfc", "curv")]
    assert f"| td3_pave | {SEEDS[0]} | {float(pave['td_loss']):.4g} | " + " | ".join(
        f"{x:.3g}" for x in [*shares, sum(shares)]) + " |" in text
    assert (out / "critic_terms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
