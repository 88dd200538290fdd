"""What this machine's CPU is and which vector/matrix features it has (``/proc/cpuinfo``): recorded with
every latency measurement, and read by a fine-tune recipe that trains in bfloat16 only where the CPU
computes it natively (``native_bf16``)."""

from __future__ import annotations

import functools
import platform

__all__ = ["ISA_FLAGS", "cpu_model", "cpu_flags", "native_bf16"]

# CPU features that decide which int8/fp32/bf16 kernels run (recorded with every measurement).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
             "amx_bf16", "asimd", "sve")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bfloat16 dot products in hardware (x86)


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's vector/matrix features among ``ISA_FLAGS`` (``/proc/cpuinfo`` flags; [] elsewhere)."""
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("features") or "").split())
    return [flag for flag in ISA_FLAGS if flag in flags]


@functools.lru_cache(maxsize=None)
def native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (elsewhere bf16 is emulated and slower than fp32)."""
    return any(flag in BF16_FLAGS for flag in cpu_flags())
