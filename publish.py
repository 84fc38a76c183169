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
comparison with the paper, per-seed tables, learning curves, Q-gradient fields, critic geometry and the runs' wall time
and SPS; docs/studies.md lists every file and how it is made. It prints one line per file written; exit status 0 when
every step succeeded, 1 when any failed (one line each, the others still run), 2 on bad input.
"""

import argparse
import csv
import importlib
import os
import sys
from pathlib import Path

import numpy as np

from benchmark_common import (
    METHODS,
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


def write_rows(path, rows):
    """A CSV file of dicts (at least one), their keys as the header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# statistics over training seeds: rliable's interval estimates, PAVE's paired comparisons
METRICS = {"return": ("re", 1, 2), "sm": ("sm", -1, 3)}  # metric -> (short name, +1 if higher is better, decimals)
BOOTSTRAP_REPS = 2000  # publish's default resamples per bootstrap CI (rliable's 50 000 would take minutes on 2 cores)
BOOTSTRAP_SEED = 0  # rliable resamples with numpy's global generator: seeded per method, so no CI depends on the others
CONFIDENCE = 0.95
# how the tables say which bootstrap their IQM intervals come from (interval_estimates)
BOOTSTRAP_TEXT = "exact, all n^n resamples of n seeds up to 6 seeds, else {reps} seeded resamples"
EXACT_RESAMPLES = 100_000  # up to this many (n**n for n seeds), the bootstrap enumerates every resample
EVALUATIONS = ("table", "more_episodes", "released_starts")  # publish's evaluations: --out itself, then its two folders




def method_key(method):
    """Sort key of a method (run name): TD3 then SAC; Base, CAPS, Grad-CAPS, ASAP, PAVE, a renamed variant (td3-relu)
    right after its script's own name; other scripts last."""
    script, algo = method.split("-")[0], family(method)
    suffix = script[len(algo):]
    return (("td3", "sac", algo).index(algo), algo, list(METHODS).index(suffix) if suffix in METHODS else len(METHODS),
            method)


def evaluation_label(evaluation, sigma, episodes):
    """How the statistics tables name one evaluation: "10 episodes", "20 episodes, sigma 0.05", "100 episodes
    (more_episodes/)", "50 released start states"."""
    if evaluation == "released_starts":
        return f"{episodes} released start states"
    return f"{episodes} episodes" + (f", sigma {sigma:g}" if sigma else "") + (" (more_episodes/)"
                                                                               if evaluation == "more_episodes" else "")


def seed_means(folder):
    """Per-seed means of an evaluation folder's episodes.csv (eval_smoothness.py's): one dict per method, env, noise
    level and training seed (method, env_id, obs_noise, seed, episodes, return, sm, action_change), in file order."""
    groups = {}
    for row in csv.DictReader((folder / "episodes.csv").read_text().splitlines()):
        groups.setdefault((row["method"], row["env_id"], float(row["obs_noise"]), int(row["train_seed"])),
                          []).append(row)
    return [{"method": method, "env_id": env_id, "obs_noise": sigma, "seed": seed, "episodes": len(rows),
             **{key: float(np.mean([float(r[key]) for r in rows])) for key in ("return", "sm", "action_change")}}
            for (method, env_id, sigma, seed), rows in groups.items()]


def by_cell(rows):
    """{(env_id, method, obs_noise): {seed: row}} of seed_means rows."""
    cells = {}
    for row in rows:
        cells.setdefault((row["env_id"], row["method"], row["obs_noise"]), {})[row["seed"]] = row
    return cells


def iqm_per_column(scores):
    """rliable's IQM (metrics.aggregate_iqm: the 25% trimmed mean) of each column of scores (runs x columns), in one
    vectorized call per bootstrap resample (aggregate_iqm itself pools all columns)."""
    from scipy.stats import trim_mean

    return trim_mean(scores, proportiontocut=0.25, axis=0)


def every_resample(n):
    """All n**n resamples of n seeds with replacement, as index rows (n**n, n): the bootstrap's whole distribution."""
    return np.array(np.meshgrid(*[np.arange(n)] * n, indexing="ij")).reshape(n, -1).T


