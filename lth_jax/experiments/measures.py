"""experiment = "measures": which generalization measure predicts the
generalization gap? (Jiang et al. 2020; Gastpar et al. 2024.)

A grid of networks: architectures (``measures.widths``, each a tuple of MLP
hidden widths, or ``measures.models``, model names) x learning rates x
weight decays x seeds, trained on clean labels and, for every
``measures.label_noise`` value above 0, on labels of which that share is
flipped (Gastpar et al.'s check). Members that share parameter shapes and
labels (one architecture, one noise level) form a **group**: they train
together as one vmapped program, the learning rate and weight decay of each
member held in its optimizer state (`optax.inject_hyperparams`), each with
its own data order (its seed). Stopping rule (Jiang et al.): a member stops
(its learning rate set to 0) at the first evaluation where its
cross-entropy on the whole training set is at most ``measures.stop_loss``;
otherwise it stops at ``train.steps`` (``reached_stop_loss`` false) and,
as in the reference code, is not ranked: listed apart (`measures_report`).

Then for every member (`lth_jax.measures.all_measures`, on the training
set it was trained on, noisy labels included): every measure, with
Jiang et al.'s dataset-size adjustment; train and test accuracy and loss;
the generalization gap = train accuracy - test accuracy.

Evaluation (`measures_report`), over the clean members that reached the
stopping loss: Jiang et al.'s Kendall tau (tau-a, ties score 0) of each
measure with the gap over the grid, and the granulated tau Psi, the mean
over hyperparameters of the mean tau over the sets of members that differ
only in that hyperparameter. With label noise: per measure, its mean value
and the mean test error, clean vs noisy, over the members that reached the
stopping loss.

lth_jax's own axes: ``measures.lottery_levels`` = L adds IMP tickets: after
the dense grid trains, each member loses ``lottery.fraction`` of its
remaining weights by magnitude (``lottery.scope``, ``lottery.layer_fractions``),
is rewound to its initialisation and retrained, L times; every level's
members are grid members (``lottery_level``, ``density``), their measures
computed on the alive weights, distances from the rewind point (here the
initialisation). ``measures.diet_fractions`` adds groups trained on a kept
share of the training set (``diet_fraction``): a random subset, or one chosen
by a diet run's scores (``measures.diet_selection`` "SCORE:METHOD" with
``measures.diet_scores``). One subset per fraction, shared by its members, so
the stopping rule, the train accuracy (hence the gap) and the measures are
all taken on exactly the examples they trained on.

Each group at each level is a stage ``groups/aA_nN[_fF][_LL]/``;
``summary.json``, ``plots/measures.png`` (each measure vs the gap, coloured
by learning rate) and ``plots/label_noise.png`` close the run.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lth_jax import masks as masks_lib
from lth_jax import ensemble, figures, measures, models, npz, pruning, subsets, units
from lth_jax.errors import check, unknown
from lth_jax.experiments import common, measures_report
from lth_jax.experiments.diet import load_scores, parse_selection
from lth_jax.files import read_json
from lth_jax.stages import Stage
from lth_jax.train import call_model, create_state, init_variables, variables_of
from lth_jax.trainer import DEFAULT_EVAL_BATCH
from lth_jax.workdir import RunDir

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def check_config(cfg) -> None:
    common.check_train(cfg)
    m = cfg.measures
    check(cfg.optimizer.name in OPTIMIZERS, f"the measures experiment trains with one of {', '.join(OPTIMIZERS)} "
                                            f"(per-member learning rate and weight decay); got {cfg.optimizer.name!r}")
    check(not (m.widths and m.models), "give measures.widths (MLP hidden widths) or measures.models, not both")
    for name in m.models:  # checked here, before the workdir is made
        if name not in models.names():
            raise unknown("model", name, models.names())
    if m.widths:
        check(cfg.model.name == "mlp", f"measures.widths sets the hidden widths of model 'mlp'; the config's "
                                       f"model is {cfg.model.name!r}: use measures.models for other models")
        for w in m.widths:
            check(len(w) >= 1 and all(int(v) >= 1 for v in w), f"measures.widths entries must be non-empty "
                                                                f"tuples of positive widths, got {w}")
    for what, values in (("learning_rates", m.learning_rates), ("weight_decays", m.weight_decays)):
        check(len(values) >= 1, f"measures.{what} must list at least one value")
        check(len(set(values)) == len(values), f"measures.{what} lists a value twice: {tuple(values)}")
    check(all(v > 0 for v in m.learning_rates), f"measures.learning_rates must be > 0, got {tuple(m.learning_rates)}")
    check(all(v >= 0 for v in m.weight_decays), f"measures.weight_decays must be >= 0, got {tuple(m.weight_decays)}")
    check(m.seeds >= 1, f"measures.seeds must be >= 1, got {m.seeds}")
    check(all(0 <= v < 1 for v in m.label_noise) and 0.0 in m.label_noise,
          f"measures.label_noise must be shares in [0, 1) including 0 (the clean grid), got {tuple(m.label_noise)}")
    check(m.stop_loss > 0, f"measures.stop_loss must be > 0, got {m.stop_loss}")
    check(m.samples >= 1, f"measures.samples (Monte Carlo draws per sigma) must be >= 1, got {m.samples}")
    check(int(m.lottery_levels) == m.lottery_levels and m.lottery_levels >= 0,
          f"measures.lottery_levels (IMP rounds after the dense networks) must be an integer >= 0, "
          f"got {m.lottery_levels}")
    if m.lottery_levels:
        pruning.check_fraction(cfg.lottery.fraction, "lottery.fraction (the share each measures lottery level "
                                                     "prunes)", allow_zero=False)
        check(cfg.lottery.scope in ("global", "layerwise"),
              f"lottery.scope must be global or layerwise, got {cfg.lottery.scope!r}")
    check(all(0 < f < 1 for f in m.diet_fractions), f"measures.diet_fractions are kept shares of the training set "
                                                    f"in (0, 1) (1 = all, always trained), got {tuple(m.diet_fractions)}")
    check(len(set(m.diet_fractions)) == len(m.diet_fractions),
          f"measures.diet_fractions lists a value twice: {tuple(m.diet_fractions)}")
    parse_selection(m.diet_selection)
    n_clean = len(architectures(cfg)) * len(m.learning_rates) * len(m.weight_decays) * m.seeds
    check(n_clean >= 2, "the measures grid needs at least 2 clean members to rank")


def architectures(cfg) -> list:
    """[(model name, {model options})] of the grid."""
    base = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.model.items() if k != "name"}
    if cfg.measures.widths:
        return [("mlp", {**base, "widths": tuple(int(v) for v in w)}) for w in cfg.measures.widths]
    if cfg.measures.models:
        return [(name, {}) for name in cfg.measures.models]
    return [(cfg.model.name, base)]


def make_tx(name: str, momentum: float):
    """An optimizer whose learning rate and weight decay live in its state."""
    def factory(learning_rate, weight_decay):
        if name == "adamw":
            return optax.adamw(learning_rate, weight_decay=weight_decay)
        inner = {"sgd": lambda: optax.sgd(learning_rate), "momentum": lambda: optax.sgd(learning_rate, momentum),
                 "adam": lambda: optax.adam(learning_rate)}[name]()
        return optax.chain(optax.add_decayed_weights(weight_decay), inner)  # coupled, as PyTorch
    return optax.inject_hyperparams(factory)(learning_rate=1.0, weight_decay=0.0)


def with_hyperparams(state, learning_rate, weight_decay):
    hp = dict(state.opt_state.hyperparams)
    hp["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
    hp["weight_decay"] = jnp.asarray(weight_decay, jnp.float32)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))


class Measures:
    def __init__(self, cfg, workdir: str, progress=True):
        self.cfg, self.m, self.progress = cfg, cfg.measures, progress
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        self.dataset = common.load_data(cfg, cfg.seed)
        self.tx = make_tx(cfg.optimizer.name, cfg.optimizer.momentum)
        self.archs = architectures(cfg)
        self.grid = list(itertools.product(self.m.learning_rates, self.m.weight_decays, range(self.m.seeds)))
        self._apply_fns = {}
        # read (and checked) before the workdir is touched
        self.diet_table = load_scores(self.m.diet_scores, self.dataset) if self.m.diet_scores else None
        score = parse_selection(self.m.diet_selection)[0]
        if score is not None and self.m.diet_fractions:
            check(self.diet_table is not None, f"measures.diet_selection {self.m.diet_selection!r} ranks examples "
                                               "by a score: give measures.diet_scores (a diet run's "
                                               "scores/scores.npz) or use 'random'")
            check(f"{score}_mean" in self.diet_table,
                  f"scores file {self.m.diet_scores} has no {score!r} scores; it has: "
                  f"{', '.join(k[:-5] for k in self.diet_table if k.endswith('_mean'))}")

    def labels(self, noise):
        if noise == 0:
            return np.asarray(self.dataset.y_train)
        return subsets.flip_labels(self.dataset.y_train, self.dataset.num_classes, noise, seed=[self.cfg.seed, 23])[0]

    def group_cfg(self, a):
        cfg = self.cfg.copy_and_resolve_references()
        name, options = self.archs[a]
        with cfg.unlocked():
            cfg.model = type(cfg.model)({"name": name, **options})
        return cfg

    def subset(self, fraction):
        """The training examples a group with this kept fraction trains on (None =
        all). One subset per fraction, shared by the group's members, so the
        stopping rule, train accuracy and the measures all see exactly the
        examples the members trained on."""
        if fraction == 1.0:
            return None
        score, method = parse_selection(self.m.diet_selection)
        n = len(self.dataset.y_train)
        values = self.diet_table[f"{score}_mean"] if score else np.zeros(n)
        return subsets.choose(method, values, fraction, seed=[self.cfg.seed, 29, int(round(fraction * 1e6))],
                              labels=self.dataset.y_train)

    def groups(self) -> list:
        """(architecture, kept fraction, label noise) of every group, in run order."""
        fractions = [1.0] + sorted(self.m.diet_fractions, reverse=True)
        return [(a, f, noise) for noise in sorted(self.m.label_noise) for f in fractions
                for a in range(len(self.archs))]

    def stage_name(self, a, fraction, noise, level) -> str:
        name = f"a{a}_n{noise:g}"
        if self.m.diet_fractions:
            name += f"_f{fraction:g}"
        if self.m.lottery_levels:
            name += f"_L{level}"
        return os.path.join("groups", name)

    def group(self, a, fraction, noise) -> list:
        """Train and measure one group at every lottery level; [result per level]."""
        index = self.subset(fraction)
        y = self.labels(noise)
        ds = self.dataset
        if index is not None:
            ds = dataclasses.replace(ds, x_train=ds.x_train[index], y_train=ds.y_train[index],
                                     train_indices=ds.train_indices[index])
            y = y[index]
        name, options = self.archs[a]
        label = f"{name}{'-'.join(str(w) for w in options.get('widths', ()))} noise {noise:g}".replace("mlp", "mlp ")
        if self.m.diet_fractions:
            label += f" keep {fraction:g}"
        parts, results = None, []
        for level in range(self.m.lottery_levels + 1):
            stage_label = label + (f" level {level}" if self.m.lottery_levels else "")
            stage = Stage(self.rundir, self.stage_name(a, fraction, noise, level), stage_label)
            try:
                if stage.done:
                    stage.cleanup()
                    results.append(read_json(stage.file("result.json")))
                    continue
                # built on the first level that trains: a resumed group whose levels are done builds nothing
                parts = parts or common.build(self.group_cfg(a), members=True, tx=self.tx, dataset=ds,
                                              train_labels=y)
                results.append(self.level(stage, parts, a, fraction, noise, level, y, stage_label))
            finally:
                stage.close()
        return results

    def level(self, stage, parts, a, fraction, noise, level, y, label) -> dict:
        inits, states, names = [], [], []
        for lr, wd, r in self.grid:
            inits.append(init_variables(parts.model, jax.random.fold_in(self.keys["init"], 1000 * a + r),
                                        self.dataset.input_shape))
            names.append(f"lr{lr:g}_wd{wd:g}/{r}")
        masks = self.ticket_masks(a, fraction, noise, level, inits)
        for i, (lr, wd, _) in enumerate(self.grid):
            v = inits[i]
            states.append(with_hyperparams(create_state(v["params"], v.get("batch_stats", {}), self.tx,
                                                        None if masks is None else masks[i]), lr, wd))
        stacked = ensemble.stack(states)
        state = stage.begin(parts.data_parallel.put_members(stacked) if parts.data_parallel else stacked)
        parts.trainer.set_members([(self.cfg.seed, r) for _, _, r in self.grid])
        t0 = time.time()
        state, stopped = self.train(stage, parts, state, names, label)
        t1 = time.time()
        if level < self.m.lottery_levels:  # what the next level prunes
            stage.write_once("final.npz", {"params": state.params, "mask": state.mask})
        result = self.evaluate(parts, state, inits, names, stopped, y, a, noise)
        for i, m in enumerate(result["members"].values()):
            mask = ensemble.take(state.mask, i)
            alive, total = masks_lib.count(mask, masks_lib.prunable(mask))
            m.update(group=os.path.basename(stage.name), diet_fraction=fraction, lottery_level=level,
                     density=alive / total)
        result.update(diet_fraction=fraction, lottery_level=level, examples=int(len(y)),
                      train_seconds=t1 - t0, measure_seconds=time.time() - t1)
        stage.finish(result)
        return result

    def ticket_masks(self, a, fraction, noise, level, inits):
        """Each member's mask at `level`: the previous level's trained weights with
        `lottery.fraction` of the remaining ones removed by magnitude (IMP; the
        ticket is then rewound to the member's initialisation). None at level 0."""
        if level == 0:
            return None
        lt = self.cfg.lottery
        params = ensemble.stack([v["params"] for v in inits])
        like = {"params": params, "mask": jax.tree_util.tree_map(lambda p: p.astype(bool), params)}
        prev = npz.load(self.rundir.file(self.stage_name(a, fraction, noise, level - 1), "final.npz"), like,
                        what="previous lottery level")
        prev["mask"] = jax.tree_util.tree_map(lambda m: m.astype(bool), prev["mask"])
        return [pruning.magnitude(ensemble.take(prev["params"], i), ensemble.take(prev["mask"], i), lt.fraction,
                                  lt.scope, dict(lt.layer_fractions)) for i in range(len(inits))]

    def train(self, stage, parts, state, names, label):
        """Train in segments of checkpoint_every steps; between segments, members
        whose full training loss reached stop_loss get learning rate 0."""
        t = self.cfg.train
        stopped = {}
        for record in stage.records:  # a resumed stage: what the records already say
            self._note_stops(record, stopped)
        # a checkpoint is written before the freeze that follows it: freeze again on resuming
        state = self.freeze(state, stopped)
        step = int(np.asarray(state.step).reshape(-1)[0])
        while step < t.steps and len(stopped) < len(names):
            stop = min(t.steps, (step // t.checkpoint_every + 1) * t.checkpoint_every)
            state = stage.train(parts.trainer, state, stop, self.keys["augment"], eval_every=t.eval_every,
                                checkpoint_every=t.checkpoint_every, members=names, tb_prefix=label.replace(" ", "_"),
                                progress=label if self.progress else False,
                                after_eval=lambda st, rec: self._note_stops(rec, stopped))
            state = self.freeze(state, stopped)
            step = stop
        return state, stopped

    def _note_stops(self, record, stopped):
        for i, loss in enumerate(np.ravel(record["train_full_loss"])):
            if i not in stopped and loss <= self.m.stop_loss:
                stopped[i] = record["step"]

    @staticmethod
    def freeze(state, stopped):
        if not stopped:
            return state
        hp = dict(state.opt_state.hyperparams)
        lr = np.asarray(hp["learning_rate"]).copy()
        lr[list(stopped)] = 0.0
        hp["learning_rate"] = jnp.asarray(lr)
        return state.replace(opt_state=state.opt_state._replace(hyperparams=hp))

    def evaluate(self, parts, state, inits, names, stopped, y, a, noise):
        """Every member's metrics and measures."""
        record = parts.trainer.evaluate(state)
        ds, model = parts.dataset, parts.model
        x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(y)
        example = inits[0]
        flow_ = units.flow(model, example, ds.x_train[:4]) if example.get("batch_stats") else None
        fold = jax.jit(lambda p, s: measures.fold_batchnorm(p, s, flow_)) if flow_ is not None else None
        members = {}
        apply_fn = self._apply_fns.get(a)
        for i, name in enumerate(names):
            lr, wd, r = self.grid[i]
            params, stats = ensemble.take(state.params, i), ensemble.take(state.batch_stats, i)
            p0, s0 = inits[i]["params"], inits[i].get("batch_stats", {})
            scales = init_scales = None
            if flow_ is not None:
                params, stats, scales = fold(params, stats)
                p0, s0, init_scales = fold(p0, s0)
            if apply_fn is None:  # one function per architecture (its compiled programs are cached on it):
                def apply_fn(p, xb, stats=stats):  # folded statistics are the same for every member
                    return call_model(model, variables_of(p, stats), xb, train=False)[0]
                self._apply_fns[a] = apply_fn
            mask = ensemble.take(state.mask, i)
            values = measures.all_measures(apply_fn, params, p0, mask, x_train, y_train,
                                           jax.random.fold_in(self.keys["control"], i), input_shape=ds.input_shape,
                                           scales=scales, init_scales=init_scales, chunk=self.cfg.train.eval_batch_size or DEFAULT_EVAL_BATCH,
                                           samples=self.m.samples)
            train_acc, test_acc = float(record["train_full_accuracy"][i]), float(record["test_accuracy"][i])
            members[name] = {
                "architecture": a, "learning_rate": lr, "weight_decay": wd, "seed": r, "label_noise": noise,
                "stop_step": int(stopped.get(i, self.cfg.train.steps)), "reached_stop_loss": i in stopped,
                "train_accuracy": train_acc, "train_loss": float(record["train_full_loss"][i]),
                "test_accuracy": test_acc, "test_loss": float(record["test_loss"][i]), "gap": train_acc - test_acc,
                "raw": values, "measures": measures.adjusted(values, int(x_train.shape[0]))}
        return {"architecture": a, "label_noise": noise, "members": members}

    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.cfg.to_dict(), overwrite)
        try:
            t0 = time.time()
            results = [r for a, fraction, noise in self.groups() for r in self.group(a, fraction, noise)]
            summary = measures_report.summarize(results, [f"{n}{o.get('widths', '')}" for n, o in self.archs],
                                                time.time() - t0)
            self.rundir.finish(summary, lambda: measures_report.draw(self.rundir, summary, results))
            measures_report.print_summary(summary)
            figures.print_outputs(self.rundir.path, ["summary.json", "groups/G/result.json", "plots/measures.png"])
            return summary
        finally:
            self.rundir.close()


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return Measures(cfg, workdir, progress).run(overwrite)


def tables(summary: dict, rundir) -> list:
    """The run's tables (printed at its end and by ``python -m lth_jax.report WORKDIR --markdown``)."""
    return measures_report.tables(summary, rundir)


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    results = [read_json(os.path.join(rundir.file("groups"), g, "result.json"))
               for g in sorted(os.listdir(rundir.file("groups")))]
    return measures_report.draw(rundir, summary, results)
