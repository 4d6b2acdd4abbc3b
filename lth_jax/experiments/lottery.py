"""experiment = "lottery": iterative magnitude pruning (IMP) with rewinding,
controls trained side by side, and optional instability analysis.

Level 0 trains the dense network (one member per replicate seed). Each level
L >= 1 prunes `lottery.fraction` of the remaining weights of the previous
level's trained ticket, rewinds the survivors to step k (`rewind_step`; 0 =
initialisation) and trains again from step k: the learning-rate schedule and
the data order continue from k, optimizer moments start from zero. With
``lottery.ap_fraction`` = a > 0, the share a of each level's budget is
removed by AP instead (Activate-while-Pruning, Liu et al. 2022: the alive
negative weights whose change over the level's training, from the rewind
point to the trained ticket, is smallest; global over the prunable leaves);
e.g. fraction 0.2 and a = 0.1 give the authors' 18% magnitude + 2% AP.

With ``lottery.granularity = "units"`` (structured IMP) a level removes
`fraction` of every hidden layer's alive units instead of weights: those
whose incoming weights in the trained ticket have the smallest L1 norm
(`lth_jax.units.magnitude`), expanded to weight masks through the traced data
flow. This is iterative structured magnitude pruning with rewinding; it
prunes each layer by the same share (``scope = "layerwise"``).

Controls at each level, trained in the same compiled program as the ticket
(the members of one vmapped state, sharing each replicate's batches):
- ``reinit``: the ticket's mask on a fresh random initialisation;
- ``random_prune``: a random mask with the ticket's per-layer density, on the
  ticket's own rewind weights (with units: random units, as many per layer
  as the ticket keeps);
- ``shuffle``: the ticket's mask shuffled within each layer, on the rewind
  weights (Frankle et al. 2021's sanity check). With weight granularity it
  is the same distribution as ``random_prune`` (a fresh draw); with units it
  is the unstructured control at the ticket's layer densities.

Each level is a stage (``lth_jax.stages``) in ``levels/L/``: ``checkpoints/``
(removed once the level is done), ``metrics.jsonl``, ``result.json`` (per
member metrics), ``mask.npz`` (replicate 0's ticket mask; ``mask_r{r}.npz``
for the others), ``ticket_final.npz`` (what level L+1 prunes), with ``lottery.keep_members``
``final.npz`` (every member's trained params and batch stats, in the order
of result.json's names), and ``done``.
Level 0 also holds ``rewind.npz``, written when its state reaches the rewind
step and never again. ``summary.json`` and ``plots/`` close the run. A killed
run restarted with the same command skips the done levels and resumes the
running one from its last checkpoint, to the same numbers.
"""
from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import ensemble, figures, npz, pruning, robustness, subsets, units
from lth_jax import masks as masks_lib
from lth_jax.errors import check
from lth_jax.experiments import common, lottery_report
from lth_jax.experiments.lottery_report import CONTROLS
from lth_jax.files import read_json
from lth_jax.stages import Stage
from lth_jax.train import at_step, create_state, init_variables
from lth_jax.workdir import RunDir

GRANULARITIES = ("weights", "units")
SWEEP_REPLICATES = "lottery.seeds"  # lth_jax.sweep: the count its `replicate` axis sets
_shuffle = jax.jit(pruning.random_like)