def interval_estimates(columns, reps=BOOTSTRAP_REPS):
    """{key: (IQM, CI low, CI high)} of columns = {key: per-seed values}: the IQM over seeds with its
    stratified-bootstrap CI (percentile method, CONFIDENCE coverage, each column resampled on its own); the CI is
    (nan, nan) under two seeds. With n seeds and n**n <= EXACT_RESAMPLES (up to 6 seeds) the CI is exact: every one of
    the n**n resamples of the seeds with replacement, no random draw (5 seeds: 3125). With more seeds, rliable's
    get_interval_estimates with `reps` resamples, seeded; columns with as many seeds share one bootstrap."""
    from rliable import library as rly
    from rliable import metrics

    estimates = {}
    for n in sorted({len(values) for values in columns.values()}):
        keys = [key for key, values in columns.items() if len(values) == n]
        scores = np.array([columns[key] for key in keys], dtype=float).T
        low = high = np.full(len(keys), np.nan)
        if 2 <= n and n**n <= EXACT_RESAMPLES:
            from scipy.stats import trim_mean

            iqms = trim_mean(scores[every_resample(n)], proportiontocut=0.25, axis=1)  # (n**n, columns)
            low, high = np.percentile(iqms, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)], axis=0)
        elif n >= 2:
            state = np.random.get_state()
            np.random.seed(BOOTSTRAP_SEED)
            _, intervals = rly.get_interval_estimates({"iqm": scores}, iqm_per_column, reps=reps,
                                                      confidence_interval_size=CONFIDENCE)
            np.random.set_state(state)  # leave numpy's global generator as the caller had it
            low, high = intervals["iqm"]
        for k, key in enumerate(keys):
            estimates[key] = (float(metrics.aggregate_iqm(scores[:, [k]])), float(low[k]), float(high[k]))
    return estimates


def seed_statistics(per_seed, reps=BOOTSTRAP_REPS):
    """{(evaluation, env_id, method, obs_noise, metric): (IQM, CI low, CI high)} of return and sm over the training
    seeds, from per_seed = {evaluation: seed_means rows}; one bootstrap per env and method (interval_estimates)."""
    columns = {}  # (env, method) -> {key: per-seed values}
    for evaluation, rows in per_seed.items():
        for (env_id, method, sigma), seeds in by_cell(rows).items():
            for metric in METRICS:
                columns.setdefault((env_id, method), {})[evaluation, env_id, method, sigma, metric] = [
                    row[metric] for row in seeds.values()]
    return {key: value for method_columns in columns.values()
            for key, value in interval_estimates(method_columns, reps).items()}


def t_interval(values):
    """(low, high): the CONFIDENCE t-interval of the mean of values (scipy's t-test); (nan, nan) under two."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:  # no spread: the t statistic is undefined and the interval is the value itself
        return float(values[0]), float(values[0])
    interval = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


def paired_comparisons(per_seed):
    """PAVE (<algo>_pave) against every other method of its env and algorithm family, per evaluation and noise level,
    over the training seeds both have (per_seed = {evaluation: seed_means rows}). Per metric: the per-seed difference
    PAVE minus the other, its mean and CONFIDENCE t-interval over seeds, the seeds on which PAVE is better (lower sm,
    higher return), rliable's probability of improvement P(PAVE better) (a random seed of PAVE against a random seed of
    the other); for sm also the geometric mean of the per-seed ratios PAVE / other with its t-interval (on the logs).
    One dict per comparison; a method without a seed in common with PAVE is left out with a note."""
    from rliable import metrics

    comparisons = []
    for evaluation, rows in per_seed.items():
        cells = by_cell(rows)
        for (env_id, pave, sigma), mine in cells.items():
            if pave != f"{family(pave)}_pave":
                continue
            others = [key for key in cells
                      if (key[0], key[2]) == (env_id, sigma) and family(key[1]) == family(pave) and key[1] != pave]
            for key in sorted(others, key=lambda key: method_key(key[1])):
                theirs = cells[key]
                seeds = [seed for seed in mine if seed in theirs]
                if not seeds:
                    print(f"note: {key[1]} has no training seed in common with {pave} ({env_id}); not compared")
                    continue
                row = {"evaluation": evaluation, "env_id": env_id, "obs_noise": sigma,
                       "episodes": mine[seeds[0]]["episodes"], "pave": pave, "other": key[1], "seeds": len(seeds),
                       "pave_seeds": len(mine), "other_seeds": len(theirs)}
                values = {metric: [np.array([side[seed][metric] for seed in seeds]) for side in (mine, theirs)]
                          for metric in METRICS}
                for metric, (_, better, _) in METRICS.items():
                    x, y = values[metric]
                    row[f"{metric}_diff"] = float(np.mean(x - y))
                    row[f"{metric}_diff_low"], row[f"{metric}_diff_high"] = t_interval(x - y)
                    row[f"{metric}_pave_better_seeds"] = int(np.sum(better * (x - y) > 0))
                    row[f"{metric}_probability_of_improvement"] = float(
                        metrics.probability_of_improvement(better * x[:, None], better * y[:, None]))
                log_ratios = np.log(values["sm"][0] / values["sm"][1])
                row["sm_ratio_geomean"] = float(np.exp(np.mean(log_ratios)))
                row["sm_ratio_low"], row["sm_ratio_high"] = (float(np.exp(bound)) for bound in t_interval(log_ratios))
                comparisons.append(row)
    return comparisons


def format_interval(value, low, high, digits, sign=""):
    """"value [low, high]" to `digits` decimals (sign "+": signed), or the value alone when there is no interval."""
    text = f"{value:{sign}.{digits}f}"
    return text if np.isnan(low) else f"{text} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def verdict(low, high):
    """A difference's reading: "tie" when its interval includes 0, else on which side PAVE is; "1 seed" without one."""
    return "1 seed" if np.isnan(low) else "PAVE lower" if high < 0 else "PAVE higher" if low > 0 else "tie"


