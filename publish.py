"""publish.py: every table and figure of a finished study, regenerated from its files without training.

`python benchmark.py publish --study results/pendulum/study --out results/pendulum` regenerates every table and figure
of a study folder from what its runs wrote, without training. A finished run is a run folder with its <variant>.pt (the
newest such folder per run name); per env, every method x seed of the runs found there without one is listed as missing,
and left out; --seeds S [S ...] keeps only those training seeds' runs (say, the seeds every method has finished, so that
no row pools a different set of seeds). A method with fewer finished seeds than the others (a study still running) is
published with the seeds it has: every table says how many. --step N publishes a stage of a study run with --stages:
each run's model checkpoint at step N (checkpoints/<variant>_step<N>.pt, or its final checkpoint if it ended there)
instead of its final one, its curves, steps, wall time and SPS up to N; --env-ids keeps those envs' runs (one results
folder per env out of one study). Every input is checked before anything is written (the study folder and its runs,
--seeds, --out, --paper-tables, --paper-table3, --released-starts, --qfield-seed, every checkpoint's readability): a
problem is one line and exit status 2, with earlier outputs untouched. Written into --out (default: the study folder's
parent): eval_smoothness.py's tables and figures, the start-state checks, the statistics over seeds (rliable), the
comparison with the paper, per-seed tables, learning curves, PAVE's terms along training, Q-gradient fields, critic
geometry (along training too, from the model checkpoints the runs kept at earlier steps) and the runs' wall time and
SPS; docs/studies.md lists every file and how it is made. It prints one line per file written; exit status 0 when every
step succeeded, 1 when any failed (one line each, the others still run), 2 on bad input.
"""

import argparse
import csv
import importlib
import os
import sys
from pathlib import Path

import numpy as np

from benchmark_common import (
    NOISE_LEVELS,
    PROG,
    REPO,
    EventsUpTo,
    family,
    found_runs,
    missing_runs,
    plot_mean_curves,
    run_events,
    run_folder,
    scalars,
    short_env,
    training_seconds,
)
from statistics_over_seeds import BOOTSTRAP_REPS, method_key, publish_statistics, write_rows

# learning curves: TensorBoard tag -> (panel title, y label); training episodes act with exploration noise (TD3's
# Gaussian, SAC's sampled actions), so their action change is not the evaluation's deterministic one
CURVE_TAGS = {"charts/episodic_return": ("training episodes' return", "episodic return"),
              "charts/action_change": ("training episodes' action change (exploration noise on)",
                                       "mean |a_t - a_t-1| per episode (env units)")}


def algo_of(run):
    """The run's algorithm family: its script's name up to the first '_' (td3, sac)."""
    return family(Path(run.variant.script).stem)


LAST_PART = 0.4  # learning curves: the second panel of each row shows the return over this last part of the steps


