"""td3.py and td3_pave.py: presets, flags, real short runs, reproducibility, clear errors (the terms:
test_pave_regularizer.py)."""


import pytest
import torch
import torch.nn as nn
from runs import all_finite, assert_one_line_error, read_scalars, run_in_process, run_script, train

import pave_speed
import run_control
import sac
import sac_pave
import td3
import td3_pave
from run_control import BadInput

OBS_DIM, ACT_DIM = 5, 3
HIDDEN = (64, 48)  # two hidden layers of different widths, as the released [400, 300]


@pytest.mark.parametrize("module", [td3_pave, sac_pave])
def test_bad_pave_batch_is_refused(module):
    batch = module.Args().batch_size
    for value, message in [(0, "--pave-batch must be positive"),
                           (batch + 1, f"--pave-batch must be at most --batch-size ({batch})")]:
        with pytest.raises(BadInput) as error:
            module.resolve_args(module.Args(env_id="Pendulum-v1", pave_batch=value))
        assert message in str(error.value)


@pytest.mark.parametrize("module", [td3, td3_pave, sac, sac_pave])
def test_critics_of_any_depth_with_or_without_layer_norm(module):
    """--hidden-sizes of any depth and --critic-layer-norm (LayerNorm after each hidden linear layer) build the
    critic."""
    with pytest.raises(BadInput, match="--hidden-sizes must be one or more positive widths"):
        module.resolve_args(module.Args(env_id="Pendulum-v1", hidden_sizes=(64, 0)))
    module.resolve_args(module.Args(env_id="Pendulum-v1", hidden_sizes=(64, 64, 64), critic_layer_norm=True))
    qf = module.QNetwork(OBS_DIM, ACT_DIM, (32, 16, 8))
    assert ([layer.weight.shape for layer in qf.net if isinstance(layer, nn.Linear)]
            == [(32, 8), (16, 32), (8, 16), (1, 8)])
    assert not any(isinstance(layer, nn.LayerNorm) for layer in qf.net)
    qf = module.QNetwork(OBS_DIM, ACT_DIM, (32, 16, 8), "silu", layer_norm=True)
    assert [type(layer).__name__ for layer in qf.net][:3] == ["Linear", "LayerNorm", "SiLU"]
    assert [layer.normalized_shape for layer in qf.net if isinstance(layer, nn.LayerNorm)] == [(32,), (16,), (8,)]
    assert qf(torch.zeros(4, OBS_DIM), torch.zeros(4, ACT_DIM)).shape == (4, 1)


def test_compile_or_not_follows_the_flag_and_falls_back_to_eager(monkeypatch, capsys):
    def eager(x):
        return x + 1

    assert pave_speed.compile_or_not(eager, "no", 10**6) is eager
    assert pave_speed.compile_or_not(eager, "auto", pave_speed.COMPILE_MIN_STEPS - 1) is eager
    calls = []

    def failing_compile(fn):
        def compiled(*args):
            calls.append(args)
            raise RuntimeError("no C++ compiler found\nlong details")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    wrapped = pave_speed.compile_or_not(eager, "auto", pave_speed.COMPILE_MIN_STEPS)
    assert wrapped is not eager
    assert wrapped(1) == 2 and wrapped(2) == 3 and len(calls) == 1  # one failed try, then eager for good
    out = capsys.readouterr().out
    assert "note: torch.compile failed (RuntimeError: no C++ compiler found); running eagerly" in out


def test_presets_fill_only_unset_fields():
    args = td3_pave.resolve_args(td3_pave.Args(env_id="Walker2d-v5", lambda3=0.01))
    assert (args.lambda1, args.lambda2, args.lambda3, args.total_timesteps) == (0.1, 0.1, 0.01, 1_000_000)
    args = td3_pave.resolve_args(td3_pave.Args(env_id="Pendulum-v1", lambda1=0.0, total_timesteps=5))
    assert (args.lambda1, args.lambda2, args.lambda3, args.total_timesteps) == (0.0, 0.005, 2.0, 5)
    args = td3_pave.resolve_args(td3_pave.Args(env_id="HalfCheetah-v5"))  # not in the paper: documented defaults
    assert ((args.lambda1, args.lambda2, args.lambda3)
            == tuple(td3_pave.DEFAULT_PRESET[k] for k in ("lambda1", "lambda2", "lambda3")))
    assert td3.resolve_args(td3.Args(env_id="Pendulum-v1")).total_timesteps == 100_000