def check_config(cfg) -> None:
    common.check_train(cfg)
    lt = cfg.lottery
    check(lt.levels >= 0, f"lottery.levels must be >= 0, got {lt.levels}")
    pruning.check_fraction(lt.fraction, "lottery.fraction", allow_zero=False)
    check(lt.scope in pruning.SCOPES, f"lottery.scope must be one of {', '.join(pruning.SCOPES)}, got {lt.scope!r}")
    check(0 <= lt.rewind_step < cfg.train.steps,
          f"lottery.rewind_step {lt.rewind_step} must be in [0, train.steps = {cfg.train.steps}): the weights "
          "are rewound to a step of the dense run")
    check(lt.seeds >= 1, f"lottery.seeds (replicates) must be >= 1, got {lt.seeds}")
    for c in lt.controls:
        check(c in CONTROLS, f"unknown lottery control {c!r}; valid: {', '.join(CONTROLS)}")
    check(len(set(lt.controls)) == len(lt.controls), f"lottery.controls lists a control twice: {tuple(lt.controls)}")
    check(lt.granularity in GRANULARITIES,
          f"lottery.granularity must be one of {', '.join(GRANULARITIES)}, got {lt.granularity!r}")
    if lt.granularity == "units":
        check(lt.scope == "layerwise", "lottery.granularity = 'units' removes the same share of every hidden "
                                       "layer's units: set lottery.scope = 'layerwise'")
        check(not lt.layer_fractions and not lt.ap_fraction,
              "lottery.layer_fractions and lottery.ap_fraction act on weights; with lottery.granularity = 'units' "
              "leave them unset")
    check(cfg.data.validation_size > 0, "the lottery experiment needs a validation split for the early-stopping "
                                        "iteration: set data.validation_size > 0")
    if lt.pretrain_scores:
        check(lt.rewind_step > 0, "lottery.pretrain_scores (a data diet for the pre-training) needs "
                                  "lottery.rewind_step > 0: the subset trains the dense net up to the rewind step")
        check(lt.pretrain_selection in subsets.METHODS,
              f"lottery.pretrain_selection must be one of {', '.join(subsets.METHODS)}, got {lt.pretrain_selection!r}")
        subsets.check_fraction(lt.pretrain_fraction)
    check(0 <= lt.ap_fraction < 1, f"lottery.ap_fraction must be in [0, 1) (the share of each level's pruning "
                                   f"budget removed by AP), got {lt.ap_fraction}")
    check(lt.robustness_examples >= 1, f"lottery.robustness_examples must be >= 1, got {lt.robustness_examples}")
    for level in lt.instability_levels:
        check(0 <= level <= lt.levels, f"lottery.instability_levels has {level}, outside [0, levels = {lt.levels}]")