def publish_learning_curves(runs, events, learning_starts, out):
    """learning_curves.csv: one row per logged point of CURVE_TAGS (method, env_id, seed, tag, step, value) of every
    run; learning_curves.png: one row of panels per env and algorithm family (the return, the return over the last
    LAST_PART of the steps on its own y-range, the action change), one line per method in its method_color, a legend
    in every panel (mean_over_seeds: each seed's episodes averaged per bin of a common step grid, mean +- one std over
    seeds), from the end of the random-action phase (learning_starts = {run: its --learning-starts}; the row's largest)
    on: its random actions say nothing of a method and would dwarf every policy's action change."""
    import matplotlib.pyplot as plt

    curves, starts = {}, {}  # (env, algo) -> tag -> method -> [(steps, values) per seed]; -> learning starts
    with open(out / "learning_curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env_id", "seed", "tag", "step", "value"])
        for run in runs:
            starts[run.env_id, algo_of(run)] = max(starts.get((run.env_id, algo_of(run)), 0), learning_starts[run])
            for tag in CURVE_TAGS:
                steps, values = scalars(None, tag, events(run))
                writer.writerows([run.variant.name, run.env_id, run.seed, tag, int(step), float(value)]
                                 for step, value in zip(steps, values))
                curves.setdefault((run.env_id, algo_of(run)), {}).setdefault(tag, {}).setdefault(run.variant.name,
                                                                                                 []).append(
                    (steps, values))
    from eval_smoothness import method_color

    # per row: the return from the end of the random actions, the return over the last LAST_PART of the steps (its own
    # y-range: the first episodes' returns no longer hide the differences between methods), the action change
    panels = [("charts/episodic_return", False), ("charts/episodic_return", True), ("charts/action_change", False)]
    fig, axes = plt.subplots(len(curves), len(panels), figsize=(6.0 * len(panels), 4.4 * len(curves)), squeeze=False)
    for ((env_id, algo), by_tag), row in zip(curves.items(), axes):
        start = starts[env_id, algo]
        end = max((int(steps[-1]) for seeds in by_tag["charts/episodic_return"].values() for steps, _ in seeds
                   if len(steps)), default=0)
        for ax, (tag, last) in zip(row, panels):
            title, ylabel = CURVE_TAGS[tag]
            frm = max(start, int(end * (1 - LAST_PART))) if last else start
            colors = {method: method_color(method) for method in by_tag[tag]}
            plot_mean_curves(ax, by_tag[tag], ylabel, f"{short_env(env_id)}, {algo.upper()}:\n{title}"
                             + (f", last {LAST_PART:.0%} of the steps" if last else ""), frm, colors)
            ax.set_xlabel(f"environment steps (from {frm:,}" + (f": the first {start:,} are random actions)" if start
                          and not last else ")") if frm else "environment steps")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle("Training episodes, mean +- one std over seeds", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)
    return 0


TERMS = {"mpr": "MPR", "vfc": "VFC", "curv": "Curv", "grad_norm": "||grad_a Q||", "vhv": "v^T grad2_aa Q v"}
TERMS_PART = 0.2  # critic_terms: each run's geometry/ and losses/ points over this last part of its steps, averaged


