"""experiment = "train": one network, dense or with a mask loaded from a file.

One stage, the workdir itself: `checkpoints/` (kept: the trained network),
`metrics.jsonl`, `done`, then `plots/curves.png` and `summary.json` (last).
"""
from __future__ import annotations

import time

from lth_jax import masks as masks_lib
from lth_jax import figures
from lth_jax.experiments import common
from lth_jax.trainer import early_stop
from lth_jax.stages import Stage
from lth_jax.workdir import RunDir


def check_config(cfg) -> None:
    """What the sweep checks at every point before it starts (`run` checks it in common.build)."""
    common.check_train(cfg)


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    rundir = RunDir(workdir)
    parts = common.build(cfg)  # validates the config and data before anything is written
    keys = common.seed_keys(cfg.seed)
    state = parts.init(keys["init"])
    mask = common.load_mask(cfg.mask.path, state.params)
    if mask is not None:
        state = parts.init(keys["init"], mask)
    rundir.start(cfg.to_dict(), overwrite)
    stage = Stage(rundir, "", "training", keep_checkpoints=True)
    try:
        start_time = time.time()
        state = stage.begin(state)
        start_step = int(state.step)
        state = stage.train(parts.trainer, state, cfg.train.steps, keys["augment"], eval_every=cfg.train.eval_every,
                            checkpoint_every=cfg.train.checkpoint_every, progress=progress)
        stage.finish()
        seconds = time.time() - start_time
        records = stage.records
        summary = summarize(records, state.mask, cfg, seconds, int(state.step) - start_step)
        rundir.finish(summary, lambda: figures.plot_curves(records, rundir.file("plots", "curves.png"),
                                                           title=f"{cfg.model.name} on {cfg.data.name}"))
        figures.print_table([summary["final"]], title=f"{cfg.model.name} on {cfg.data.name}")
        figures.print_outputs(rundir.path, ["summary.json", "metrics.jsonl", "plots/curves.png"])
        return summary
    finally:
        stage.close()
        rundir.close()


def summarize(records, mask, cfg, seconds, steps_run) -> dict:
    final = dict(records[-1])
    d = masks_lib.densities(mask)
    final.update(density=d["prunable"], density_all=d["all"])
    summary = {"experiment": "train", "final": final, "density": d,
               "best_test_accuracy": max(r["test_accuracy"] for r in records),
               "wall_seconds": seconds,
               "examples_per_second": steps_run * cfg.train.batch_size / max(seconds, 1e-9)}
    if any("val_loss" in r for r in records):
        best = early_stop(records)
        summary["early_stop"] = {"step": best["step"], "val_loss": best["val_loss"],
                                 "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"]}
    return summary
