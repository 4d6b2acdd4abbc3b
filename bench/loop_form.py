"""The training loop's form: per-step jit vs lax.scan chunks (length, unrolling).

LeNet-300-100, batch 60, Adam, an 80%-pruned mask, random 28x28 data held on
the device and gathered by index (as lth_jax.trainer runs it). Variants, each
running `--steps` steps (default 1000), compile excluded, timed interleaved:

  per_step      a Python loop over jit(Steps.step), one dispatch per step (the
                batch gathered inside it from index rows on the device)
  scan_L        jit(Steps.scan_steps) over chunks of L steps (L = 50, 250,
                1000): what Trainer runs, with L = train.eval_every
  scan_L_uU     the same scan with unroll=U (U = 2, 4)

Run it once per JAX version and backend you care about; docs/benchmarks.md
records the figures and the loop form lth_jax uses.

    python bench/loop_form.py --out bench/results/loop_form_jax0.10.2.json
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_args(ap, "bench/results/loop_form.json")
    ap.add_argument("--steps", type=int, default=None)
    args = common.parse_timing_args(ap, steps=1000, quick_steps=100)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import models, optim, pruning
    from lth_jax import masks as masks_lib
    from lth_jax.train import Steps, batch_indices, create_state, init_variables

    model = models.get("lenet_300_100", num_classes=10)
    tx = optim.optimizer("adam", 1.2e-3)
    params = init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))["params"]
    mask = pruning.magnitude(params, masks_lib.ones_like(params), 0.8, "layerwise")
    state0 = create_state(params, {}, tx, mask)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((8192, 28, 28, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, 8192).astype(np.int32))
    index = batch_indices(0, 8192, 60, 0, args.steps)
    key = jax.random.PRNGKey(1)
    steps = Steps(model, tx)
    # the batch gathered inside the jitted step, from index rows already on the device
    one = jax.jit(lambda st, r: steps.step(st, x[r], y[r], key), donate_argnums=0)
    rows_on_device = [jnp.asarray(r) for r in index]

    def copy(tree):
        return jax.tree_util.tree_map(lambda a: a.copy(), tree)

    def per_step():
        st = copy(state0)
        for r in rows_on_device:
            st, m = one(st, r)
        jax.block_until_ready(st)

    def scan(length, unroll=1):
        def chunked(st, i):
            def body(s, r):
                return steps.step(s, x[r], y[r], key)
            return jax.lax.scan(body, st, i, unroll=unroll)
        fn = jax.jit(chunked, donate_argnums=0) if unroll > 1 else jax.jit(steps.scan_steps, donate_argnums=0)
        chunks = [jnp.asarray(index[a:a + length]) for a in range(0, args.steps, length)]

        def run():
            st = copy(state0)
            for c in chunks:
                st, m = fn(st, c) if unroll > 1 else fn(st, x, y, c, key)
                np.asarray(m["loss"])  # Trainer reads the losses after every chunk
            jax.block_until_ready(st)
        return run

    variants = {"per_step": per_step}
    for length in (50, 250, 1000):
        if length <= args.steps:
            variants[f"scan_{length}"] = scan(length)
    for u in (2, 4):
        variants[f"scan_250_u{u}"] = scan(min(250, args.steps), u)
    info = common.machine_info()
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, jax {info.get('jax')}, backend "
          f"{jax.default_backend()}", flush=True)
    timings, errors = common.interleaved(variants, args.reps, args.warmup, log=lambda m: print(m, flush=True))
    base = common.best_median(timings["per_step"]["times"])[1]
    rows, out = [], {}
    for v, t in timings.items():
        best, med = common.best_median(t["times"])
        out[v] = {"best_s": best, "median_s": med, "ms_per_step_median": med / args.steps * 1e3,
                  "speedup_vs_per_step_median": base / med}
        rows.append([v, common.fmt(best, 3), common.fmt(med, 3), common.fmt(med / args.steps * 1e3, 3),
                     common.fmt(base / med, 2)])
    print(f"\n## Loop form, LeNet-300-100 batch 60 ({info['cpu']}, {info['cpu_count']} cores, jax {info.get('jax')}, "
          f"{jax.default_backend()}; {args.steps} steps, median of {args.reps})\n")
    print(common.markdown_table(["variant", "s (best)", "s (median)", "ms / step (median)", "per_step / this"], rows))
    common.write_json(args.out, {"machine": info, "args": vars(args), "backend": jax.default_backend(),
                                 "variants": out, "errors": errors})


if __name__ == "__main__":
    main()
