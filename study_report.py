"""The study's own report (<out>/report/, after its runs or alone with --report-only): benchmark.py's Report paragraph.
The published tables and figures of a finished study are publish.py's."""

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark_common import plot_mean_curves, scalars, short_env


def is_base_variant(variant):
    """Whether a variant is its family's Base model: td3.py (sac.py) under its own name, or under the -relu name that
    --paper-text-activations gives it (the paper text's Table 3 scales its noise by that ReLU Base)."""
    stem = Path(variant.script).stem
    return stem in ("td3", "sac") and variant.name.removesuffix("-relu") == stem


EPISODE_KEYS = ("return", "length", "sm", "action_change")  # what evaluate() gives per episode


def evaluation(run, checkpoint, out, episodes, obs_noise=0.0, obs_scale=None):
    """Per-episode lists EPISODE_KEYS of eval_smoothness.evaluate, cached in <out>/eval/ (recomputed if obs_scale
    changed)."""
    cache = out / "eval" / f"{run.name}__noise{obs_noise:g}__{episodes}ep.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        stored = saved.get("obs_scale")
        if (stored is None) == (obs_scale is None) and (stored is None or np.allclose(stored, obs_scale)):
            return saved
    from eval_smoothness import evaluate

    result = evaluate(str(checkpoint), episodes=episodes, obs_noise=obs_noise, obs_scale=obs_scale)
    saved = {key: [float(x) for x in result[key]] for key in EPISODE_KEYS}
    saved["obs_scale"] = None if obs_scale is None else [float(x) for x in obs_scale]
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(saved))
    return saved


def format_mean_std(values):
    mean, std = float(np.mean(values)), float(np.std(values))
    digits = 0 if abs(mean) >= 1000 else 1 if abs(mean) >= 100 else 2 if abs(mean) >= 1 else 3
    return f"{mean:.{digits}f} ({std:.{digits}f})"


