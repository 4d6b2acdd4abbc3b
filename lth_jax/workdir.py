"""A run's folder: config.json, summary.json, TensorBoard events, and the stage
folders (see `lth_jax.stages`). Deciding what to do with a --workdir (start,
resume, extend, replace or refuse) happens here and nowhere else.

Every run (and sweep) of lth_jax writes MARKER first, before anything else:
that file, not a config.json, is how --overwrite knows a folder is a run of
lth_jax, and --overwrite also refuses a run folder holding anything no run
writes (RUN_ENTRIES), so nobody's own files are deleted. Runs made before the
marker existed are resumed, extended and reported as before (their config
must read back as the run's own); resuming one adds the marker. Replacing
one needs the marker: delete such a folder by hand instead.

summary.json marks a run finished, and `finish` writes it last, after every
plot and table: a run stopped at any moment before it is resumed, and the
resume writes whatever is missing.
"""
from __future__ import annotations

import os
import shutil

import numpy as np

from lth_jax import parallel
from lth_jax.errors import LthError
from lth_jax.files import read_json, to_json, write_json

MARKER = "lth_jax_run.json"
# every name a run or a sweep writes at the top of its folder (stages, outputs, checkpoints)
RUN_ENTRIES = {MARKER, "config.json", "summary.json", "metrics.jsonl", "done", "result.json", "checkpoints",
               "damaged", "tensorboard", "plots", "levels", "dense", "sparsity", "density", "fractions", "scores",
               "groups", "robustness.json", "runs", "points", "points.csv", "table.txt"}


def is_run(path: str) -> bool:
    """A folder holds a run of lth_jax (or of an lth_jax from before MARKER) when it has config.json."""
    return os.path.isfile(os.path.join(path, "config.json"))


def is_marked(path: str) -> bool:
    """The folder holds MARKER: lth_jax made it."""
    return os.path.isfile(os.path.join(path, MARKER))


def _partial_write(name: str) -> bool:
    """The temporary file of an atomic write a crash interrupted (".NAME.XXXX.tmp")."""
    return name.startswith(".") and name.endswith(".tmp")