class Lottery:
    def __init__(self, cfg, workdir: str, progress=True):
        self.cfg, self.lt, self.progress = cfg, cfg.lottery, progress
        self.parts = common.build(cfg, members=True)
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        self.replicates = list(range(self.lt.seeds))
        self.layer_fractions = dict(self.lt.layer_fractions)
        self.flow = None
        if self.lt.granularity == "units":
            ds = self.parts.dataset
            self.flow = units.flow(self.parts.model, self.init_params(self.keys["init"]), ds.x_train[:4])
            check(units.hidden_groups(self.flow), "lottery.granularity = 'units': the model has no hidden layers")
        self._prune = jax.jit(jax.vmap(self.prune))
        self._random_like = jax.jit(pruning.random_like if self.flow is None else
                                    functools.partial(units.random_like, flow_=self.flow))
        # read (and checked) before the workdir is touched
        self.pretrain = self.pretrain_subset() if self.lt.pretrain_scores else None
        robustness.check_options(self.lt.robustness_severities, self.lt.robustness_corruptions,
                                 self.parts.dataset.input_shape, prefix="lottery.robustness_")

    def prune(self, trained, mask, start):
        """One level's new mask from the trained ticket: `lottery.fraction` of the
        remaining weights by magnitude, of which the share `ap_fraction` is
        instead removed by AP (negative weights that moved least from `start`,
        the weights the level trained from). The level removes as many weights
        as without AP: magnitude takes (1 - ap_fraction) of every rate, AP the
        rest of the plain budget."""
        lt = self.lt
        if self.flow is not None:
            return units.magnitude(trained, mask, lt.fraction, self.flow)
        if not lt.ap_fraction:
            return pruning.magnitude(trained, mask, lt.fraction, lt.scope, self.layer_fractions)
        def kept(m):
            return masks_lib.count(m, masks_lib.prunable(m))[0]
        budget = kept(mask) - kept(pruning.magnitude(trained, mask, lt.fraction, lt.scope, self.layer_fractions))
        share = 1 - lt.ap_fraction
        new = pruning.magnitude(trained, mask, lt.fraction * share, lt.scope,
                                {k: v * share for k, v in self.layer_fractions.items()})
        return pruning.activate_while_pruning(trained, start, new, budget - (kept(mask) - kept(new)))

    # ---- members -------------------------------------------------------------------------
    def init_params(self, key):
        return init_variables(self.parts.model, key, self.parts.dataset.input_shape)

    def member_state(self, variables, mask, step):
        state = create_state(variables["params"], variables.get("batch_stats", {}), self.parts.tx, mask)
        return at_step(state, step)

    def put(self, state):
        return self.parts.data_parallel.put_members(state) if self.parts.data_parallel else state

    def data_seed(self, r, copy=None):
        return (self.cfg.seed, r) if copy is None else (self.cfg.seed, r, copy)

    # ---- files ---------------------------------------------------------------------------
    def level_dir(self, level):
        return self.rundir.file("levels", str(level))

    def stage(self, level) -> Stage:
        return Stage(self.rundir, os.path.join("levels", str(level)), f"level {level}")

    def rewound(self):
        """The stacked rewind-point variables of every replicate (step k of the dense run)."""
        v = self.init_params(self.keys["init"])
        one = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
        return npz.load(os.path.join(self.level_dir(0), "rewind.npz"), ensemble.stack([one for _ in self.replicates]),
                        what="rewind point")

    # ---- training ------------------------------------------------------------------------
    def train(self, level, stage, state, names, member_seeds):
        """Train the level's stacked `state` (fresh or restored) to train.steps.
        Level 0 writes the rewind point when its state is at the rewind step."""
        trainer, t, k = self.parts.trainer, self.cfg.train, self.lt.rewind_step
        kw = dict(eval_every=t.eval_every, checkpoint_every=t.checkpoint_every, members=names,
                  progress=f"level {level}" if self.progress else False, tb_prefix=f"level_{level}")
        if level == 0 and int(np.asarray(state.step)[0]) < k:
            # lottery tickets on a data diet: the pre-training up to the rewind step uses a scored subset
            trainer.set_members(member_seeds, None if self.pretrain is None else [self.pretrain] * len(member_seeds))
            state = stage.train(trainer, state, k, self.keys["augment"], **kw)
        if level == 0 and int(np.asarray(state.step)[0]) == k:
            stage.write_once("rewind.npz", {"params": state.params, "batch_stats": state.batch_stats})
        trainer.set_members(member_seeds)
        return stage.train(trainer, state, t.steps, self.keys["augment"], **kw)

    def pretrain_subset(self):
        """The examples the dense pre-training up to the rewind step uses (Paul et al. 2022)."""
        from lth_jax.experiments.diet import load_scores
        table = load_scores(self.lt.pretrain_scores, self.parts.dataset)
        key = f"{self.lt.pretrain_score}_mean"
        check(key in table, f"scores file {self.lt.pretrain_scores} has no {self.lt.pretrain_score!r} scores; "
                            f"it has: {', '.join(k[:-5] for k in table if k.endswith('_mean'))}")
        return subsets.choose(self.lt.pretrain_selection, table[key], self.lt.pretrain_fraction,
                              seed=[self.cfg.seed, 17], labels=self.parts.dataset.y_train)

    def level_members(self, level, ticket_final, prev_masks):
        """Stacked initial state, member names, data seeds and masks of a level."""
        k = self.lt.rewind_step
        if level == 0:
            states = [self.member_state(self.init_params(jax.random.fold_in(self.keys["init"], r)), None, 0)
                      for r in self.replicates]
            return ensemble.stack(states), [f"dense/{r}" for r in self.replicates], \
                [self.data_seed(r) for r in self.replicates], None
        rewind = self.rewound()
        masks = self._prune(ticket_final, prev_masks, rewind["params"])
        state, names, replicates = pruned_level_members(
            self.init_params, self.parts.tx, rewind, masks, rewind_step=k, controls=self.lt.controls,
            control_key=jax.random.fold_in(self.keys["control"], level), random_like=self._random_like)
        return state, names, [self.data_seed(r) for r in replicates], masks

    def instability(self, level, start_state):
        """Two copies per replicate from the level's starting point (same weights
        and mask), different data orders; test error along the straight line."""
        R = len(self.replicates)
        tickets = ensemble.take(start_state, np.arange(R))
        pair = ensemble.stack([ensemble.take(tickets, r) for r in self.replicates for _ in (0, 1)])
        seeds = [self.data_seed(r, copy) for r in self.replicates for copy in (1, 2)]
        trainer = self.parts.trainer
        trainer.set_members(seeds)
        trained = trainer.run(self.put(pair), self.cfg.train.steps, self.cfg.train.eval_every, self.keys["augment"],
                              progress=f"level {level} instability" if self.progress else False)
        alphas = np.linspace(0.0, 1.0, self.lt.instability_points)
        out = []
        for r in self.replicates:
            a, b = ensemble.take(trained, 2 * r), ensemble.take(trained, 2 * r + 1)
            path = ensemble.stack([jax.tree_util.tree_map(lambda u, v: (1 - t) * u + t * v, a, b) for t in alphas])
            errors = 1.0 - np.asarray(self.parts.trainer.evaluate(self.put(path))["test_accuracy"])
            out.append({"alphas": alphas, "test_error": errors,
                        "barrier": float(errors.max() - 0.5 * (errors[0] + errors[-1]))})
        return {"replicates": out, "barrier_mean": float(np.mean([o["barrier"] for o in out]))}

    # ---- the run -------------------------------------------------------------------------
    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.cfg.to_dict(), overwrite, extendable=(("lottery", "levels"),))
        try:
            return self._run()
        finally:
            self.rundir.close()

    def _run(self):
        t0 = time.time()
        example = self.init_params(self.keys["init"])["params"]
        stacked_like = ensemble.stack([example for _ in self.replicates])
        done = [level for level in range(self.lt.levels + 1) if self.stage(level).done]
        if done:
            print(f"resuming {self.rundir.path}: " + (f"levels 0-{done[-1]}" if len(done) > 1 else "level 0") + " done")
        for level in range(self.lt.levels + 1):
            stage = self.stage(level)
            if stage.done:
                stage.cleanup()
                continue
            ticket_final = prev_masks = None
            if level > 0:  # always read back from the files, so a resumed run computes what a fresh one does
                ticket_final = npz.load(os.path.join(self.level_dir(level - 1), "ticket_final.npz"), stacked_like)
                prev_masks = ensemble.stack([masks_lib.load(self.mask_path(level - 1, r), example)
                                             for r in self.replicates])
            try:
                self.run_level(level, stage, ticket_final, prev_masks)
            finally:
                stage.close()
        if self.lt.robustness:  # before the summary: a run killed here evaluates again when restarted
            lt = self.lt
            robustness.write(self.rundir, robustness.evaluate(
                self.rundir.path, tuple(lt.robustness_severities), list(lt.robustness_corruptions) or None,
                lt.robustness_examples, finished=False))
        summary = lottery_report.summarize(self.rundir, self.lt.levels, time.time() - t0)
        self.rundir.finish(summary, lambda: lottery_report.draw(self.rundir, summary))
        lottery_report.print_summary(summary)
        figures.print_outputs(self.rundir.path, ["summary.json", "levels/L/result.json", "plots/lottery.png"])
        return summary

    def run_level(self, level, stage, ticket_final, prev_masks):
        state, names, seeds, _ = self.level_members(level, ticket_final, prev_masks)
        state = self.put(state)
        # training donates its input buffers: keep a copy where instability needs the start
        start_state = jax.tree_util.tree_map(jnp.copy, state) if level in self.lt.instability_levels else None
        state = stage.begin(state)
        state = self.train(level, stage, state, names, seeds)
        R = len(self.replicates)
        result = lottery_report.level_result(level, names, stage.records, state.mask)
        if self.flow is not None:
            for i, name in enumerate(names):
                alive = units.alive_units(ensemble.take(state.mask, i), self.flow)
                result["members"][name]["unit_density"] = float(sum(int(a.sum()) for a in alive.values()) /
                                                                sum(a.size for a in alive.values()))
        if level in self.lt.instability_levels:
            if level == 0:  # the dense net's copies start from the rewind point
                rewound = self.rewound()
                start_state = ensemble.stack([self.member_state(ensemble.take(rewound, r), None,
                                                                self.lt.rewind_step) for r in self.replicates])
            result["instability"] = self.instability(level, start_state)
        masks = ensemble.take(state.mask, np.arange(R))
        for r in self.replicates:
            stage.write_once(os.path.basename(self.mask_path(level, r)), ensemble.take(masks, r), dtype=bool)
        stage.write_once("ticket_final.npz", ensemble.take(state.params, np.arange(R)))
        if self.lt.keep_members or self.lt.robustness:
            stage.write_once("final.npz", {"params": state.params, "batch_stats": state.batch_stats})
        stage.finish(result)

    def mask_path(self, level, r):
        return os.path.join(self.level_dir(level), "mask.npz" if r == 0 else f"mask_r{r}.npz")