def publish_critic_terms(runs, events, saved_args, out):
    """critic_terms.csv, .md and .png: PAVE's terms on each run's first critic as the run logged them every
    --geometry-freq steps under geometry/ (measured by every script, trained on by the PAVE ones only: the same
    function and draws), averaged over the last TERMS_PART of its logged steps; per env and family the mean (std over
    seeds) per method, PAVE over its Base (geometric mean of the per-seed ratios, 95% t-interval on their logs); for a
    PAVE run its weighted terms lambda_i * term_i (losses/, per critic) over its TD loss (losses/qf1_loss) in the same
    window; the figure: each term against the step, the mean over seeds with a band from the lowest to the highest
    seed (on log axes a +- std band would run below 0). Skipped (0) when no run logged them."""
    import matplotlib.pyplot as plt

    from eval_smoothness import method_color
    from statistics_over_seeds import format_interval, ratio_interval

    def window(tag, run):  # (steps, values) of a tag, and its mean over the run's last TERMS_PART of steps
        steps, values = scalars(None, tag, events(run))
        if not len(steps):
            return steps, values, np.nan
        return steps, values, float(np.mean(values[steps >= steps[-1] * (1 - TERMS_PART)]))

    logged = [run for run in runs if "geometry/mpr" in events(run).Tags()["scalars"]]
    if not logged:
        print("note: no run logged geometry/ (PAVE's terms); critic_terms not written")
        return 0
    rows, curves = [], {}  # curves: (env, algo) -> term -> method -> [(steps, values) per seed]
    for run in logged:
        row = {"method": run.variant.name, "env_id": run.env_id, "seed": run.seed}
        for term in TERMS:
            steps, values, row[term] = window(f"geometry/{term}", run)
            curves.setdefault((run.env_id, algo_of(run)), {}).setdefault(term, {}).setdefault(
                run.variant.name, []).append((steps, values))
        lambdas = [saved_args[run].get(f"lambda{k}") for k in (1, 2, 3)]
        if "losses/mpr" in events(run).Tags()["scalars"] and None not in lambdas:  # PAVE's weighted terms / TD loss
            row["td_loss"] = window("losses/qf1_loss", run)[2]
            for weight, term in zip(lambdas, ("mpr", "vfc", "curv")):
                row[f"weighted_{term}"] = weight * window(f"losses/{term}", run)[2]
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_rows(out / "critic_terms.csv", [{key: row.get(key, "") for key in columns} for row in rows])

    lines = [f"PAVE's terms on each run's first critic (geometry/: --geometry-batch replay transitions every "
             f"--geometry-freq steps, measured by every script, trained on by PAVE's), each run's mean over the last "
             f"{TERMS_PART:.0%} of its logged steps; per method the mean (std over seeds, ddof 1); PAVE / Base: the "
             "geometric mean of the per-seed ratios with its 95% t-interval over seeds (on the logs).", ""]
    for env_id, algo in curves:
        group = [row for row in rows if (row["env_id"], family(row["method"])) == (env_id, algo)]
        lines += [f"**{short_env(env_id)}, {algo.upper()}**", "",
                  "| method | seeds | " + " | ".join(TERMS.values()) + " |", "|---" * (2 + len(TERMS)) + "|"]
        for method in dict.fromkeys(row["method"] for row in group):
            mine = [row for row in group if row["method"] == method]
            cells = [f"{np.mean([r[t] for r in mine]):.4g} ({np.std([r[t] for r in mine], ddof=1):.2g})"
                     if len(mine) > 1 else f"{mine[0][t]:.4g}" for t in TERMS]
            lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
        base = {row["seed"]: row for row in group if row["method"] == algo}
        pave = {row["seed"]: row for row in group if row["method"] == f"{algo}_pave"}
        paired = sorted(set(base) & set(pave))
        if paired:
            cells = []
            for term in TERMS:  # a ratio only where the term is positive on both sides of every seed
                positive = all(pave[s][term] > 0 < base[s][term] for s in paired)
                cells.append(format_interval(*ratio_interval([pave[s][term] / base[s][term] for s in paired]), 3)
                             if positive else "")
            lines.append(f"| {algo}_pave / {algo} | {len(paired)} | " + " | ".join(cells) + " |")
        weighted = [row for row in group if "td_loss" in row]
        if weighted:
            lines += ["", f"{algo}_pave's weighted terms on one critic over its TD loss (losses/, the same window): "
                      "lambda1 * MPR, lambda2 * VFC, lambda3 * Curv and their sum, each over losses/qf1_loss", "",
                      "| method | seed | TD loss | lambda1 MPR / TD | lambda2 VFC / TD | lambda3 Curv / TD "
                      "| sum / TD |",
                      "|---|---|---|---|---|---|---|"]
            for row in weighted:
                shares = [row[f"weighted_{t}"] / row["td_loss"] for t in ("mpr", "vfc", "curv")]
                lines.append(f"| {row['method']} | {row['seed']} | {row['td_loss']:.4g} | "
                             + " | ".join(f"{x:.3g}" for x in [*shares, sum(shares)]) + " |")
        lines.append("")
    (out / "critic_terms.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(len(curves), len(TERMS), figsize=(4.6 * len(TERMS), 3.8 * len(curves)), squeeze=False)
    for ((env_id, algo), by_term), row_axes in zip(curves.items(), axes):
        start = max(int(saved_args[run].get("learning_starts", 0)) for run in logged  # before it: an untrained critic
                    if (run.env_id, algo_of(run)) == (env_id, algo))
        for ax, (term, label) in zip(row_axes, TERMS.items()):
            plot_mean_curves(ax, by_term[term], label, f"{short_env(env_id)}, {algo.upper()}: {label}", start,
                             colors={method: method_color(method) for method in by_term[term]}, band="range")
            ax.set_xlabel(f"environment steps (from {start:,}, the first update)" if start else "environment steps")
            if term != "vhv":  # vhv can be negative; the others span decades over training
                ax.set_yscale("log")
            ax.legend(fontsize=7)
    fig.suptitle("PAVE's terms on the first critic (geometry/), mean over seeds, band from the lowest to the highest "
                 "seed", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "critic_terms.png", dpi=110)
    plt.close(fig)
    return 0


def publish_runs_table(runs, events, out, step=None):
    """runs.csv: per run its method, env_id, seed, steps (the last step of any logged scalar), wall_seconds and segments
    (training_seconds), sps_train (the last charts/SPS_train) and its run folder relative to the output folder."""
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "env_id", "seed", "steps", "wall_seconds", "segments", "sps_train", "run_folder"])
        for run in runs:
            logged = events(run)
            steps = [point.step for tag in logged.Tags()["scalars"] for point in logged.Scalars(tag)]
            if not steps:
                print(f"note: {run.name} logged no scalars; runs.csv has no steps, wall time or SPS for it")
            seconds, segments = training_seconds(run_folder(runs[run]), step)
            _, sps = scalars(None, "charts/SPS_train", logged)
            writer.writerow([run.variant.name, run.env_id, run.seed, max(steps, default=""),
                             f"{seconds:.1f}" if segments else "", segments, f"{sps[-1]:.1f}" if len(sps) else "",
                             os.path.relpath(run_folder(runs[run]), out)])
    return 0


