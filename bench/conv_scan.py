"""Conv-6 SGD steps inside `lax.scan`: fast_conv vs plain lax convolution.

XLA:CPU leaves the weight-gradient convolution in a slow layout inside loop
bodies (jax-ml/jax issue 12868); lth_jax.models.fast_conv works around it.
Both variants run the same steps on the same data and start from the same
parameters; the script prints the time per step of each (compile excluded)
and the largest difference between the final parameters.

    python bench/conv_scan.py                 # 5 fast steps, 2 plain steps
    python bench/conv_scan.py --plain_steps 5
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from lth_jax import models


def make_run(model, steps, lr=0.01):
    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, batch):
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, loss

    @jax.jit
    def run(params, xs, ys):
        return jax.lax.scan(step, params, (xs, ys))

    return run


def time_variant(fast, params, xs, ys):
    model = models.get("conv6", 10, fast_conv=fast)
    run = make_run(model, xs.shape[0])
    t0 = time.perf_counter()
    compiled = run.lower(params, xs, ys).compile()
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    out_params, losses = jax.block_until_ready(compiled(params, xs, ys))
    t_run = time.perf_counter() - t0
    return t_compile, t_run, out_params, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="scan steps with fast_conv")
    ap.add_argument("--plain_steps", type=int, default=2, help="scan steps with plain lax conv (slow on CPU)")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()

    key_x, key_y, key_init = jax.random.split(jax.random.PRNGKey(0), 3)
    n = max(args.steps, args.plain_steps)
    xs = jax.random.normal(key_x, (n, args.batch, 28, 28, 1))
    ys = jax.random.randint(key_y, (n, args.batch), 0, 10)
    params = models.get("conv6", 10).init(key_init, xs[0], train=False)["params"]
    print(f"backend={jax.default_backend()} devices={jax.devices()} jax={jax.__version__}")
    print(f"Conv-6, batch {args.batch}, 28x28x1, SGD steps inside lax.scan")

    results = {}
    for fast, steps in ((True, args.steps), (False, args.plain_steps)):
        if steps <= 0:
            continue
        label = "fast_conv" if fast else "lax conv "
        t_c, t_r, p, losses = time_variant(fast, params, xs[:steps], ys[:steps])
        results[fast] = (steps, p, losses)
        print(f"{label}: {steps} steps in {t_r:8.3f} s = {t_r / steps:8.3f} s/step (compile {t_c:.1f} s)")

    if True in results and False in results:
        k = min(results[True][0], results[False][0])
        if results[True][0] == results[False][0]:
            diff = jax.tree_util.tree_map(
                lambda a, b: jnp.max(jnp.abs(a - b)), results[True][1], results[False][1]
            )
            print(f"max |param difference| after {k} steps: {max(jax.tree_util.tree_leaves(diff)):.2e}")
        l_fast, l_plain = results[True][2][:k], results[False][2][:k]
        print(f"losses fast {l_fast.tolist()} plain {l_plain.tolist()}")


if __name__ == "__main__":
    main()
