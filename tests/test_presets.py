"""Every preset of every training script, pinned against the released code's protocol (docs/protocol.md), written out
here.

The table below is deliberately spelled out value by value rather than derived from the scripts: a future edit of a
script's defaults or ENV_PRESETS that drifts from the released protocol fails here, naming the script, env and field.
"""

import importlib

import pytest

ENVS = ["LunarLanderContinuous-v3", "Pendulum-v1", "Reacher-v5", "Ant-v5", "Hopper-v5", "Walker2d-v5"]
BUDGET = {"LunarLanderContinuous-v3": 500_000, "Pendulum-v1": 100_000, "Reacher-v5": 500_000, "Ant-v5": 1_000_000,
          "Hopper-v5": 1_000_000, "Walker2d-v5": 1_000_000}

# the protocol of every TD3 method and of every SAC method (docs/protocol.md, the TD3 and SAC protocols)
TD3_COMMON = dict(hidden_sizes=(400, 300), batch_size=256, train_freq=1, gradient_steps=1, learning_rate=1e-3,
                  learning_starts=10_000, tau=0.005, policy_frequency=2, exploration_noise=0.1, policy_noise=0.2,
                  noise_clip=0.5, actor_activation="silu", critic_activation="silu")
TD3_GAMMA_BUFFER = {"LunarLanderContinuous-v3": (0.98, 200_000), "Pendulum-v1": (0.98, 200_000),
                    "Reacher-v5": (0.99, 1_000_000),
                    "Ant-v5": (0.99, 1_000_000), "Hopper-v5": (0.99, 1_000_000), "Walker2d-v5": (0.99, 1_000_000)}
SAC_COMMON = dict(hidden_sizes=(256, 256), batch_size=100, train_freq=50, gradient_steps=50, learning_rate=1e-3,
                  learning_starts=10_000, tau=0.005, gamma=0.99, buffer_size=1_000_000, alpha=0.2, autotune=False,
                  actor_activation="silu", critic_activation="silu")
# the geometry probe of the plain scripts and PAVE's own terms: sigma 0.01, delta 1.0 in every env
PAVE_NOISE = dict(mpr_sigma=0.01, curv_delta=1.0)

# the coefficients (docs/protocol.md, the coefficient tables), env order as ENVS
LAMBDAS = {
    "td3_caps": ("lambda_t", "lambda_s"), "sac_caps": ("lambda_t", "lambda_s"),
    "td3_gradcaps": ("lambda_t",), "sac_gradcaps": ("lambda_t",),
    "td3_asap": ("lambda_t", "lambda_s", "lambda_p"), "sac_asap": ("lambda_t", "lambda_s", "lambda_p"),
    "td3_pave": ("lambda1", "lambda2", "lambda3"), "sac_pave": ("lambda1", "lambda2", "lambda3"),
}
CAPS = [(0.1, 0.5), (1.0, 5.0), (0.1, 0.5), (0.1, 0.5), (0.1, 0.5), (0.1, 0.5)]
COEFFICIENTS = {
    "td3_caps": CAPS, "sac_caps": CAPS,
    "td3_gradcaps": [(1.0,)] * 6, "sac_gradcaps": [(1.0,)] * 6,
    "td3_asap": [(0.005, 0.03, 2.0), (0.005, 0.03, 2.0), (0.1, 0.1, 2.0), (0.05, 0.3, 2.0), (0.07, 0.3, 2.0),
                 (0.05, 0.3, 2.0)],
    "sac_asap": [(0.5, 10.0, 2.0), (0.5, 5.0, 2.0), (0.5, 5.0, 2.0), (0.5, 30.0, 2.0), (0.5, 10.0, 2.0),
                 (0.5, 5.0, 2.0)],
    "td3_pave": [(0.1, 0.1, 0.01), (2.0, 0.005, 2.0), (0.1, 0.1, 0.01), (0.1, 0.005, 0.5), (0.1, 0.005, 0.5),
                 (0.1, 0.1, 0.01)],
    "sac_pave": [(0.1, 0.5, 0.05), (0.1, 0.005, 0.5), (0.1, 5e-4, 1.0), (0.1, 5e-4, 1.0), (2.0, 5e-4, 3.0),
                 (2.0, 0.005, 2.0)],
}
METHOD_EXTRAS = {"td3_caps": dict(caps_sigma=0.2), "sac_caps": dict(caps_sigma=0.2), "td3_asap": dict(asap_tau=0.01),
                 "sac_asap": dict(asap_tau=0.01)}
SCRIPTS = ["td3", "td3_caps", "td3_gradcaps", "td3_asap", "td3_pave", "sac", "sac_caps", "sac_gradcaps", "sac_asap",
           "sac_pave"]


def expected_preset(script, env_id):
    """The released protocol for one script and env, field by field."""
    if script.startswith("td3"):
        gamma, buffer_size = TD3_GAMMA_BUFFER[env_id]
        expected = dict(TD3_COMMON, gamma=gamma, buffer_size=buffer_size)
    else:
        expected = dict(SAC_COMMON)
    expected.update(PAVE_NOISE, total_timesteps=BUDGET[env_id], **METHOD_EXTRAS.get(script, {}))
    if script in LAMBDAS:
        expected.update(zip(LAMBDAS[script], COEFFICIENTS[script][ENVS.index(env_id)]))
    return expected


@pytest.mark.parametrize("env_id", ENVS)
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_preset_is_the_released_protocol(script, env_id):
    module = importlib.import_module(script)
    args = module.resolve_args(module.Args(env_id=env_id))
    for field, value in expected_preset(script, env_id).items():
        assert getattr(args, field) == value, f"{script} {env_id} {field}: {getattr(args, field)} != {value}"


def test_the_table_covers_every_coefficient_a_script_has():
    """No script has a lambda the table above does not pin."""
    for script in SCRIPTS:
        fields = importlib.import_module(script).Args.__dataclass_fields__
        lambdas = {name for name in fields if name.startswith("lambda")}
        assert lambdas == set(LAMBDAS.get(script, ())), script


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_flag_beats_the_preset(script):
    """The paper text's variants are one flag away: ReLU baselines, other gamma or layer sizes."""
    module = importlib.import_module(script)
    args = module.resolve_args(module.Args(env_id="Pendulum-v1", gamma=0.9, hidden_sizes=(64, 32),
                                           actor_activation="relu",
                                           critic_activation="relu"))
    assert (args.gamma, args.hidden_sizes, args.actor_activation, args.critic_activation) == (0.9, (64, 32), "relu",
                                                                                              "relu")