DESCRIPTION = ("Regenerate every table and figure of a finished study from its checkpoints, TensorBoard events and "
               "logs, without training")


def add_arguments(parser):
    parser.add_argument("--study", type=Path, required=True,
                        help="the study folder (benchmark.py's --out), with runs/ and logs/")
    parser.add_argument("--out", type=Path, help="where the tables and figures go (default: the study folder's parent)")
    parser.add_argument("--episodes", type=int, default=10,
                        help="clean evaluation episodes per checkpoint (the paper's 10)")
    parser.add_argument("--noise", nargs="+", type=float, default=list(NOISE_LEVELS),
                        help="observation noise levels of Table 3, evaluated besides sigma 0 (default: 0.01 0.05 0.1)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="publish only the runs of these training seeds (default: every seed found), e.g. the "
                             "seeds that every method has finished")
    parser.add_argument("--more-episodes", type=int, default=100,
                        help="clean episodes per checkpoint of the start-state check in more_episodes/ (0: skip it)")
    parser.add_argument("--paper-tables", type=Path, default=REPO / "results" / "paper_tables.csv",
                        help="the paper's Tables 1-2 as CSV, for vs_paper.md (default: results/paper_tables.csv)")
    parser.add_argument("--paper-table3", type=Path, default=REPO / "results" / "paper_table3.csv",
                        help="the paper's Table 3 (observation noise) as CSV, for vs_paper_noise.md (default: "
                             "results/paper_table3.csv)")
    parser.add_argument("--released-starts", type=Path, default=REPO / "results" / "released_eval_seeds.txt",
                        help="env seeds of the released evaluation's start states, one per line ('#' comments), for "
                             "released_starts/ (default: results/released_eval_seeds.txt; 'none' skips it)")
    parser.add_argument("--qfield-seed", type=int,
                        help="training seed whose checkpoints' Q-gradient fields are drawn (default: the first "
                             "released seed, 178132)")
    parser.add_argument("--bootstrap-reps", type=int, default=BOOTSTRAP_REPS,
                        help=f"resamples of each stratified-bootstrap CI over seeds past 6 seeds (rliable; default "
                             f"{BOOTSTRAP_REPS}); up to 6 seeds every resample is taken")
    parser.add_argument("--step", type=int,
                        help="publish the runs as they were at this training step: their model checkpoints at it "
                             "(checkpoints/<variant>_step<N>.pt, or the final checkpoint of a run that ended there), "
                             "curves, steps, wall times and SPS cut there (a stage of a study run with --stages)")
    parser.add_argument("--env-ids", nargs="+", help="publish only these envs' runs (default: every env found)")