def markdown_table(title, row_labels, columns, cells):
    """A paper-style table: columns = [(header, higher_is_better)], cells[row][column] = values (pooled episodes or
    per-seed means) or None.

    Cells show mean (std); per column the best mean is bold and the second underlined.
    """
    lines = [f"**{title}**", "", "| " + " | ".join(["", *(header for header, _ in columns)]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    text = [[format_mean_std(values) if values else "-" for values in row] for row in cells]
    for c, (_, higher_is_better) in enumerate(columns):
        ranked = sorted((r for r in range(len(cells)) if cells[r][c]), key=lambda r: np.mean(cells[r][c]),
                        reverse=higher_is_better)
        if len(ranked) >= 2:
            text[ranked[0]][c] = f"**{text[ranked[0]][c]}**"
            text[ranked[1]][c] = f"<u>{text[ranked[1]][c]}</u>"
    lines += ["| " + " | ".join([label, *row]) + " |" for label, row in zip(row_labels, text)]
    return "\n".join(lines) + "\n"




def plot_learning_curves(study, run_dirs, path):
    """Per env, charts/episodic_return per variant: mean and std band over seeds on a common step grid
    (mean_over_seeds)."""
    import matplotlib.pyplot as plt

    cols = min(3, len(study.env_ids))
    rows = -(-len(study.env_ids) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, study.env_ids):
        curves = {variant.label: [scalars(run_dirs[r], "charts/episodic_return") for r in study.runs
                                  if r.variant == variant and r.env_id == env_id and r in run_dirs]
                  for variant in study.variants}
        plot_mean_curves(ax, curves, "episodic return", short_env(env_id))
    for ax in list(axes.flat)[len(study.env_ids):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweeps(study):
    """{swept field name: its variants in increasing value} of a study's sweep variants (sensitivity, sigma-delta)."""
    swept = {}
    for variant in sorted((v for v in study.variants if v.sweep), key=lambda v: v.sweep[1]):
        swept.setdefault(variant.sweep[0], []).append(variant)
    return swept


def plot_sensitivity(study, env_id, pooled, path):
    """Figure 4 and the sigma / delta sweeps: a panel per swept flag, return (solid) and sm (dashed, right axis) against
    its value, mean and std of pooled episodes."""
    import matplotlib.pyplot as plt

    swept = sweeps(study)
    fig, axes = plt.subplots(1, len(swept), figsize=(5 * len(swept), 3.6), squeeze=False)
    for ax, (name, variants) in zip(axes.flat, swept.items()):
        points = [(v.sweep[1], pooled[v, env_id, 0.0]) for v in variants if pooled.get((v, env_id, 0.0))]
        if not points:
            continue
        x = [value for value, _ in points]
        for axis, key, style, color in ((ax, "return", "-o", "tab:blue"), (ax.twinx(), "sm", "--s", "tab:orange")):
            mean = np.array([np.mean(result[key]) for _, result in points])
            std = np.array([np.std(result[key]) for _, result in points])
            axis.plot(x, mean, style, color=color)
            axis.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
            axis.set_ylabel("average return" if key == "return" else "smoothness sm", color=color)
            axis.ticklabel_format(axis="y", useOffset=False)
        ax.set_xscale("symlog", linthresh=min(v for v in x if v > 0) if any(v > 0 for v in x) else 1.0)
        ax.set(title=f"{short_env(env_id)}: {name}", xlabel=f"--{name.replace('_', '-')}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(study, out, args):
    """Evaluate every finished run, then write the tables, figures and index.md into <out>/report/."""
    import matplotlib

    matplotlib.use("Agg")
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    checkpoints = {run: run.checkpoint(out) for run in study.runs}
    finished = [run for run, checkpoint in checkpoints.items() if checkpoint]
    missing = [run for run in study.runs if run not in finished]

    results, unreadable, scale_notes = {}, [], []  # results[(run, noise)] = its evaluation

    def evaluate_into_results(run, obs_noise=0.0, obs_scale=None, episodes=args.episodes):
        try:
            results[run, obs_noise] = evaluation(run, checkpoints[run], out, episodes, obs_noise, obs_scale)
        except Exception as error:  # a damaged checkpoint must not take the whole report down
            unreadable.append(f"{run.name} (noise {obs_noise:g}): {type(error).__name__}: {error}")

    for run in tqdm(finished, desc="evaluating", unit="run", leave=False):
        evaluate_into_results(run)
    clean = [run for run, _ in results]
    if study.noise_levels:
        import eval_smoothness  # Table 3's protocol, as eval_smoothness.py follows it

        noise_episodes = args.noise_episodes or eval_smoothness.NOISE_EPISODES
        for env_id in study.env_ids:
            policies = {}
            for run in (r for r in clean if r.env_id == env_id):
                try:
                    policies[run] = eval_smoothness.load_policy(checkpoints[run])
                except eval_smoothness.CheckpointError as error:
                    unreadable.append(f"{run.name} (noise): {error}")
            for algo in sorted({policy.algo for policy in policies.values()}):
                family = {run: policy for run, policy in policies.items() if policy.algo == algo}
                # one sigma_base per env and algorithm family: the first-seed base run's (else the reported fallback)
                try:
                    scale = eval_smoothness.sigma_base([p for run, p in family.items() if is_base_variant(run.variant)],
                                                       list(family.values()), clean_episodes=args.episodes)
                except Exception as error:
                    unreadable.append(f"σ_base of {short_env(env_id)} {algo} (no noisy rows): {type(error).__name__}: "
                                      f"{error}")
                    continue
                scale_notes.append(f"{short_env(env_id)} {algo}: {scale['how']}")
                todo = [(run, n) for run in family for n in study.noise_levels]
                for run, obs_noise in tqdm(todo, desc=f"noise {short_env(env_id)} {algo}", unit="eval", leave=False):
                    evaluate_into_results(run, obs_noise, scale["sigma_base"], noise_episodes)
    # over the episodes of every finished seed (clean tables), and the per-seed means (noise table: Table 3's cells)
    pooled, seed_means = {}, {}  # [(variant, env, noise)] = {"return": [...], "sm": [...]}
    for (run, obs_noise), result in results.items():
        key = (run.variant, run.env_id, obs_noise)
        for name in ("return", "sm"):
            pooled.setdefault(key, {"return": [], "sm": []})[name] += result[name]
            seed_means.setdefault(key, {"return": [], "sm": []})[name].append(float(np.mean(result[name])))

    def cell(variant, env_id, noise, key):
        return (seed_means if noise > 0 else pooled).get((variant, env_id, noise), {}).get(key)

    labels = [v.label for v in study.variants]
    tables = {}
    columns = [(f"{short_env(e)} {key}", key == "re") for e in study.env_ids for key in ("re", "sm")]
    cells = [[cell(v, e, 0.0, key) for e in study.env_ids for key in ("return", "sm")] for v in study.variants]
    tables["table1.md"] = markdown_table(study.title, labels, columns, cells)
    if sweeps(study):  # the same cells, a table per swept flag with a row per value
        tables["sensitivity.md"] = "\n".join(
            markdown_table(f"--{name.replace('_', '-')} varied: return (re) and smoothness (sm) per value",
                           [f"{v.sweep[1]:g}" for v in variants], columns,
                           [[cell(v, e, 0.0, key) for e in study.env_ids for key in ("return", "sm")]
                            for v in variants])
            for name, variants in sweeps(study).items())
    if study.noise_levels:
        columns = [(f"{short_env(e)} σ={n:g} {key}", key == "re")
                   for e in study.env_ids for n in study.noise_levels for key in ("re", "sm")]
        cells = [[cell(v, e, n, key) for e in study.env_ids for n in study.noise_levels for key in ("return", "sm")]
                 for v in study.variants]
        title = (f"Table 3: return and smoothness under observation noise σ ({noise_episodes} episodes per run and σ); "
                 "mean over seeds of the per-seed means (std over those means)")
        tables["table3_noise.md"] = markdown_table(title, labels, columns, cells)

    run_dirs = {run: checkpoints[run].parent for run in finished}
    sps = {}  # (variant, env) -> last logged SPS after learning starts, per seed
    for run in finished:
        steps, values = scalars(run_dirs[run], "charts/SPS_train")
        if len(values):
            sps.setdefault((run.variant, run.env_id), []).append(float(values[-1]))
    sps_rows = [[f"{np.mean(sps[v, e]):.1f}" if (v, e) in sps else "-" for v in study.variants] for e in study.env_ids]
    tables["table5_throughput.md"] = "\n".join([
        "**Table 5: training throughput, env steps per second after learning starts (mean over seeds of "
        "charts/SPS_train)**", "",
        "| | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1),
        *("| " + " | ".join([short_env(e), *row]) + " |" for e, row in zip(study.env_ids, sps_rows))]) + "\n"
    for name, text in tables.items():
        (report / name).write_text(text)

    figures = ["learning_curves.png"]
    plot_learning_curves(study, run_dirs, report / "learning_curves.png")
    if sweeps(study):
        for env_id in study.env_ids:
            figures.append(f"sensitivity_{short_env(env_id)}.png")
            plot_sensitivity(study, env_id, pooled, report / figures[-1])

    index = [f"# Study {study.name}", "",
             f"{len(study.runs)} runs ({len(study.variants)} variants x {len(study.env_ids)} envs x "
             f"{len(study.seeds)} seeds): {len(finished)} finished, {len(missing)} missing. Evaluation: "
             f"{args.episodes} deterministic episodes per run, "
             "pooled over seeds; mean (std); best **bold**, second <u>underlined</u>.", ""]
    if missing:
        index += ["Missing (no checkpoint): " + ", ".join(run.name for run in missing), ""]
    if unreadable:
        index += ["Not evaluated: " + "; ".join(unreadable), ""]
    if scale_notes:
        index += ["Observation noise (Table 3, as eval_smoothness.py): per step and dimension the policy sees "
                  "clip(o + u σ_base, obs_low, obs_high), u ~ U(-σ, σ), the env's state unchanged; a cell is the mean "
                  "over seeds of the per-seed means (std over those means). σ_base of " + "; ".join(scale_notes), ""]
    index += ["## Tables", ""]
    for name, text in tables.items():
        index += [f"[{name}]({name})", "", text]
    index += ["## Figures", ""] + [f"[{name}]({name})\n\n![{name}]({name})\n" for name in figures]
    (report / "index.md").write_text("\n".join(index))
    print(f"report: {report / 'index.md'}")
    return report


