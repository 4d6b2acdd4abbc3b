"""Where a stacked member-step's time goes on this CPU, and how much stacking could save.

Issue 11 asks a stack of K members to cost no more than K members trained
alone (LeNet-300-100 K = 3 and 8 >= 1.0x, MNIST-1D MLP K = 8 >= 1.3x). Stacking
can only save what is not the members' own arithmetic. This script times, per
member-step, for each setup of bench/lottery_vmap.py (same shapes, random
data, 1000 steps inside one compiled lax.scan, compile excluded):

  step alone     jit(Steps(members=False).scan_steps): the full training step
                 (forward, loss, backward, Adam, mask) of one member
  gemms alone    only that step's matrix products: per layer the forward
                 x @ W, the input gradient g @ W.T and the weight gradient
                 x.T @ g, in a scan whose carry (W) changes every step
  gemms K        the same products vmapped over K members (batched GEMMs),
                 time / K
  gemms wide     the first layer's K products as one (batch, D) @ (D, K*H)
                 product (members sharing a batch), the other layers
                 batched; time / K
  step K         the full step, K members stacked (plain vmap and
                 member_block 4, as the experiments run it), time / K

bound = step alone / (the cheaper of gemms K and gemms wide): the speed-up a
stack of K would reach if everything but its matrix products cost nothing.
Where the bound is below a target, no layout of the stacked step meets it.
Also the machine's f32 matmul rate (2048^3) and each variant's GFLOP/s.

    python bench/stack_profile.py --out bench/results/stack_profile.json
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LAYERS = {"mlp": [40, 100, 100, 10], "lenet": [784, 300, 100, 10]}


def gemm_scan(widths, batch, steps, k=None, wide=False):
    """A jitted fn(ws, xs) running `steps` steps of every layer's three products."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def layer_products(w, x, g):
        return x @ w, g @ w.T, x.T @ g  # forward, input gradient, weight gradient

    def one_step(ws, xs):
        out = []
        for w, (x, g) in zip(ws, xs):
            y, dx, dw = layer_products(w, x, g)
            out.append(w - 1e-6 * dw + 1e-9 * (y.sum() + dx.sum()))  # keeps every product live
        return out

    def step(ws, xs):
        if k is None:
            return one_step(ws, xs)
        if not wide:
            return jax.vmap(one_step)(ws, xs)
        # first layer: one wide product over the members' concatenated outputs (shared batch)
        w0, (x0, g0) = ws[0], xs[0]  # w0 (K, D, H); x0 (B, D) shared; g0 (K, B, H)
        wcat = jnp.moveaxis(w0, 0, 1).reshape(w0.shape[1], -1)  # (D, K*H)
        gcat = jnp.moveaxis(g0, 0, 1).reshape(g0.shape[1], -1)  # (B, K*H)
        y, dw = x0 @ wcat, x0.T @ gcat
        dx = jnp.einsum("bkh,kdh->kbd", gcat.reshape(g0.shape[1], k, -1), w0)
        new0 = w0 - 1e-6 * jnp.moveaxis(dw.reshape(w0.shape[1], k, -1), 1, 0) + 1e-9 * (y.sum() + dx.sum())
        return [new0] + jax.vmap(one_step)(ws[1:], xs[1:])

    @jax.jit
    def run(ws, xs):
        return lax.fori_loop(0, steps, lambda _, w: step(w, xs), ws)
    return run


def gemm_inputs(widths, batch, k=None, wide=False):
    import numpy as np
    rng = np.random.default_rng(0)
    lead = () if k is None else (k,)
    ws, xs = [], []
    for i, (din, dout) in enumerate(zip(widths[:-1], widths[1:])):
        ws.append(rng.standard_normal((*lead, din, dout), dtype=np.float32) * 0.05)
        x_lead = () if (wide and i == 0) else lead
        xs.append((rng.standard_normal((*x_lead, batch, din), dtype=np.float32),
                   rng.standard_normal((*lead, batch, dout), dtype=np.float32)))
    return ws, xs