def pruned_level_members(init_params, tx, rewind, masks, *, rewind_step: int, control_key,
                         controls=("reinit", "random_prune"), random_like=pruning.random_like):
    """The members of a pruned level, stacked: for every replicate r the
    ticket (masks[r] on the rewind weights rewind[r]), then for each control
    and replicate: ``reinit`` (masks[r] on init_params(key)), ``random_prune``
    (random_like(key, masks[r]) on rewind[r]) or ``shuffle``
    (`pruning.random_like`: masks[r] shuffled within each leaf, on
    rewind[r]); each at `rewind_step` (see `train.at_step`).

    init_params(key) -> variables dict; rewind: stacked {"params", "batch_stats"}
    of the R replicates; masks: the R stacked ticket masks. Pure in its
    inputs (the keys are folded from `control_key`). Returns (stacked
    TrainState, member names, the replicate of each member)."""
    replicates = range(jax.tree_util.tree_leaves(masks)[0].shape[0])

    def state(variables, mask):
        st = create_state(variables["params"], variables.get("batch_stats", {}), tx, mask)
        return at_step(st, rewind_step)
    states = [state(ensemble.take(rewind, r), ensemble.take(masks, r)) for r in replicates]
    names, owners = [f"ticket/{r}" for r in replicates], list(replicates)
    for c in controls:
        for r in replicates:
            mask = ensemble.take(masks, r)
            key = jax.random.fold_in(jax.random.fold_in(control_key, CONTROLS.index(c)), r)
            if c == "reinit":
                states.append(state(init_params(key), mask))
            elif c == "shuffle":
                states.append(state(ensemble.take(rewind, r), _shuffle(key, mask)))
            else:
                states.append(state(ensemble.take(rewind, r), random_like(key, mask)))
            names.append(f"{c}/{r}")
            owners.append(r)
    return ensemble.stack(states), names, owners


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return Lottery(cfg, workdir, progress).run(overwrite)