def check_args(args):
    """Nothing to check before running: publish_inputs checks every input, before anything is written."""


def parse_publish_args(argv):
    """publish's flags, parsed (argv without the command word)."""
    parser = argparse.ArgumentParser(prog=f"{PROG} publish", description=DESCRIPTION)
    add_arguments(parser)
    return parser.parse_args(argv)


PAPER_COLUMNS = ("method", "env_id", "return_mean", "return_std", "sm_mean", "sm_std")  # vs_paper's columns


def publish_inputs(args):
    """Every check of publish's input, made before anything is written: (problem, None) with one line naming the first
    problem found, or (None, inputs) with inputs = (every run found {Run: checkpoint or None}, the finished ones, the
    released start seeds, {finished run: the flags its checkpoint saved}, {finished run: its checkpoint's step})."""
    if not args.study.is_dir():
        return f"--study {args.study}: no such folder", None
    if not (args.study / "runs").is_dir():
        return f"--study {args.study}: no runs/ folder in it (a study folder as benchmark.py writes it)", None
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        return f"--out {args.out}: exists and is not a folder", None
    if args.episodes <= 0 or args.bootstrap_reps <= 0 or args.more_episodes < 0 or any(sigma < 0
                                                                                       for sigma in args.noise):
        return ("--episodes and --bootstrap-reps must be positive, --more-episodes and every --noise level "
                "non-negative"), None
    for flag, path, columns in (("--paper-tables", args.paper_tables, PAPER_COLUMNS),
                                ("--paper-table3", args.paper_table3, (*PAPER_COLUMNS, "obs_noise"))):
        if not path.is_file():
            return f"{flag} {path}: no such file", None
        missing = [c for c in columns if c not in next(csv.reader(path.read_text().splitlines()), [])]
        if missing:
            return f"{flag} {path}: no {', '.join(missing)} column (results/{path.name}'s layout)", None
    released_starts = []
    if str(args.released_starts) != "none":
        try:
            released_starts = [line.strip() for line in args.released_starts.read_text().splitlines()
                               if line.strip() and not line.startswith("#")]
        except OSError as error:
            return f"--released-starts {args.released_starts}: {error.strerror or error}", None
        if not released_starts or not all(seed.isdigit() for seed in released_starts):
            return f"--released-starts {args.released_starts}: not a list of non-negative integer env seeds", None
    if args.step is not None and args.step <= 0:
        return f"--step {args.step}: must be a positive training step", None
    runs = found_runs(args.study, args.step)
    if args.env_ids:
        unknown_envs = sorted(set(args.env_ids) - {run.env_id for run in runs})
        if unknown_envs:
            return f"--env-ids {' '.join(unknown_envs)}: no run of that env in {args.study / 'runs'}", None
        runs = {run: checkpoint for run, checkpoint in runs.items() if run.env_id in args.env_ids}
    unknown = sorted(set(args.seeds or ()) - {run.seed for run in runs})
    if unknown:
        return f"--seeds {' '.join(map(str, unknown))}: no run of " \
               f"{'that seed' if len(unknown) == 1 else 'those seeds'} in {args.study / 'runs'}", None
    if args.seeds:
        runs = {run: checkpoint for run, checkpoint in runs.items() if run.seed in args.seeds}
    finished = {run: checkpoint for run, checkpoint in runs.items() if checkpoint}
    if not finished:
        seeds = f" of seed(s) {' '.join(map(str, args.seeds))}" if args.seeds else ""
        if args.step is not None:
            return f"no run{seeds} with a model checkpoint at step {args.step} in {args.study / 'runs'}", None
        return (f"no finished run{seeds} in {args.study / 'runs'} ({len(runs)} found; a finished run has its "
                "<variant>.pt)"), None
    if args.qfield_seed is not None and args.qfield_seed not in {run.seed for run in finished}:
        return f"--qfield-seed {args.qfield_seed}: no finished run of that seed in {args.study / 'runs'}", None
    import torch  # here, not at the top: --help and the checks above need neither torch nor the tools

    import eval_smoothness

    saved_args, saved_steps = {}, {}
    for run, checkpoint in finished.items():  # a checkpoint every step can read, or a line naming the one that is not
        try:
            eval_smoothness.load_policy(checkpoint)
        except eval_smoothness.CheckpointError as error:
            return f"{checkpoint}: {error}", None
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        saved_args[run], saved_steps[run] = saved["args"], saved.get("global_step")
    return None, (runs, finished, released_starts, saved_args, saved_steps)