def publish_paired(out, comparisons):
    """paired.md and paired.csv: paired_comparisons' rows, a table per env and PAVE script."""
    if not comparisons:
        print("note: no PAVE run with another method of its family; paired.md not written")
        return
    write_rows(out / "paired.csv", comparisons)
    lines = ["PAVE against each other method of its family, paired by training seed: per seed, PAVE's number minus the "
             "other's (the two checkpoints of one seed on the same episodes), then over the seeds both have: the mean "
             "difference with its 95% t-interval over seeds, where a difference whose interval includes 0 is a tie; "
             "the seeds on which PAVE is better (lower sm, higher return); rliable's probability of improvement "
             "P(PAVE better), the chance that a random seed of PAVE beats a random seed of the other (0.5: neither); "
             "and PAVE's sm over the other's as the geometric mean of the per-seed ratios with its 95% t-interval "
             "over seeds (on the logs). A method with fewer finished seeds is compared on the seeds it has (seeds: "
             "both, PAVE's, the other's)."]
    header = ["evaluation", "PAVE vs", "seeds", "sm: PAVE - other, mean [95% t-interval over seeds]",
              "sm: seeds PAVE lower",
              "sm: P(PAVE lower)", "sm: PAVE / other, geometric mean [95% t-interval over seeds]",
              "re: PAVE - other, mean [95% t-interval over seeds]", "re: seeds PAVE higher", "re: P(PAVE higher)"]
    for env_id, pave in dict.fromkeys((row["env_id"], row["pave"]) for row in comparisons):
        lines += ["", f"**{env_id}: {pave} minus each other {family(pave).upper()} method**", "",
                  "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in (row for row in comparisons if (row["env_id"], row["pave"]) == (env_id, pave)):
            seeds = str(row["seeds"]) if row["pave_seeds"] == row["other_seeds"] == row["seeds"] else \
                f"{row['seeds']} ({row['pave_seeds']}, {row['other_seeds']})"
            cells = [evaluation_label(row["evaluation"], row["obs_noise"], row["episodes"]), row["other"], seeds]
            for metric in ("sm", "return"):  # the header's order
                low, high, digits = row[f"{metric}_diff_low"], row[f"{metric}_diff_high"], METRICS[metric][2]
                cells += [f"{format_interval(row[f'{metric}_diff'], low, high, digits, '+')} {verdict(low, high)}",
                          f"{row[f'{metric}_pave_better_seeds']} of {row['seeds']}",
                          f"{row[f'{metric}_probability_of_improvement']:.2f}"]
                if metric == "sm":
                    cells.append(format_interval(row["sm_ratio_geomean"], row["sm_ratio_low"], row["sm_ratio_high"], 2))
            lines.append("| " + " | ".join(cells) + " |")
    (out / "paired.md").write_text("\n".join(lines) + "\n")


def publish_intervals(out, evaluated, per_seed, estimates, reps):
    """intervals.md and intervals.csv: per evaluation, env, method and noise level, return and sm as the evaluation's
    table.csv has them (mean, std over the pooled episodes, std over the seed means) beside the IQM over seeds with its
    95% stratified-bootstrap CI (seed_statistics)."""
    rows = []
    for evaluation, folder in evaluated.items():
        table = {(r["env_id"], r["method"], float(r["obs_noise"])): r
                 for r in csv.DictReader((folder / "table.csv").read_text().splitlines())}
        for (env_id, method, sigma), seeds in sorted(by_cell(per_seed[evaluation]).items(),
                                                     key=lambda item: (item[0][0], item[0][2], method_key(item[0][1]))):
            row = {"evaluation": evaluation, "env_id": env_id, "method": method, "obs_noise": sigma,
                   "seeds": len(seeds),
                   "episodes": next(iter(seeds.values()))["episodes"]}
            for metric in METRICS:
                iqm, low, high = estimates[evaluation, env_id, method, sigma, metric]
                row.update({f"{metric}_mean": float(table[env_id, method, sigma][f"{metric}_mean"]),
                            f"{metric}_std": float(table[env_id, method, sigma][f"{metric}_std"]),
                            f"{metric}_seed_std": float(table[env_id, method, sigma][f"{metric}_seed_std"]),
                            f"{metric}_iqm": iqm, f"{metric}_iqm_low": low, f"{metric}_iqm_high": high})
            rows.append(row)
    write_rows(out / "intervals.csv", rows)
    lines = ["Return (re) and sm per method: the mean with its std over the pooled episodes of all seeds (as "
             "table.md's clean rows show it; ddof 0), the std over the seeds' means (as its noisy rows show it; ddof "
             "1, as the t-intervals of paired.md), and the interquartile mean (IQM) over the seeds' means with its 95% "
             f"stratified-bootstrap confidence interval over seeds ({BOOTSTRAP_TEXT.format(reps=reps)}; none under 2 "
             "seeds). seeds: the finished training seeds pooled; episodes: per seed."]
    header = ["evaluation", "method", "seeds"] + [f"{name}: {column}" for name, _, _ in METRICS.values() for column in (
        "mean (std over pooled episodes)", "std over seed means", "IQM over seeds [95% bootstrap CI over seeds]")]
    for env_id in dict.fromkeys(row["env_id"] for row in rows):
        lines += ["", f"**{env_id}**", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for row in (row for row in rows if row["env_id"] == env_id):
            cells = [evaluation_label(row["evaluation"], row["obs_noise"], row["episodes"]), row["method"],
                     str(row["seeds"])]
            for metric, (_, _, digits) in METRICS.items():
                cells += [f"{row[f'{metric}_mean']:.{digits}f} ({row[f'{metric}_std']:.{digits}f})",
                          f"{row[f'{metric}_seed_std']:.{digits}f}" if row["seeds"] > 1 else "-",  # none of one seed
                          format_interval(row[f"{metric}_iqm"], row[f"{metric}_iqm_low"], row[f"{metric}_iqm_high"],
                                          digits)]
            lines.append("| " + " | ".join(cells) + " |")
    (out / "intervals.md").write_text("\n".join(lines) + "\n")


def plot_return_vs_sm(rows, path):
    """return_vs_sm.png: a panel per env (row) and algorithm family (column), one point per training seed (its clean
    evaluation's mean return against its mean sm), a marker per method in its method_color (hollow: a -relu run), the
    same return range in every panel of an env, sm on a log axis (a chattering seed sits an order of magnitude above
    the others) with a tick at 1, 2, 3, 4 and 5 of every decade."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    panels = {}  # (env, algo) -> method -> [seed rows]
    for row in sorted(rows, key=lambda row: (row["env_id"], method_key(row["method"]))):
        panels.setdefault((row["env_id"], family(row["method"])), {}).setdefault(row["method"], []).append(row)
    envs, algos = list(dict.fromkeys(env for env, _ in panels)), list(dict.fromkeys(algo for _, algo in panels))
    from eval_smoothness import method_color

    # one y-range per env row, so that the return gaps of one family are seen beside the other's, never blown up alone
    fig, axes = plt.subplots(len(envs), len(algos), figsize=(6.5 * len(algos), 4.8 * len(envs)), squeeze=False,
                             sharey="row")
    for ax in axes.flat:
        ax.axis("off")
    for (env_id, algo), methods in panels.items():
        ax = axes[envs.index(env_id), algos.index(algo)]
        ax.axis("on")
        for k, (method, seeds) in enumerate(methods.items()):
            color = method_color(method)
            ax.scatter([r["sm"] for r in seeds], [r["return"] for r in seeds], marker="osD^vPX*<>"[k % 10], s=50,
                       facecolors="none" if method.endswith("-relu") else color, edgecolors=color,
                       label=f"{method} ({len(seeds)} seed{'s' * (len(seeds) > 1)})")
        episodes = next(iter(methods.values()))[0]["episodes"]
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 4, 5)))  # plain ticks 0.2, 0.3, 0.4, 0.5, 1
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="y", labelleft=True)
        ax.set(title=f"{short_env(env_id)}, {algo.upper()}: one point per training seed (same y-range per row)",
               xlabel=f"sm, mean of {episodes} clean episodes (lower is smoother; log scale)",
               ylabel=f"return, mean of {episodes} clean episodes")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def publish_paper_comparison(out, paper_csv, released_table=None, estimates=None, noisy=False):
    """vs_paper.md and vs_paper.csv: each clean row of out/table.csv (eval_smoothness.py's, pooled episodes) whose
    method and env are in the paper's Tables 1-2 (paper_csv: results/paper_tables.csv, the tables as printed, env ids
    mapped to Gymnasium 1.x), beside the paper's numbers, with each sm as a ratio to its family's Base sm (same env); a
    -relu run (the paper text's ReLU Base) beside its script's row of the paper. With released_table (the same
    evaluation on the released start states), its return and sm too; with estimates (seed_statistics), our IQM over
    seeds and its CI. Ours are printed with the paper's digits. noisy: vs_paper_noise.md and .csv instead, each noisy
    row beside Table 3's at the same sigma (paper_csv: results/paper_table3.csv), sm / Base at that sigma."""
    def read(path):  # {(method, env_id, sigma): row}, the clean rows only or, noisy, the noisy ones
        rows = csv.DictReader(Path(path).read_text().splitlines())
        keyed = {(row["method"], row["env_id"], float(row.get("obs_noise", 0))): row for row in rows}
        return {key: row for key, row in keyed.items() if (key[2] > 0) == noisy}

    paper, ours = read(paper_csv), read(out / "table.csv")
    released = read(released_table) if released_table else {}
    order = list(paper)  # the paper's: TD3 then SAC; Base, CAPS, Grad-CAPS, ASAP, PAVE
    tables, stem = ("Table 3", "vs_paper_noise") if noisy else ("Tables 1-2", "vs_paper")

    def in_paper(key):  # the paper's row for one of ours: the same method, or the script a -relu run ran
        return key[0].removesuffix("-relu"), *key[1:]

    keys = sorted((key for key in ours if in_paper(key) in paper),
                  key=lambda key: (key[1], order.index(in_paper(key)), key[0]))
    if not keys:
        print(f"note: no method and env of {out / 'table.csv'} is in the paper's {tables}; {stem}.md not written")
        return

    def sm_to_base(table, method, env_id, sigma):  # sm over the same env's Base sm (td3 or sac), None without it
        base = table.get((family(method), env_id, sigma))
        return float(table[method, env_id, sigma]["sm_mean"]) / float(base["sm_mean"]) if base else None

    def cell(row, paper_row, side, name):  # "mean (std)" of one side, with the paper's digits for that number
        if side == "paper":
            return f"{paper_row[f'{name}_mean']} ({paper_row[f'{name}_std']})"
        digits = len(paper_row[f"{name}_mean"].partition(".")[2])
        return f"{row[f'{side}_{name}_mean']:.{digits}f} ({row[f'{side}_{name}_std']:.{digits}f})"

    rows, lines = [], [
        f"Ours beside the paper's {tables}: "
        + ("Gaussian noise of std sigma on every observation the policy sees, " if noisy else "clean evaluation, ")
        + "mean (std over the pooled episodes of all seeds; the paper: 5 seeds x 10 episodes); sm / Base is a method's "
        "sm over its family's Base sm on the same env" + (" and sigma" if noisy else " (a -relu run, the paper text's "
                                                           "ReLU Base, is beside the paper's Base)")
        + ("; IQM: the interquartile mean over our seeds' means with its 95% stratified-bootstrap CI over seeds"
           if estimates else "")
        + ("; \"released starts\": ours on the released evaluation's start states (released_starts/)."
           if released else "."),
        "", "| env | method |" + (" sigma |" if noisy else "") + " seeds | re (ours) | re (paper) | sm (ours) "
        "| sm (paper) | sm / Base (ours) | sm / Base (paper) |"
        + (" re IQM over seeds [95% CI] (ours) | sm IQM over seeds [95% CI] (ours) |" if estimates else "")
        + (" re (ours, released starts) | sm (ours, released starts) |" if released else ""),
        "|---" * (9 + noisy + 2 * bool(estimates) + 2 * bool(released)) + "|"]
    for key in keys:
        (method, env_id, sigma), mine, theirs = key, ours[key], paper[in_paper(key)]
        row = {"method": method, "env_id": env_id, **({"obs_noise": sigma} if noisy else {}),
               "seeds": int(mine["seeds"]), "episodes": int(mine["episodes"]),
               **{f"{side}_{name}_{stat}": float(source[f"{name}_{stat}"])
                  for side, source in (("ours", mine), ("paper", theirs))
                  for name in ("return", "sm") for stat in ("mean", "std")},
               "ours_sm_to_base": sm_to_base(ours, *key), "paper_sm_to_base": sm_to_base(paper, *in_paper(key))}
        if estimates:
            row.update({f"ours_{name}_iqm{suffix}": value for name in ("return", "sm") for suffix, value in
                        zip(("", "_low", "_high"), estimates["table", env_id, method, sigma, name])})
        if released:
            row.update({f"released_starts_{name}_{stat}": float(released[key][f"{name}_{stat}"])
                        for name in ("return", "sm") for stat in ("mean", "std")})
        rows.append(row)
        cells = [cell(row, theirs, side, name) for name in ("return", "sm") for side in ("ours", "paper")]
        cells += ["" if row[r] is None else f"{row[r]:.2f}" for r in ("ours_sm_to_base", "paper_sm_to_base")]
        cells += [format_interval(*(row[f"ours_{name}_iqm{suffix}"] for suffix in ("", "_low", "_high")),
                                  len(theirs[f"{name}_mean"].partition(".")[2]))
                  for name in ("return", "sm")] if estimates else []
        cells += [cell(row, theirs, "released_starts", name) for name in ("return", "sm")] if released else []
        lines.append(f"| {short_env(env_id)} | {method} |" + (f" {sigma:g} |" if noisy else "")
                     + f" {row['seeds']} | {' | '.join(cells)} |")
    write_rows(out / f"{stem}.csv", rows)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def publish_per_seed(out, rows, estimates, reps):
    """per_seed.csv and per_seed.md: each run's clean evaluation on its own (rows: seed_means of the table's clean
    episodes: return, sm, action change), the spread that the pooled tables fold in; per method also the mean with its
    std over the seeds' means and the IQM over seeds with its 95% bootstrap CI (estimates: seed_statistics)."""
    rows = [row for row in rows if row["obs_noise"] == 0]
    write_rows(out / "per_seed.csv", [{key: value for key, value in row.items() if key != "obs_noise"} for row in rows])
    lines = []
    for env_id in dict.fromkeys(row["env_id"] for row in rows):
        seeds = list(dict.fromkeys(row["seed"] for row in rows if row["env_id"] == env_id))  # released first
        cells = by_cell(row for row in rows if row["env_id"] == env_id)
        lines += [f"{env_id}: return / sm of each training seed's checkpoint (mean over its clean episodes); per "
                  "method the mean (std over its seeds' means, ddof 1) and the IQM over its seeds [95% bootstrap CI "
                  f"over seeds: {BOOTSTRAP_TEXT.format(reps=reps)}]", "",
                  "| method | " + " | ".join(map(str, seeds)) + " | mean (std over seeds) | IQM over seeds [95% CI] |",
                  "|---" * (len(seeds) + 3) + "|"]
        for (_, method, sigma), mine in sorted(cells.items(), key=lambda item: method_key(item[0][1])):
            spread = " / ".join(f"{np.mean(values):.{digits}f}"
                                + (f" ({np.std(values, ddof=1):.{digits}f})" if len(values) > 1 else "")
                                for metric, (_, _, digits) in METRICS.items()
                                for values in [[row[metric] for row in mine.values()]])
            iqm = " / ".join(format_interval(*estimates["table", env_id, method, sigma, metric], digits)
                             for metric, (_, _, digits) in METRICS.items())
            lines.append(f"| {method} | " + " | ".join(f"{mine[seed]['return']:.1f} / {mine[seed]['sm']:.3f}"
                                                       if seed in mine
                                                       else "" for seed in seeds) + f" | {spread} | {iqm} |")
        lines.append("")
    (out / "per_seed.md").write_text("\n".join(lines))


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


def publish_statistics(out, evaluated, paper_tables, reps, paper_table3=None):
    """Publish's statistics step: intervals, paired, vs_paper (and vs_paper_noise with paper_table3), per_seed and
    return_vs_sm from the per-seed means of the
    evaluations that succeeded in this publish (evaluated = {evaluation: its folder}; never an older publish's files);
    returns the exit status (1 without the table's evaluation)."""
    if "table" not in evaluated:
        print("statistics: not computed, the evaluation failed")
        return 1
    per_seed = {name: seed_means(evaluated[name]) for name in EVALUATIONS if name in evaluated}
    estimates = seed_statistics(per_seed, reps)
    publish_intervals(out, {name: evaluated[name] for name in per_seed}, per_seed, estimates, reps)
    publish_paired(out, paired_comparisons(per_seed))
    released_table = evaluated["released_starts"] / "table.csv" if "released_starts" in evaluated else None
    publish_paper_comparison(out, paper_tables, released_table, estimates)
    if paper_table3 is not None:
        publish_paper_comparison(out, paper_table3, estimates=estimates, noisy=True)
    publish_per_seed(out, per_seed["table"], estimates, reps)
    plot_return_vs_sm([row for row in per_seed["table"] if row["obs_noise"] == 0], out / "return_vs_sm.png")
    return 0


PAPER_COLUMNS = ("method", "env_id", "return_mean", "return_std", "sm_mean", "sm_std")  # vs_paper's columns


def publish_inputs(args):
    """Every check of publish's input, made before anything is written: (problem, None) with one line naming the first
    problem found, or (None, inputs) with inputs = (every run found {Run: checkpoint or None}, the finished ones, the
    released start seeds, {finished run: its --learning-starts})."""
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

    learning_starts = {}
    for run, checkpoint in finished.items():  # a checkpoint every step can read, or a line naming the one that is not
        try:
            eval_smoothness.load_policy(checkpoint)
        except eval_smoothness.CheckpointError as error:
            return f"{checkpoint}: {error}", None
        learning_starts[run] = int(torch.load(checkpoint, map_location="cpu",
                                              weights_only=True)["args"].get("learning_starts", 0))
    return None, (runs, finished, released_starts, learning_starts)


def publish(argv):
    """`python benchmark.py publish argv` (argv without the command word); returns the exit status."""
    return run(parse_publish_args(argv))


def run(args):
    """Publish with parsed flags: the module docstring; returns the exit status."""
    problem, inputs = publish_inputs(args)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    runs, finished, released_starts, learning_starts = inputs
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
              ("learning curves", lambda: publish_learning_curves(finished, events, learning_starts, out))]
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
    steps.append(("critic geometry (critic_geometry.py)", lambda: tool("critic_geometry",
        [*checkpoints, "--episodes", str(args.episodes), "--out-dir", str(out / "geometry")])))
    steps.append(("runs table", lambda: publish_runs_table(finished, events, out, args.step)))

    def files():  # what publish writes: files in --out and its more_episodes/, released_starts/, geometry/ folders
        return [path for folder in (out, out / "more_episodes", out / "released_starts",
                                    out / "geometry") if folder.is_dir()
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
