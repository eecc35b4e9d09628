"""Which instructions this CPU has, for the lower-precision variants.

- int8 (ONNX Runtime QDQ, uint8 activations x int8 weights) is only faster with VNNI
  (`avx512_vnni`, `avx_vnni`) or AMX (`amx_int8`). Without them ONNX Runtime's x86 kernels
  multiply u8 x s8 pairs with vpmaddubsw, whose 16-bit sums can saturate: slower, and not the
  numbers the variant was validated with.
- bf16 (the torch-cpu runner's bfloat16 trunk, oneDNN) needs `avx512_bf16` or `amx_bf16`;
  without them oneDNN emulates bfloat16 in float32 arithmetic, slower than float32 itself.

Read from /proc/cpuinfo (Linux); elsewhere the flags are unknown and a variant that needs
them is not used. `ENGINE3DMM_CPU_FLAGS` overrides the answer (for tests, and to simulate
another CPU): a comma- or space-separated list. `-flag` removes a flag from what the CPU
reports, `+flag` adds one; a list without signs replaces the CPU's flags entirely
(`ENGINE3DMM_CPU_FLAGS=""` is an empty list: a CPU without any of them).
"""
from __future__ import annotations

import functools
import os

ENV_FLAGS = "ENGINE3DMM_CPU_FLAGS"
# Any one of these makes the variant run as validated and faster than float32.
NEEDS: dict[str, tuple[str, ...]] = {
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "bf16": ("avx512_bf16", "amx_bf16"),
}


@functools.lru_cache(maxsize=1)
def _proc_flags() -> frozenset[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (as /proc/cpuinfo names them), after $ENGINE3DMM_CPU_FLAGS;
    None when unknown (not Linux, and no override)."""
    env = os.environ.get(ENV_FLAGS)
    flags = _proc_flags()
    if env is None:
        return flags
    items = env.replace(",", " ").split()
    if any(i[:1] in "+-" for i in items):
        out = set(flags or ())
        for i in items:
            if i.startswith("-"):
                out.discard(i[1:])
            elif i.startswith("+"):
                out.add(i[1:])
            else:
                out.add(i)
        return frozenset(out)
    return frozenset(items)


def missing(precision: str) -> str | None:
    """None when this CPU has what `precision` needs (NEEDS), else a sentence saying what it
    lacks (and that ENGINE3DMM_CPU_FLAGS set it, when it did)."""
    need = NEEDS.get(precision)
    if not need:
        return None
    flags = cpu_flags()
    if flags is not None and any(f in flags for f in need):
        return None
    found = "its flags are unknown" if flags is None else "it has none of them"
    override = f" (as ${ENV_FLAGS} says)" if ENV_FLAGS in os.environ else ""
    return f"{precision} needs one of the CPU instructions {', '.join(need)}; {found}{override}"


def cpu_name() -> str:
    """The CPU's model name, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"
