"""Where a run's numbers came from, written into its summary.json: the command,
the commit of the lth_jax checkout (and whether it had uncommitted changes),
the config's hash and the versions of the stack. The report prints it above
every table, so a table in docs/results.md names what made it."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "tensorflow-datasets",
            "ml-collections")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_command: str | None = None


def set_command(argv: list, program: str) -> None:
    """Record the command line a run was started with (`program`: "main.py" or "-m lth_jax.sweep")."""
    global _command
    _command = shlex.join(["python", *program.split(), *argv])


def config_hash(config: dict) -> str:
    """sha256 of the config as canonical JSON (sorted keys), first 16 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit() -> dict:
    """{"commit", "dirty"} of the checkout lth_jax is imported from; None outside a git checkout of it (an
    installed copy inside some other repository, e.g. a venv in one, is not that repository's commit)."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or os.path.realpath(top) != os.path.realpath(ROOT):
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--", "lth_jax", "configs", "main.py", "setup.cfg")
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(status)}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    from lth_jax import __version__
    out["lth_jax"] = __version__
    return out


def record(config: dict) -> dict:
    """The provenance block of a summary.json."""
    import jax
    return {"command": _command, **commit(), "config_sha256": config_hash(config), "versions": versions(),
            "backend": jax.default_backend(), "devices": jax.device_count(), "processes": jax.process_count(),
            "finished_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "argv": list(sys.argv) if _command is None else None}


def describe(prov: dict | None) -> str:
    """One line for the report: commit, config hash, stack."""
    if not prov:
        return "made before lth_jax recorded provenance (no commit known)"
    c = prov.get("commit")
    where = f"commit {c[:10]}{' with uncommitted changes' if prov.get('dirty') else ''}" if c else \
        f"lth_jax {prov['versions'].get('lth_jax')} (not a git checkout)"
    v = prov["versions"]
    stack = ", ".join(f"{k} {v[k]}" for k in ("jax", "flax", "optax", "numpy") if v.get(k))
    return (f"{where}; config sha256 {prov['config_sha256']}; {stack}; {prov['backend']} x {prov['devices']}; "
            f"finished {prov['finished_utc']}")
