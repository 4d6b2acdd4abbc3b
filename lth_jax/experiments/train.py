"""experiment = "train": one network, dense or with a mask loaded from a file."""
from __future__ import annotations

import time

from lth_jax import masks as masks_lib
from lth_jax import report
from lth_jax.checkpoint import Checkpointer
from lth_jax.experiments import common
from lth_jax.loop import early_stop
from lth_jax.workdir import RunDir


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    rundir = RunDir(workdir)
    setup = common.build(cfg)  # validates the config and data before anything is written
    keys = common.seed_keys(cfg.seed)
    state = setup.init(keys["init"])
    mask = common.load_mask(cfg.mask.path, state.params)
    if mask is not None:
        state = setup.init(keys["init"], mask)
    resuming = rundir.start(cfg.to_dict(), overwrite)
    ckpt = Checkpointer(rundir.file("checkpoints"))
    try:
        records = []
        if resuming and ckpt.latest_step() is not None:
            state, meta = ckpt.restore(state)
            done = int(meta["step"])
            records = rundir.truncate_metrics(lambda r: r["step"] <= done)
            print(f"resuming {rundir.path} from step {done}")
        elif resuming:
            rundir.truncate_metrics(lambda r: False)
        start_time = time.time()
        start_step = int(state.step)

        def on_eval(st, record):
            records.append(record)
            rundir.append_metrics(record)
            if record["step"] % cfg.train.checkpoint_every == 0 or record["step"] == cfg.train.steps:
                ckpt.save(record["step"], st, {"step": record["step"]})

        state = setup.loop.run(state, cfg.train.steps, cfg.train.eval_every, keys["augment"],
                               on_eval=on_eval, progress=progress)
        seconds = time.time() - start_time
        summary = summarize(records, state.mask, cfg, seconds, int(state.step) - start_step)
        report.plot_curves(records, rundir.file("plots", "curves.png"), title=f"{cfg.model.name} on {cfg.data.name}")
        rundir.write_summary(summary)
        report.print_table([summary["final"]], title=f"{cfg.model.name} on {cfg.data.name}")
        return summary
    finally:
        ckpt.close()
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
