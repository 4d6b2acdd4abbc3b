"""GraNd (per-example gradient norm over all parameters) on CPU: four ways.

  fast   lth_jax.scores.grand, ghost-norm path (one forward + one backward of
         the summed loss), chunked by scores.ensemble (K = 1)
  vmap   lth_jax.scores.grand(method="vmap"): jax.vmap of jax.grad, squares
         summed leaf by leaf inside the vmap, same chunking
  loop   a Python loop calling a jitted per-example jax.grad (+ its norm),
         timed on --loop_n examples and extrapolated
  torch  torch.func.vmap(torch.func.grad(...)) with functional_call on the
         same architecture and the same weights (copied from the JAX model),
         chunked; norms from the materialised per-example gradients

Models: LeNet-300-100 (28x28x1) and Conv-6 (32x32x3), 10 classes, random
data. Chunk sizes are chosen per method by a short sweep; then the timed
repetitions interleave the methods (the order rotates each repetition) so
that load from other processes hits all of them alike. Reported: examples/s
from the median repetition (and the best), and ratios. The machine's load
average is printed with each repetition: on a shared 2-core machine other
processes can halve every number (ratios hold up better than absolutes). Before timing,
the four methods' scores are checked against each other on a few examples.

    python bench/grand.py                                  # both models
    python bench/grand.py --models lenet_300_100 --reps 5
    python bench/grand.py --models conv6 --slow_n 512      # vmap/torch on 512 examples, extrapolated

A method run on fewer examples than --n (the loop always; vmap, torch and
the forward-only reference on Conv-6 unless --slow_n 0) is extrapolated
linearly and marked '*'. Default repetitions: 5 for LeNet, 2 for Conv-6
(about 10 minutes in all on 2 cores).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from lth_jax import models, scores  # noqa: E402

SHAPES = {"lenet_300_100": (28, 28, 1), "conv6": (32, 32, 3)}
CHUNKS = {
    "lenet_300_100": {"fast": (500, 1000, 2500), "vmap": (128, 512, 2048), "torch": (128, 512, 2048)},
    "conv6": {"fast": (32, 64), "vmap": (16, 32), "torch": (32, 64)},
}
SLOW_N = {"lenet_300_100": 0, "conv6": 1024}  # 0: run vmap/torch on all --n examples
REPS = {"lenet_300_100": 5, "conv6": 2}


# --- JAX ----------------------------------------------------------------------------

grand_fast = functools.partial(scores.grand, method="fast")
grand_vmap = functools.partial(scores.grand, method="vmap")


def jax_setup(name, n, seed=0):
    model = models.get(name, num_classes=10)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + SHAPES[name]).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1,) + SHAPES[name]), train=False))(jax.random.PRNGKey(seed))
    apply_fn = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    return model, apply_fn, variables, jnp.asarray(x), jnp.asarray(y)


def jax_runner(score_fn, model, apply_fn, variables, chunk):
    stacked = jax.tree_util.tree_map(lambda a: a[None], variables)

    def run(x, y):
        return scores.ensemble(score_fn, apply_fn, stacked, x, y, chunk_size=chunk, model=model)[0].block_until_ready()

    return run


def forward_runner(apply_fn, variables, chunk):
    """Reference, not GraNd: the jitted forward pass alone (logits), same
    chunking. No gradient method can beat it; the fast path needs it plus
    one backward pass without weight gradients."""

    @jax.jit
    def run_(v, x):
        n = x.shape[0]
        c = min(chunk, n)
        pad = -n % c
        xp = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        out = jax.lax.map(lambda b: apply_fn(v, b), xp.reshape((-1, c) + x.shape[1:]))
        return out.reshape(-1, out.shape[-1])[:n]

    return lambda x, y: run_(variables, x).block_until_ready()


def loop_runner(apply_fn, variables):
    @jax.jit
    def one(params, xi, yi):
        def loss(p):
            logits = apply_fn({**variables, "params": p}, xi[None])
            return optax.softmax_cross_entropy_with_integer_labels(logits, yi[None])[0]

        g = jax.grad(loss)(params)
        return jnp.sqrt(sum(jnp.sum(jnp.square(l)) for l in jax.tree_util.tree_leaves(g)))

    def run(x, y):
        return np.array([one(variables["params"], x[i], y[i]) for i in range(x.shape[0])])

    return run


# --- PyTorch ------------------------------------------------------------------------

def torch_setup(name, variables):
    """The same architecture in PyTorch, with the JAX weights. Inputs stay
    channels-last (N, H, W, C) as in JAX; the conv net permutes to NCHW and
    back before flattening so the Dense layers see the same feature order."""
    import torch
    import torch.nn as tnn

    params = jax.tree_util.tree_map(np.asarray, variables["params"])

    def linear(p):
        layer = tnn.Linear(*p["kernel"].shape)
        layer.weight.data = torch.from_numpy(p["kernel"].T.copy())
        layer.bias.data = torch.from_numpy(p["bias"].copy())
        return layer

    def conv(p):
        k = p["kernel"]  # HWIO -> OIHW
        layer = tnn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], padding=1)
        layer.weight.data = torch.from_numpy(k.transpose(3, 2, 0, 1).copy())
        layer.bias.data = torch.from_numpy(p["bias"].copy())
        return layer

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.convs = tnn.ModuleList([conv(params[f"conv_{i}"]) for i in range(sum(k.startswith("conv_") for k in params))])
            dense = sorted(k for k in params if k.startswith("dense_"))
            self.dense = tnn.ModuleList([linear(params[k]) for k in dense])
            self.output = linear(params["output"])

        def forward(self, x):  # x: (N, H, W, C)
            if len(self.convs):
                x = x.permute(0, 3, 1, 2)
                for i, c in enumerate(self.convs):
                    x = torch.relu(c(x))
                    if i % 2 == 1:
                        x = torch.nn.functional.max_pool2d(x, 2)
                x = x.permute(0, 2, 3, 1)
            x = x.flatten(1)
            for d in self.dense:
                x = torch.relu(d(x))
            return self.output(x)

    return Net().eval()


def torch_runner(net, chunk):
    import torch
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p, xi, yi):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (xi[None],)), yi[None])

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))

    def run(x, y):
        x, y = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                g = per_example(params, x[i : i + chunk], y[i : i + chunk])
                out.append(torch.sqrt(sum(t.pow(2).flatten(1).sum(1) for t in g.values())))
        return torch.cat(out).numpy()

    return run


# --- timing -------------------------------------------------------------------------

def timed(run, x, y):
    t0 = time.perf_counter()
    out = run(x, y)
    return time.perf_counter() - t0, out


def sweep(label, make, chunks, x, y):
    """Pick the chunk size with the best examples/s on (x, y) (after a
    compile/warm-up call on the first chunk)."""
    best = None
    for c in chunks:
        run = make(c)
        run(x, y)  # compile (for this shape) / warm up
        t, _ = timed(run, x, y)
        print(f"  sweep {label:5s} chunk {c:5d}: {x.shape[0] / t:10.0f} ex/s", flush=True)
        if best is None or t < best[0]:
            best = (t, c, run)
    return best[1], best[2]


def bench_model(name, args):
    import torch

    print(f"\n=== {name} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): GraNd over all parameters, {args.n} examples {SHAPES[name]}, "
          f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads) ===", flush=True)
    model, apply_fn, variables, x, y = jax_setup(name, args.n)
    print(f"  parameters: {models.num_params(variables['params']):,}; "
          f"scores.grand_method: {scores.grand_method(apply_fn, variables, x[:8], model=model)[0]}")
    net = torch_setup(name, variables)
    xn, yn = np.asarray(x), np.asarray(y)

    # Agreement on a few examples (all four ways).
    k = 8
    ref = np.asarray(scores.grand(apply_fn, variables, x[:k], y[:k], method="vmap"))
    checks = {
        "fast": np.asarray(jax.jit(lambda v, a, b: scores.grand(apply_fn, v, a, b, model=model, method="fast"))(variables, x[:k], y[:k])),
        "loop": loop_runner(apply_fn, variables)(x[:k], y[:k]),
        "torch": torch_runner(net, k)(xn[:k], yn[:k]),
    }
    for key, val in checks.items():
        err = float(np.max(np.abs(val - ref) / ref))
        print(f"  check {key:5s} vs vmap: max rel diff {err:.1e}")
        if err > 1e-3:
            raise SystemExit(f"{name}: {key} disagrees with vmap(grad) (max rel diff {err:.1e})")

    slow_n = SLOW_N[name] if args.slow_n is None else args.slow_n
    slow_n = min(slow_n or args.n, args.n)
    sweep_n = {"lenet_300_100": 5000, "conv6": 256}[name]
    chunks = CHUNKS[name]
    c_fast, fast = sweep("fast", lambda c: jax_runner(grand_fast, model, apply_fn, variables, c), chunks["fast"], x[:sweep_n], y[:sweep_n])
    c_vmap, vmap = sweep("vmap", lambda c: jax_runner(grand_vmap, model, apply_fn, variables, c), chunks["vmap"], x[: sweep_n // 2], y[: sweep_n // 2])
    c_torch, trun = sweep("torch", lambda c: torch_runner(net, c), chunks["torch"], xn[: sweep_n // 4], yn[: sweep_n // 4])
    loop = loop_runner(apply_fn, variables)

    methods = {  # label -> (run, n examples, x, y, note)
        "fast": (fast, args.n, x, y, f"chunk {c_fast}"),
        "vmap": (vmap, slow_n, x, y, f"chunk {c_vmap}"),
        "loop": (loop, min(args.loop_n, args.n), x, y, "1 example per call"),
        "torch": (trun, slow_n, xn, yn, f"chunk {c_torch}"),
        "fwd": (forward_runner(apply_fn, variables, c_fast), slow_n, x, y, f"chunk {c_fast}; reference: forward pass only, no gradient"),
    }
    for run, n, xa, ya, _ in methods.values():  # compile for the timed shapes
        run(xa[: min(n, 2)], ya[: min(n, 2)]) if run is loop else run(xa[:n], ya[:n])
    times = {m: [] for m in methods}
    order = list(methods)
    reps = args.reps or REPS[name]
    for rep in range(reps):
        line = []
        for m in order[rep % len(order):] + order[: rep % len(order)]:
            run, n, xa, ya, _ = methods[m]
            t, _ = timed(run, xa[:n], ya[:n])
            calls = 1
            while t * calls < args.min_time:  # short runs: repeat, take the mean
                t_more, _ = timed(run, xa[:n], ya[:n])
                t = (t * calls + t_more) / (calls + 1)
                calls += 1
            times[m].append(t * args.n / n)  # extrapolated to args.n examples
            line.append(f"{m} {args.n / times[m][-1]:.0f}")
        print(f"  rep {rep + 1}: " + ", ".join(line) + f" ex/s  (load average {os.getloadavg()[0]:.1f})", flush=True)

    rate = {m: args.n / statistics.median(ts) for m, ts in times.items()}
    best = {m: args.n / min(ts) for m, ts in times.items()}
    print(f"\n  {'method':6s} {'examples/s':>12s} {'(best)':>12s} {'time for ' + str(args.n):>15s}  fast is   setting")
    for m, (_, n, _, _, note) in methods.items():
        star = "*" if n < args.n else " "
        if m == "fwd":
            print(f"  {m:6s} {rate[m]:12.0f} {best[m]:12.0f} {args.n / rate[m]:14.2f}s{star} {rate['fast'] / rate[m]:6.2f}x   {note}")
            continue
        print(f"  {m:6s} {rate[m]:12.0f} {best[m]:12.0f} {args.n / rate[m]:14.2f}s{star} {rate['fast'] / rate[m]:6.1f}x   "
              f"{note}{'; timed on ' + str(n) + ' examples, extrapolated' if n < args.n else ''}")
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet_300_100,conv6")
    ap.add_argument("--n", type=int, default=10_000, help="examples to score")
    ap.add_argument("--reps", type=int, default=0, help="interleaved repetitions (default 5 for LeNet, 2 for Conv-6)")
    ap.add_argument("--loop_n", type=int, default=500, help="examples for the per-example loop (extrapolated)")
    ap.add_argument("--slow_n", type=int, default=None,
                    help="examples for vmap and torch (extrapolated); 0 = all; default 1024 for conv6, all for LeNet")
    ap.add_argument("--min_time", type=float, default=1.0, help="seconds: shorter runs are repeated within a repetition")
    ap.add_argument("--torch_threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.torch_threads)
    names = args.models.split(",")
    for name in names:
        if name not in SHAPES:
            raise SystemExit(f"unknown model {name!r}; choose from {', '.join(SHAPES)}")
    rates = {name: bench_model(name, args) for name in names}
    print("\ntargets (median rates):")
    if "lenet_300_100" in rates:
        r = rates["lenet_300_100"]
        print(f"  LeNet-300-100 fast >= 150,000 ex/s: {r['fast']:,.0f} -> {'met' if r['fast'] >= 150_000 else 'MISSED'}")
        print(f"  LeNet-300-100 fast >= 30x torch.func: {r['fast'] / r['torch']:.0f}x -> {'met' if r['fast'] >= 30 * r['torch'] else 'MISSED'}")
    if "conv6" in rates:
        r = rates["conv6"]
        print(f"  Conv-6 fast >= 1.5x torch.func: {r['fast'] / r['torch']:.1f}x -> {'met' if r['fast'] >= 1.5 * r['torch'] else 'MISSED'}")


if __name__ == "__main__":
    main()
