"""experiment = "diet": score training examples with a vmapped ensemble, prune
the training set by score, train on what is left (Paul et al. 2021).

1. Scoring: K members with independent initialisations and data orders train
   together (one compiled program) for `diet.score_epochs` epochs (0 = score at
   initialisation); then EL2N, GraNd, input norm (and forgetting events, counted
   at every evaluation during scoring) are computed for every member, all
   members at once, in chunks. Written to ``scores.npz`` with the example
   indices (canonical order of the training split), per-member scores and means.
2. Subsets: each selection ("el2n:hardest", "grand:easiest", "random", ...)
   keeps each fraction of `diet.fractions`; each (selection, seed) is one
   member, all members of one fraction train together for the same number of
   steps as the full-data run (`train.steps`), seed r sharing its
   initialisation and data-order seed across selections (paired comparisons).
3. With `diet.label_noise` > 0, that share of training labels is flipped
   (seeded; indices recorded) before anything else, and each score's AUROC
   and precision at the noise rate for finding the flipped examples reported.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np

from lth_jax import ensemble, scores, subsets
from lth_jax.checkpoint import Checkpointer
from lth_jax.errors import LthError, check
from lth_jax.experiments import common, diet_report
from lth_jax.train import create_state, init_variables
from lth_jax.workdir import RunDir, read_json, write_json

SCORES = ("el2n", "grand", "input_norm", "forgetting")


def check_config(cfg) -> None:
    d = cfg.diet
    check(d.members >= 1, f"diet.members (K, the scoring ensemble size) must be >= 1, got {d.members}")
    check(d.score_epochs >= 0, f"diet.score_epochs must be >= 0, got {d.score_epochs}")
    check(d.seeds >= 1, f"diet.seeds must be >= 1, got {d.seeds}")
    check(d.chunk_size >= 1, f"diet.chunk_size must be >= 1, got {d.chunk_size}")
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


def save_scores(path, indices, per_member: dict, extra: dict | None = None) -> None:
    arrays = {"indices": np.asarray(indices)}
    for name, s in per_member.items():
        arrays[name] = np.asarray(s)
        arrays[f"{name}_mean"] = np.asarray(s).mean(0)
    arrays.update(extra or {})
    tmp = f"{path}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_scores(path, train_indices) -> dict:
    """Scores saved by `save_scores`, checked against the dataset's example indices."""
    if not os.path.exists(path):
        raise LthError(f"scores file {path} does not exist; run the diet experiment first (it writes scores.npz)")
    with np.load(path) as f:
        out = {k: f[k] for k in f.files}
    if "indices" not in out or not np.array_equal(out["indices"], np.asarray(train_indices)):
        raise LthError(f"scores file {path}: its example indices do not match this dataset's training split "
                       "(another dataset, validation_size or num_train?); score this data again")
    return out


