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
    setup = common.build(c)
    state = setup.init(jax.random.key(0))
    records = []
    state = setup.loop.run(state, 30, 10, jax.random.key(1), on_eval=lambda s, r: records.append(r),
                           progress=False)
    if data_parallel:
        assert len(state.params["dense_0"]["kernel"].sharding.device_set) == 8
    losses[data_parallel] = [(float(r["train_loss"]), float(r["test_loss"])) for r in records]
np.testing.assert_allclose(losses[True], losses[False], rtol=2e-5)
print("OK", losses[True][-1])
"""


def test_eight_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
