"""Statistics over training seeds for benchmark.py publish (publish.py runs the steps, this file computes and writes
what they show): per-seed means of eval_smoothness.py's episodes, rliable's IQM with stratified-bootstrap intervals over
seeds, PAVE's paired per-seed comparisons with t-intervals, our numbers beside the paper's Tables 1-2 and Table 3, the
per-seed tables and return against sm. docs/studies.md lists the files and what each holds."""

import csv
from pathlib import Path

import numpy as np

from benchmark_common import METHODS, family, short_env


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
                row["sm_ratio_geomean"], row["sm_ratio_low"], row["sm_ratio_high"] = ratio_interval(
                    values["sm"][0] / values["sm"][1])
                comparisons.append(row)
    return comparisons


def ratio_interval(ratios):
    """(geometric mean, low, high) of positive per-seed ratios: the mean of their logs and its t-interval, mapped
    back."""
    log_ratios = np.log(np.asarray(ratios, dtype=float))
    return tuple(float(np.exp(value)) for value in (np.mean(log_ratios), *t_interval(log_ratios)))


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
        + ("observation noise of level sigma, Table 3's protocol (table.md says how it is drawn), " if noisy
           else "clean evaluation, ")
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
