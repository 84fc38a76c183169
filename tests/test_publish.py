"""benchmark.py publish: every table and figure of a study folder regenerated from its files without training, on a tiny
committed-style study (in-process checkpoints, hand-written TensorBoard events and logs); one-line errors on bad input."""

import csv
import json
import time

import pytest
from runs import REPO
from test_benchmark import benchmark
from tiny_checkpoints import write_checkpoint
from torch.utils.tensorboard import SummaryWriter

ENV = "Pendulum-v1"
METHODS = ("td3", "td3_pave", "sac", "sac_pave")  # two methods per algorithm family
SEEDS = (410580, 178132)  # 178132: the first released seed, the Q-field's default
STEPS = (200, 400, 600, 800)  # the episodes' end steps
WALL = 120.0  # seconds from a run's first event to its last


def episode_values(method, seed):
    """{tag: values at STEPS}, distinct per run and exact in float32 (TensorBoard stores float32)."""
    m, s = (*METHODS, "td3_caps").index(method), SEEDS.index(seed)
    return {"charts/episodic_return": [-1200.0 + 100 * k + 10 * m + s for k in range(len(STEPS))],
            "charts/action_change": [0.5 - 0.125 * k + 0.0625 * s + 0.25 * m for k in range(len(STEPS))]}


def write_run(study, method, seed, finished=True):
    """A run as benchmark.py leaves it: runs/<env>__<method>__<seed>__<unix time>/ with TensorBoard events (and <method>.pt
    when finished), logs/<env>__<method>__<seed>.log."""
    name = f"{ENV}__{method}__{seed}"
    folder = study / "runs" / f"{name}__{1_700_000_000 + seed}"
    start = time.time()
    writer = SummaryWriter(str(folder))  # its first event (the file version) has the wall time of now
    for tag, values in episode_values(method, seed).items():
        for k, (step, value) in enumerate(zip(STEPS, values)):
            writer.add_scalar(tag, value, step, walltime=start + 10 * k)
    writer.add_scalar("charts/SPS_train", 50.25, 400, walltime=start + 20)
    writer.add_scalar("charts/SPS_train", 60.5, 800, walltime=start + 100)
    if finished:
        writer.add_scalar("eval/return", -900.0, 800, walltime=start + WALL)
    writer.close()
    if finished:
        write_checkpoint(folder / f"{method}.pt", f"{method}.py", seed=seed, init_seed=seed + 7 * METHODS.index(method))
    (study / "logs").mkdir(exist_ok=True)
    (study / "logs" / f"{name}.log").write_text(f"$ cd {study} && python {method}.py --env-id {ENV} --seed {seed}\n")


