"""Training throughput (examples/s) of masked LeNet-300-100 and Conv-6, JAX vs PyTorch, on CPU.

Batch 128 of random 28x28x1 inputs, 10 classes, SGD momentum 0.9, lr 0.01,
80%-pruned masks (lth_jax.pruning.magnitude, layerwise). Variants:

  jax_scan      lth_jax's compiled loop: jit(Steps.scan_steps), `--steps`
                steps per call, data on the device, batches gathered by index
                inside the scan (what lth_jax.trainer.Trainer runs)
  jax_loop      a Python loop over jit(Steps.step), one dispatch per step
                (batches already on the device)
  torch_eager   nn.Linear / nn.Conv2d stack of the same architecture, same
                initial weights and mask; grads multiplied by the mask before
                optimizer.step(), weights re-masked after (as lth_jax does)
  torch_compile torch.compile(model) plus a compiled mask/SGD update
                (dropped, with the reason, if it fails or compiles longer
                than --compile_timeout s)
  torch_eager_cl  Conv-6 only: eager with channels_last model and inputs

One repetition = `--steps` steps of a variant; variants are timed interleaved
(jax, torch, jax, torch, ...) after warm-up; best and median are reported.
It also measures the float32 matmul peak with JAX (2048^3 GEMM) and a
batch-128 LeNet-shaped GEMM chain, and reports each model's achieved GFLOP/s
(FLOPs per step = 3 x forward FLOPs) as a share of that peak.

    python bench/train_throughput.py --out bench/results/train_throughput.json
    python bench/train_throughput.py --quick --out /tmp/tt.json      # smoke run
    python bench/train_throughput.py --models lenet --xla_flags=--xla_cpu_use_xnnpack=true
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

BATCH = 128
LR, MOMENTUM = 0.01, 0.9
PRUNE = 0.8
INPUT = (28, 28, 1)
CLASSES = 10


# ---------------------------------------------------------------------------- FLOPs
def lenet_forward_flops():
    """Per example: 2 * sum(in * out) over the three Dense layers."""
    return 2 * (784 * 300 + 300 * 100 + 100 * 10)


def conv6_forward_flops():
    """Per example: 2*H*W*9*Cin*Cout per SAME 3x3 conv, 2*in*out per Dense."""
    h, c, total = 28, 1, 0
    for i, f in enumerate((64, 64, 128, 128, 256, 256)):
        total += 2 * h * h * 9 * c * f
        c = f
        if i % 2 == 1:
            h //= 2
    fan = h * h * c
    for w in (256, 256, CLASSES):
        total += 2 * fan * w
        fan = w
    return total


FORWARD_FLOPS = {"lenet": lenet_forward_flops, "conv6": conv6_forward_flops}
MODEL_NAMES = {"lenet": "lenet_300_100", "conv6": "conv6"}


# ---------------------------------------------------------------------------- peak
def matmul_peak(reps, log):
    import jax
    import jax.numpy as jnp

    out = {}
    n = 2048
    ka, kb = jax.random.split(jax.random.PRNGKey(1))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    mm(a, b).block_until_ready()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        mm(a, b).block_until_ready()
        ts.append(time.perf_counter() - t0)
    flops = 2 * n ** 3
    out["square_2048"] = {"flops": flops, "times": ts, "gflops_best": flops / min(ts) / 1e9,
                          "gflops_median": flops / common.best_median(ts)[1] / 1e9}

    # batch-128 LeNet-shaped chain (128x784)@(784x300)@(300x100)@(100x10), over 64 batches in one call
    nb = 64
    ks = jax.random.split(jax.random.PRNGKey(2), 4)
    xs = jax.random.normal(ks[0], (nb, BATCH, 784))
    ws = [jax.random.normal(k, s) * 0.05 for k, s in zip(ks[1:], ((784, 300), (300, 100), (100, 10)))]

    @jax.jit
    def chain(xs, w1, w2, w3):
        def body(c, x):
            return c + jnp.sum(((x @ w1) @ w2) @ w3), None
        return jax.lax.scan(body, jnp.zeros(()), xs)[0]

    chain(xs, *ws).block_until_ready()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        chain(xs, *ws).block_until_ready()
        ts.append(time.perf_counter() - t0)
    flops = nb * BATCH * lenet_forward_flops()
    out["lenet_chain_b128"] = {"flops": flops, "times": ts, "gflops_best": flops / min(ts) / 1e9,
                               "gflops_median": flops / common.best_median(ts)[1] / 1e9}

    try:  # the same square GEMM in torch, for reference
        import torch
        ta, tb = torch.randn(n, n), torch.randn(n, n)
        ta @ tb
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            ta @ tb
            ts.append(time.perf_counter() - t0)
        out["torch_square_2048"] = {"flops": 2 * n ** 3, "times": ts, "gflops_best": 2 * n ** 3 / min(ts) / 1e9,
                                    "gflops_median": 2 * n ** 3 / common.best_median(ts)[1] / 1e9}
    except Exception as e:  # noqa: BLE001
        log(f"torch matmul failed: {e}")
    return out


# ---------------------------------------------------------------------------- JAX side
def jax_setup(name, steps, pool, seed=0):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import masks as masks_lib
    from lth_jax import models, optim, pruning
    from lth_jax.train import Steps, create_state, init_variables

    model = models.get(MODEL_NAMES[name], num_classes=CLASSES)
    variables = init_variables(model, jax.random.PRNGKey(seed), INPUT)
    params = variables["params"]
    mask = pruning.magnitude(params, masks_lib.ones_like(params), PRUNE, "layerwise")
    tx = optim.optimizer("momentum", LR, momentum=MOMENTUM)
    trainer = Steps(model, tx)
    state0 = create_state(params, {}, tx, mask)

    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal((pool, *INPUT), dtype=np.float32)
    y_np = rng.integers(0, CLASSES, pool).astype(np.int32)
    index = np.stack([rng.permutation(pool)[:BATCH] for _ in range(steps)]).astype(np.int32)
    return dict(jax=jax, jnp=jnp, trainer=trainer, state0=state0, params=params, mask=mask,
                x_np=x_np, y_np=y_np, index=index)


def copy_tree(jax, tree):
    return jax.tree_util.tree_map(lambda a: a.copy(), tree)


def jax_variants(s):
    jax, jnp, trainer = s["jax"], s["jnp"], s["trainer"]
    x_dev, y_dev = jnp.asarray(s["x_np"]), jnp.asarray(s["y_np"])
    index = jnp.asarray(s["index"])
    key = jax.random.PRNGKey(0)

    scan = jax.jit(trainer.scan_steps, donate_argnums=0)
    box_scan = {"state": copy_tree(jax, s["state0"])}

    def run_scan():
        box_scan["state"], metrics = scan(box_scan["state"], x_dev, y_dev, index, key)
        jax.block_until_ready((box_scan["state"], metrics))

    step = jax.jit(trainer.step, donate_argnums=0)
    xb = [x_dev[i] for i in s["index"]]
    yb = [y_dev[i] for i in s["index"]]
    jax.block_until_ready((xb, yb))
    box_loop = {"state": copy_tree(jax, s["state0"])}

    def run_loop():
        st = box_loop["state"]
        for x, y in zip(xb, yb):
            st, metrics = step(st, x, y, key)
        box_loop["state"] = jax.block_until_ready(st)

    return {"jax_scan": run_scan, "jax_loop": run_loop}


def jax_losses(s, n):
    """Losses of the first n steps (scan), for the torch equivalence check."""
    jax, jnp = s["jax"], s["jnp"]
    _, metrics = jax.jit(s["trainer"].scan_steps)(copy_tree(jax, s["state0"]), jnp.asarray(s["x_np"]),
                                                  jnp.asarray(s["y_np"]), jnp.asarray(s["index"][:n]),
                                                  jax.random.PRNGKey(0))
    return [float(v) for v in metrics["loss"]]


# ---------------------------------------------------------------------------- torch side
def torch_model(name):
    from torch import nn
    if name == "lenet":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, CLASSES))
    layers, c = [], INPUT[2]
    for i, f in enumerate((64, 64, 128, 128, 256, 256)):
        layers += [nn.Conv2d(c, f, 3, padding=1), nn.ReLU()]
        c = f
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2, 2))
    layers += [nn.Flatten(), nn.Linear(3 * 3 * 256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
               nn.Linear(256, CLASSES)]
    return nn.Sequential(*layers)


def _to_torch_layout(name, layer, kernel):
    """flax kernel -> torch weight: Dense (in,out)->(out,in); Conv HWIO->OIHW;
    Conv-6 dense_0 rows are NHWC-flattened (h,w,c), torch flattens (c,h,w)."""
    import numpy as np
    k = np.asarray(kernel)
    if k.ndim == 4:
        return k.transpose(3, 2, 0, 1)
    if name == "conv6" and layer == "dense_0":
        return k.reshape(3, 3, 256, k.shape[1]).transpose(3, 2, 0, 1).reshape(k.shape[1], -1)
    return k.T


def torch_setup(name, s, channels_last=False):
    """A torch model with the JAX initial weights and mask, an SGD optimizer, the masks."""
    import numpy as np
    import torch

    model = torch_model(name)
    flax_layers = [n for n in s["params"] if n != "output"] + ["output"]  # conv_*, dense_*, output
    torch_layers = [m for m in model if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(flax_layers) == len(torch_layers), (flax_layers, torch_layers)
    pairs = []
    with torch.no_grad():
        for layer, mod in zip(flax_layers, torch_layers):
            w = _to_torch_layout(name, layer, s["state0"].params[layer]["kernel"])  # masked, as in JAX
            m = _to_torch_layout(name, layer, s["mask"][layer]["kernel"]).astype(np.float32)
            assert tuple(w.shape) == tuple(mod.weight.shape), (layer, w.shape, mod.weight.shape)
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            mod.bias.copy_(torch.from_numpy(np.array(s["state0"].params[layer]["bias"])))
            mt = torch.from_numpy(np.ascontiguousarray(m))
            if channels_last and mt.ndim == 4:
                mt = mt.contiguous(memory_format=torch.channels_last)
            pairs.append((mod.weight, mt))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        pairs = [(mod.weight, m) for mod, (_, m) in zip(torch_layers, pairs)]
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    return model, opt, pairs


def torch_batches(s, channels_last=False):
    import torch
    xb, yb = [], []
    for idx in s["index"]:
        x = torch.from_numpy(s["x_np"][idx].transpose(0, 3, 1, 2).copy())
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xb.append(x)
        yb.append(torch.from_numpy(s["y_np"][idx].astype("int64")))
    return xb, yb


def make_torch_step(model, opt, pairs, compiled=False):
    import torch
    import torch.nn.functional as F
    weights = [p for p, _ in pairs]
    masks = [m for _, m in pairs]

    def update():
        with torch.no_grad():
            torch._foreach_mul_([p.grad for p in weights], masks)  # mask the gradients
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(weights, masks)  # re-apply the mask to the weights

    forward = torch.compile(model) if compiled else model
    update_fn = torch.compile(update) if compiled else update

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        update_fn()
        return loss

    return step


def torch_run(step, xb, yb):
    def run():
        for x, y in zip(xb, yb):
            step(x, y)
    return run


def torch_losses(name, s, n):
    step = make_torch_step(*torch_setup(name, s))
    xb, yb = torch_batches(s)
    return [float(step(x, y).detach()) for x, y in zip(xb[:n], yb[:n])]


# ---------------------------------------------------------------------------- main
def bench_model(name, args, peak_gflops, log):
    import torch

    steps, reps, warmup = args.steps_for[name], args.reps_for[name], args.warmup
    log(f"\n== {name}: batch {BATCH}, {steps} steps per repetition, {reps} reps, warm-up {warmup}")
    s = jax_setup(name, steps, args.pool)
    result = {"model": MODEL_NAMES[name], "steps_per_rep": steps, "batch": BATCH,
              "forward_flops_per_example": FORWARD_FLOPS[name](), "errors": {}}

    if args.check_steps:
        jl, tl = jax_losses(s, args.check_steps), torch_losses(name, s, args.check_steps)
        diff = max(abs(a - b) for a, b in zip(jl, tl))
        result["equivalence"] = {"jax_losses": jl, "torch_losses": tl, "max_abs_diff": diff}
        log(f"  same-start check, {len(jl)} steps: jax {['%.5f' % v for v in jl]} "
            f"torch {['%.5f' % v for v in tl]} max |diff| {diff:.2e}")

    variants = dict(jax_variants(s))
    xb, yb = torch_batches(s)
    variants["torch_eager"] = torch_run(make_torch_step(*torch_setup(name, s)), xb, yb)
    if name == "conv6":
        xcl, ycl = torch_batches(s, channels_last=True)
        variants["torch_eager_cl"] = torch_run(make_torch_step(*torch_setup(name, s, channels_last=True)), xcl, ycl)
    if not args.no_compile:
        step = make_torch_step(*torch_setup(name, s), compiled=True)
        log(f"  torch.compile: compiling (limit {args.compile_timeout} s) ...")
        t0 = time.perf_counter()
        try:
            with common.Alarm(args.compile_timeout):
                step(xb[0], yb[0])
                step(xb[1 % len(xb)], yb[1 % len(yb)])
            result["torch_compile_s"] = time.perf_counter() - t0
            log(f"  torch.compile: first two steps {result['torch_compile_s']:.1f} s")
            variants["torch_compile"] = torch_run(step, xb, yb)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {str(e)[:500]} (after {time.perf_counter() - t0:.0f} s)"
            result["errors"]["torch_compile"] = msg
            log(f"  torch.compile dropped: {msg}")

    timings, errors = common.interleaved(variants, reps, warmup, log=lambda m: log(m))
    result["errors"].update(errors)
    flops_step = 3 * FORWARD_FLOPS[name]() * BATCH
    rows = {}
    for v, t in timings.items():
        best, med = common.best_median(t["times"])
        rows[v] = {"times": t["times"], "first_call_s": t["first_s"],
                   "examples_per_s_best": steps * BATCH / best, "examples_per_s_median": steps * BATCH / med,
                   "ms_per_step_median": med / steps * 1e3,
                   "gflops_best": flops_step * steps / best / 1e9,
                   "gflops_median": flops_step * steps / med / 1e9}
        if peak_gflops:
            rows[v]["peak_share_best"] = rows[v]["gflops_best"] / peak_gflops
            rows[v]["peak_share_median"] = rows[v]["gflops_median"] / peak_gflops
    result["variants"] = rows
    if "torch_eager" in rows:
        te = rows["torch_eager"]
        for v in rows:
            rows[v]["vs_torch_eager_best"] = rows[v]["examples_per_s_best"] / te["examples_per_s_best"]
            rows[v]["vs_torch_eager_median"] = rows[v]["examples_per_s_median"] / te["examples_per_s_median"]
    result["torch_threads"] = torch.get_num_threads()
    result["warm_compile_cache"] = args.warm_compile_cache
    return result


def print_model_table(res, peak):
    headers = ["variant", "ex/s best", "ex/s median", "ms/step (med)", "GFLOP/s (best)",
               "% peak (best)", "x torch eager (best)", "x torch eager (med)"]
    rows = []
    for v, r in res["variants"].items():
        rows.append([v, common.fmt(r["examples_per_s_best"], 0), common.fmt(r["examples_per_s_median"], 0),
                     common.fmt(r["ms_per_step_median"], 2), common.fmt(r["gflops_best"]),
                     common.fmt(100 * r["peak_share_best"]) if peak else "-",
                     common.fmt(r.get("vs_torch_eager_best"), 2), common.fmt(r.get("vs_torch_eager_median"), 2)])
    print(f"\n### {res['model']} (batch {BATCH}, {res['steps_per_rep']} steps/rep, "
          f"{3 * res['forward_flops_per_example'] * BATCH / 1e9:.3f} GFLOP/step)\n")
    print(common.markdown_table(headers, rows))
    for v, e in res["errors"].items():
        print(f"\n- {v}: not measured: {e}")
    if "torch_compile_s" in res:
        print(f"\n- torch.compile: compile + first 2 steps took {res['torch_compile_s']:.1f} s "
              f"({'on-disk cache allowed' if res.get('warm_compile_cache') else 'cold: fresh inductor cache'})")
    if "equivalence" in res:
        print(f"- same initial weights/mask/batches: max |loss_jax - loss_torch| over "
              f"{len(res['equivalence']['jax_losses'])} steps = {res['equivalence']['max_abs_diff']:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_args(ap, "bench/results/train_throughput.json")
    ap.add_argument("--models", default="lenet,conv6", help="comma list of lenet, conv6")
    ap.add_argument("--lenet_steps", type=int, default=None, help="steps per repetition (default 200; quick 20)")
    ap.add_argument("--conv6_steps", type=int, default=None, help="steps per repetition (default 10; quick 2)")
    ap.add_argument("--conv6_reps", type=int, default=None, help="reps for conv6 (default: --reps)")
    ap.add_argument("--pool", type=int, default=8192, help="random training examples held on the device")
    ap.add_argument("--peak_reps", type=int, default=None, help="repetitions of the matmul peak (default 10)")
    ap.add_argument("--no_compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile_timeout", type=int, default=180, help="seconds allowed for torch.compile")
    ap.add_argument("--warm_compile_cache", action="store_true",
                    help="let torch.compile use its on-disk cache (default: a fresh cache dir, cold compile time)")
    ap.add_argument("--torch_threads", type=int, default=None,
                    help="torch.set_num_threads (default os.cpu_count()); see README about loaded machines")
    ap.add_argument("--check_steps", type=int, default=3,
                    help="steps of the jax-vs-torch same-start loss check (0 = skip)")
    args = ap.parse_args()
    q = args.quick
    args.reps = args.reps or (2 if q else 7)
    args.warmup = args.warmup if args.warmup is not None else 1 if q else 2
    args.steps_for = {"lenet": args.lenet_steps or (20 if q else 200), "conv6": args.conv6_steps or (2 if q else 10)}
    args.reps_for = {"lenet": args.reps, "conv6": args.conv6_reps or (2 if q else 5)}
    args.peak_reps = args.peak_reps or (3 if q else 10)
    common.apply_xla_flags(args.xla_flags)
    cache_tmp = None
    if not args.warm_compile_cache and not args.no_compile:  # cold torch.compile: a fresh inductor cache
        cache_tmp = tempfile.mkdtemp(prefix="bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_tmp

    import jax  # noqa: F401  (after XLA_FLAGS)
    import torch
    torch.set_num_threads(args.torch_threads or os.cpu_count())
    import lth_jax  # noqa: F401

    def log(m):
        print(m, flush=True)

    info = common.machine_info()
    log(f"machine: {info['cpu']}, {info['cpu_count']} cores, load {info['loadavg_start']}, "
        f"jax {info.get('jax')} torch {info.get('torch')} (threads {info.get('torch_threads')}), "
        f"XLA_FLAGS={info['XLA_FLAGS']!r}{'  [QUICK SMOKE RUN]' if q else ''}")

    log("\n== float32 matmul peak (JAX)")
    peak = matmul_peak(args.peak_reps, log)
    peak_gflops = peak["square_2048"]["gflops_best"]
    results = {"machine": info, "quick": q, "args": {k: v for k, v in vars(args).items()}, "peak": peak,
               "peak_gflops": peak_gflops, "models": {}}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results["models"][name] = bench_model(name, args, peak_gflops, log)
    results["machine"]["loadavg_end"] = list(os.getloadavg())

    print(f"\n## Training throughput{' (QUICK SMOKE RUN: not for comparison)' if q else ''}\n")
    print(f"{info['cpu']}, {info['cpu_count']} cores; load average start {info['loadavg_start']}, "
          f"end {results['machine']['loadavg_end']}; jax {info.get('jax')}, torch {info.get('torch')}\n")
    prow = [[k, common.fmt(v["gflops_best"]), common.fmt(v["gflops_median"])] for k, v in peak.items()]
    print(common.markdown_table(["float32 GEMM", "GFLOP/s best", "GFLOP/s median"], prow))
    print(f"\npeak = JAX 2048^3 best = {peak_gflops:.1f} GFLOP/s (the % peak columns divide by this)")
    over = [f"{res['model']}/{v}" for res in results["models"].values() for v, r in res["variants"].items()
            if r["gflops_best"] > peak_gflops]
    if over:
        print(f"\nNOTE: {', '.join(over)} ran faster than the 'peak' GEMM: the 2048^3 GEMM (both threads) "
              "under-measures what the cores can do here (a core busy with another process; or a GEMM library "
              "slower than the one the variant uses, e.g. oneDNN convolutions vs Eigen/MKL GEMM on AMD).")
    for name, res in results["models"].items():
        print_model_table(res, peak_gflops)

    summary = []
    for name, res in results["models"].items():
        v = res["variants"]
        if "torch_eager" not in v:
            continue
        for j in ("jax_scan", "jax_loop"):
            if j in v:
                summary.append([res["model"], j, common.fmt(v[j]["vs_torch_eager_best"], 2),
                                common.fmt(v[j]["vs_torch_eager_median"], 2),
                                common.fmt(100 * v[j]["peak_share_best"]) if name == "lenet" else "-"])
    if summary:
        print("\n### JAX / torch eager (examples/s)\n")
        print(common.markdown_table(["model", "jax variant", "ratio (best)", "ratio (median)", "% of peak (best)"],
                                    summary))
        print("\nTargets: LeNet >= 2x torch eager and >= 80% of peak; Conv-6 >= torch eager.")
    common.write_json(args.out, results)
    if cache_tmp:
        shutil.rmtree(cache_tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
