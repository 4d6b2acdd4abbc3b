"""Conv-6 SGD steps inside `lax.scan`: fast_conv vs plain lax convolution.

XLA:CPU leaves the weight-gradient convolution in a slow layout inside loop
bodies (jax-ml/jax issue 12868); lth_jax.models.fast_conv works around it.
Both variants run the same steps on the same data and start from the same
parameters; the script prints the time per step of each (compile excluded)
and the largest difference between the final parameters.

    python bench/conv_scan.py                 # 5 fast steps, 2 plain steps
    python bench/conv_scan.py --plain_steps 5

It also times the plain lax step jitted on its own (no loop), the speed the
scan should reach.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from lth_jax import models


def make_step(model, lr=0.01):
    def loss_fn(params, x, y):
        logits = model.apply({"params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(params, batch):
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, loss

    return step


def make_run(model):
    step = make_step(model)

    @jax.jit
    def run(params, xs, ys):
        return jax.lax.scan(step, params, (xs, ys))

    return run


def time_variant(fast, params, xs, ys):
    model = models.get("conv6", 10, fast_conv=fast)
    run = make_run(model)
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

    finals = {}
    for fast, steps in ((True, args.steps), (False, args.plain_steps)):
        if steps <= 0:
            continue
        label = "fast_conv" if fast else "lax conv "
        t_c, t_r, final, losses = time_variant(fast, params, xs[:steps], ys[:steps])
        finals[fast] = (steps, final)
        print(f"{label}: {steps} steps in {t_r:8.3f} s = {t_r / steps:8.3f} s/step "
              f"(compile {t_c:.1f} s) losses {[round(float(v), 5) for v in losses]}")

    # Reference: the plain lax conv, one jitted step per call (no loop), where
    # XLA:CPU fixes the layouts itself.
    step = jax.jit(make_step(models.get("conv6", 10, fast_conv=False)))
    p, _ = jax.block_until_ready(step(params, (xs[0], ys[0])))
    t0 = time.perf_counter()
    for i in range(min(n, 3)):
        p, _ = step(p, (xs[i], ys[i]))
    jax.block_until_ready(p)
    t = (time.perf_counter() - t0) / min(n, 3)
    print(f"lax conv, no scan (jit per step): {t:8.3f} s/step")

    if True in finals and False in finals:  # same steps both ways: same parameters
        k, p_plain = finals[False]
        p_fast = finals[True][1] if finals[True][0] == k else time_variant(True, params, xs[:k], ys[:k])[2]
        diff = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), p_fast, p_plain)
        print(f"max |parameter difference| after {k} steps: {max(jax.tree_util.tree_leaves(diff)):.2e}")


if __name__ == "__main__":
    main()
