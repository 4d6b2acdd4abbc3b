"""The spread every table reports: mean, sample standard deviation (ddof 1) and
n, and for two arms measured on the same replicates the paired difference.

The population std (ddof 0) understates the spread of 2-3 replicates by 18-29%
(sqrt((n-1)/n)); with one value there is no spread and `std` is None."""
from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats


def spread(values) -> dict:
    """{"mean", "std" (sample, ddof 1; None for n < 2), "n", "values"} of finite-or-not numbers."""
    values = [float(v) for v in np.ravel(np.asarray(values, np.float64))]
    n = len(values)
    return {"mean": float(np.mean(values)) if n else float("nan"),
            "std": float(np.std(values, ddof=1)) if n >= 2 else None, "n": n, "values": values}


def paired(a: dict, b: dict) -> dict:
    """The difference a - b over the replicates both have ({replicate: value} each): its spread, and
    the two-sided paired t-test's p-value (None for n < 2 or no spread)."""
    common = [r for r in a if r in b]
    diffs = [float(a[r]) - float(b[r]) for r in common]
    out = spread(diffs)
    out["replicates"] = common
    out["p"] = None
    if len(diffs) >= 2 and np.ptp(diffs) > 1e-9 * max(1.0, np.max(np.abs(diffs))):  # no spread: no test
        out["p"] = float(scipy_stats.ttest_1samp(diffs, 0.0).pvalue)
    return out


def pm(stat: dict, scale: float = 100.0, digits: int = 2, signed: bool = False) -> str:
    """'mean ± std (n=N)' of a `spread` (in percent by default); 'mean (n=1)' without a spread."""
    sign = "+" if signed else ""
    mean = f"{scale * stat['mean']:{sign}.{digits}f}"
    n = stat.get("n")
    tail = f" (n={n})" if n is not None else ""
    if stat.get("std") is None:
        return mean + tail
    return f"{mean} ± {scale * stat['std']:.{digits}f}{tail}"


def pm_diff(stat: dict, scale: float = 100.0, digits: int = 2) -> str:
    """A paired difference: '+mean ± std (n=N, p=P)'."""
    text = pm({k: v for k, v in stat.items() if k != "n"}, scale, digits, signed=True)
    extra = [f"n={stat['n']}"] + ([f"p={stat['p']:.2g}"] if stat.get("p") is not None else [])
    return f"{text} ({', '.join(extra)})"
