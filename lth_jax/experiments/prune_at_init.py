"""experiment = "prune_at_init": SNIP, GraSP, SynFlow, magnitude and random
masks made at initialisation, trained at a list of densities, with Frankle
et al. 2021's sanity checks ("Pruning Neural Networks at Initialization: Why
Are We Missing the Mark?").

For each density d (stage ``density/D/``) and replicate r, every method of
``prune_at_init.methods`` makes a mask keeping d of the prunable weights
(kernels) of the replicate's initialisation (`lth_jax.at_init`,
`lth_jax.pruning`; spread over layers by ``prune_at_init.distribution``),
and for every control of ``prune_at_init.controls``:

- ``shuffle``: the method's mask shuffled within each layer (same per-layer
  counts), on the same initialisation;
- ``reinit``: the method's mask on a fresh initialisation.

All members of a density (methods x (1 + controls) x replicates) train
together as one vmapped program, from step 0 with the same data order per
replicate. SNIP and GraSP score ``prune_at_init.batches`` training batches
of ``train.batch_size``; all scoring runs the model in evaluation mode (as
the Synaptic-Flow reference code does by default). A member whose mask
empties a whole prunable leaf is marked ``layer_collapse`` (Tanaka et al.
2020's definition).

``prune_at_init.lottery_workdir`` names a finished lottery run of the same
data and model: its tickets (and dense network) are drawn on the same axes.

Outputs: ``density/D/result.json`` (every member, as a lottery level's),
``density/D/mask_{method}_r{r}.npz`` (each method's mask),
``summary.json``, ``plots/prune_at_init.png`` (test accuracy at the
early-stopping iteration vs density: the methods next to IMP tickets, then
one panel per control).
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from lth_jax import at_init, ensemble, figures, pruning
from lth_jax import masks as masks_lib
from lth_jax.errors import check
from lth_jax.experiments import common, lottery_report, prune_at_init_report
from lth_jax.files import read_json, to_json
from lth_jax.stages import Stage
from lth_jax.train import batch_indices, call_model, create_state, cross_entropy, init_variables, variables_of
from lth_jax.workdir import RunDir, is_run

METHODS = ("snip", "grasp", "synflow", "magnitude", "random")
CONTROLS = ("shuffle", "reinit")


def check_config(cfg) -> None:
    common.check_train(cfg)
    p = cfg.prune_at_init
    check(len(p.methods) >= 1, "prune_at_init.methods must list at least one method")
    for m in p.methods:
        check(m in METHODS, f"unknown prune_at_init method {m!r}; valid: {', '.join(METHODS)}")
    for c in p.controls:
        check(c in CONTROLS, f"unknown prune_at_init control {c!r}; valid: {', '.join(CONTROLS)}")
    for what, values in (("methods", p.methods), ("controls", p.controls), ("densities", p.densities)):
        check(len(set(values)) == len(values), f"prune_at_init.{what} lists a value twice: {tuple(values)}")
    check(len(p.densities) >= 1, "prune_at_init.densities must list at least one density")
    for d in p.densities:
        check(0 < d < 1, f"density must be in (0, 1) (the share of prunable weights kept), got {d} in "
                         "prune_at_init.densities")
    check(p.distribution in pruning.DISTRIBUTIONS, f"prune_at_init.distribution must be one of "
                                                   f"{', '.join(pruning.DISTRIBUTIONS)}, got {p.distribution!r}")
    check(p.batches >= 1, f"prune_at_init.batches must be >= 1, got {p.batches}")
    check(p.synflow_rounds >= 1, f"prune_at_init.synflow_rounds must be >= 1, got {p.synflow_rounds}")
    check(p.seeds >= 1, f"prune_at_init.seeds must be >= 1, got {p.seeds}")
    check(cfg.data.validation_size > 0, "prune_at_init needs a validation split for the early-stopping "
                                        "iteration: set data.validation_size > 0")


def lottery_reference(workdir: str, cfg) -> dict | None:
    """The summary of a finished lottery run of the same data and model, or None."""
    if not workdir:
        return None
    check(is_run(workdir), f"prune_at_init.lottery_workdir {workdir} is not a lth_jax workdir (no config.json)")
    config = read_json(os.path.join(workdir, "config.json"))
    check(config.get("experiment") == "lottery", f"prune_at_init.lottery_workdir {workdir} holds a "
                                                 f"{config.get('experiment')!r} run, not a lottery run")
    for section in ("data", "model"):
        ours = cfg[section].to_dict()
        check(config[section] == to_json(ours),
              f"prune_at_init.lottery_workdir {workdir} trained another {section} ({config[section]}); "
              f"this run has {ours}")
    path = os.path.join(workdir, "summary.json")
    check(os.path.exists(path), f"prune_at_init.lottery_workdir {workdir} is not finished (no summary.json)")
    return read_json(path)


class PruneAtInit:
    def __init__(self, cfg, workdir: str, progress=True):
        self.cfg, self.p, self.progress = cfg, cfg.prune_at_init, progress
        self.lottery = lottery_reference(self.p.lottery_workdir, cfg)  # checked before the workdir is touched
        self.parts = common.build(cfg, members=True)
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        self.replicates = list(range(self.p.seeds))
        model, batch_stats = self.parts.model, self.init(0).get("batch_stats", {})

        def logits(params, x):  # evaluation mode; the batch statistics of the initialisation
            return call_model(model, variables_of(params, batch_stats), x, train=False)[0]
        self.logits = logits
        self._shuffle = jax.jit(pruning.random_like)

    def init(self, r, fresh=False):
        key = jax.random.fold_in(self.keys["init"], r)
        if fresh:  # the reinit control: another initialisation of the same replicate
            key = jax.random.fold_in(self.keys["control"], r)
        return init_variables(self.parts.model, key, self.parts.dataset.input_shape)

    def batches(self, r):
        ds = self.parts.dataset
        rows = batch_indices((self.cfg.seed, r, 7), len(ds.y_train), self.cfg.train.batch_size, 0, self.p.batches)
        return [(ds.x_train[i], ds.y_train[i]) for i in rows]

    def mask(self, method, params, density, r):
        """The method's mask at `density` for replicate r's initial `params`."""
        p, ones = self.p, masks_lib.ones_like(params)

        def loss(q, x, y):
            return cross_entropy(self.logits(q, x), y).mean()
        if method == "snip":
            return at_init.snip(loss, params, ones, self.batches(r), density, distribution=p.distribution)
        if method == "grasp":
            return at_init.grasp(self.logits, params, ones, self.batches(r), density, distribution=p.distribution)
        if method == "synflow":
            return at_init.synflow(self.logits, params, ones, self.parts.dataset.input_shape, density,
                                   rounds=p.synflow_rounds, distribution=p.distribution)
        if method == "magnitude":
            return pruning.magnitude(params, ones, target_density=density, distribution=p.distribution)
        key = jax.random.fold_in(jax.random.fold_in(self.keys["prune"], r), int(round(density * 1e6)))
        return pruning.random(key, ones, target_density=density, distribution=p.distribution)

    def members(self, density):
        """Stacked initial states and member names of one density."""
        states, names = [], []
        for r in self.replicates:
            v = self.init(r)
            fresh = self.init(r, fresh=True) if "reinit" in self.p.controls else None
            for i, method in enumerate(self.p.methods):
                mask = self.mask(method, v["params"], density, r)
                states.append(self.state(v, mask))
                names.append(f"{method}/{r}")
                for c in self.p.controls:
                    if c == "shuffle":
                        key = jax.random.fold_in(jax.random.fold_in(self.keys["control"], 1000 + r), i)
                        states.append(self.state(v, self._shuffle(key, mask)))
                    else:
                        states.append(self.state(fresh, mask))
                    names.append(f"{method}+{c}/{r}")
        return ensemble.stack(states), names

    def state(self, variables, mask):
        return create_state(variables["params"], variables.get("batch_stats", {}), self.parts.tx, mask)

    def put(self, state):
        return self.parts.data_parallel.put_members(state) if self.parts.data_parallel else state

    def density(self, d):
        stage = Stage(self.rundir, os.path.join("density", f"{d:g}"), f"density {d:g}")
        try:
            if stage.done:
                stage.cleanup()
                return read_json(stage.file("result.json"))
            state, names = self.members(d)
            t, trainer = self.cfg.train, self.parts.trainer
            per_member = 1 + len(self.p.controls)
            trainer.set_members([(self.cfg.seed, r) for r in self.replicates
                                 for _ in range(len(self.p.methods) * per_member)])
            tag = f"density_{d:g}"
            state = stage.begin(self.put(state))
            state = stage.train(trainer, state, t.steps, self.keys["augment"], eval_every=t.eval_every,
                                checkpoint_every=t.checkpoint_every, members=names, tb_prefix=tag,
                                progress=tag if self.progress else False)
            result = lottery_report.level_result(0, names, stage.records, state.mask)
            del result["level"]
            result["density"] = d
            for i, name in enumerate(names):
                mask = ensemble.take(state.mask, i)
                leaves = masks_lib.named_leaves(mask)
                alive = [int(np.asarray(leaves[n]).sum()) for n in pruning.chosen_leaves(mask)]
                result["members"][name]["layer_collapse"] = bool(min(alive) == 0)
                kind, r = name.split("/")
                if kind in self.p.methods:
                    stage.write_once(f"mask_{kind}_r{r}.npz", mask, dtype=bool)
            stage.finish(result)
            return result
        finally:
            stage.close()

    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.cfg.to_dict(), overwrite)
        try:
            t0 = time.time()
            results = [self.density(d) for d in sorted(self.p.densities, reverse=True)]
            summary = prune_at_init_report.summarize(results, self.p.methods, self.p.controls, self.lottery,
                                                     time.time() - t0)
            self.rundir.finish(summary, lambda: prune_at_init_report.draw(self.rundir, summary))
            prune_at_init_report.print_summary(summary)
            figures.print_outputs(self.rundir.path, ["summary.json", "density/D/result.json",
                                                    "plots/prune_at_init.png"])
            return summary
        finally:
            self.rundir.close()


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return PruneAtInit(cfg, workdir, progress).run(overwrite)


def tables(summary: dict, rundir) -> list:
    """The run's tables (printed at its end and by ``python -m lth_jax.report WORKDIR --markdown``)."""
    return prune_at_init_report.tables(summary, rundir)


def redraw(rundir, config) -> list:
    return prune_at_init_report.draw(rundir, read_json(rundir.file("summary.json")))
