"""experiment = "diet": score training examples with a vmapped ensemble, prune
the training set by score, train on what is left (Paul et al. 2021).

1. Scoring: K members with independent initialisations and data orders train
   together (one compiled program) for `diet.score_epochs` epochs (0 = score at
   initialisation); then EL2N, GraNd, input norm (and forgetting events, counted
   at every evaluation during scoring; and ``grand_init``, GraNd of the same
   members at initialisation, so one run compares GraNd at init with the
   scores after training, as Kirsch 2023 does) are computed for every member, all
   members at once, in chunks. Written to ``scores/scores.npz`` with the example
   indices (canonical order of the training split), per-member scores, their
   means and the fingerprint of the examples scored.
2. Subsets: each selection ("el2n:hardest", "grand:easiest", "random", ...)
   keeps each fraction of `diet.fractions`; each (selection, seed) is one
   member, all members of one fraction train together for the same number of
   steps as the full-data run (`train.steps`), seed r sharing its
   initialisation and data-order seed across selections (paired comparisons).
3. With `diet.label_noise` > 0, that share of training labels is flipped
   (seeded; indices recorded) before anything else, and each score's AUROC
   and precision at the noise rate for finding the flipped examples reported.

Stages (``lth_jax.stages``): ``scores/`` then ``fractions/F/`` for each kept
fraction, each resumed from its own checkpoints after a crash.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from lth_jax import ensemble, files, figures, scores, subsets
from lth_jax.errors import LthError, check
from lth_jax.experiments import common, diet_report
from lth_jax.files import read_json
from lth_jax.stages import Stage
from lth_jax.train import create_state, init_variables
from lth_jax.workdir import RunDir

SCORES = ("el2n", "grand", "grand_init", "input_norm", "forgetting")
# lth_jax.sweep: axes one diet run stacks (a run trains the union of the points' values) and the
# count its `replicate` axis sets
SWEEP_STACKED = ("diet.fractions", "diet.selections")
SWEEP_REPLICATES = "diet.seeds"


def check_config(cfg) -> None:
    common.check_train(cfg)
    d = cfg.diet
    check(d.members >= 1, f"diet.members (K, the scoring ensemble size) must be >= 1, got {d.members}")
    check(d.score_epochs >= 0, f"diet.score_epochs must be >= 0, got {d.score_epochs}")
    check(d.seeds >= 1, f"diet.seeds must be >= 1, got {d.seeds}")
    check(d.chunk_size >= 0, f"diet.chunk_size must be >= 1, or 0 (from the device's free memory), got {d.chunk_size}")
    for name in d.scores:
        check(name in SCORES, f"unknown score {name!r} in diet.scores; valid: {', '.join(SCORES)}")
    for f in d.fractions:
        check(0 < f <= 1, f"kept fraction must be in (0, 1], got {f} in diet.fractions")
    for sel in d.selections:
        score, method = parse_selection(sel)
        check(score is None or score in d.scores, f"selection {sel!r} uses score {score!r}, which is not in "
                                                  f"diet.scores ({', '.join(d.scores)})")
    check(0 <= d.label_noise < 1, f"diet.label_noise must be in [0, 1), got {d.label_noise}")


def parse_selection(sel: str):
    """"el2n:hardest" -> ("el2n", "hardest"); "random" -> (None, "random")."""
    if sel == "random":
        return None, "random"
    if ":" not in sel:
        raise LthError(f"selection {sel!r} must be 'SCORE:METHOD' (e.g. el2n:hardest) or 'random'")
    score, method = sel.split(":", 1)
    check(method in subsets.METHODS, f"selection {sel!r}: unknown method {method!r}; valid: "
                                     f"{', '.join(subsets.METHODS)}")
    return score, method


def save_scores(path, indices, per_member: dict, fingerprint: str, extra: dict | None = None) -> None:
    """scores.npz: `indices`, per-member scores (K, N) and their `_mean`, and the
    `fingerprint` of the training examples they were computed on."""
    arrays = {"indices": np.asarray(indices), "fingerprint": np.asarray(fingerprint)}
    for name, s in per_member.items():
        arrays[name] = np.asarray(s)
        arrays[f"{name}_mean"] = np.asarray(s).mean(0)
    arrays.update(extra or {})
    files.write_npz(path, arrays)


def load_scores(path, dataset) -> dict:
    """Scores saved by `save_scores`, checked against the dataset's training
    examples (indices, labels and inputs, through its fingerprint)."""
    if not os.path.exists(path):
        raise LthError(f"scores file {path} does not exist; run the diet experiment first (it writes "
                       "scores/scores.npz)")
    out = files.read_npz(path, "scores file")
    if "indices" not in out or "fingerprint" not in out:
        raise LthError(f"scores file {path} has no example indices or data fingerprint (not written by this "
                       "version of lth_jax's diet experiment); score this data again")
    if not np.array_equal(out["indices"], np.asarray(dataset.train_indices)) or \
            str(out["fingerprint"]) != dataset.fingerprint():
        raise LthError(f"scores file {path} was computed on other training examples or labels than this run's "
                       "(another dataset, data seed, validation_size, num_train or label noise?); score this "
                       "data again")
    return out


class Diet:
    def __init__(self, cfg, workdir, progress=True):
        self.cfg, self.d, self.progress = cfg, cfg.diet, progress
        self.parts = common.build(cfg, members=True)
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        ds = self.parts.dataset
        self.flipped = np.zeros(0, np.int64)
        if self.d.label_noise > 0:
            noisy, self.flipped = subsets.flip_labels(ds.y_train, ds.num_classes, self.d.label_noise,
                                                      seed=cfg.seed + 7919)
            ds.y_train = noisy
            self.parts.trainer.replace_labels(noisy)
        # read (and checked) before the workdir is touched
        self.given_scores = load_scores(self.d.scores_path, ds) if self.d.scores_path else None
        self.apply_fn = lambda v, x: self.parts.model.apply(v, x, train=False)
        # compiled once: forgetting events evaluate the whole training set at every evaluation
        self._member_logits = jax.jit(jax.vmap(self.apply_fn, in_axes=(0, None)))

    def member_states(self, keys):
        states = []
        for key in keys:
            v = init_variables(self.parts.model, key, self.parts.dataset.input_shape)
            states.append(create_state(v["params"], v.get("batch_stats", {}), self.parts.tx))
        stacked = ensemble.stack(states)
        return self.parts.data_parallel.put_members(stacked) if self.parts.data_parallel else stacked

    # ---- 1. scoring --------------------------------------------------------------------------
    def score(self) -> dict:
        """The scoring stage (``scores/``): train the K-member ensemble (resumable;
        the forgetting history is kept per evaluation in ``scores/correct/``), score
        every training example, write ``scores/scores.npz``."""
        stage = Stage(self.rundir, "scores", "scoring")
        path = stage.file("scores.npz")
        ds = self.parts.dataset
        try:
            if stage.done:
                stage.cleanup()
            elif self.given_scores is not None:
                given = self.given_scores
                save_scores(path, given["indices"], {k: given[k] for k in self.d.scores if k in given},
                            ds.fingerprint())
                stage.finish()
            else:
                self.compute_scores(stage, path)
        finally:
            stage.close()
        return load_scores(path, ds)

    def compute_scores(self, stage, path) -> None:
        ds, K = self.parts.dataset, self.d.members
        x, y = ds.x_train, ds.y_train
        forgetting = "forgetting" in self.d.scores
        names = [f"member/{m}" for m in range(K)]
        init_keys = [jax.random.fold_in(self.keys["init"], 10_000 + m) for m in range(K)]
        state = stage.begin(self.member_states(init_keys))
        steps = int(round(self.d.score_epochs * self.parts.trainer.steps_per_epoch()))

        def keep_correct(st, record):
            stage.write_once(os.path.join("correct", f"{record['step']}.npz"), {"correct": self.correct(st, x, y)})
        if forgetting and int(np.asarray(state.step)[0]) == 0:
            keep_correct(state, {"step": 0})
        if steps > 0:
            trainer = self.parts.trainer
            trainer.set_members([(self.cfg.seed, 1_000_003 + m) for m in range(K)])
            t = self.cfg.train
            state = stage.train(trainer, state, steps, self.keys["augment"], eval_every=t.eval_every,
                                checkpoint_every=t.checkpoint_every, members=names,
                                progress="scoring" if self.progress else False, tb_prefix="scoring",
                                after_eval=keep_correct if forgetting else None)
        variables = state.variables
        per_member = {}
        for name in self.d.scores:
            if name == "el2n":
                per_member[name] = scores.ensemble(scores.el2n, self.apply_fn, variables, x, y,
                                                   chunk_size=self.d.chunk_size or None)
            elif name in ("grand", "grand_init"):  # grand_init: the same members at initialisation
                at = self.member_states(init_keys).variables if name == "grand_init" else variables
                per_member[name] = scores.ensemble(scores.grand, self.apply_fn, at, x, y,
                                                   chunk_size=self.d.chunk_size or None, model=self.parts.model)
            elif name == "input_norm":
                per_member[name] = np.asarray(scores.input_norm(x))[None]
            else:
                evaluated = [0] + [r["step"] for r in stage.records]
                h = np.stack([files.read_npz(stage.file("correct", f"{s}.npz"))["correct"] for s in evaluated], 1)
                per_member[name] = np.stack([np.asarray(scores.forgetting_events(hk)) for hk in h])  # h: (K, T, N)
        save_scores(path, ds.train_indices, {k: np.asarray(v) for k, v in per_member.items()}, ds.fingerprint(),
                    {"flipped": self.flipped, "score_steps": np.asarray(steps)})
        stage.finish()

    def correct(self, state, x, y) -> np.ndarray:
        """(K, N) bool: which training examples each member classifies correctly."""
        out = []
        for i in range(0, len(x), 2048):
            out.append(np.asarray(self._member_logits(state.variables, x[i:i + 2048]).argmax(-1)) == y[None, i:i + 2048])
        return np.concatenate(out, 1)

    # ---- 2. subsets ------------------------------------------------------------------------
    def subset(self, sel, fraction, seed_r, table):
        score, method = parse_selection(sel)
        ds = self.parts.dataset
        values = table[f"{score}_mean"] if score else np.zeros(len(ds.y_train))
        return subsets.choose(method, values, fraction, offset=self.d.window_offset,
                              seed=[self.cfg.seed, seed_r, int(round(fraction * 1e6))],
                              labels=ds.y_train, balanced=self.d.class_balanced)

    def train_fraction(self, fraction, table, stage):
        """Train every (selection, seed) at one kept fraction together (one stage); returns the result."""
        sels = ["full"] if fraction == 1.0 else list(self.d.selections)
        n = len(self.parts.dataset.y_train)
        names, keys, seeds, subs = [], [], [], []
        for sel in sels:
            for r in range(self.d.seeds):
                names.append(f"{sel}/{r}")
                keys.append(jax.random.fold_in(self.keys["init"], r))
                seeds.append((self.cfg.seed, r))
                subs.append(np.arange(n) if sel == "full" else self.subset(sel, fraction, r, table))
        state = stage.begin(self.member_states(keys))
        trainer = self.parts.trainer
        trainer.set_members(seeds, subs)
        t = self.cfg.train
        stage.train(trainer, state, t.steps, self.keys["augment"], eval_every=t.eval_every,
                    checkpoint_every=t.checkpoint_every, members=names, tb_prefix=f"fraction_{fraction:g}",
                    progress=f"keep {fraction:g}" if self.progress else False)
        records = stage.records
        last = records[-1]
        return {"fraction": fraction, "kept": len(subs[0]), "members": {
            name: {"final_test_accuracy": float(np.asarray(last["test_accuracy"])[i]),
                   "best_test_accuracy": float(max(np.asarray(r["test_accuracy"])[i] for r in records)),
                   "flipped_kept": int(np.isin(subs[i], self.flipped).sum())}
            for i, name in enumerate(names)}}

    def fractions(self):
        return sorted(set(self.d.fractions) | ({1.0} if self.d.full_data else set()))

    def fraction_stage(self, fraction) -> Stage:
        return Stage(self.rundir, os.path.join("fractions", f"{fraction:g}"), f"fraction {fraction:g}")

    # ---- the run -----------------------------------------------------------------------------
    def run(self, overwrite=False) -> dict:
        self.rundir.start(self.cfg.to_dict(), overwrite)
        try:
            t0 = time.time()
            table = self.score()
            for fraction in self.fractions():
                stage = self.fraction_stage(fraction)
                try:
                    if stage.done:
                        stage.cleanup()
                    else:
                        stage.finish(self.train_fraction(fraction, table, stage))
                finally:
                    stage.close()
            results = [read_json(self.fraction_stage(f).file("result.json")) for f in self.fractions()]
            summary = diet_report.summarize(results, table, self.flipped, self.d, time.time() - t0)
            self.rundir.finish(summary, lambda: diet_report.draw(self.rundir, summary, table, self.flipped))
            diet_report.print_summary(summary)
            figures.print_outputs(self.rundir.path, ["summary.json", "scores/scores.npz", "fractions/F/result.json",
                                                    "plots/"])
            return summary
        finally:
            self.rundir.close()


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return Diet(cfg, workdir, progress).run(overwrite)


def sweep_row(rundir, cfg, replicate: int) -> dict:
    """A sweep point's numbers: member "SELECTION/replicate" at each of the point's
    kept fractions (at 1.0, the "full" member), keys prefixed "SELECTION@F/" when
    the point covers more than one (selection, fraction)."""
    pairs = [(sel, f) for f in cfg.diet.fractions for sel in cfg.diet.selections]
    row = {}
    for sel, f in pairs:
        result = read_json(rundir.file("fractions", f"{f:g}", "result.json"))
        m = result["members"][f"{'full' if f == 1.0 else sel}/{replicate}"]
        prefix = "" if len(pairs) == 1 else f"{sel}@{f:g}/"
        row.update({f"{prefix}test_accuracy": m["final_test_accuracy"],
                    f"{prefix}best_test_accuracy": m["best_test_accuracy"], f"{prefix}kept": result["kept"]})
    return row


def tables(summary: dict, rundir) -> list:
    """The run's tables (printed at its end and by ``python -m lth_jax.report WORKDIR --markdown``)."""
    return diet_report.tables(summary, rundir)


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    table = files.read_npz(rundir.file("scores", "scores.npz"), "scores file")
    return diet_report.draw(rundir, summary, table, table.get("flipped", np.zeros(0, np.int64)))
