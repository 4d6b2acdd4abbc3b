"""Every file a run writes goes through `atomic_write`: a temporary file in the
same folder, fsync, rename, so a crash leaves the old version or the new one,
never half of one. JSON holds no bare NaN: non-finite numbers are written as
null (and read back as NaN where a number is expected).

In a run of several processes only process 0 writes (`lth_jax.parallel`):
the others compute the same values and skip every write here.

Files get the permissions of an ordinary write (0666 less the umask), so a
run's results are as readable as any other file its user writes.

`kill_point(name)` lets the crash tests stop the process at a named moment
(`LTH_JAX_KILL_AT=<glob>`) with a fault (`LTH_JAX_KILL_WITH`: SIGKILL, the
default; SIGINT, a Ctrl-C; ENOSPC, a full disk); unset, it does nothing.
"""
from __future__ import annotations

import errno
import fnmatch
import io
import json
import math
import os
import signal
import sys
import zipfile

import numpy as np

KILL_ENV = "LTH_JAX_KILL_AT"
KILL_WITH_ENV = "LTH_JAX_KILL_WITH"
KILL_SCOPE = ""  # set by a sweep to "runs/NNN/" while it trains run NNN: moments are named per run


def kill_point(name: str) -> None:
    """When $LTH_JAX_KILL_AT matches KILL_SCOPE + `name` (crash tests): SIGKILL
    this process, or send it $LTH_JAX_KILL_WITH (SIGINT: Ctrl-C, handled where
    Python next runs; ENOSPC: raise the OSError of a full disk here)."""
    target = os.environ.get(KILL_ENV)
    if target and fnmatch.fnmatchcase(KILL_SCOPE + name, target):
        how = os.environ.get(KILL_WITH_ENV, "SIGKILL")
        if how == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.kill(os.getpid(), getattr(signal, how))


def writes_files() -> bool:
    from lth_jax import parallel  # imported late: parallel imports jax
    return parallel.writes_files()


def atomic_write(path: str, data: bytes) -> None:
    """Write `data` to `path`: temporary file in the same folder, fsync, rename."""
    if not writes_files():
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temporary(folder, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        kill_point(f"write:{os.path.basename(path)}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _create_temporary(folder: str, name: str) -> tuple:
    """(fd, path) of a new ".NAME.XXXXXXXX.tmp" in `folder`, created as open()
    creates a file (mode 0666 less the umask): tempfile.mkstemp's 0600 would
    make every result unreadable to anyone else."""
    while True:
        tmp = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- JSON -------------------------------------------------------------------------------------
def to_json(value):
    """JSON-ready copy: numpy / jax scalars and arrays become Python numbers and
    lists; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, indent=None) -> str:
    return json.dumps(to_json(value), indent=indent, allow_nan=False)


def write_json(path: str, value) -> None:
    atomic_write(path, (dumps(value, indent=2) + "\n").encode())


def read_json(path: str):
    """The JSON value of a file lth_jax wrote; one LthError when it no longer
    reads as JSON (truncated or edited after it was written whole)."""
    from lth_jax.errors import LthError
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LthError(f"{path} is not readable JSON ({str(e).splitlines()[0]}): it was damaged or changed after it "
                       "was written; put back a good copy, or start a new --workdir") from None


# ---- JSON lines -------------------------------------------------------------------------------
def append_jsonl(path: str, record: dict) -> None:
    """Append one record and fsync it; a crash can leave at most a partial last
    line, which `read_jsonl` drops with a warning."""
    if not writes_files():
        return
    line = dumps(record) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str) -> list:
    """The records of a JSON-lines file; unreadable lines (a crash mid-write)
    are dropped with one warning line."""
    if not os.path.exists(path):
        return []
    out, bad = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        print(f"warning: dropped {bad} unreadable line(s) of {path} (a crash mid-write)", file=sys.stderr)
    return out


def write_jsonl(path: str, records: list) -> None:
    atomic_write(path, "".join(dumps(r) + "\n" for r in records).encode())


# ---- npz --------------------------------------------------------------------------------------
def npz_bytes(arrays: dict) -> bytes:
    """A compressed .npz (readable by np.load) with fixed timestamps, so the same
    arrays always give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


def write_npz(path: str, arrays: dict) -> None:
    atomic_write(path, npz_bytes(arrays))


def read_npz(path: str, what: str = "file") -> dict:
    """All arrays of an .npz; a missing, empty or damaged file is one LthError."""
    from lth_jax.errors import LthError
    if not os.path.exists(path):
        raise LthError(f"{what} {path} does not exist; give the path of a .npz written by lth_jax")
    if os.path.isdir(path):
        raise LthError(f"{what} {path} is a directory; give the path of a .npz file written by lth_jax")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LthError(f"{what} {path} is not a readable .npz ({reason}); give a file written by lth_jax") from None


# ---- figures ----------------------------------------------------------------------------------
def save_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    if not writes_files():
        plt.close(fig)
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
