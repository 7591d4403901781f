"""CPU instruction-set detection (Linux /proc/cpuinfo flags), so backends only claim speed-ups the CPU has."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (e.g. "avx512_vnni", "amx_bf16"); empty when /proc/cpuinfo is unreadable."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def has_flag(*names: str) -> bool:
    """True when the CPU has at least one of the flags `names`."""
    return any(name in cpu_flags() for name in names)


def has_bf16() -> bool:
    """Native BF16 arithmetic (AVX-512 BF16 or AMX-BF16)."""
    return has_flag("avx512_bf16", "amx_bf16")


def has_int8_dot() -> bool:
    """Fast INT8 dot products (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
    return has_flag("avx512_vnni", "avx_vnni", "amx_int8")
