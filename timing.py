"""benchmark.py's timing commands: `throughput` (the paper's Table 5), `threads` (how many torch threads a run should
take) and `denormals` (what --flush-denormal saves on a trained critic), run through benchmark.py.

Throughput (the paper's Table 5): `python benchmark.py throughput --env-id Hopper-v5 --steps 2000` runs each script for
--learning-starts + --steps steps, one after another in one process each, and prints each one's training SPS (from its
charts/SPS_train logs, after the first training burst, whose one-off costs such as torch.compile it shows apart) and its
ratio to its base script (td3_* against td3.py, sac_* against sac.py). A script may carry flags, quoted:
--scripts td3.py td3_pave.py "td3_pave.py --pave-batch 25"; --extra "..." gives flags to every script; --repeats N
interleaves N rounds and reports medians. The scripts use a GPU when there is one (--no-cuda: not).

Threads: `python benchmark.py threads` measures the same training SPS on the CPU for each script (--scripts: td3.py
td3_pave.py sac_pave.py) with each --torch-threads value (--threads 1 2), idle and beside --busy N busy processes
(0 1 2; a busy process is a pure-Python loop, one core's worth of work like a second single-thread run), and prints
each cell's ratio to the script's first cell and the run's CPU seconds over wall seconds (docs/performance.md).

Denormals: `python benchmark.py denormals runs/*/td3_pave.pt` times, for each model checkpoint of td3_pave.py or
sac_pave.py, one critic loss and its backward through the script's PAVE path (TD losses and PAVE's terms, eager, one
torch thread) on a batch of the checkpoint's own policy's transitions, with denormal floats computed and flushed to 0,
the two modes interleaved over --rounds (docs/performance.md).
"""

import argparse
import glob
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmark_common import LOG_TAIL_LINES, METHODS, PROG, fail, run_process, scalars, script_path


def add_measurement_arguments(parser, env_id, steps):
    """The flags `throughput` and `threads` share: what each measured run trains, and where it goes."""
    parser.add_argument("--env-id", default=env_id)
    parser.add_argument("--steps", type=int, default=steps,
                        help="training steps measured, after --learning-starts random ones")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra", default="", help='flags for every script, one string: --extra "--batch-size 64"')
    parser.add_argument("--out", type=Path, default=None, help="keep runs and logs here (default: a temporary folder)")


THROUGHPUT_DESCRIPTION = "SPS after learning starts per script, and the ratio to its base script"
THREADS_DESCRIPTION = "training SPS per script and torch thread count, idle and beside busy processes"


def add_throughput_arguments(parser):
    add_measurement_arguments(parser, env_id="Hopper-v5", steps=2000)
    parser.add_argument("--scripts", nargs="+",
                        default=[f"{algo}{suffix}.py" for algo in ("td3", "sac") for suffix in METHODS],
                        help='scripts, each with its own flags if quoted: td3.py td3_pave.py "td3_pave.py '
                             '--pave-batch 25"')
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all scripts; each script's SPS is its median over rounds")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=True,
                        help="let the scripts use a GPU when there is one")


def check_throughput_args(args):
    if args.steps <= 0 or args.learning_starts < 0 or args.repeats <= 0:
        fail("--steps and --repeats must be positive and --learning-starts non-negative")


def parse_throughput_args(argv):
    """`benchmark.py throughput`'s flags, parsed and checked (argv without the command word)."""
    parser = argparse.ArgumentParser(prog=f"{PROG} throughput", description=THROUGHPUT_DESCRIPTION)
    add_throughput_arguments(parser)
    args = parser.parse_args(argv)
    check_throughput_args(args)
    return args


def format_warm_up(seconds):
    """The first burst's extra seconds to 0.1 s: timing noise can make a warm-up of about nothing come out below 0,
    shown as 0.0 (never "-0.0" or "-0.2")."""
    return f"{max(0.0, seconds):.1f}"


