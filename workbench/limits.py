"""Resource bounds checked before work starts: threads, memory of requested arrays, nesting of parsed files."""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable

from .errors import InputSpecError

OPEN_ENGINES = 3  # engines kept built per session (least recently used closed first): each holds its weights

MAX_NESTING = 64  # deepest list/dict nesting accepted in JSON and YAML inputs (real files stay below 10)
MEMORY_FRACTION = 0.25  # refuse arrays needing more than this share of the memory available now (engines need
# several times their inputs for activations and copies)


def machine_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def capped_threads(threads: int | None) -> int | None:
    """`threads` checked (a positive int or None) and capped at the machine's cores, with a warning."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputSpecError(f"threads={threads!r}: give a positive number of engine threads, or None for the "
                             "engine's default.")
    cores = machine_cores()
    if threads > cores:
        warnings.warn(f"threads={threads} is more than the {cores} cores this machine has: using {cores}.",
                      stacklevel=3)
        return cores
    return threads


def available_memory() -> int | None:
    """Bytes of memory available now (Linux MemAvailable, else physical pages), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def array_bytes(shape: Iterable[int], itemsize: int) -> int:
    """Bytes of an array of `shape` (exact integer arithmetic, no overflow)."""
    return math.prod(int(d) for d in shape) * int(itemsize)


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Raise InputSpecError when `what` needs more than MEMORY_FRACTION of the available memory."""
    available = available_memory()
    if available is not None and nbytes > MEMORY_FRACTION * available:
        raise InputSpecError(f"{what} needs {_size(nbytes)}, more than {MEMORY_FRACTION:.0%} of the "
                             f"{_size(available)} of memory available: {fix}.")


def too_deep(value, limit: int = MAX_NESTING) -> bool:
    """True when `value` (parsed JSON/YAML) nests lists/dicts more than `limit` levels; iterative, never recurses."""
    if not isinstance(value, (list, dict)):
        return False
    stack = [(value, 1)]
    seen = {id(value)}  # YAML aliases can make the same container appear many times
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in (item.values() if isinstance(item, dict) else item):
            if isinstance(child, (list, dict)) and id(child) not in seen:
                seen.add(id(child))
                stack.append((child, depth + 1))
    return False


def _size(nbytes: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
    index = 0
    while nbytes >= 1024 and index < len(units) - 1:
        nbytes, index = nbytes / 1024, index + 1
    return f"{nbytes:.0f} bytes" if index == 0 else f"{nbytes:.1f} {units[index]}"