def sweep_row(rundir, cfg, replicate: int) -> dict:
    """A sweep point's numbers: replicate r's dense net (level 0) and ticket (levels
    >= 1) at every level, its controls' final test accuracy, and as the headline
    `test_accuracy` / `density` its sparsest ticket's."""
    row, series = {}, {"x": [], "y": [], "x_label": "weights remaining (%)", "y_label": "ticket test accuracy (%)"}
    for level in range(cfg.lottery.levels + 1):
        members = read_json(rundir.file("levels", str(level), "result.json"))["members"]
        m = members[f"{'dense' if level == 0 else 'ticket'}/{replicate}"]
        row.update({f"L{level}_density": m["density"], f"L{level}_test_accuracy": m["final_test_accuracy"],
                    f"L{level}_early_stop_test_accuracy": m["early_stop_test_accuracy"]})
        for c in cfg.lottery.controls if level else ():
            row[f"L{level}_{c}_test_accuracy"] = members[f"{c}/{replicate}"]["final_test_accuracy"]
        series["x"].append(m["density"])
        series["y"].append(m["final_test_accuracy"])
    row.update(test_accuracy=series["y"][-1], density=series["x"][-1], series=series)
    return row


def tables(summary: dict, rundir) -> list:
    """The run's tables (printed at its end and by ``python -m lth_jax.report WORKDIR --markdown``)."""
    return lottery_report.tables(summary, rundir)


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    paths = lottery_report.draw(rundir, summary)
    if os.path.exists(rundir.file("robustness.json")):
        paths += robustness.draw(rundir, read_json(rundir.file("robustness.json")))
    return paths
