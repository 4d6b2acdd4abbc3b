"""A run's folder: config.json, summary.json, TensorBoard events, and the stage
folders (see `lth_jax.stages`). Deciding what to do with a --workdir (start,
resume, extend, replace or refuse) happens here and nowhere else."""
from __future__ import annotations

import os
import shutil

import numpy as np

from lth_jax import parallel
from lth_jax.errors import LthError
from lth_jax.files import read_json, to_json, write_json


def is_run(path: str) -> bool:
    """A folder holds a run of lth_jax when it has config.json."""
    return os.path.isfile(os.path.join(path, "config.json"))


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

        Only a folder holding a run of lth_jax (config.json) is ever resumed or,
        with `overwrite`, replaced; any other non-empty folder is refused.
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
        if os.path.isdir(self.path) and not is_run(self.path) and os.listdir(self.path):
            raise LthError(f"workdir {self.path} is not empty and holds no lth_jax run (no config.json); "
                           "nothing there is touched: choose a new or empty --workdir")
        if not is_run(self.path):
            return "new"
        if overwrite:
            return "replace"
        old = read_json(self.file("config.json"))
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

    def _apply(self, action: str, config: dict) -> None:
        existing = self.file("config.json")
        if action == "extend":
            os.remove(self.file("summary.json"))
            write_json(existing, config)
        elif action == "resume":
            self._remove_partial_writes()
        else:
            if action == "replace":
                shutil.rmtree(self.path)
            os.makedirs(self.path, exist_ok=True)
            write_json(existing, config)

    def _remove_partial_writes(self) -> None:
        """Temporary files of atomic writes a crash interrupted (".NAME.XXXX.tmp")."""
        for folder, dirs, names in os.walk(self.path):
            dirs[:] = [d for d in dirs if d not in ("checkpoints", "tensorboard")]
            for name in names:
                if name.startswith(".") and name.endswith(".tmp"):
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

    def write_summary(self, summary: dict) -> None:
        """summary.json, with where its numbers came from (`lth_jax.provenance`) under "provenance"."""
        from lth_jax import provenance
        config = read_json(self.file("config.json"))
        write_json(self.file("summary.json"), {**summary, "provenance": provenance.record(config)})

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None
