"""train(args) called from Python (a notebook, Ray, a researcher's loop): the presets and checks applied inside, the run
folder returned, bad input raised instead of exiting, the caller's signal handlers left as they were, and the weights
of the command line with the same flags."""

import signal
import threading
from pathlib import Path

import pytest
import torch
from runs import run_script, same

import sac
import td3_pave
from run_control import BadInput

FLAGS = dict(env_id="Pendulum-v1", total_timesteps=400, learning_starts=300, hidden_sizes=(32, 32), progress_bar=False,
             save_model=True, eval_episodes=1, exp_name="api")


def weights(run_dir):
    checkpoint = torch.load(Path(run_dir) / "api.pt", weights_only=True)
    return {net: checkpoint[net] for net in ("actor", "qf1", "qf2")}


def test_train_runs_twice_in_one_process_as_the_command_line_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a caller's own handler
    try:
        first = td3_pave.train(td3_pave.Args(**FLAGS, seed=3))
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL and signal.getsignal(signal.SIGINT) is not None
        assert signal.getsignal(signal.SIGTERM).__name__ == "<lambda>"  # put back, not reset to the default
        second = sac.train(sac.Args(**FLAGS, seed=4))
    finally:
        signal.signal(signal.SIGTERM, mine)
    assert Path(first).is_dir() and Path(second).is_dir() and first != second
    assert "Pendulum-v1__api__3__" in first  # the folder the command line picks
    cli = tmp_path / "cli"
    cli.mkdir()
    flags = ["--env-id", "Pendulum-v1", "--total-timesteps", "400", "--learning-starts", "300", "--hidden-sizes", "32",
             "32", "--no-progress-bar", "--save-model", "--eval-episodes", "1", "--exp-name", "api", "--seed", "3"]
    result = run_script("td3_pave.py", *flags, cwd=cli)
    assert result.returncode == 0, result.stderr[-2000:]
    (cli_run,) = (cli / "runs").iterdir()
    assert same(weights(first), weights(cli_run))
    assert "steps in" in result.stdout and "return of the last 10 episodes" in result.stdout  # the closing summary


def test_train_raises_on_bad_input_and_off_the_main_thread_installs_no_handlers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="--batch-size must be positive"):
        td3_pave.train(td3_pave.Args(env_id="Pendulum-v1", batch_size=0))
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    done = []

    def job():
        done.append(td3_pave.train(td3_pave.Args(**{**FLAGS, "total_timesteps": 310, "save_model": False})))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert done and Path(done[0]).is_dir()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
