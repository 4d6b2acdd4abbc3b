"""Lottery tickets over the rewind step x the pruning scope, 2 replicates
each: 4 runs one after another (the rewind step changes what each level
trains, the scope which weights it keeps), each run's replicates stacked.

    python -m lth_jax.sweep --config configs/lottery_mnist1d.py --sweep configs/sweeps/lottery_rewind_scope.py \
        --workdir runs/sweep_lottery_mnist1d --config.lottery.levels=3 "--config.lottery.controls=('random_prune',)"
"""


def get_sweep():
    return {
        "lottery.rewind_step": [0, 100],
        "lottery.scope": ["layerwise", "global"],
        "replicate": [0, 1],
    }