class RunDir:
    """Owns one workdir. `start(config_dict, overwrite)` decides: new run, resume, or refuse."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._tb = None

    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    @property
    def finished(self) -> bool:
        return os.path.exists(self.file("summary.json"))

    def start(self, config: dict, overwrite: bool = False, extendable: tuple = ()) -> bool:
        """Prepare the folder; returns True when an unfinished run is being resumed.

        Only a folder holding a run of lth_jax is ever resumed or, with
        `overwrite`, replaced (see the module docstring); any other non-empty
        folder is refused, and nothing in it is touched.
        extendable: (section, key) pairs that may grow on a finished run, e.g.
        ("lottery", "levels"): the run then continues where it stopped (same
        numbers as a run started with the larger value)."""
        config = to_json(config)
        action = self._decide(config, overwrite, extendable)
        # several processes: everyone has looked at the folder before process 0 changes it,
        # and nobody goes on before it has
        parallel.barrier("lth_jax: workdir inspected")
        error = None
        if parallel.writes_files():
            try:
                self._apply(action, config)
            except OSError as e:
                error = e
        parallel.barrier("lth_jax: workdir ready")
        if error is not None:
            raise LthError(f"cannot create workdir {self.path}: {error.strerror or error}; choose a --workdir "
                           "you can write to") from None
        return action in ("resume", "extend")

    def _decide(self, config: dict, overwrite: bool, extendable: tuple) -> str:
        """"new", "replace", "resume" or "extend" for this folder and config, or LthError."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise LthError(f"workdir {self.path} exists and is not a directory; choose another --workdir")
        entries = sorted(os.listdir(self.path)) if os.path.isdir(self.path) else []
        if not [e for e in entries if e != MARKER and not _partial_write(e)]:
            return "new"  # empty, or a run stopped before its config.json was written
        marked = is_marked(self.path)
        if not marked and not is_run(self.path):
            raise LthError(f"workdir {self.path} is not empty and holds no lth_jax run (no {MARKER}); nothing "
                           "there is touched: choose a new or empty --workdir")
        if overwrite:
            return self._replaceable(entries, marked)
        old = self._old_config(marked)
        if self.finished and self._extends(old, config, extendable):
            return "extend"
        if self.finished:
            how = (f"raise {' or '.join('.'.join(k) for k in extendable)} to extend it, "
                   if extendable else "")
            raise LthError(f"workdir {self.path} holds a finished run (summary.json); {how}choose a new "
                           "--workdir, or pass --overwrite to replace it")
        if old != config:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise LthError(f"workdir {self.path} holds an unfinished run with a different config "
                           f"(differs in: {', '.join(changed)}); resume it with the same config, or "
                           "choose a new --workdir, or pass --overwrite")
        return "resume"

    def _replaceable(self, entries: list, marked: bool) -> str:
        """"replace" for --overwrite, when the folder is a run of lth_jax holding only a run's files."""
        if not marked:
            raise LthError(f"workdir {self.path} has a config.json but no {MARKER}, which every run of lth_jax "
                           "writes first: it may not be a run of lth_jax (or comes from an lth_jax older than "
                           "that file), so --overwrite deletes nothing there; delete it yourself, or choose "
                           "another --workdir")
        foreign = [e for e in entries if e not in RUN_ENTRIES and not _partial_write(e)]
        if foreign:
            raise LthError(f"workdir {self.path} holds files no run of lth_jax writes ({', '.join(foreign[:5])}"
                           f"{', ...' if len(foreign) > 5 else ''}); --overwrite deletes nothing there: move them "
                           "out of it, or choose another --workdir")
        return "replace"

    def _old_config(self, marked: bool) -> dict:
        """The run's config.json, or one LthError when it is missing or no config of a run."""
        config = self.file("config.json")
        if not marked:  # only a config.json of lth_jax's own makes this folder an (older) run of lth_jax
            try:
                old = read_json(config)
            except LthError:
                old = None
            if not (isinstance(old, dict) and isinstance(old.get("experiment"), str)):
                raise LthError(f"workdir {self.path} is not empty and holds no lth_jax run (no {MARKER}, and its "
                               "config.json is not one lth_jax wrote); nothing there is touched: choose a new or "
                               "empty --workdir")
            return old
        if not is_run(self.path):
            raise LthError(f"workdir {self.path} holds a run of lth_jax without its config.json; choose a new "
                           "--workdir, or pass --overwrite to replace the run")
        old = read_json(config)  # a damaged file is one LthError
        if not isinstance(old, dict):
            raise LthError(f"{config} holds a JSON {type(old).__name__}, not the config of a run: it was changed "
                           "after lth_jax wrote it; put back a good copy, choose a new --workdir, or pass "
                           "--overwrite to replace the run")
        return old

    def _apply(self, action: str, config: dict) -> None:
        existing = self.file("config.json")
        if action == "replace":
            shutil.rmtree(self.path)
        if not is_marked(self.path):  # a new run, or one made before the marker existed
            write_json(self.file(MARKER), {"written_by": "lth_jax", "what": "a run folder of lth_jax; "
                                           "--overwrite replaces only folders holding this file"})
        if action == "extend":
            os.remove(self.file("summary.json"))
            write_json(existing, config)
        elif action == "resume":
            self._remove_partial_writes()
        else:
            write_json(existing, config)

    def _remove_partial_writes(self) -> None:
        """Temporary files of atomic writes a crash interrupted (".NAME.XXXX.tmp")."""
        for folder, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if d not in ("checkpoints", "tensorboard")]
            for name in names:
                if _partial_write(name):
                    os.remove(os.path.join(folder, name))

    @staticmethod
    def _extends(old: dict, new: dict, extendable) -> bool:
        if old == new or not extendable:
            return False
        grown = False
        for section, key in extendable:
            a, b = old.get(section, {}).get(key), new.get(section, {}).get(key)
            if a != b:
                if not (isinstance(a, int) and isinstance(b, int) and b > a):
                    return False
                grown = True
        strip = lambda c: {s: ({k: v for k, v in sec.items() if (s, k) not in extendable} if isinstance(sec, dict)
                               else sec) for s, sec in c.items()}
        return grown and strip(old) == strip(new)

    def log_tensorboard(self, record: dict, prefix: str = "", members: list | None = None) -> None:
        """Numbers of a metrics record to TensorBoard under prefix/ (per-member
        arrays as prefix/member/metric when `members` names them)."""
        if not parallel.writes_files():
            return
        writer = self.tensorboard()
        prefix = f"{prefix}/" if prefix else ""
        for k, v in record.items():
            if k == "step" or isinstance(v, str) or v is None:
                continue
            arr = np.asarray(v, dtype=np.float64)
            if arr.ndim == 0:
                writer.add_scalar(prefix + k, float(arr), int(record["step"]))
            elif members is not None and arr.shape == (len(members),):
                for name, x in zip(members, arr):
                    writer.add_scalar(f"{prefix}{name}/{k}", float(x), int(record["step"]))

    def tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(self.file("tensorboard"))
        return self._tb

    def finish(self, summary: dict, write_outputs=None) -> None:
        """The run's last files: `write_outputs()` writes its plots and tables,
        then summary.json, which marks the run finished, is written last, with
        where its numbers came from (`lth_jax.provenance`) under "provenance"."""
        from lth_jax import provenance
        from lth_jax.stages import POSITION  # stages imports the training code; a run has it loaded
        POSITION.update(label="the final writes", step=None)
        if write_outputs is not None:
            write_outputs()
        config = read_json(self.file("config.json"))
        write_json(self.file("summary.json"), {**summary, "provenance": provenance.record(config)})

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None
