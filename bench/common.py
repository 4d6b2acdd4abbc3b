"""Helpers shared by the benchmark scripts: interleaved timing, statistics,
markdown tables, machine information and JSON output.

Nothing here imports jax or torch at module level, so a script can set
XLA_FLAGS (``--xla_flags``) before jax is first imported.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable


def add_common_args(ap, default_out: str):
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny repetition counts")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (interleaved)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed repetitions per variant first")
    ap.add_argument("--out", default=default_out, help="JSON results file")
    ap.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS before jax is imported")
    return ap


def parse_timing_args(ap, steps: int, quick_steps: int):
    """ap.parse_args() with the defaults of the timing scripts that take --steps:
    5 repetitions (2 with --quick), 1 warm-up, `steps` steps (`quick_steps`);
    XLA_FLAGS applied."""
    args = ap.parse_args()
    args.reps = args.reps or (2 if args.quick else 5)
    args.warmup = 1 if args.warmup is None else args.warmup
    args.steps = args.steps or (quick_steps if args.quick else steps)
    apply_xla_flags(args.xla_flags)
    return args


def apply_xla_flags(flags: str) -> None:
    """Append `flags` to XLA_FLAGS; must run before the first `import jax`."""
    if flags:
        if "jax" in sys.modules:
            raise RuntimeError("--xla_flags must be applied before jax is imported")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    info = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": _loadavg(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }
    for mod in ("jax", "jaxlib", "flax", "optax", "torch"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        info["jax_backend"] = jax.default_backend()
        info["jax_devices"] = [str(d) for d in jax.devices()]
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def interleaved(variants: dict, reps: int, warmup: int, log=print) -> tuple[dict, dict]:
    """Time each variant `reps` times, interleaved (a, b, c, a, b, c, ...).

    variants: name -> fn() running one repetition to completion (blocking).
    Every variant first runs `warmup` untimed repetitions (compilation); the
    first warm-up's duration is returned as `first_s` (compile + one rep).
    A variant whose warm-up raises is dropped; its error is returned.
    Returns ({name: {"times": [...], "first_s": s}}, {name: error string}).
    """
    results, errors = {}, {}
    for name, fn in variants.items():
        try:
            for i in range(max(warmup, 1)):
                t0 = time.perf_counter()
                fn()
                if i == 0:
                    results[name] = {"times": [], "first_s": time.perf_counter() - t0}
            log(f"  warmed up {name} (first call {results[name]['first_s']:.2f} s)")
        except Exception as e:  # noqa: BLE001 - report and go on without the variant
            errors[name] = f"{type(e).__name__}: {e}"
            results.pop(name, None)
            log(f"  {name} FAILED in warm-up: {errors[name][:300]}")
    for r in range(reps):
        for name, fn in variants.items():
            if name not in results:
                continue
            t0 = time.perf_counter()
            fn()
            results[name]["times"].append(time.perf_counter() - t0)
        log(f"  rep {r + 1}/{reps}: " + ", ".join(f"{n} {v['times'][-1]:.3f}s" for n, v in results.items()))
    return results, errors


def best_median(times: list) -> tuple[float, float]:
    return min(times), statistics.median(times)


def markdown_table(headers: list, rows: list) -> str:
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def fmt(x, digits=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if abs(x) >= 1e4:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def write_json(path: str, obj) -> None:
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, default=_default)
    print(f"wrote {path}")


def _default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    return str(o)


class Alarm:
    """Raise TimeoutError in the main thread after `seconds` (0 = never)."""

    def __init__(self, seconds: int):
        self.seconds = int(seconds)

    def __enter__(self):
        import signal
        if self.seconds > 0:
            self._old = signal.signal(signal.SIGALRM, self._raise)
            signal.alarm(self.seconds)
        return self

    def _raise(self, *_):
        raise TimeoutError(f"took longer than {self.seconds} s")

    def __exit__(self, *exc):
        import signal
        if self.seconds > 0:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, self._old)
        return False


def timed(fn: Callable, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0
