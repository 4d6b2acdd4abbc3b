"""Data parallelism on 8 fake CPU devices gives the losses of one device."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import jax, numpy as np
assert jax.device_count() == 8, jax.devices()
from configs import train_mnist1d as default
from lth_jax.experiments import common
losses = {}
for data_parallel in (False, True):
    c = default.get_config()
    c.data.source.num_samples = 1000
    c.model.widths = (64, 64)
    c.train.batch_size = 64
    c.train.eval_batch_size = 96
    c.parallel.data_parallel = data_parallel
    parts = common.build(c)
    state = parts.init(jax.random.key(0))
    records = []
    state = parts.trainer.run(state, 30, 10, jax.random.key(1), on_eval=lambda s, r: records.append(r),
                           progress=False)
    if data_parallel:
        assert len(state.params["dense_0"]["kernel"].sharding.device_set) == 8
    losses[data_parallel] = [(float(r["train_loss"]), float(r["test_loss"])) for r in records]
np.testing.assert_allclose(losses[True], losses[False], rtol=2e-5)
print("OK", losses[True][-1])
"""


def run_on_eight_devices(script: str) -> None:
    """XLA_FLAGS must be set before jax starts, so each check runs in a fresh process."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_eight_devices_match_one():
    run_on_eight_devices(SCRIPT)

ENSEMBLE = r"""
import jax, jax.numpy as jnp, numpy as np
from configs import train_mnist1d
from lth_jax import ensemble
from lth_jax.experiments import common
from lth_jax.train import create_state, init_variables
finals = {}
for data_parallel in (False, True):
    c = train_mnist1d.get_config()
    c.data.source.num_samples = 1000
    c.model.widths = (32,)
    c.train.batch_size = 40
    c.train.eval_batch_size = 96
    c.parallel.data_parallel = data_parallel
    parts = common.build(c, members=True)
    states = []
    for m in range(8):
        v = init_variables(parts.model, jax.random.key(m), parts.dataset.input_shape)
        states.append(create_state(v["params"], {}, parts.tx))
    stacked = ensemble.stack(states)
    if data_parallel:
        stacked = parts.data_parallel.put_members(stacked)
        assert stacked.params["dense_0"]["kernel"].sharding.spec[0] == "data"
    parts.trainer.set_members([(0, m) for m in range(8)])
    records = []
    out = parts.trainer.run(stacked, 20, 10, jax.random.key(1), on_eval=lambda s, r: records.append(r), progress=False)
    if data_parallel:
        shard = out.params["dense_0"]["kernel"].addressable_shards[0]
        assert shard.data.shape[0] == 1, shard.data.shape  # one whole member per device
    finals[data_parallel] = (np.asarray(out.params["dense_0"]["kernel"]), np.asarray(records[-1]["test_loss"]))
np.testing.assert_allclose(finals[True][0], finals[False][0], rtol=1e-4, atol=1e-6)
np.testing.assert_allclose(finals[True][1], finals[False][1], rtol=1e-5)
print("OK")
"""


def test_ensemble_members_sharded_over_eight_devices():
    run_on_eight_devices(ENSEMBLE)
