"""One check of lth_jax on a GPU or TPU host: JAX only, random data of the real
shapes (nothing downloaded), under 8 minutes, one table.

Rows:
  train     examples/s of one compiled chunk of SGD steps (`Steps.scan_steps`,
            data on the device, 80%-pruned mask) for LeNet-300-100 (batch 128,
            28x28x1) and ResNet-20 (batch 128, 32x32x3), float32 and bfloat16
            (`compute_dtype`)
  ensemble  LeNet-300-100, K = 8 members vmapped in one program vs the same
            8 trained one after another (examples/s over all members)
  grand     GraNd examples/s of ResNet-18 (32x32x3, 10 classes): the fast
            (ghost-norm) path vs vmap(grad)
The share of peak: each row's FLOP/s (XLA's cost analysis of the compiled
program) over the FLOP/s of a large matmul in the same dtype measured here,
a measured peak, since JAX does not report the device's nominal one.
Then `pytest -q -m accelerator`: the tests marked to pass on any backend.

    python bench/accelerator_check.py --out bench/results/accelerator_check.json
    python bench/accelerator_check.py --quick --no_pytest     # smoke run (the tests run it on CPU)

Targets on a GPU (issue 11): the K = 8 ensemble >= 4x sequential.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402


def best_time(fn, reps: int) -> float:
    fn()  # compile
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def flops_of(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost["flops"]) if cost and cost.get("flops") else None
    except Exception:  # noqa: BLE001 -- not every backend reports costs
        return None


def matmul_peak(dtype, n: int, reps: int) -> float:
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / best_time(lambda: f(a).block_until_ready(), reps)


def training(name, batch, steps, dtype, members, args):
    """(examples/s, FLOP/s) of `steps` masked SGD steps in one compiled scan."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from lth_jax import ensemble, masks, models, pruning
    from lth_jax.train import Steps, create_state, init_variables
    shape = (28, 28, 1) if name in ("lenet_300_100", "conv2") else (32, 32, 3)
    model = models.get(name, num_classes=10)
    tx = optax.sgd(0.01, momentum=0.9)
    n_data = max(batch * 4, 512)
    x = jax.random.normal(jax.random.key(1), (n_data,) + shape)
    y = jax.random.randint(jax.random.key(2), (n_data,), 0, 10)
    index = jnp.asarray(np.random.default_rng(0).integers(0, n_data, (steps, batch)), jnp.int32)

    def state_of(seed):
        v = init_variables(model, jax.random.key(seed), shape)
        mask = pruning.magnitude(v["params"], masks.ones_like(v["params"]), 0.8, "layerwise")
        return create_state(v["params"], v.get("batch_stats", {}), tx, mask)
    stack = members > 1
    steps_ = Steps(model, tx, members=stack, member_block=None, compute_dtype=dtype)
    scan = jax.jit(steps_.scan_steps)
    state = ensemble.stack([state_of(i) for i in range(members)]) if stack else state_of(0)
    key = jax.random.key(3)
    compiled = scan.lower(state, x, y, index, key).compile()
    run = lambda: jax.block_until_ready(compiled(state, x, y, index, key))
    t = best_time(run, args.reps)
    flops = flops_of(compiled)
    return members * steps * batch / t, (flops / t if flops else None)


def grand_rate(name, method, n, chunk, args):
    import functools

    import jax

    from lth_jax import models, scores
    from lth_jax.train import init_variables
    model = models.get(name, num_classes=10)
    shape = (28, 28, 1) if name == "conv2" else (32, 32, 3)
    v = init_variables(model, jax.random.key(0), shape)
    x = jax.random.normal(jax.random.key(1), (n,) + shape)
    y = jax.random.randint(jax.random.key(2), (n,), 0, 10)
    apply_fn = lambda variables, xb: model.apply(variables, xb, train=False)
    stacked = jax.tree_util.tree_map(lambda a: a[None], v)
    score = functools.partial(scores.grand, method=method)  # one object: compiled once
    fn = lambda: jax.block_until_ready(scores.ensemble(score, apply_fn, stacked, x, y, chunk_size=chunk,
                                                       model=model))
    return n / best_time(fn, args.reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(ap, "bench/results/accelerator_check.json")
    ap.add_argument("--no_pytest", action="store_true", help="skip `pytest -q -m accelerator`")
    args = ap.parse_args()
    common.apply_xla_flags(args.xla_flags)
    import jax
    import jax.numpy as jnp
    if args.quick:  # a smoke run: the numbers mean nothing, compile fast
        jax.config.update("jax_disable_most_optimizations", True)
    args.reps = args.reps or (1 if args.quick else 5)
    q = args.quick
    batch = 16 if q else 128
    lenet_steps, resnet_steps = (3, 1) if q else (200, 20)
    print(f"devices: {jax.devices()}")
    peak = {"float32": matmul_peak(jnp.float32, 256 if q else 8192, args.reps),
            "bfloat16": matmul_peak(jnp.bfloat16, 256 if q else 8192, args.reps)}
    rows, out = [], {"machine": common.machine_info(), "quick": q, "matmul_flops": peak, "rows": {}}

    def add(what, setting, rate, flops, dtype="float32", note=""):
        share = f"{100 * flops / peak[dtype]:.1f}%" if flops else "-"
        rows.append([what, setting, common.fmt(rate, 0), share, note])
        out["rows"][f"{what} {setting}"] = {"examples_per_s": rate, "flops_per_s": flops, "dtype": dtype}
        print(f"  {what} {setting}: {rate:,.0f} examples/s", flush=True)

    # --quick: small stand-ins for the ResNets (the same code paths, seconds to compile on a CPU)
    conv, grand_model = ("conv2", "conv2") if q else ("resnet20", "resnet18")
    for name, steps in (("lenet_300_100", lenet_steps), (conv, resnet_steps)):
        for dtype in (None, "bfloat16"):
            rate, flops = training(name, batch, steps, dtype, 1, args)
            add("train", f"{name} {dtype or 'float32'}", rate, flops, dtype or "float32")
    stacked, flops = training("lenet_300_100", batch, lenet_steps, None, 8, args)
    alone, _ = training("lenet_300_100", batch, lenet_steps, None, 1, args)  # 8 of these one after another
    add("ensemble", "lenet_300_100 K=8 vmapped", stacked, flops, note=f"{stacked / alone:.2f}x sequential")
    add("ensemble", "lenet_300_100 K=8 sequential", alone, None)
    out["ensemble_speedup"] = stacked / alone
    n, chunk = (8, 8) if q else (2048, 256)
    for method in ("fast", "vmap"):
        add("grand", f"{grand_model} {method}", grand_rate(grand_model, method, n, chunk, args), None)
    print()
    table = common.markdown_table(["what", "setting", "examples/s", "of the matmul peak", "note"], rows)
    print(table)
    print(f"\nmatmul peak measured here: float32 {peak['float32'] / 1e12:.2f} TFLOP/s, "
          f"bfloat16 {peak['bfloat16'] / 1e12:.2f} TFLOP/s")
    if jax.default_backend() != "cpu":
        print(f"target: K=8 ensemble >= 4x sequential: {out['ensemble_speedup']:.2f}x -> "
              f"{'met' if out['ensemble_speedup'] >= 4 else 'MISSED'}")
    out["table"] = table
    if not args.no_pytest:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "accelerator", "-n", "0"], cwd=root)
        out["pytest_accelerator_returncode"] = r.returncode
        print(f"pytest -m accelerator: {'passed' if r.returncode == 0 else 'FAILED'}")
    common.write_json(args.out, out)
    return 0 if out.get("pytest_accelerator_returncode", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
