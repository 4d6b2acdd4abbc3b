"""A run's folder: config.json, metrics.jsonl, summary.json, TensorBoard events.

Every file is written atomically (temporary file, then rename), so a crash
leaves either the old or the new version, never half of one.
"""
from __future__ import annotations

import json
import os

import numpy as np

from lth_jax.errors import LthError


def to_json(value):
    """JSON-ready copy: numpy / jax scalars and arrays become Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def write_json(path: str, value) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(to_json(value), f, indent=2, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


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

        extendable: (section, key) pairs that may grow on a finished run, e.g.
        ("lottery", "levels"): the run then continues where it stopped (same
        numbers as a run started with the larger value)."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise LthError(f"workdir {self.path} exists and is not a directory; choose another --workdir")
        existing = self.file("config.json")
        if os.path.exists(existing) and not overwrite:
            if self.finished and self._extends(read_json(existing), to_json(config), extendable):
                os.remove(self.file("summary.json"))
                write_json(existing, config)
                return True
            if self.finished:
                more = f" (only {', '.join('.'.join(k) for k in extendable)} may grow to extend it)" if extendable else ""
                raise LthError(f"workdir {self.path} holds a finished run (summary.json){more}; choose a new "
                               "--workdir, or pass --overwrite to replace it")
            old = read_json(existing)
            if old != to_json(config):
                changed = sorted(k for k in set(old) | set(config) if old.get(k) != to_json(config).get(k))
                raise LthError(f"workdir {self.path} holds an unfinished run with a different config "
                               f"(differs in: {', '.join(changed)}); resume it with the same config, or "
                               "choose a new --workdir, or pass --overwrite")
            return True
        if overwrite and os.path.isdir(self.path):
            import shutil
            shutil.rmtree(self.path)
        os.makedirs(self.path, exist_ok=True)
        write_json(existing, config)
        return False

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

    # metrics.jsonl: one JSON object per logged step
    def append_metrics(self, record: dict, members: list | None = None) -> None:
        """Append one record; numbers also go to TensorBoard under record["tag"]/
        (per-member arrays as tag/member/metric when `members` names them)."""
        with open(self.file("metrics.jsonl"), "a") as f:
            f.write(json.dumps(to_json(record)) + "\n")
            f.flush()
        prefix = f"{record['tag']}/" if record.get("tag") else ""
        writer = self.tensorboard()
        for k, v in record.items():
            if k in ("step", "tag", "level") or isinstance(v, str):
                continue
            arr = np.asarray(v, dtype=np.float64)
            if arr.ndim == 0:
                writer.add_scalar(prefix + k, float(arr), int(record["step"]))
            elif members is not None and arr.shape == (len(members),):
                for name, x in zip(members, arr):
                    writer.add_scalar(f"{prefix}{name}/{k}", float(x), int(record["step"]))

    def read_metrics(self) -> list:
        path = self.file("metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_metrics(self, keep) -> list:
        """Keep only the records for which keep(record) is true (after a resume)."""
        kept = [r for r in self.read_metrics() if keep(r)]
        tmp = self.file("metrics.jsonl.tmp")
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.file("metrics.jsonl"))
        return kept

    def tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(self.file("tensorboard"))
        return self._tb

    def write_summary(self, summary: dict) -> None:
        write_json(self.file("summary.json"), summary)

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None
