"""Which instructions this CPU has, for the lower-precision variants.

- int8 (ONNX Runtime QDQ, uint8 activations x int8 weights) is only faster with VNNI
  (`avx512_vnni`, `avx_vnni`) or AMX (`amx_int8`). Without them ONNX Runtime's x86 kernels
  multiply u8 x s8 pairs with vpmaddubsw, whose 16-bit sums can saturate: slower, and not the
  numbers the variant was validated with.
- bf16 (the torch-cpu runner's bfloat16 trunk, oneDNN) needs `avx512_bf16` or `amx_bf16`;
  without them oneDNN emulates bfloat16 in float32 arithmetic, slower than float32 itself.

Read from /proc/cpuinfo (Linux); elsewhere the flags are unknown and a variant that needs
them is not used. `ENGINE3DMM_CPU_FLAGS` overrides the answer (for tests, and to simulate
another CPU): a comma- or space-separated list of flag names (letters, digits and
underscores, as /proc/cpuinfo writes them; compared in lower case). `-flag` removes a flag from
what the CPU reports, `+flag` adds one; a list without signs replaces the CPU's flags entirely
(`ENGINE3DMM_CPU_FLAGS=""` is an empty list: a CPU without any of them). A token that is no
flag name (`avx512-vnni`, `garbage!!`) is ignored with one warning naming it; when no token
is left, the variable is ignored entirely (a typo must not silently become "a CPU without
any flag", which would turn every variant off).
"""
from __future__ import annotations

import functools
import logging
import os
import re

ENV_FLAGS = "ENGINE3DMM_CPU_FLAGS"
FLAG_TOKEN = re.compile(r"[+-]?[A-Za-z0-9_]+")
log = logging.getLogger("engine.network")
_warned: set[str] = set()  # values of the variable already warned about (cpu_flags runs often)
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


def _override() -> list[str] | None:
    """The tokens of $ENGINE3DMM_CPU_FLAGS that are flag names (lower case), or None when the
    variable is unset, or set but holds tokens and none of them is a flag name. Bad tokens
    are warned about once per value of the variable."""
    env = os.environ.get(ENV_FLAGS)
    if env is None:
        return None
    items = env.replace(",", " ").split()
    good = [i.lower() for i in items if FLAG_TOKEN.fullmatch(i)]
    bad = [i for i in items if not FLAG_TOKEN.fullmatch(i)]
    if bad and env not in _warned:
        _warned.add(env)
        left = ("; no flag name is left, so the variable is ignored and the CPU's own flags are used"
                if not good else "")
        log.warning("$%s: ignoring %s %s: expected flag names as /proc/cpuinfo writes them (letters, digits, "
                    "underscores; e.g. avx512_vnni), each optionally prefixed by + (add) or - (remove), separated "
                    "by commas or spaces%s", ENV_FLAGS, "token" if len(bad) == 1 else "tokens",
                    ", ".join(repr(b[:40]) for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
                    left)
    if bad and not good:
        return None
    return good


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (as /proc/cpuinfo names them), after $ENGINE3DMM_CPU_FLAGS;
    None when unknown (not Linux, and no usable override)."""
    items = _override()
    flags = _proc_flags()
    if items is None:
        return flags
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
    override = f" (as ${ENV_FLAGS} says)" if _override() is not None else ""
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
