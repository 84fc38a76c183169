"""Writes fingerprints.json and <script>_resume/resume.pt of this folder with the training scripts of the repository
root given as the first argument (a checkout of commit 88a9444), in a scratch folder given as the second."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

SCRIPTS = ["td3.py", "td3_pave.py", "td3_caps.py", "td3_gradcaps.py", "td3_asap.py",
           "sac.py", "sac_pave.py", "sac_caps.py", "sac_gradcaps.py", "sac_asap.py"]
# the default flags, 100 gradient steps, with geometry probes at steps 350, 700 and 1050 (one between gradient steps)
DEFAULT = ["--env-id", "Pendulum-v1", "--total-timesteps", "1100", "--learning-starts", "1000", "--seed", "7",
           "--geometry-freq", "350", "--save-model", "--eval-episodes", "1", "--no-progress-bar",
           "--exp-name", "default"]
# tiny networks; probes at 300 (random phase), 350 (where the state is saved) and 400
SMALL = ["--env-id", "Pendulum-v1", "--total-timesteps", "400", "--learning-starts", "300",
         "--hidden-sizes", "16", "16", "--seed", "7", "--geometry-freq", "50", "--no-progress-bar",
         "--exp-name", "small"]


def fingerprint(checkpoint):
    return {f"{net}.{name}": {"sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
                              "sum": t.double().sum().item(), "abs_sum": t.double().abs().sum().item()}
            for net in ("actor", "qf1", "qf2") for name, t in checkpoint[net].items()}


def run(repo, script, args, cwd):
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(repo / script), *args], cwd=cwd, env=env, check=True, capture_output=True)


def main(repo, scratch):
    here = Path(__file__).parent
    cpu = f"{open('/proc/cpuinfo').read().split('vendor_id')[1].split(':')[1].split()[0]} "
    cpu += torch.backends.cpu.get_cpu_capability()
    out = {}
    for script in SCRIPTS:
        name = script[:-3]
        run(repo, script, DEFAULT, scratch / name / "default")
        (path,) = (scratch / name / "default").glob("runs/*/default.pt")
        out[f"default_{name}"] = {"cpu": cpu, "tensors": fingerprint(torch.load(path, weights_only=True))}
        run(repo, script, [*SMALL, "--save-model", "--eval-episodes", "1"], scratch / name / "one_go")
        (path,) = (scratch / name / "one_go").glob("runs/*/small.pt")
        out[f"small_{name}"] = {"cpu": cpu, "tensors": fingerprint(torch.load(path, weights_only=True))}
        run(repo, script, [*SMALL, "--stop-at-step", "350"], scratch / name / "stopped")
        (path,) = (scratch / name / "stopped").glob("runs/*/resume.pt")
        (here / f"{name}_resume").mkdir(exist_ok=True)
        shutil.copy(path, here / f"{name}_resume" / "resume.pt")
        print(script, "done", flush=True)
    (here / "fingerprints.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
