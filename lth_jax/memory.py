"""Chunk sizes from the device's free memory, and out-of-memory errors that
name the option to lower.

`auto_chunk` compiles the program at two small chunk sizes, reads XLA's
memory analysis of each (arguments, outputs and temporaries), fits bytes =
fixed + per_example x chunk, and returns the largest chunk whose estimate
fits in `share` of the device's free memory (`memory_stats()`: bytes_limit -
bytes_in_use), then compiles at that size to check it (shrinking it while
XLA's analysis says it does not fit: memory can grow faster than linearly).
Devices that report no memory statistics (the CPU) get the default, without
compiling anything.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import jax

from lth_jax.errors import LthError

VERIFY_ROUNDS = 4
PROBES = (64, 256)  # small enough to compile fast, large enough for the per-example cost to show


def free_bytes(device=None) -> int | None:
    """Free memory of `device` (default: the first device) in bytes, or None
    where the device reports no memory statistics."""
    device = jax.devices()[0] if device is None else device
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 -- backends without the query
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def program_bytes(compiled) -> int:
    """Device bytes a compiled program needs: arguments, outputs, temporaries."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - getattr(m, "alias_size_in_bytes", 0))


def auto_chunk(compile_at: Callable[[int], object], n: int, default: int, *, share: float = 0.5,
               free: int | None = None) -> int:
    """The chunk size (1 .. n) for a program compiled by `compile_at(chunk)`;
    `default` (capped at n) where the free memory is unknown."""
    free = free_bytes() if free is None else free
    if free is None:
        return max(1, min(default, n))
    small, large = (min(p, n) for p in PROBES)
    if small == large:
        return n
    b_small, b_large = program_bytes(compile_at(small)), program_bytes(compile_at(large))
    per_example = max((b_large - b_small) / (large - small), 1.0)
    fixed = b_small - per_example * small
    budget = share * free
    chunk = max(1, min(n, int((budget - fixed) // per_example)))
    for _ in range(VERIFY_ROUNDS):  # XLA's memory can grow faster than linearly: check the chosen size itself
        need = program_bytes(compile_at(chunk))
        if need <= budget or chunk == 1:
            break
        chunk = max(1, int(chunk * 0.9 * budget / need))
    return chunk


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


@contextlib.contextmanager
def names_option(what: str, option: str):
    """Turn a device out-of-memory error inside the block into one LthError
    naming the option to lower."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 -- only out-of-memory errors are rewritten
        if not is_out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LthError(f"out of device memory {what} ({first}); lower {option}") from None