def measure_sps(path, flags, name, out, args):
    """Train one script for args.learning_starts + args.steps steps in its own process (run folder and log in out, run
    name `name`); return (steady training SPS after the first burst, the first burst's extra seconds), or None after
    printing why it failed. args: env_id, seed, learning_starts, steps, cuda."""
    # log after every train burst (50 steps): the steady rate below needs the time at each of them
    command = [sys.executable, str(path), "--env-id", args.env_id, "--seed", str(args.seed), "--exp-name", name,
               "--total-timesteps", str(args.learning_starts + args.steps), "--learning-starts",
               str(args.learning_starts),
               "--log-freq", "50", "--no-progress-bar", "--cuda" if args.cuda else "--no-cuda", *flags]
    log = out / "logs" / f"{name}.log"
    returncode = run_process(command, out, log, {**os.environ, "PYTHONUNBUFFERED": "1"})
    folders = sorted(glob.glob(f"{out}/runs/{args.env_id}__{name}__{args.seed}__*"))
    steps, values = scalars(folders[-1], "charts/SPS_train") if folders else ([], [])
    if returncode != 0 or len(values) < 2:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        print(f"FAILED (exit {returncode}); last lines of {log}:\n" + "\n".join(f"    {line}" for line in tail))
        return None
    # SPS_train = steps / seconds since training started, logged after every burst: the seconds at each log give
    # the steady rate after the first burst, which alone pays one-off costs (torch.compile, warm-up)
    seconds = (steps - args.learning_starts) / values
    steady = (steps[-1] - steps[0]) / (seconds[-1] - seconds[0])
    # the first burst's time beyond the steady rate
    first_burst = seconds[0] - (steps[0] - args.learning_starts) / steady
    print(f"{steady:.1f} SPS (first burst took {format_warm_up(first_burst)} s extra)")
    return steady, first_burst