def test_paper_env_ids_map_to_gymnasium_1x(capsys):
    assert td3.resolve_args(td3.Args(env_id="LunarLanderContinuous-v2")).env_id == "LunarLanderContinuous-v3"
    assert td3_pave.resolve_args(td3_pave.Args(env_id="Reacher-v2")).env_id == "Reacher-v5"
    assert "Reacher-v5" in capsys.readouterr().out


# ---- real runs ------------------------------------------------------------------------------------------------------

COMMON_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/action_change", "charts/SPS",
               "losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "eval/return", "eval/sm",
               "geometry/mpr", "geometry/vfc", "geometry/curv", "geometry/grad_norm", "geometry/vhv"]


# the paper text's ReLU variant of the base on Hopper; the Hopper PAVE run overrides one preset lambda (the compiled
# path is trained for real in test_same_seed_gives_identical_weights and checked term by term in
# test_pave_regularizer.py).
# PAVE's terms on the first 64 transitions of each batch (--pave-batch), where they cost most: the default run is
# test_bit_identity.py's.
EXTRA = {("td3.py", "Hopper-v5"): ["--actor-activation", "relu", "--critic-activation", "relu"],
         ("td3_pave.py", "Pendulum-v1"): ["--pave-batch", "64"],
         ("td3_pave.py", "Hopper-v5"): ["--lambda3", "0.01", "--pave-batch", "64"]}


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v5"])
@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_short_real_run_writes_checkpoint_and_scalars(script, env_id, tmp_path):
    run_dir, ckpt = train(script, env_id, tmp_path, *EXTRA.get((script, env_id), []))
    assert ckpt["format"] == td3.CHECKPOINT_FORMAT
    assert (ckpt["script"], ckpt["algo"], ckpt["env_id"], ckpt["global_step"]) == (script, "td3", env_id, 400)
    assert ckpt["args"]["exp_name"] == script[:-3] and ckpt["args"]["seed"] == 1
    for net in ("actor", "qf1", "qf2"):
        assert all(torch.isfinite(t).all() for t in ckpt[net].values()), net
    # the checkpoint rebuilds with the script's own classes, [400, 300] as the released code
    module = td3_pave if script == "td3_pave.py" else td3
    args = ckpt["args"]
    assert tuple(args["hidden_sizes"]) == (400, 300) and ckpt["qf1"]["net.2.weight"].shape == (300, 400)
    module.Actor(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                 args["actor_activation"]).load_state_dict(ckpt["actor"])
    module.QNetwork(ckpt["obs_dim"], ckpt["act_dim"], args["hidden_sizes"],
                    args["critic_activation"]).load_state_dict(ckpt["qf1"])

    scalars = read_scalars(run_dir)
    tags = COMMON_TAGS + (["losses/mpr", "losses/vfc", "losses/curv"] if script == "td3_pave.py" else [])
    for tag in tags:
        assert all_finite(scalars.get(tag, [])), f"{tag} missing or not finite"
    relu = (script, env_id) == ("td3.py", "Hopper-v5")
    assert (args["actor_activation"], args["critic_activation"]) == (("relu", "relu") if relu else ("silu", "silu"))
    if script == "td3_pave.py":
        expected = {"Pendulum-v1": (2.0, 0.005, 2.0), "Hopper-v5": (0.1, 0.005, 0.01)}[env_id]  # --lambda3 0.01 wins
        assert (args["lambda1"], args["lambda2"], args["lambda3"]) == expected
        assert max(scalars["losses/mpr"]) > 0 and max(scalars["losses/vfc"]) > 0
    else:
        assert "losses/mpr" not in scalars
    if relu:
        assert all(v == 0 for v in scalars["geometry/vhv"]), "a ReLU critic has zero action curvature"
    else:
        assert all(v != 0 for v in scalars["geometry/vhv"]), "a SiLU critic has action curvature"


