"""The data diet on MNIST-1D over 3 replicate seeds x 3 kept fractions x 2
selections: 18 points, stacked by the diet experiment into one run (one
scoring ensemble; each fraction's 6 members, plus the full-data baseline,
trained as one vmapped program).

    python -m lth_jax.sweep --config configs/diet_mnist1d.py --sweep configs/sweeps/diet_mnist1d.py \
        --workdir runs/sweep_diet_mnist1d
"""


def get_sweep():
    return {
        "diet.fractions": [0.3, 0.5, 0.7],
        "diet.selections": ["el2n:hardest", "random"],
        "replicate": [0, 1, 2],
    }
