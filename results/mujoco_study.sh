#!/usr/bin/env bash
# The MuJoCo study of results/README.md: td3.py and td3_pave.py at their defaults on Walker2d-v5, then Hopper-v5, the
# released runs' first three seeds, every run started with --total-timesteps 300000 and advanced in stages: every run to
# 100k, then to 200k, then to 300k, with a model checkpoint at each stage step.
#
# Start it, or continue it from wherever it stopped (the same command; SIGTERM stops it, every run saving its state):
#     setsid nohup bash results/mujoco_study.sh >> ~/.cache/pave/studies/mujoco/study.log 2>&1 < /dev/null &
# Its progress:  bash results/mujoco_study.sh --status
# What git keeps of it at a stage (events, logs, the model checkpoints of that step; never a resumable state), copied
# into results/mujoco/study for publishing:  bash results/mujoco_study.sh --export 100000
# Every table and figure of a stage from what git keeps, without training (benchmark.py publish per env into
# results/<env>/step<STEP>; from the second stage on also the critic along training over both envs, a row per env, into
# results/mujoco/during, joined from each env's during/checkpoints.csv):  bash results/mujoco_study.sh --publish 200000
# Again every stage and env published so far (each results/<env>/step<STEP> there), in stage order:  ... --publish all
#
# The study folder (PAVE_STUDY, default ~/.cache/pave/studies/mujoco) lives outside the work tree: resumable states of
# MuJoCo runs are 30-170 MB and stay out of git. Its code/ is this repository at one commit (STUDY_COMMIT, git archive),
# so that later changes to the scripts cannot mix two versions of the code into one run.
set -euo pipefail
STUDY_COMMIT=88a9444044eda88fa7d45084fe362d563a981880
study="${PAVE_STUDY:-$HOME/.cache/pave/studies/mujoco}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
variant_of() { echo "$1" | awk -F'__' '{print $2}'; }  # a run folder's name: <env>__<variant>__<seed>__<time>
total_steps_of() {  # a run's --total-timesteps, from its log's command line (empty if none)
    { grep -o -m1 -- '--total-timesteps [0-9]*' "$1" 2>/dev/null || true; } | awk '{print $2}'
}
stages=(100000 200000 300000)
envs=(Walker2d-v5 Hopper-v5)
folder_of() { echo "${1%%-v*}" | tr '[:upper:]' '[:lower:]'; }  # an env's results folder: Walker2d-v5 -> walker2d
flags=(--scripts td3.py td3_pave.py --env-ids "${envs[@]}" --seeds 178132 410580 922852 --out "$study/study")
if [ "${1:-}" = "--status" ]; then  # read by today's benchmark.py (the study's copy may predate --status)
    exec "$python" "$repo/benchmark.py" "${flags[@]}" --status
fi
if [ "${1:-}" = "--export" ]; then  # --export STEP: what git keeps of the runs at STEP, into results/mujoco/study
    step="${2:?--export needs a step}"
    dest="${PAVE_EXPORT_TO:-$repo/results/mujoco/study}"
    mkdir -p "$dest/logs"
    cp "$study/study/logs/"*.log "$dest/logs/"
    for run in "$study/study/runs/"*/; do
        name="$(basename "$run")"
        variant="$(variant_of "$name")"
        mkdir -p "$dest/runs/$name"
        cp "$run"events.out.tfevents.* "$dest/runs/$name/"
        log="$study/study/logs/${name%__*}.log"
        total="$(total_steps_of "$log")"
        last=$([ -f "$run/$variant.pt" ] && [ "$step" = "$total" ] && echo yes || echo no)
        # at a run's last step its final checkpoint is that model: git keeps it once, as <variant>.pt
        if [ -f "$run/checkpoints/${variant}_step$step.pt" ] && [ "$last" = no ]; then
            mkdir -p "$dest/runs/$name/checkpoints"
            cp "$run/checkpoints/${variant}_step$step.pt" "$dest/runs/$name/checkpoints/"
        fi
        if [ -f "$run/$variant.pt" ]; then cp "$run/$variant.pt" "$dest/runs/$name/"; fi  # the final checkpoint
    done
    echo "copied the events, logs and step-$step model checkpoints of $study/study into $dest (no resumable state)"
    exit 0
fi
if [ "${1:-}" = "--publish" ]; then  # --publish STEP|all: a stage's tables and figures from results/mujoco/study
    cd "$repo"  # relative paths, so that what publish writes names the checkpoints as in any clone
    src="${PAVE_PUBLISH_FROM:-results/mujoco/study}"
    dest="${PAVE_PUBLISH_TO:-results}"
    failed=0
    run() { echo "\$ $*"; "$@" && return 0; failed=1; return 1; }  # a failure: go on, exit 1 at the end
    publish_stage() {  # publish_stage STEP ENV...: each env's stage STEP, then the critic along training over them
        local step="$1" env folder
        local reports=()  # each env's critic along training as its publish measured it (during/, from stage 2 on)
        for env in "${@:2}"; do
            folder="$dest/$(folder_of "$env")/step$step"
            if run "$python" benchmark.py publish --study "$src" --step "$step" --env-ids "$env" --out "$folder" \
                && [ -f "$folder/during/checkpoints.csv" ]; then
                reports+=("$folder/during/checkpoints.csv")
            fi
        done
        if [ "${#reports[@]}" -gt 0 ]; then  # joined, a row per env, without evaluating the checkpoints again
            run "$python" critic_geometry.py --during "${reports[@]}" --out-dir "$dest/mujoco/during"
        fi
    }
    if [ "${2:-}" = "all" ]; then  # every stage as published so far, in order: the last one's join stays in during/
        published=0
        for step in "${stages[@]}"; do
            stage_envs=()
            for env in "${envs[@]}"; do
                if [ -d "$dest/$(folder_of "$env")/step$step" ]; then stage_envs+=("$env"); fi
            done
            if [ "${#stage_envs[@]}" -gt 0 ]; then publish_stage "$step" "${stage_envs[@]}"; published=1; fi
        done
        if [ "$published" = 0 ]; then
            echo "mujoco_study.sh: no stage published in $dest yet (publish one first: --publish STEP)" >&2
            exit 1
        fi
    else
        publish_stage "${2:?--publish needs a step, or all}" "${envs[@]}"
    fi
    exit "$failed"
fi
if [ ! -f "$study/code/benchmark.py" ]; then
    mkdir -p "$study/code"
    git -C "$repo" archive "$STUDY_COMMIT" | tar -x -C "$study/code"
    echo "$STUDY_COMMIT" > "$study/COMMIT"
    echo "study folder made at $study from commit $STUDY_COMMIT"
fi
cd "$study/code"
exec "$python" benchmark.py "${flags[@]}" --workers 2 --checkpoint-freq 10000 \
    --stages "${stages[@]}" --no-report --extra "--total-timesteps 300000 --model-checkpoint-every 100000" "$@"