@pytest.mark.parametrize("script,extra", [("td3.py", []), ("td3_pave.py", []), ("td3_pave.py", ["--compile", "yes"])])
def test_same_seed_gives_identical_weights(script, extra, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # reproducibility does not depend on size or length: a shorter run than TINY (the last flag wins), 100 gradient
    # steps
    small = ["--batch-size", "64", "--hidden-sizes", "64", "64", "--total-timesteps", "300", "--eval-episodes", "1",
             *extra]
    _, first = train(script, "Pendulum-v1", tmp_path / "a", *small, seed=7)
    _, second = train(script, "Pendulum-v1", tmp_path / "b", *small, seed=7)
    for net in ("actor", "qf1", "qf2"):
        for name, tensor in first[net].items():
            assert torch.equal(tensor, second[net][name]), f"{net}.{name}"


# ---- clear errors ---------------------------------------------------------------------------------------------------
# each kind of refusal once through a new interpreter (run_script), as a user meets it; its other cases in this process


@pytest.mark.parametrize("script", ["td3.py", "td3_pave.py"])
def test_unknown_env_id_suggests_close_ids(script, tmp_path):
    run = run_script if script == "td3.py" else run_in_process
    assert_one_line_error(run(script, "--env-id", "Hoper-v5", cwd=tmp_path), "Hoper-v5", "Hopper-v5")
    assert not (tmp_path / "runs").exists()


def test_discrete_action_space_is_refused(tmp_path):
    assert_one_line_error(run_script("td3_pave.py", "--env-id", "CartPole-v1", cwd=tmp_path), "CartPole-v1", "Discrete")


@pytest.mark.parametrize("flag", ["--lambda1", "--lambda2", "--lambda3", "--mpr-sigma"])
def test_negative_coefficient_is_refused(flag, tmp_path):
    run = run_script if flag == "--lambda1" else run_in_process
    assert_one_line_error(run("td3_pave.py", flag, "-0.5", cwd=tmp_path), flag)


def test_capture_video_records_an_episode(tmp_path):
    result = run_script("td3.py", "--env-id", "Pendulum-v1", "--total-timesteps", "250", "--learning-starts", "100",
                        "--capture-video", "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    videos = list(tmp_path.glob("runs/*/videos/*.mp4"))
    assert videos and videos[0].stat().st_size > 1000


def test_track_without_wandb_says_how_to_install(tmp_path):
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed: --track would really log")
    except ImportError:
        pass
    assert_one_line_error(run_in_process("td3.py", "--env-id", "Pendulum-v1", "--track", cwd=tmp_path),
                          "pip install wandb")


def test_any_critic_trains_saves_and_is_read_by_the_tools(tmp_path):
    """td3_pave.py with a critic the speed path is not written for (3 hidden layers, LayerNorm) takes the general
    pave_regularizer, trains, saves a checkpoint that records it, and eval_smoothness.py and critic_geometry.py read
    it."""
    run_dir, ckpt = train("td3_pave.py", "Pendulum-v1", tmp_path, "--hidden-sizes", "64", "64", "64",
                          "--critic-layer-norm", "--batch-size", "64")
    assert ckpt["args"]["critic_layer_norm"] and tuple(ckpt["args"]["hidden_sizes"]) == (64, 64, 64)
    assert "net.1.weight" in ckpt["qf1"]  # the first LayerNorm's gain
    scalars = read_scalars(run_dir)
    assert max(scalars["losses/mpr"]) > 0 and all(v != 0 for v in scalars["geometry/vhv"])
    checkpoint = next(run_dir.glob("*.pt"))
    for tool in ("eval_smoothness.py", "critic_geometry.py"):
        result = run_script(tool, checkpoint, "--episodes", "1", "--out-dir", tmp_path / tool, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / tool / "table.csv").read_text().count("\n") >= 2


def test_which_pave_path_runs_is_said_at_start(tmp_path):
    small = ["--env-id", "Pendulum-v1", "--total-timesteps", "260", "--learning-starts", "250", "--no-progress-bar"]
    result = run_script("td3_pave.py", *small, "--hidden-sizes", "64", "64", cwd=tmp_path)
    assert (result.returncode == 0
            and "PAVE terms: the speed path (written-out derivatives, pave_speed.py)" in result.stdout)
    assert "device: cpu (1 torch threads)" in result.stdout  # the device the run uses, not the --cuda flag
    result = run_script("td3_pave.py", *small, "--hidden-sizes", "32", "32", "32", "--torch-threads", "2", cwd=tmp_path)
    assert result.returncode == 0 and "PAVE terms: pave_regularizer (autograd)" in result.stdout
    assert "device: cpu (2 torch threads)" in result.stdout
    assert_one_line_error(run_in_process("td3_pave.py", *small, "--critic-layer-norm", "--pave-impl", "fused",
                                         cwd=tmp_path),
                          "--pave-impl written-out (alias fused)")


def test_flush_denormal_makes_the_run_compute_denormals_as_zero(tmp_path):
    """--flush-denormal sets torch's CPU mode at the start of the run and says so; without it the run computes with
    denormal floats as IEEE 754 says (1e-40 * 1 stays 1e-40), also after a run in the same process that flushed them."""
    denormal = torch.tensor([1e-40])
    env = td3.make_env("Pendulum-v1", 1)()
    try:
        for flush in (False, True, False):
            args = td3.resolve_args(td3.Args(env_id="Pendulum-v1", flush_denormal=flush))
            run_control.start_logging(args, "td3.py", tmp_path / str(flush), env, torch.device("cpu"), None).close()
            assert (denormal * 1.0).item() == (0.0 if flush else pytest.approx(1e-40, rel=1e-4))
    finally:
        torch.set_flush_denormal(False)  # the mode stays set in the process after a run; the tests after expect it off
        env.close()
    assert (denormal * 1.0).item() > 0
    small = ["--env-id", "Pendulum-v1", "--total-timesteps", "260", "--learning-starts", "250", "--no-progress-bar"]
    result = run_script("td3_pave.py", *small, "--hidden-sizes", "64", "64", "--flush-denormal", cwd=tmp_path)
    assert result.returncode == 0 and "device: cpu (1 torch threads, denormals flushed to 0)" in result.stdout


@pytest.mark.parametrize("old,new", [("Hopper-v2", "Hopper-v5"), ("Walker2d-v3", "Walker2d-v5"), ("Ant-v2", "Ant-v5"),
                                     ("Reacher-v2", "Reacher-v5"),
                                     ("LunarLanderContinuous-v2", "LunarLanderContinuous-v3")])
def test_paper_era_ids_run_as_their_current_version(old, new, capsys):
    """The -v2/-v3 MuJoCo ids need the retired mujoco-py: they map to -v5, with a note, and are never suggested."""
    assert td3.resolve_args(td3.Args(env_id=old)).env_id == new
    assert f"running {new}" in capsys.readouterr().out
    assert td3.modern_env_id("Hopper-v4") == "Hopper-v4"  # runs in Gymnasium 1.x as it is


def test_suggestions_are_ids_that_run(tmp_path):
    result = run_in_process("td3.py", "--env-id", "Hoper-v3", cwd=tmp_path)
    assert_one_line_error(result, "Hoper-v3")
    suggested = result.stderr.strip().splitlines()[-1].split("did you mean")[-1]
    assert "-v2" not in suggested and "-v3" not in suggested


def test_a_run_too_short_to_learn_is_warned_about(tmp_path):
    result = run_script("td3.py", "--env-id", "Pendulum-v1", "--total-timesteps", "300", "--learning-starts", "1000",
                        "--no-progress-bar", cwd=tmp_path)
    assert result.returncode == 0
    assert "warning: --total-timesteps 300 <= --learning-starts 1000: no gradient step is taken" in result.stderr