def throughput(args):
    """`python benchmark.py throughput`: the module docstring's Throughput paragraph; returns the exit status."""
    variants = {}  # label -> (script path, its flags); a label is the script's stem and its flags
    for entry in args.scripts:
        script, *flags = shlex.split(entry)
        path = script_path(script)
        if not path.is_file():
            print(f"note: {script} not found; skipped")
            continue
        variants[" ".join([path.stem, *flags])] = (path, flags)
    out = args.out or Path(tempfile.mkdtemp(prefix="throughput-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    measured = {label: [] for label in variants}
    # rounds interleave the scripts, so a slow spell of a shared machine hits them alike
    for round_ in range(args.repeats):
        for i, (label, (path, flags)) in enumerate(variants.items()):
            print(f"{label}: {args.steps} steps on {args.env_id} ...", end=" ", flush=True)
            result = measure_sps(path, [*shlex.split(args.extra), *flags], f"{path.stem}-{i}-{round_}", out, args)
            if result:
                measured[label].append(result)
    if args.out is None:
        shutil.rmtree(out)

    # (steady SPS, warm-up s)
    medians = {label: np.median(values, axis=0) for label, values in measured.items() if values}
    sps = {label: float(m[0]) for label, m in medians.items()}
    device = "GPU if present" if args.cuda else "CPU"
    rounds = f", median of {args.repeats} rounds" if args.repeats > 1 else ""
    lines = [f"Training SPS after the first training burst, {args.env_id}, {args.steps} steps ({device}{rounds}); "
             "ratio: to the base script (td3_* to td3.py, sac_* to sac.py) of the same invocation; warm-up: the first "
             "burst's extra seconds (torch.compile)", "", "| script | SPS | ratio | warm-up s |", "|---|---|---|---|"]
    for label, value in sps.items():
        base = sps.get(label.split("_")[0].split(" ")[0])
        lines.append(f"| {label} | {value:.1f} | {f'{value / base:.2f}' if base else '-'} | "
                     f"{format_warm_up(medians[label][1])} |")
    print("\n" + "\n".join(lines))
    return 0 if sps else 1


# ----------------------------------------------------------------------------------------------------------------------
# Threads: how many torch threads a run should take, idle and beside busy processes (docs/performance.md)
# ----------------------------------------------------------------------------------------------------------------------
BUSY_LOOP = "while True: pass"  # a busy process: one core's worth of pure-Python work, like a second single-thread run


def add_threads_arguments(parser):
    add_measurement_arguments(parser, env_id="Pendulum-v1", steps=1000)
    parser.add_argument("--scripts", nargs="+", default=["td3.py", "td3_pave.py", "sac_pave.py"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="--torch-threads values, each script runs with each")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2],
                        help=f"numbers of busy processes ({BUSY_LOOP!r}) running beside the measured run")


def check_threads_args(args):
    if args.steps <= 0 or args.learning_starts < 0 or min(args.threads) < 1 or min(args.busy) < 0:
        fail("--steps and every --threads value must be positive, --learning-starts and every --busy value "
             "non-negative")
    missing = [script for script in args.scripts if not script_path(script).is_file()]
    if missing:
        fail(f"no such script: {' '.join(missing)}")
    args.cuda = False  # threads are a CPU question


def parse_threads_args(argv):
    """`benchmark.py threads`' flags, parsed and checked (argv without the command word)."""
    parser = argparse.ArgumentParser(prog=f"{PROG} threads", description=THREADS_DESCRIPTION)
    add_threads_arguments(parser)
    args = parser.parse_args(argv)
    check_threads_args(args)
    return args


def threads(args):
    """`python benchmark.py threads`: the module docstring's Threads paragraph; returns the exit status."""
    out = args.out or Path(tempfile.mkdtemp(prefix="threads-"))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    measured = {}  # (script, threads, busy) -> (steady SPS, CPU seconds over wall seconds of the whole run)
    for busy in args.busy:
        loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
        try:
            for n_threads in args.threads:
                for script in args.scripts:
                    path = script_path(script)
                    print(f"{path.stem}, {n_threads} torch thread(s), beside {busy} busy process(es) ...", end=" ",
                          flush=True)
                    cpu_before, wall_before = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                    flags = [*shlex.split(args.extra), "--torch-threads", str(n_threads)]
                    result = measure_sps(path, flags, f"{path.stem}-t{n_threads}-b{busy}", out, args)
                    cpu_after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - wall_before
                    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
                    if result:
                        measured[path.stem, n_threads, busy] = (result[0], cpu / wall)
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
    if args.out is None:
        shutil.rmtree(out)

    def cell(stem, n_threads, busy):
        if (stem, n_threads, busy) not in measured:
            return "-"
        sps, cpu_per_wall = measured[stem, n_threads, busy]
        reference = measured.get((stem, args.threads[0], args.busy[0]))
        ratio = f" ({sps / reference[0]:.2f})" if reference else ""
        return f"{sps:.1f}{ratio}, cpu {cpu_per_wall:.1f}x"

    stems = [script_path(script).stem for script in args.scripts]
    lines = [f"Training SPS after the first training burst, {args.env_id}, {args.steps} steps, CPU; in brackets: over "
             f"the same script's SPS with {args.threads[0]} thread(s) beside {args.busy[0]} busy process(es); cpu: "
             f"the whole run's CPU seconds over its wall seconds (1.0 = one core kept busy)", "",
             "| script | torch threads | " + " | ".join(f"beside {busy} busy" if busy else "idle" for busy in args.busy)
             + " |",
             "|---|---|" + "---|" * len(args.busy)]
    for stem in stems:
        for n_threads in args.threads:
            lines.append(f"| {stem} | {n_threads} | " + " | ".join(cell(stem, n_threads, busy) for busy in args.busy)
                         + " |")
    print("\n" + "\n".join(lines))
    return 0 if measured else 1


# ----------------------------------------------------------------------------------------------------------------------
# Denormals: what --flush-denormal saves on a trained critic (docs/performance.md)
# ----------------------------------------------------------------------------------------------------------------------
DENORMALS_DESCRIPTION = ("one PAVE critic loss and its backward from each model checkpoint, with denormal floats "
                         "computed and flushed to 0 (--flush-denormal), interleaved")
PAVE_FLAGS = ("mpr_sigma", "curv_delta", "lambda1", "lambda2", "lambda3", "batch_size", "gamma")


def add_denormals_arguments(parser):
    parser.add_argument("checkpoints", nargs="+", type=Path,
                        help="--save-model or --model-checkpoints checkpoints of td3_pave.py or sac_pave.py")
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each timing --updates per mode")
    parser.add_argument("--updates", type=int, default=10, help="critic losses and backwards per round and mode")
    parser.add_argument("--seed", type=int, default=0, help="env seed of the episodes whose transitions make the batch")


def check_denormals_args(args):
    if args.rounds <= 0 or args.updates <= 0:
        fail("--rounds and --updates must be positive")


def pave_critic_step(path, seed):
    """(step, its script, the checkpoint's step, batch size): `step()` computes the checkpoint's twin critics' loss
    (both TD losses plus PAVE's weighted terms, through the speed path where the script takes it) and its backward, on
    one batch of the checkpoint's own policy's transitions (its actions plus N(0, 0.1) exploration noise, episodes from
    env seed `seed` on). The TD targets are r + gamma min_i Q_i(s', pi(s')) of the checkpoint's own critics, without
    SAC's entropy term and 0.5 weight: the cost of a step does not depend on them. No optimizer step, so every call does
    the same work."""
    import importlib
    import types

    import torch

    import pave_speed
    from critic_geometry import rebuild_critic
    from eval_smoothness import CheckpointError, hidden_sizes_of, load_policy, reason
    try:
        policy = load_policy(path)
    except CheckpointError as error:
        fail(f"{path}: {error}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    args = ckpt["args"]
    if policy.script not in ("td3_pave.py", "sac_pave.py") or any(flag not in args for flag in PAVE_FLAGS):
        fail(f"{path}: a checkpoint of {policy.script} without PAVE's flags; this measures td3_pave.py's and "
             "sac_pave.py's critic loss")
    module = importlib.import_module(Path(policy.script).stem)
    try:
        qf = module.Critics([rebuild_critic(ckpt, policy.script, name) for name in ("qf1", "qf2")])
    except Exception as e:  # a critic missing or of another shape: one line, as critic_geometry.load_critic says it
        fail(f"{path}: cannot rebuild its critics with {policy.script} ({reason(e)})")
    run_args = types.SimpleNamespace(**{**args, "hidden_sizes": hidden_sizes_of(args),
                                        "critic_layer_norm": bool(args.get("critic_layer_norm")),
                                        "pave_impl": args.get("pave_impl", "auto")})
    regularize = module.regularize
    if pave_speed.chosen(run_args):
        qf, regularize = pave_speed.StackedCritics(qf), pave_speed.written_out
    # the batch: transitions of the policy's own episodes
    env = policy.make_env(policy.env_id, seed)()
    low, high = env.action_space.low, env.action_space.high
    rows, obs, episode = [], env.reset(seed=seed)[0], 0
    generator = np.random.default_rng(seed)
    while len(rows) < args["batch_size"]:
        with torch.no_grad():
            action = policy.actor.act(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        action = np.clip(action + generator.normal(0.0, 0.1, action.shape), -1.0, 1.0).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(low + (action + 1.0) * 0.5 * (high - low))
        rows.append((obs, action, reward, next_obs, terminated))
        obs = next_obs
        if terminated or truncated:
            episode += 1
            obs = env.reset(seed=seed + episode)[0]
    env.close()
    b_obs, b_actions, b_rewards, b_next_obs, b_terminated = (torch.as_tensor(np.array(column), dtype=torch.float32)
                                                             for column in zip(*rows))
    with torch.no_grad():
        next_actions = policy.actor.act(b_next_obs)
        td_target = b_rewards + (1.0 - b_terminated) * args["gamma"] * qf(b_next_obs, next_actions).min(0).values

    def step():
        q, reg = regularize(qf, b_obs, b_actions, b_next_obs, args["mpr_sigma"], args["curv_delta"])
        loss = ((q - td_target).square().mean(-1).sum() + args["lambda1"] * reg["mpr"].sum()
                + args["lambda2"] * reg["vfc"].sum() + args["lambda3"] * reg["curv"].sum())
        loss.backward()
        qf.zero_grad(set_to_none=True)

    return step, policy.script, int(ckpt.get("global_step", 0)), args["batch_size"]


def denormals(args):
    """`python benchmark.py denormals`: time each checkpoint's PAVE critic step with denormals computed and flushed to
    0, the two modes interleaved in rounds (a slow spell of a shared machine hits both alike), medians; returns 0."""
    import torch

    torch.set_num_threads(1)
    rows = []
    for path in args.checkpoints:
        step, script, trained, batch = pave_critic_step(path, args.seed)
        seconds = {False: [], True: []}
        try:
            for _ in range(args.rounds):
                for flush in (False, True):
                    torch.set_flush_denormal(flush)
                    start = time.perf_counter()
                    for _ in range(args.updates):
                        step()
                    seconds[flush].append((time.perf_counter() - start) / args.updates)
        finally:
            torch.set_flush_denormal(False)
        computed, flushed = (float(np.median(seconds[flush])) * 1e3 for flush in (False, True))
        rows.append(f"| {path} | {script} | {trained} | {batch} | {computed:.1f} | {flushed:.1f} | "
                    f"{computed / flushed:.2f} |")
        print(rows[-1], flush=True)
    print(f"\nOne critic loss and its backward per checkpoint (eager, 1 torch thread), ms, median of {args.rounds} "
          f"rounds of {args.updates}; ratio: computed / flushed\n\n| checkpoint | script | step | batch | ms, "
          "denormals computed | ms, flushed to 0 (--flush-denormal) | ratio |\n|---|---|---|---|---|---|---|\n"
          + "\n".join(rows))
    return 0
