"""One lottery level: K members trained together (vmapped) vs one after another.

The lottery experiment trains a ticket and its controls (reinit, random_prune)
as one stacked state through `Steps(members=True).scan_steps`, all members
sharing the batches. This script times that against training the same
members one at a time with `Steps(members=False)`, the same number of steps
and the same batches, compile time excluded (both warmed up first).

Setups (random data of the real sizes, kept on the device as lth_jax.trainer does):
  mlp    MNIST-1D MLP 40-100-100-10, batch 100, Adam 1e-3, 3,500 train examples
  lenet  LeNet-300-100 on 28x28x1, batch 60, Adam 1.2e-3, 55,000 train examples
Member sets:
  K=3  ticket (layerwise magnitude pruning 20%, output layer 10%), reinit
       control (same mask, fresh init), random_prune control (random mask of
       the same per-layer density, ticket weights): one replicate of a level
  K=8  8 dense members from different inits (the ensemble benchmark)

Variants (timed interleaved):
  vmapped     the lottery's program: jit(Steps(members=True).scan_steps) on the
              stacked state, index rows (n, batch) shared by all members
  vmapped_xK  the same shared batches handed over as per-member rows (n, K, batch),
              so the batch carries a member axis (a layout experiment; see README)
  blockB      Steps(members=True, member_block=B): the stack in one program, B
              members at a time through each chunk (`--blocks`; B=1 = one
              member after another inside the program; "auto" = the default
              choice, see Steps.member_block)
  sequential  jit(Steps(members=False).scan_steps), the K members one after another

A level is `--steps` steps (default 3000, the configs' train.steps) run in
compiled chunks of `--chunk` steps (default 250 = train.eval_every); after
each chunk the losses are copied to the host, as Trainer does. Evaluation and
the host-side batch-index computation are not timed. Repetitions of the
variants are interleaved (vmapped, sequential, vmapped, ...); best and median
are reported, and speedup = sequential / vmapped.

    python bench/lottery_vmap.py --out bench/results/lottery_vmap.json
    python bench/lottery_vmap.py --quick --out /tmp/lv.json          # smoke run
    python bench/lottery_vmap.py --per_member_order   # each member its own data order
    python bench/lottery_vmap.py --blocks 1,4         # also the member_block layouts
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SETUPS = {
    "mlp": dict(model="mlp", kw={"widths": (100, 100)}, input=(40,), batch=100, lr=1e-3, n_train=3500),
    "lenet": dict(model="lenet_300_100", kw={}, input=(28, 28, 1), batch=60, lr=1.2e-3, n_train=55000),
}
CLASSES = 10


def build(name, k, args):
    """(single Steps, members Steps, list of K member states, x, y, index rows)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import ensemble, models, optim, pruning
    from lth_jax import masks as masks_lib
    from lth_jax.experiments.lottery import pruned_level_members
    from lth_jax.train import Steps, batch_indices, create_state, init_variables

    cfg = SETUPS[name]
    model = models.get(cfg["model"], num_classes=CLASSES, **cfg["kw"])
    tx = optim.optimizer("adam", cfg["lr"])
    key = jax.random.PRNGKey(0)

    def init(i):
        return init_variables(model, jax.random.fold_in(key, i), cfg["input"])["params"]

    if k == 3:  # ticket + reinit + random_prune of one replicate, built as the lottery experiment builds them
        params = init(0)
        mask = pruning.magnitude(params, masks_lib.ones_like(params), 0.2, "layerwise", {"output/kernel": 0.1})
        stacked, _, _ = pruned_level_members(lambda key: {"params": init(1)}, tx, ensemble.stack([{"params": params}]),
                                             ensemble.stack([mask]), rewind_step=0, control_key=jax.random.PRNGKey(7))
        states = ensemble.unstack(stacked)
    else:  # an ensemble: K dense members
        states = [create_state(init(i), {}, tx) for i in range(k)]

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((cfg["n_train"], *cfg["input"]), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, CLASSES, cfg["n_train"]).astype(np.int32))
    if args.per_member_order:
        rows = [batch_indices((0, m), cfg["n_train"], cfg["batch"], 0, args.steps) for m in range(k)]
    else:
        rows = [batch_indices(0, cfg["n_train"], cfg["batch"], 0, args.steps)] * k
    return Steps(model, tx), Steps(model, tx, members=True, member_block=None), states, x, y, rows


def variants(name, k, args):
    return variants_of(name, k, args, *build(name, k, args))