class Diet:
    def __init__(self, cfg, workdir, progress=True):
        self.cfg, self.d, self.progress = cfg, cfg.diet, progress
        self.setup = common.build(cfg, members=True)
        self.keys = common.seed_keys(cfg.seed)
        self.rundir = RunDir(workdir)
        ds = self.setup.dataset
        self.flipped = np.zeros(0, np.int64)
        if self.d.label_noise > 0:
            noisy, self.flipped = subsets.flip_labels(ds.y_train, ds.num_classes, self.d.label_noise,
                                                      seed=cfg.seed + 7919)
            ds.y_train = noisy
            self.setup.loop.replace_labels(noisy)
        self.apply_fn = lambda v, x: self.setup.model.apply(v, x, train=False)
        # compiled once: forgetting events evaluate the whole training set at every evaluation
        self._member_logits = jax.jit(jax.vmap(self.apply_fn, in_axes=(0, None)))

    def member_states(self, keys):
        states = []
        for key in keys:
            v = init_variables(self.setup.model, key, self.setup.dataset.input_shape)
            states.append(create_state(v["params"], v.get("batch_stats", {}), self.setup.tx))
        stacked = ensemble.stack(states)
        return self.setup.dp.put_members(stacked) if self.setup.dp else stacked

    # ---- 1. scoring --------------------------------------------------------------------------
    def score(self) -> dict:
        path = self.rundir.file("scores.npz")
        ds = self.setup.dataset
        if os.path.exists(path):
            return load_scores(path, ds.train_indices)
        if self.d.scores_path:
            out = load_scores(self.d.scores_path, ds.train_indices)
            save_scores(path, out["indices"], {k: out[k] for k in self.d.scores if k in out})
            return load_scores(path, ds.train_indices)
        K = self.d.members
        state = self.member_states([jax.random.fold_in(self.keys["init"], 10_000 + m) for m in range(K)])
        steps = int(round(self.d.score_epochs * self.setup.loop.steps_per_epoch()))
        history = []
        x, y = ds.x_train, ds.y_train
        if "forgetting" in self.d.scores:
            history.append(self.correct(state, x, y))
        if steps > 0:
            loop = self.setup.loop
            loop.set_members([(self.cfg.seed, 1_000_003 + m) for m in range(K)])
            on_eval = (lambda st, r: history.append(self.correct(st, x, y))) if "forgetting" in self.d.scores else None
            state = loop.run(state, steps, self.cfg.train.eval_every, self.keys["augment"], on_eval=on_eval,
                             progress="scoring" if self.progress else False)
        variables = state.variables
        per_member = {}
        for name in self.d.scores:
            if name == "el2n":
                per_member[name] = scores.ensemble(scores.el2n, self.apply_fn, variables, x, y,
                                                   chunk_size=self.d.chunk_size)
            elif name == "grand":
                per_member[name] = scores.ensemble(scores.grand, self.apply_fn, variables, x, y,
                                                   chunk_size=self.d.chunk_size, model=self.setup.model)
            elif name == "input_norm":
                per_member[name] = np.asarray(scores.input_norm(x))[None]
            else:
                h = np.stack(history, 1)  # (K, T, N)
                per_member[name] = np.stack([np.asarray(scores.forgetting_events(hk)) for hk in h])
        save_scores(path, ds.train_indices, {k: np.asarray(v) for k, v in per_member.items()},
                    {"flipped": self.flipped, "score_steps": np.asarray(steps)})
        return load_scores(path, ds.train_indices)

    def correct(self, state, x, y) -> np.ndarray:
        """(K, N) bool: which training examples each member classifies correctly."""
        out = []
        for i in range(0, len(x), 2048):
            out.append(np.asarray(self._member_logits(state.variables, x[i:i + 2048]).argmax(-1)) == y[None, i:i + 2048])
        return np.concatenate(out, 1)

    # ---- 2. subsets ------------------------------------------------------------------------
    def subset(self, sel, fraction, seed_r, table):
        score, method = parse_selection(sel)
        ds = self.setup.dataset
        values = table[f"{score}_mean"] if score else np.zeros(len(ds.y_train))
        return subsets.choose(method, values, fraction, offset=self.d.window_offset,
                              seed=[self.cfg.seed, seed_r, int(round(fraction * 1e6))],
                              labels=ds.y_train, balanced=self.d.class_balanced)

    def train_fraction(self, fraction, table, ckpt):
        """Train every (selection, seed) at one kept fraction together; returns the result."""
        sels = ["full"] if fraction == 1.0 else list(self.d.selections)
        n = len(self.setup.dataset.y_train)
        names, keys, seeds, subs = [], [], [], []
        for sel in sels:
            for r in range(self.d.seeds):
                names.append(f"{sel}/{r}")
                keys.append(jax.random.fold_in(self.keys["init"], r))
                seeds.append((self.cfg.seed, r))
                subs.append(np.arange(n) if sel == "full" else self.subset(sel, fraction, r, table))
        state = self.member_states(keys)
        tag = f"fraction_{fraction:g}"
        meta = ckpt.meta() if ckpt.latest_step() is not None else None
        records = []
        if meta is not None and meta.get("fraction") == fraction:
            state, _ = ckpt.restore(state)
            records = [r for r in self.rundir.read_metrics() if r.get("tag") == tag and r["step"] <= meta["step"]]
        loop = self.setup.loop
        loop.set_members(seeds, subs)
        t = self.cfg.train

        def on_eval(st, record):
            record = {"tag": tag, **record}
            records.append(record)
            self.rundir.append_metrics(record, names)
            if record["step"] % t.checkpoint_every == 0 or record["step"] == t.steps:
                ckpt.save(self.step_id(fraction, record["step"]), st, {"fraction": fraction, "step": record["step"]})

        loop.run(state, t.steps, t.eval_every, self.keys["augment"], on_eval=on_eval,
                 progress=f"keep {fraction:g}" if self.progress else False)
        last = records[-1]
        return {"fraction": fraction, "kept": len(subs[0]), "members": {
            name: {"final_test_accuracy": float(np.asarray(last["test_accuracy"])[i]),
                   "best_test_accuracy": float(max(np.asarray(r["test_accuracy"])[i] for r in records)),
                   "flipped_kept": int(np.isin(subs[i], self.flipped).sum())}
            for i, name in enumerate(names)}}

    def step_id(self, fraction, step):
        order = sorted(self.fractions())
        return order.index(fraction) * (self.cfg.train.steps + 1) + step

    def fractions(self):
        return sorted(set(self.d.fractions) | ({1.0} if self.d.full_data else set()))

    # ---- the run -----------------------------------------------------------------------------
    def run(self, overwrite=False) -> dict:
        resuming = self.rundir.start(self.cfg.to_dict(), overwrite)
        ckpt = Checkpointer(self.rundir.file("checkpoints"))
        try:
            t0 = time.time()
            if resuming:
                done = {f for f in self.fractions() if os.path.exists(self.result_path(f))}
                meta = ckpt.meta() if ckpt.latest_step() is not None else None
                self.rundir.truncate_metrics(lambda r: float(r["tag"].split("_")[1]) in done or (
                    meta is not None and r["tag"] == f"fraction_{meta['fraction']:g}" and r["step"] <= meta["step"]))
            table = self.score()
            for fraction in self.fractions():
                if not os.path.exists(self.result_path(fraction)):
                    os.makedirs(os.path.dirname(self.result_path(fraction)), exist_ok=True)
                    write_json(self.result_path(fraction), self.train_fraction(fraction, table, ckpt))
            results = [read_json(self.result_path(f)) for f in self.fractions()]
            summary = diet_report.summarize(results, table, self.flipped, self.d, time.time() - t0)
            self.rundir.write_summary(summary)
            diet_report.draw(self.rundir, summary, table, self.flipped)
            diet_report.print_summary(summary)
            return summary
        finally:
            ckpt.close()
            self.rundir.close()

    def result_path(self, fraction):
        return self.rundir.file("fractions", f"{fraction:g}", "result.json")


def run(cfg, workdir: str, overwrite: bool = False, progress=True) -> dict:
    check_config(cfg)
    return Diet(cfg, workdir, progress).run(overwrite)


def redraw(rundir, config) -> list:
    summary = read_json(rundir.file("summary.json"))
    with np.load(rundir.file("scores.npz")) as f:
        table = {k: f[k] for k in f.files}
    return diet_report.draw(rundir, summary, table, table.get("flipped", np.zeros(0, np.int64)))