def publish(argv):
    """`python benchmark.py publish argv` (argv without the command word); returns the exit status."""
    return run(parse_publish_args(argv))


def run(args):
    """Publish with parsed flags: the module docstring; returns the exit status."""
    problem, inputs = publish_inputs(args)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    runs, finished, released_starts, saved_args, saved_steps = inputs
    learning_starts = {run: int(saved.get("learning_starts", 0)) for run, saved in saved_args.items()}
    out = args.out or args.study.resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    at_step = f" at step {args.step}" if args.step is not None else ""
    print(f"publish: {len(finished)} finished run(s){at_step} of {len(runs)} found in {args.study}; writing into {out}")
    for run, why in missing_runs(runs, args.study, args.step):
        print(f"missing: {run.name} ({why})")

    import matplotlib  # here, not at the top: --help and bad input need neither it nor torch

    matplotlib.use("Agg")
    import eval_smoothness

    def tool(name, argv):  # a tool's CLI (plot_qfield, critic_geometry), imported here: a problem is one failed step
        return importlib.import_module(name).main(argv)

    qfield_seed = eval_smoothness.RELEASED_SEEDS[0] if args.qfield_seed is None else args.qfield_seed
    released = eval_smoothness.RELEASED_SEEDS

    def order(run):  # the tables' order: env, TD3 then SAC, Base CAPS Grad-CAPS ASAP PAVE others, released seeds first
        return (run.env_id, *method_key(run.variant.name),
                released.index(run.seed) if run.seed in released else len(released),
                run.seed)

    finished = {run: finished[run] for run in sorted(finished, key=order)}
    checkpoints = list(map(str, finished.values()))
    loaded, evaluated = {}, {}  # evaluated: {evaluation: its folder} once it succeeded here (not an older run's)

    def events(run):  # each run's TensorBoard events, read once for the curves and the runs table
        if run not in loaded:
            loaded[run] = run_events(run_folder(finished[run]))
            loaded[run] = loaded[run] if args.step is None else EventsUpTo(loaded[run], args.step)
        return loaded[run]

    def evaluate(name, folder, flags):  # eval_smoothness.py's CLI on every checkpoint into folder; kept if it succeeded
        status = eval_smoothness.main([*checkpoints, *flags, "--out-dir", str(folder), "--no-progress-bar"])
        if not status:
            evaluated[name] = folder
        return status

    def evaluate_tables():  # the table (clean and noisy) and, if it succeeded, the released start states
        status = evaluate("table", out, ["--episodes", str(args.episodes), "--noise", "0", *map(str, args.noise),
                                         "--plot"])
        return status or (evaluate("released_starts", out / "released_starts", ["--env-seeds", *released_starts])
                          if released_starts else 0)

    steps = [("evaluation (eval_smoothness.py: the tables, released start states)", evaluate_tables)]
    if args.more_episodes:
        steps.append((f"start-state check, {args.more_episodes} episodes (eval_smoothness.py)",
                      lambda: evaluate("more_episodes", out / "more_episodes",
                                       ["--episodes", str(args.more_episodes)])))
    steps += [("statistics over seeds (rliable): intervals.md, paired.md, vs_paper.md, vs_paper_noise.md, per_seed.md, "
               "return_vs_sm.png",
               lambda: publish_statistics(out, evaluated, args.paper_tables, args.bootstrap_reps, args.paper_table3)),
              ("learning curves", lambda: publish_learning_curves(finished, events, learning_starts, out)),
              ("PAVE's terms along training (TensorBoard geometry/, losses/): critic_terms.md, critic_terms.png",
               lambda: publish_critic_terms(finished, events, saved_args, out))]
    for algo in dict.fromkeys(algo_of(run) for run in finished):
        family_checkpoints = [str(path) for run, path in finished.items() if algo_of(run) == algo
                              and run.seed == qfield_seed]
        if not family_checkpoints:
            print(f"note: no {algo} checkpoint of seed {qfield_seed}; qfield_{algo}.png not drawn (--qfield-seed "
                  "picks the seed)")
            continue
        steps.append((f"Q-gradient field of {algo} (plot_qfield.py)", lambda c=family_checkpoints,
                      a=algo: tool("plot_qfield",
            [*c, "--sweep", "visited", "--out", str(out / f"qfield_{a}.png"),
             "--csv", str(out / f"qfield_{a}.csv")])))
    geometry = []  # the published checkpoints' geometry/checkpoints.csv, once written here: --during reuses its rows

    def critic_geometry():
        status = tool("critic_geometry", [*checkpoints, "--episodes", str(args.episodes), "--out-dir",
                                          str(out / "geometry")])
        geometry.extend([] if status else [str(out / "geometry" / "checkpoints.csv")])
        return status

    steps.append(("critic geometry (critic_geometry.py)", critic_geometry))
    earlier = []  # each run's model checkpoints before its published step (a copy at that step is the same model)
    for run, published in finished.items():
        published_step = saved_steps[run] if args.step is None else args.step
        for path in sorted(Path(run_folder(published), "checkpoints").glob(f"{run.variant.name}_step*.pt")):
            if published_step is None or int(path.stem.rpartition("_step")[2]) < published_step:
                earlier.append(str(path))

    def during():  # the published checkpoints' rows from geometry/ when it succeeded here, else evaluated again
        return tool("critic_geometry", ["--during", *earlier, *(geometry or checkpoints), "--episodes",
                                        str(args.episodes), "--out-dir", str(out / "during")])

    if earlier:  # along training needs a step before the published one
        steps.append(("critic geometry along training (critic_geometry.py --during)", during))
    steps.append(("runs table", lambda: publish_runs_table(finished, events, out, args.step)))

    def files():  # what publish writes: files in --out and its more_episodes/, released_starts/, geometry/, during/
        return [path for folder in (out, out / "more_episodes", out / "released_starts",
                                    out / "geometry", out / "during") if folder.is_dir()
                for path in folder.iterdir() if path.is_file()]

    failed = []
    for name, work in steps:
        before = {path: path.stat().st_mtime_ns for path in files()}
        try:
            status, problem = work(), "its messages are above"
        except SystemExit as stop:  # a tool's own exit (tyro on bad flags)
            status, problem = (stop.code if isinstance(stop.code,
                                                       int) or stop.code is None else 1), "its messages are above"
        except Exception as error:
            status, problem = 1, f"{type(error).__name__}: {error}"
        for path in sorted(p for p in files() if before.get(p) != p.stat().st_mtime_ns):
            print(f"wrote {path}")
        if status:
            failed.append(name)
            print(f"{PROG}: error: publish: {name} failed (exit status {status}; {problem})", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(steps)} step(s) failed: {', '.join(failed)}")
        return 1
    print(f"published {len(finished)} run(s){at_step} into {out}")
    return 0




if __name__ == "__main__":
    sys.exit(publish(sys.argv[1:]))
