"""Where a timing was measured: CPU model, the instruction sets that change inference speed, cores, engine
versions. Results carry it (`RunResult.machine`, JSON key `machine`) so a timing read from a shared cache that was
measured on another computer can say so."""
from __future__ import annotations

import os
import platform
from functools import lru_cache

from .backends.cpu_features import cpu_flags

# Instruction sets that change how fast FP32/FP16/BF16/INT8 kernels run (x86 and Arm names as Linux reports them).
SPEED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
               "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp", "asimddp", "sve",
               "bf16", "i8mm")


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), which is what an engine's threads get."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def this_machine(engine_versions: dict[str, str] | None = None) -> dict:
    """The `machine` record of a result measured here now."""
    return {"cpu_model": cpu_model(), "architecture": platform.machine(), "cores": usable_cores(),
            "flags": sorted(flag for flag in SPEED_FLAGS if flag in cpu_flags()),
            "engine_versions": dict(engine_versions or {})}


def same_machine(measured: dict, here: dict) -> bool:
    """Would a timing from `measured` hold `here`: same CPU model, architecture, cores and speed-relevant flags.
    (Engine versions are part of every cache key, so a cached timing always comes from the same engines.)"""
    return all(measured.get(name) == here.get(name) for name in ("cpu_model", "architecture", "cores", "flags"))


def other_machine_note(machine: dict | None) -> str | None:
    """A sentence saying a timing was measured on another machine (None when it was measured on this kind of
    machine, or when nothing is recorded, e.g. results older than the record)."""
    if not machine:
        return None
    here = this_machine()
    if same_machine(machine, here):
        return None
    return (f"timing measured on another machine ({machine.get('cpu_model', 'unknown CPU')}, "
            f"{machine.get('cores', '?')} cores); this one is {here['cpu_model']}, {here['cores']} cores: "
            "re-run the configuration here for local timings")
