"""experiment = "unit_search": random search over sparse architectures in the
space of hidden units ("Random Search as a Baseline for Sparse Neural Network
Architecture Search", 2024), with structured magnitude pruning as a baseline.

For each replicate r, a dense parent is trained first (stage ``dense/``).
Then, for each node sparsity s (stage ``sparsity/S/``), in ONE vmapped
program per sparsity, train from the parent's initialisation:

- N candidates (``unit_search.candidates``): random unit masks that keep
  ``round((1 - s) * width)`` units of every hidden layer (``scope =
  "layerwise"``), or that many units over all hidden layers together with at
  least ``min_units`` per layer (``"global"``);
- the structured-magnitude baseline: the units of the trained parent with the
  largest L1 norm of incoming weights, at the same per-layer counts.

Unit masks are expanded to weight masks through the traced data flow
(`lth_jax.units`). The candidates' cheap criterion is their validation loss
at step ``criterion_step`` of this same training (0 = at initialisation).
Because every candidate is trained to the end, the study reads off directly
what a search would have given: **searched** = the B (``keep``) candidates
with the lowest criterion, **random** = B fresh random unit masks, drawn
after the N candidates and trained beside them but never seen by the search
(so the two sets share no member: drawing "random" from the searched pool
would let it overlap "searched" and pull the comparison towards "equal"),
plus **magnitude** and the **dense** parent. The result also holds the
criterion and final accuracy of every candidate (does the criterion predict
anything?).

Hidden layers are the layers with a kernel whose outputs another layer reads
(for residual nets: one unit mask per tied group of layers).

Outputs: ``sparsity/S/result.json`` (every member, the criterion, the chosen
sets), ``summary.json``, ``plots/unit_search.png`` (test accuracy at the
early-stopping iteration and the iteration itself vs node sparsity) and
``plots/criterion.png`` (criterion vs final accuracy of every candidate).
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from lth_jax import ensemble, figures, npz, units
from lth_jax.errors import check
from lth_jax.experiments import common, unit_search_report
from lth_jax.files import read_json
from lth_jax.stages import Stage
from lth_jax.train import create_state, init_variables
from lth_jax.workdir import RunDir

SCOPES = ("layerwise", "global")


def check_config(cfg) -> None:
    common.check_train(cfg)
    u = cfg.unit_search
    check(len(u.sparsities) >= 1, "unit_search.sparsities must list at least one node sparsity")
    for s in u.sparsities:
        check(0 < s < 1, f"node sparsity must be in (0, 1) (the share of hidden units removed), got {s} in "
                         "unit_search.sparsities")
    check(u.candidates >= 1, f"unit_search.candidates must be >= 1, got {u.candidates}")
    check(1 <= u.keep <= u.candidates, f"unit_search.keep (B) must be in [1, candidates = {u.candidates}], "
                                       f"got {u.keep}")
    check(u.seeds >= 1, f"unit_search.seeds must be >= 1, got {u.seeds}")
    check(u.scope in SCOPES, f"unit_search.scope must be one of {', '.join(SCOPES)}, got {u.scope!r}")
    check(u.min_units >= 1, f"unit_search.min_units must be >= 1, got {u.min_units}")
    check(0 <= u.criterion_step <= cfg.train.steps and u.criterion_step % cfg.train.eval_every == 0,
          f"unit_search.criterion_step ({u.criterion_step}) must be 0 or an evaluation step (a multiple of "
          f"train.eval_every = {cfg.train.eval_every}) up to train.steps = {cfg.train.steps}")
    check(cfg.data.validation_size > 0, "unit_search needs a validation split for its criterion and the "
                                        "early-stopping iteration: set data.validation_size > 0")


def unit_counts(widths: dict, sparsity: float) -> dict:
    """Units kept per hidden group at a node sparsity (at least one)."""
    return {g: max(1, int(np.floor((1 - sparsity) * w + 0.5))) for g, w in widths.items()}


def check_min_units(widths: dict, sparsity: float, min_units: int) -> dict:
    """{group: units it keeps at least} with scope global; LthError when they outnumber the units kept."""
    total = sum(unit_counts(widths, sparsity).values())
    floors = {g: min(min_units, w) for g, w in widths.items()}
    check(sum(floors.values()) <= total, f"unit_search.min_units = {min_units} per layer is more than the "
                                         f"{total} units kept at sparsity {sparsity}")
    return floors


def sample_unit_masks(rng, widths: dict, sparsity: float, scope: str, min_units: int) -> dict:
    """{group: bool vector} keeping a uniformly random set of units."""
    if scope == "layerwise":
        counts = unit_counts(widths, sparsity)
    else:
        total = sum(unit_counts(widths, sparsity).values())
        floors = check_min_units(widths, sparsity, min_units)
        groups = list(widths)
        while True:  # uniform over all units, resampled until every layer keeps its floor
            owner = np.repeat(np.arange(len(groups)), [widths[g] for g in groups])
            chosen = rng.choice(len(owner), size=total, replace=False)
            counts = {g: int(np.sum(owner[chosen] == i)) for i, g in enumerate(groups)}
            if all(counts[g] >= floors[g] for g in groups):
                break
    return {g: np.isin(np.arange(w), rng.choice(w, size=counts[g], replace=False)) for g, w in widths.items()}


def magnitude_unit_masks(params, flow_, counts: dict) -> dict:
    """{group: bool vector}: the `counts[group]` units with the largest L1 norm
    of incoming weights (`units.incoming_l1`) of the trained `params`."""
    norms = units.incoming_l1(params, flow_)
    out = {}
    for group, n in counts.items():
        norm = np.asarray(norms[group[0]])
        keep = np.zeros(norm.shape, bool)
        keep[np.argsort(-norm, kind="stable")[:n]] = True
        out[group] = keep
    return out


class UnitSearch:
    def __init__(self, cfg, workdir: str, progress=True):
        self.cfg, self.u, self.progress = cfg, cfg.unit_search, progress
        self.parts = common.build(cfg, members=True)
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        ds = self.parts.dataset
        example = init_variables(self.parts.model, self.keys["init"], ds.input_shape)
        self.flow = units.flow(self.parts.model, example, ds.x_train[:4])
        hidden = units.hidden_groups(self.flow)
        check(hidden, "unit_search: the model has no hidden layers (no layer's outputs feed another layer)")
        self.widths = {g: self.flow.width[g[0]] for g in hidden}
        self.replicates = list(range(self.u.seeds))
        for s in self.u.sparsities if self.u.scope == "global" else ():  # before the workdir is made
            check_min_units(self.widths, s, self.u.min_units)

    def init(self, r):
        return init_variables(self.parts.model, jax.random.fold_in(self.keys["init"], r),
                              self.parts.dataset.input_shape)

    def put(self, state):
        return self.parts.data_parallel.put_members(state) if self.parts.data_parallel else state

    def weight_mask(self, params, unit_masks: dict):
        return units.to_weights(params, {g[0]: keep for g, keep in unit_masks.items()}, self.flow)

    def stage(self, name, label) -> Stage:
        return Stage(self.rundir, name, label)

    def train(self, stage, state, names, seeds, tag):
        t, trainer = self.cfg.train, self.parts.trainer
        trainer.set_members(seeds)
        state = stage.begin(self.put(state))
        return stage.train(trainer, state, t.steps, self.keys["augment"], eval_every=t.eval_every,
                           checkpoint_every=t.checkpoint_every, members=names, tb_prefix=tag,
                           progress=tag if self.progress else False)

    # ---- the dense parents ----------------------------------------------------------------------
    def dense(self):
        stage = self.stage("dense", "dense")
        try:
            if not stage.done:
                states = [self.state(self.init(r), None) for r in self.replicates]
                names = [f"dense/{r}" for r in self.replicates]
                final = self.train(stage, ensemble.stack(states), names, self.seeds(), "dense")
                stage.write_once("parents.npz", ensemble.take(final.params, np.arange(len(self.replicates))))
                stage.finish(unit_search_report.members_result(names, stage.records, []))
            else:
                stage.cleanup()
        finally:
            stage.close()
        like = ensemble.stack([self.init(r)["params"] for r in self.replicates])
        return npz.load(stage.file("parents.npz"), like, what="trained parents")

    def state(self, variables, mask):
        return create_state(variables["params"], variables.get("batch_stats", {}), self.parts.tx, mask)

    def seeds(self, per_replicate=1):
        return [(self.cfg.seed, r) for r in self.replicates for _ in range(per_replicate)]

    # ---- one node sparsity ---------------------------------------------------------------------
    def sparsity(self, s, parents):
        stage = self.stage(os.path.join("sparsity", f"{s:g}"), f"sparsity {s:g}")
        try:
            if stage.done:
                stage.cleanup()
                return read_json(stage.file("result.json"))
            N = self.u.candidates
            states, names, unit_sets = [], [], []
            counts = unit_counts(self.widths, s)
            for r in self.replicates:
                rng = np.random.default_rng([self.cfg.seed, r, int(round(s * 1e6))])
                v = self.init(r)
                # the fresh random set is drawn after the candidates, so the candidates (and hence
                # the searched set) are those of a run without it
                for name in [f"candidate_{c}" for c in range(N)] + [f"random_{c}" for c in range(self.u.keep)]:
                    um = sample_unit_masks(rng, self.widths, s, self.u.scope, self.u.min_units)
                    states.append(self.state(v, self.weight_mask(v["params"], um)))
                    names.append(f"{name}/{r}")
                    unit_sets.append(um)
                um = magnitude_unit_masks(ensemble.take(parents, r), self.flow, counts)
                states.append(self.state(v, self.weight_mask(v["params"], um)))
                names.append(f"magnitude/{r}")
                unit_sets.append(um)
            stacked = ensemble.stack(states)
            init_eval = self.parts.trainer.evaluate(self.put(stacked)) if self.u.criterion_step == 0 else None
            seeds = self.seeds(N + self.u.keep + 1)
            self.train(stage, stacked, names, seeds, f"sparsity_{s:g}")
            result = unit_search_report.sparsity_result(
                s, names, stage.records, unit_sets, self.replicates, N, self.u.keep, self.u.criterion_step,
                init_eval)
            stage.finish(result)
            return result
        finally:
            stage.close()

    # ---- the run -------------------------------------------------------------------------------
    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.cfg.to_dict(), overwrite)
        try:
            t0 = time.time()
            parents = self.dense()
            dense = read_json(self.rundir.file("dense", "result.json"))
            results = [self.sparsity(s, parents) for s in sorted(self.u.sparsities)]
            summary = unit_search_report.summarize(dense, results, self.widths, time.time() - t0)
            self.rundir.finish(summary, lambda: unit_search_report.draw(self.rundir, summary, results))
            unit_search_report.print_summary(summary)
            figures.print_outputs(self.rundir.path, ["summary.json", "sparsity/S/result.json",
                                                    "plots/unit_search.png", "plots/criterion.png"])
            return summary
        finally:
            self.rundir.close()


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return UnitSearch(cfg, workdir, progress).run(overwrite)


def tables(summary: dict, rundir) -> list:
    """The run's tables (printed at its end and by ``python -m lth_jax.report WORKDIR --markdown``)."""
    return unit_search_report.tables(summary, rundir)


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    results = [read_json(rundir.file("sparsity", f"{s:g}", "result.json")) for s in summary["sparsities"]]
    return unit_search_report.draw(rundir, summary, results)
