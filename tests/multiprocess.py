"""Run main.py as several local processes (JAX's multi-controller runtime on
CPU, gloo collectives), each with its own host-platform devices."""
import os
import socket
import subprocess
import sys

from crash import CACHE, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def env_with(devices: int, kill_at=None) -> dict:
    env = dict(os.environ)
    env.pop("LTH_JAX_KILL_AT", None)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", CACHE)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if kill_at:
        env["LTH_JAX_KILL_AT"] = kill_at
    return env


def launch(workdir, args, processes: int, devices: int, kill_at=None, kill_process=None, timeout=300):
    """Start `processes` main.py processes (one alone: no coordinator) and wait for
    all; [CompletedProcess]. `kill_at` is armed in process `kill_process` only."""
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--workdir", str(workdir), *args]
    if processes > 1:
        port = free_port()
        cmds = [cmd + [f"--coordinator=localhost:{port}", f"--num_processes={processes}", f"--process_id={i}"]
                for i in range(processes)]
    else:
        cmds = [cmd]
    procs = [subprocess.Popen(c, cwd=ROOT, env=env_with(devices, kill_at if i == kill_process else None),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, c in enumerate(cmds)]
    out = []
    for p, c in zip(procs, cmds):
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


SKIPPED = {"checkpoints", "tensorboard", "damaged"}
# provenance: the command names the workdir and the coordinator, the date is the finishing moment's
WALL = {"wall_seconds", "examples_per_second", "train_seconds", "measure_seconds", "seconds", "provenance"}


def files_of(workdir) -> list:
    out = []
    for folder, dirs, names in os.walk(workdir):
        dirs[:] = [d for d in dirs if d not in SKIPPED]
        out += [os.path.relpath(os.path.join(folder, n), workdir) for n in names]
    return sorted(out)


def _close(a, b, path, rtol, atol):
    import numpy as np
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), path
        for k in a:
            if k not in WALL:
                _close(a[k], b[k], f"{path}/{k}", rtol, atol)
    elif isinstance(a, list) and not all(isinstance(v, (int, float)) or v is None for v in a):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]", rtol, atol)
    elif isinstance(a, (int, float, list)) and not isinstance(a, bool):
        x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, equal_nan=True, err_msg=path)
    else:
        assert a == b, (path, a, b)


def assert_same_numbers(one, other, rtol=1e-4, atol=1e-5):
    """The same files; JSON, JSON lines and .npz arrays equal within float
    tolerance (collectives sum in another order); boolean arrays (masks) equal."""
    import json

    import numpy as np
    names = files_of(one)
    assert names == files_of(other), sorted(set(names) ^ set(files_of(other)))
    for name in names:
        a, b = os.path.join(one, name), os.path.join(other, name)
        if name.endswith(".json"):
            _close(json.load(open(a)), json.load(open(b)), name, rtol, atol)
        elif name.endswith(".jsonl"):
            ra, rb = [json.loads(x) for x in open(a)], [json.loads(x) for x in open(b)]
            assert len(ra) == len(rb), name
            for i, (x, y) in enumerate(zip(ra, rb)):
                _close(x, y, f"{name}:{i}", rtol, atol)
        elif name.endswith(".npz"):
            with np.load(a) as x, np.load(b) as y:
                assert sorted(x.files) == sorted(y.files), name
                for k in x.files:
                    if x[k].dtype == bool or x[k].dtype.kind in "iuSU":
                        np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}:{k}")
                    else:
                        np.testing.assert_allclose(x[k], y[k], rtol=rtol, atol=atol, err_msg=f"{name}:{k}")
