"""The unit_search candidate population: N random unit masks trained together
(one vmapped program, as the experiment trains them) vs one after another.

The members are built as `lth_jax.experiments.unit_search` builds one
replicate of a node sparsity: N random unit masks (`sample_unit_masks`,
layerwise) of one parent initialisation, expanded to weight masks through
the traced data flow (`units.flow`, `units.to_weights`), all sharing the
replicate's batches. Model and recipe of configs/unit_search_mnist1d.py:
MLP 40-500-500-10, Adam 2e-3, batch 100, 1000 steps in chunks of 100
(train.eval_every), random data of MNIST-1D's size (4,000 examples).

Variants and timing as bench/lottery_vmap.py (compile excluded, repetitions
interleaved, speedup = sequential / vmapped):

    python bench/unit_search_population.py --out bench/results/unit_search_population.json
    python bench/unit_search_population.py --quick --out /tmp/usp.json   # smoke run
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lottery_vmap  # noqa: E402

import common  # noqa: E402

SETUP = dict(model="mlp", kw={"widths": (500, 500)}, input=(40,), batch=100, lr=2e-3, n_train=4000)


def variants(name, n, args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lth_jax import models, optim, units
    from lth_jax.experiments.unit_search import sample_unit_masks
    from lth_jax.train import Steps, batch_indices, create_state, init_variables

    model = models.get(SETUP["model"], num_classes=10, **SETUP["kw"])
    tx = optim.optimizer("adam", SETUP["lr"])
    variables = init_variables(model, jax.random.PRNGKey(0), SETUP["input"])
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((SETUP["n_train"], *SETUP["input"]), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, SETUP["n_train"]).astype(np.int32))
    fl = units.flow(model, variables, x[:4])
    hidden = units.hidden_groups(fl)
    widths = {g: fl.width[g[0]] for g in hidden}
    states = []
    for _ in range(n):
        um = sample_unit_masks(rng, widths, args.sparsity, "layerwise", 1)
        mask = units.to_weights(variables["params"], {g[0]: keep for g, keep in um.items()}, fl)
        states.append(create_state(variables["params"], {}, tx, mask))
    rows = [batch_indices(0, SETUP["n_train"], SETUP["batch"], 0, args.steps)] * n
    stacked = Steps(model, tx, members=True, member_block=None)
    return lottery_vmap.variants_of(name, n, args, Steps(model, tx), stacked, states, x, y, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_args(ap, "bench/results/unit_search_population.json")
    ap.add_argument("--candidates", default="8,32", help="comma list of N")
    ap.add_argument("--sparsity", type=float, default=0.75, help="node sparsity of the candidates")
    lottery_vmap.add_timing_args(ap)
    ap.set_defaults(chunk=100, xk_variant=False)
    args = lottery_vmap.parse(ap, default_steps=1000)
    cases = [("unit_search", int(n), SETUP) for n in args.candidates.split(",") if n.strip()]
    lottery_vmap.measure(cases, variants, args, f"unit_search candidates at node sparsity {args.sparsity:g}: "
                         "vmapped population vs sequential", {"setup": SETUP})


if __name__ == "__main__":
    main()