def clean_episodes(results):
    return [e for e in results["episodes"] if e["obs_noise"] == 0]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_publish_regenerates_every_table_and_figure(tmp_path):
    study, out = tmp_path / "pendulum" / "study", tmp_path / "pendulum"
    for method in METHODS:
        for seed in SEEDS:
            write_run(study, method, seed)
    write_run(study, "td3_caps", 178132, finished=False)  # a run that did not finish: listed as missing, left out
    start = time.time()
    result = benchmark("publish", "--study", study, "--out", out, "--episodes", 2, "--noise", 0.05, "--more-episodes", 3,
                       cwd=tmp_path)
    print(f"publish on 8 tiny runs: {time.time() - start:.1f} s")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    expected = ["table.md", "table.csv", "episodes.csv", "results.json", f"spectrum_{ENV}.png", f"actions_{ENV}.png",
                "learning_curves.csv", "learning_curves.png", "qfield_td3.png", "qfield_td3.csv", "qfield_sac.png",
                "qfield_sac.csv", "runs.csv", "geometry/table.md", "geometry/table.csv", "geometry/checkpoints.csv",
                "more_episodes/table.md", "more_episodes/table.csv", "more_episodes/episodes.csv", "more_episodes/results.json",
                "vs_paper.md", "vs_paper.csv", "per_seed.md", "per_seed.csv", "released_starts/table.md",
                "released_starts/table.csv", "released_starts/episodes.csv", "released_starts/results.json"]
    wrote = [line.removeprefix("wrote ") for line in result.stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(wrote) == sorted(str(out / name) for name in expected)
    assert f"missing: {ENV}__td3_caps__178132 (its run folder has no td3_caps.pt: unfinished or failed)" in result.stdout
    assert f"missing: {ENV}__td3_caps__410580 (no run folder or log: not started)" in result.stdout
    assert "8 finished run(s) of 9 found" in result.stdout
    for name in expected:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # eval_smoothness.py's outputs: one row per (method, env, sigma) over both seeds; Table 3's sigma_base from each
    # family's first-seed base run
    table = read_csv(out / "table.csv")
    assert sorted((r["method"], r["env_id"], float(r["obs_noise"])) for r in table) == \
        sorted((m, ENV, sigma) for m in METHODS for sigma in (0.0, 0.05))
    assert all(r["seeds"] == "2" for r in table)
    assert {r["episodes"] for r in table if float(r["obs_noise"]) == 0} == {"4"}  # --episodes 2, two seeds
    results = json.loads((out / "results.json").read_text())
    assert {(s["algo"], s["train_seed"], s["fallback"]) for s in results["obs_scale"]} == {("td3", 178132, False),
                                                                                           ("sac", 178132, False)}
    assert len(read_csv(out / "episodes.csv")) == len(results["episodes"])

    # beside the paper's Tables 1-2: our clean rows as table.csv has them, the paper's as printed, sm over the Base's sm
    ours = {r["method"]: r for r in table if float(r["obs_noise"]) == 0}
    paper = {r["method"]: r for r in read_csv(REPO / "results" / "paper_tables.csv") if r["env_id"] == ENV}
    compared = read_csv(out / "vs_paper.csv")
    assert [r["method"] for r in compared] == ["td3", "td3_pave", "sac", "sac_pave"]  # the paper's order
    for r in compared:
        base = r["method"].split("_")[0]
        for side, source in (("ours", ours), ("paper", paper)):
            for key in ("return_mean", "return_std", "sm_mean", "sm_std"):
                assert float(r[f"{side}_{key}"]) == float(source[r["method"]][key])
            assert float(r[f"{side}_sm_to_base"]) == pytest.approx(float(source[r["method"]]["sm_mean"])
                                                                   / float(source[base]["sm_mean"]), rel=1e-12)
    # the released evaluation's start states: every checkpoint on the 50 env seeds of results/released_eval_seeds.txt, in
    # vs_paper beside the rest
    starts = [int(line) for line in (REPO / "results" / "released_eval_seeds.txt").read_text().splitlines()
              if not line.startswith("#")]
    released = json.loads((out / "released_starts" / "results.json").read_text())
    assert len(starts) == 50 and len(released["episodes"]) == 50 * len(METHODS) * len(SEEDS)
    for method in METHODS:
        for seed in SEEDS:
            assert [e["eval_seed"] for e in released["episodes"] if (e["method"], e["train_seed"]) == (method, seed)] == starts
    released_rows = {r["method"]: r for r in read_csv(out / "released_starts" / "table.csv")}
    for r in compared:
        for key in ("return_mean", "return_std", "sm_mean", "sm_std"):
            assert float(r[f"released_starts_{key}"]) == float(released_rows[r["method"]][key])
    lines = (out / "vs_paper.md").read_text().splitlines()
    pave = ours["td3_pave"]
    assert (f"| Pendulum | td3_pave | 2 | {float(pave['return_mean']):.1f} ({float(pave['return_std']):.1f}) | -167.6 (77.5) | "
            f"{float(pave['sm_mean']):.3f} ({float(pave['sm_std']):.3f}) | 0.351 (0.118) |") in "\n".join(lines)

    # per seed: each run's clean episodes averaged, in the released seeds' order
    per_seed = read_csv(out / "per_seed.csv")
    assert sorted((r["method"], int(r["seed"])) for r in per_seed) == sorted((m, s) for m in METHODS for s in SEEDS)
    for r in per_seed:
        mine = [e for e in clean_episodes(results) if e["method"] == r["method"] and e["train_seed"] == int(r["seed"])]
        assert r["episodes"] == "2" and len(mine) == 2
        for key in ("return", "sm", "action_change"):
            assert float(r[key]) == pytest.approx(sum(e[key] for e in mine) / 2, rel=1e-12)
    td3_cells = [f"{float(r['return']):.1f} / {float(r['sm']):.3f}" for seed in (178132, 410580) for r in per_seed
                 if (r["method"], int(r["seed"])) == ("td3", seed)]
    assert "| method | 178132 | 410580 |" in (out / "per_seed.md").read_text()
    assert f"| td3 | {td3_cells[0]} | {td3_cells[1]} |" in (out / "per_seed.md").read_text()

    # the start-state check: the clean evaluation with --more-episodes episodes, whose first --episodes are the table's
    more = json.loads((out / "more_episodes" / "results.json").read_text())
    assert sorted(r["method"] for r in more["rows"]) == sorted(METHODS) and {r["episodes"] for r in more["rows"]} == {6}
    for e in clean_episodes(results):
        same = [m for m in more["episodes"] if (m["method"], m["train_seed"], m["eval_seed"]) ==
                (e["method"], e["train_seed"], e["eval_seed"])]
        assert len(same) == 1 and same[0]["return"] == e["return"] and same[0]["sm"] == e["sm"]

    # the learning curves: exactly the points written, finished runs only
    curves = [(r["method"], r["env_id"], int(r["seed"]), r["tag"], int(r["step"]), float(r["value"]))
              for r in read_csv(out / "learning_curves.csv")]
    assert sorted(curves) == sorted((m, ENV, seed, tag, step, value) for m in METHODS for seed in SEEDS
                                    for tag, values in episode_values(m, seed).items() for step, value in zip(STEPS, values))

    # the Q-gradient fields: the seed-178132 checkpoint of each method of the family
    for algo in ("td3", "sac"):
        rows = read_csv(out / f"qfield_{algo}.csv")
        assert sorted((r["method"], r["seed"]) for r in rows) == sorted((m, "178132") for m in METHODS if m.startswith(algo))

    # the critic geometry: every checkpoint on the same --episodes evaluation episodes as the table (so the same return
    # and sm per run as episodes.csv)
    geometry = read_csv(out / "geometry" / "checkpoints.csv")
    assert sorted((r["method"], int(r["train_seed"])) for r in geometry) == sorted((m, s) for m in METHODS for s in SEEDS)
    clean = clean_episodes(results)
    for r in geometry:
        mine = [e for e in clean if e["method"] == r["method"] and e["train_seed"] == int(r["train_seed"])]
        assert r["episodes"] == "2" and len(mine) == 2 and float(r["M_sup"]) > 0 and float(r["mu_inf"]) >= 0
        for key in ("return", "sm"):
            assert float(r[key]) == pytest.approx(sum(e[key] for e in mine) / 2, rel=1e-9)

    runs = read_csv(out / "runs.csv")
    assert sorted((r["method"], int(r["seed"])) for r in runs) == sorted((m, seed) for m in METHODS for seed in SEEDS)
    for r in runs:
        assert r["env_id"] == ENV and r["steps"] == "800" and r["sps_train"] == "60.5" and r["segments"] == "1"
        assert WALL - 5 < float(r["wall_seconds"]) <= WALL  # the first event is written a moment after `start`
        assert (out / r["run_folder"] / f"{r['method']}.pt").is_file()


@pytest.mark.parametrize("case, message", [
    ("no study", "--study nowhere: no such folder"),
    ("no finished run", "no finished run in"),
    ("no finished run of the seeds", "no finished run of seed(s) 410580 in"),
    ("no paper tables", "--paper-tables nowhere.csv: no such file"),
    ("no released starts", "--released-starts nowhere.txt: No such file or directory"),
    ("bad released starts", "--released-starts seeds.txt: not a list of non-negative integer env seeds"),
])
def test_publish_bad_input_gets_one_line_and_exit_2(tmp_path, case, message):
    if case == "no finished run":
        write_run(tmp_path / "nowhere", "td3", 178132, finished=False)
    if case == "no finished run of the seeds":
        write_run(tmp_path / "nowhere", "td3", 178132)
    if case in ("no paper tables", "no released starts", "bad released starts"):
        write_run(tmp_path / "nowhere", "td3", 178132)
    (tmp_path / "seeds.txt").write_text("# a comment\n12\n-3\n")
    flags = {"no finished run of the seeds": ("--seeds", 410580), "no paper tables": ("--paper-tables", "nowhere.csv"),
             "no released starts": ("--released-starts", "nowhere.txt"),
             "bad released starts": ("--released-starts", "seeds.txt")}.get(case, ())
    result = benchmark("publish", "--study", "nowhere", *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("benchmark.py: error:") and message in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs.csv").exists()


def test_runs_table_sums_a_resumed_runs_segments_leaving_out_the_pause(tmp_path):
    """A run stopped and resumed writes a second events file: its wall time is the sum of both segments' (each from its
    first event to its last scalar), not the span from the first start to the end, which holds the pause."""
    study = tmp_path / "study"
    write_run(study, "td3", 178132)  # segment 1: WALL seconds
    (folder,) = study.glob("runs/*")
    time.sleep(1.1)  # a later events file name, as a resume writes
    start = time.time()
    writer = SummaryWriter(str(folder))  # segment 2: 30 s (segment 1's fake clock runs past it: the span alone is WALL)
    writer.add_scalar("charts/SPS_train", 60.5, 800, walltime=start + 30)
    writer.close()
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    result = benchmark("publish", "--study", study, "--episodes", 1, "--noise", 0.05, "--more-episodes", 0, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = read_csv(tmp_path / "runs.csv")
    assert row["segments"] == "2" and WALL + 30 - 5 < float(row["wall_seconds"]) <= WALL + 30


def test_the_paper_tables_csv_holds_tables_1_and_2_as_printed():
    """Spot checks against the paper's Tables 1-2 (and REFERENCE.md's headline numbers): 2 algorithms x 5 methods x 6 envs."""
    rows = {(r["method"], r["env_id"]): r for r in read_csv(REPO / "results" / "paper_tables.csv")}
    assert len(rows) == 60
    for method, env_id, paper_env_id, numbers in [
        ("td3", "Pendulum-v1", "Pendulum-v1", ("-168.7", "77.5", "2.276", "0.995")),
        ("td3_pave", "Walker2d-v5", "Walker2d-v5", ("5563", "451", "1.272", "0.172")),
        ("td3_pave", "LunarLanderContinuous-v3", "LunarLanderContinuous-v2", ("264.5", "24.9", "0.541", "0.290")),
        ("td3", "Reacher-v5", "Reacher-v2", ("-3.59", "1.34", "0.055", "0.015")),
        ("sac_pave", "Ant-v5", "Ant-v5", ("5706", "774", "1.604", "0.146")),
        ("sac_caps", "Pendulum-v1", "Pendulum-v1", ("-165.0", "75.8", "0.315", "0.107")),
        ("sac_asap", "Hopper-v5", "Hopper-v5", ("3455", "222", "0.528", "0.050")),
    ]:
        row = rows[method, env_id]
        assert row["paper_env_id"] == paper_env_id
        assert (row["return_mean"], row["return_std"], row["sm_mean"], row["sm_std"]) == numbers


def test_publish_goes_on_past_a_failed_step_and_exits_1(tmp_path):
    """A damaged checkpoint: both evaluations, the Q-field and the geometry fail with one line each, the curves and runs.csv
    are written."""
    study = tmp_path / "study"
    write_run(study, "td3", 178132)
    (checkpoint,) = study.glob("runs/*/td3.pt")
    checkpoint.write_text("not a checkpoint")
    result = benchmark("publish", "--study", study, "--episodes", 1, cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    failed = [line for line in result.stderr.splitlines() if line.startswith("benchmark.py: error: publish:")]
    assert failed == ["benchmark.py: error: publish: evaluation (eval_smoothness.py: the tables, released start states), "
                      "vs_paper.md and per_seed.md failed (exit status 1; its messages are above)",
                      "benchmark.py: error: publish: start-state check, 100 episodes (eval_smoothness.py) failed (exit status 1; "
                      "its messages are above)",
                      "benchmark.py: error: publish: Q-gradient field of td3 (plot_qfield.py) failed (exit status 1; its messages "
                      "are above)",
                      "benchmark.py: error: publish: critic geometry (critic_geometry.py) failed (exit status 1; its messages are "
                      "above)"]
    assert "4 of 6 step(s) failed" in result.stdout
    for name in ("learning_curves.csv", "learning_curves.png", "runs.csv"):  # --out defaults to the study's parent
        assert f"wrote {tmp_path.resolve() / name}" in result.stdout.splitlines()


def test_publish_seeds_keeps_only_those_runs(tmp_path):
    study = tmp_path / "study"
    for seed in SEEDS:
        write_run(study, "td3", seed)
    result = benchmark("publish", "--study", study, "--seeds", 178132, "--episodes", 1, "--noise", 0.05, "--more-episodes", 0,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 finished run(s) of 1 found" in result.stdout
    assert [(r["method"], r["seed"]) for r in read_csv(tmp_path / "runs.csv")] == [("td3", "178132")]
    assert {e["train_seed"] for e in json.loads((tmp_path / "results.json").read_text())["episodes"]} == {178132}
    assert not (tmp_path / "more_episodes").exists()  # --more-episodes 0 skips the start-state check