def flops(widths, batch) -> float:
    return sum(3 * 2 * batch * a * b for a, b in zip(widths[:-1], widths[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_args(ap, "bench/results/stack_profile.json")
    ap.add_argument("--models", default="mlp,lenet")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None)
    args = common.parse_timing_args(ap, steps=1000, quick_steps=100)

    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    import lottery_vmap
    from lth_jax import ensemble

    info = common.machine_info()
    k, steps = args.members, args.steps
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    timings, _ = common.interleaved({"matmul_2048": lambda: mm(a).block_until_ready()}, args.reps, args.warmup)
    peak = 2 * 2048 ** 3 / common.best_median(timings["matmul_2048"]["times"])[0] / 1e9
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, jax {info.get('jax')}; f32 matmul 2048^3: "
          f"{peak:.1f} GFLOP/s", flush=True)
    results = {"machine": info, "args": vars(args), "matmul_gflops": peak, "cases": {}}
    rows = []
    for name in args.models.split(","):
        setup = lottery_vmap.SETUPS[name]
        widths, batch = LAYERS[name], setup["batch"]
        bargs = argparse.Namespace(per_member_order=False, steps=steps)
        single, stacked, states, x, y, idx_rows = lottery_vmap.build(name, k, bargs)
        idx = jnp.asarray(idx_rows[0])
        key = jax.random.PRNGKey(1)
        scan1 = jax.jit(single.scan_steps)
        scan_vmap = jax.jit(stacked.scan_steps)
        scan_block = jax.jit(dataclasses.replace(stacked, member_block=4).scan_steps)
        s0, sk = states[0], ensemble.stack(states)
        g1, gk, gw = (gemm_scan(widths, batch, steps), gemm_scan(widths, batch, steps, k),
                      gemm_scan(widths, batch, steps, k, wide=True))
        i1, ik, iw = gemm_inputs(widths, batch), gemm_inputs(widths, batch, k), gemm_inputs(widths, batch, k, True)
        fns = {
            "step alone": lambda: jax.block_until_ready(scan1(s0, x, y, idx, key)),
            "gemms alone": lambda: jax.block_until_ready(g1(*i1)),
            f"gemms K={k}": lambda: jax.block_until_ready(gk(*ik)),
            f"gemms wide K={k}": lambda: jax.block_until_ready(gw(*iw)),
            f"step K={k} vmap": lambda: jax.block_until_ready(scan_vmap(sk, x, y, idx, key)),
            f"step K={k} block 4": lambda: jax.block_until_ready(scan_block(sk, x, y, idx, key)),
        }
        print(f"\n== {name}: layers {widths}, batch {batch}, {steps} steps, {args.reps} reps", flush=True)
        t, errors = common.interleaved(fns, args.reps, args.warmup, log=lambda m: print(m, flush=True))
        per = {}
        for v, r in t.items():
            best, med = common.best_median(r["times"])
            members = 1 if "alone" in v else k
            per[v] = {"us_per_member_step_best": best / steps / members * 1e6,
                      "us_per_member_step_median": med / steps / members * 1e6}
        f = flops(widths, batch)
        gemm_best = min(per[f"gemms K={k}"]["us_per_member_step_median"],
                        per[f"gemms wide K={k}"]["us_per_member_step_median"])
        bound = per["step alone"]["us_per_member_step_median"] / gemm_best
        results["cases"][name] = {"widths": widths, "batch": batch, "members": k, "variants": per,
                                  "gemm_mflop_per_step": f / 1e6, "bound": bound, "errors": errors}
        for v, p in per.items():
            us = p["us_per_member_step_median"]
            rows.append([name, v, common.fmt(p["us_per_member_step_best"], 1), common.fmt(us, 1),
                         common.fmt(f / us / 1e3, 1), common.fmt(per["step alone"]["us_per_member_step_median"] / us, 2)])
        rows.append([name, "bound (step alone / best gemms K)", "", "", "", f"**{bound:.2f}x**"])
    print(f"\n## Where a stacked member-step's time goes ({info['cpu']}, {info['cpu_count']} cores, jax "
          f"{info.get('jax')}; f32 matmul 2048^3 {peak:.1f} GFLOP/s)\n")
    print(common.markdown_table(["setup", "variant", "us / member-step (best)", "us / member-step (median)",
                                 "GFLOP/s of the step's products", "step alone / this"], rows))
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