def variants_of(name, k, args, single, stacked, states, x, y, rows):
    """{variant name: timed fn} and a check, for K member `states` trained on
    index `rows` (one per member) by `single` alone or `stacked` together."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import ensemble

    chunks = [(c, min(c + args.chunk, args.steps)) for c in range(0, args.steps, args.chunk)]
    # index chunks on the device: alone (n, batch) per member; vmapped shared (n, batch) or (n, K, batch)
    alone_idx = [[jnp.asarray(r[a:b]) for a, b in chunks] for r in rows]
    if args.per_member_order:
        vm_idx = [jnp.asarray(np.stack([r[a:b] for r in rows], axis=1)) for a, b in chunks]
    else:
        vm_idx = alone_idx[0]
    key = jax.random.PRNGKey(1)
    scan_single = jax.jit(single.scan_steps, donate_argnums=0)
    scan_stacked = jax.jit(stacked.scan_steps, donate_argnums=0)
    stacked0 = ensemble.stack(states)

    def copy(tree):
        return jax.tree_util.tree_map(lambda a: a.copy(), tree)

    def run(scan, state, idx_list):
        first = None
        for idx in idx_list:
            state, metrics = scan(state, x, y, idx, key)
            losses = np.asarray(metrics["loss"])  # Trainer copies the losses to the host after each chunk
            first = losses if first is None else first
        return jax.block_until_ready(state), first

    out = {}

    def vmapped():
        out["vmapped"] = run(scan_stacked, copy(stacked0), vm_idx)

    def vmapped_xk():
        out["vmapped_xK"] = run(scan_stacked, copy(stacked0), vm_idx_k)

    def sequential():
        out["sequential"] = [run(scan_single, copy(s), idx) for s, idx in zip(states, alone_idx)]

    def blocked(b):
        steps = dataclasses.replace(stacked, member_block=b)
        print(f"  block{b}: member_block {steps.block_of(stacked0)}", flush=True)
        scan = jax.jit(steps.scan_steps, donate_argnums=0)

        def fn():
            out[f"block{b}"] = run(scan, copy(stacked0), vm_idx)
        return fn

    def check():
        """vmapped vs sequential after the last repetition: max |loss difference| over the
        first 10 steps (should be ~1e-6) and max |param difference| at the end (grows with
        the steps: float reordering, amplified by Adam on random labels)."""
        seq_state = ensemble.stack([s for s, _ in out["sequential"]])
        seq_loss = np.stack([l for _, l in out["sequential"]], axis=1)[:10]  # (steps, K)
        res = {}
        for v in out:
            if v != "sequential":
                st, loss = out[v]
                d = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), st.params, seq_state.params)
                res[v] = {"loss_diff_first10": float(np.max(np.abs(loss[:10] - seq_loss))),
                          "param_diff_end": max(jax.tree_util.tree_leaves(d))}
        return res

    fns = {f"{name}_K{k}_vmapped": vmapped}
    if not args.per_member_order and args.xk_variant:
        # the same shared batches, handed over as per-member index rows (n, K, batch): the batch
        # then has a member axis, which changes how XLA lays out the vmapped dense layers
        vm_idx_k = [jnp.asarray(np.repeat(r[a:b][:, None], k, axis=1)) for r in rows[:1] for a, b in chunks]
        fns[f"{name}_K{k}_vmapped_xK"] = vmapped_xk
    for b in args.blocks:
        fns[f"{name}_K{k}_block{b}"] = blocked(b)
    fns[f"{name}_K{k}_sequential"] = sequential
    return fns, check


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_args(ap, "bench/results/lottery_vmap.json")
    ap.add_argument("--models", default="mlp,lenet", help="comma list of mlp, lenet")
    ap.add_argument("--members", default="3,8", help="comma list of K")
    add_timing_args(ap)
    args = parse(ap)
    cases = [(name, k, SETUPS[name]) for name in [m.strip() for m in args.models.split(",") if m.strip()]
             for k in [int(v) for v in args.members.split(",") if v.strip()]]
    measure(cases, variants, args, "Lottery level: vmapped members vs sequential", {"setups": SETUPS})


def add_timing_args(ap):
    ap.add_argument("--steps", type=int, default=None, help="steps per level (default 3000; quick 500)")
    ap.add_argument("--chunk", type=int, default=250, help="steps per compiled call (eval_every)")
    ap.add_argument("--per_member_order", action="store_true", help="each member its own data order")
    ap.add_argument("--no_xk_variant", dest="xk_variant", action="store_false",
                    help="skip the vmapped_xK variant (shared batches given a member axis)")
    ap.add_argument("--blocks", default="", help="comma list of member_block sizes B (or auto) to time as "
                                                 "blockB variants")


def parse(ap, default_steps=3000):
    args = common.parse_timing_args(ap, steps=default_steps, quick_steps=500)
    args.blocks = [b.strip() if b.strip() == "auto" else int(b) for b in args.blocks.split(",") if b.strip()]
    return args


def measure(cases, make_variants, args, title, extra):
    """Time every (name, K, setup) case's variants interleaved; print the table, write the JSON."""
    import jax  # noqa: F401  (after XLA_FLAGS)
    import lth_jax  # noqa: F401
    q = args.quick
    info = common.machine_info()
    print(f"machine: {info['cpu']}, {info['cpu_count']} cores, load {info['loadavg_start']}, jax {info.get('jax')}, "
          f"XLA_FLAGS={info['XLA_FLAGS']!r}{'  [QUICK SMOKE RUN]' if q else ''}", flush=True)
    results = {"machine": info, "quick": q, "args": vars(args), **extra, "cases": {}}
    table = []
    for name, k, cfg in cases:
        print(f"\n== {name} K={k}: {args.steps} steps x batch {cfg['batch']}, chunks of {args.chunk}, "
              f"{args.reps} reps", flush=True)
        fns, check = make_variants(name, k, args)
        timings, errors = common.interleaved(fns, args.reps, args.warmup, log=lambda m: print(m, flush=True))
        sq = timings.get(f"{name}_K{k}_sequential")
        case = {"model": cfg["model"], "members": k, "steps": args.steps, "batch": cfg["batch"],
                "errors": errors, "timings": timings}
        checks = check() if sq else {}
        case["checks"] = checks
        for v in ["vmapped", "vmapped_xK"] + [f"block{b}" for b in args.blocks]:
            vm = timings.get(f"{name}_K{k}_{v}")
            if not (vm and sq):
                continue
            (vb, vmed), (sb, smed) = common.best_median(vm["times"]), common.best_median(sq["times"])
            case[v] = dict(speedup_best=sb / vb, speedup_median=smed / vmed,
                           ms_per_step_median=vmed / args.steps * 1e3,
                           sequential_ms_per_member_step_median=smed / args.steps / k * 1e3, **checks.get(v, {}))
            table.append([cfg["model"], k, v, args.steps, common.fmt(vb, 3), common.fmt(vmed, 3),
                          common.fmt(sb, 3), common.fmt(smed, 3), common.fmt(sb / vb, 2),
                          common.fmt(smed / vmed, 2), common.fmt(vmed / args.steps * 1e3, 3),
                          common.fmt(smed / args.steps / k * 1e3, 3),
                          f"{checks[v]['loss_diff_first10']:.1e}", f"{checks[v]['param_diff_end']:.1e}"])
        results["cases"][f"{name}_K{k}"] = case
    results["machine"]["loadavg_end"] = list(os.getloadavg())

    print(f"\n## {title}{' (QUICK SMOKE RUN: not for comparison)' if q else ''}\n")
    print(f"{info['cpu']}, {info['cpu_count']} cores; load average start {info['loadavg_start']}, end "
          f"{results['machine']['loadavg_end']}; jax {info.get('jax')}; data order "
          f"{'per member' if args.per_member_order else 'shared'}; compile excluded\n")
    print(common.markdown_table(
        ["model", "K", "variant", "steps", "vmapped s (best)", "vmapped s (med)", "sequential s (best)",
         "sequential s (med)", "speedup (best)", "speedup (med)", "vmapped ms/step (med)",
         "alone ms/step/member (med)", "max dloss 10 steps", "max dparam end"], table))
    print("\nspeedup = sequential / vmapped. vmapped: the members' stacked state, batch shared "
          "(x without member axis); vmapped_xK: the same batches with a member axis (index rows (n, K, batch)); "
          "blockB: member_block=B (B members at a time through each chunk). "
          "dloss/dparam: vmapped vs sequential (float reordering only; Adam amplifies it over the steps).")
    for key, case in results["cases"].items():
        for v, e in case["errors"].items():
            print(f"\n- {v}: failed: {e}")
    common.write_json(args.out, results)


if __name__ == "__main__":
    main()
