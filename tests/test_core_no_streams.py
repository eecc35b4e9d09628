"""The compiled core formats without iostreams.

A std::ostream formats integers through the process's locale (the num_put facet). In a
process that had imported PyTorch first, that call crashed with SIGSEGV on a GPU machine
(H200, torch 2.11+cu130: `engine3dmm info`, engine.bench and every argument-error message
of the bindings; bench/results/gpu_check.md). Locale-dependent formatting also broke the
ASCII mesh writers under comma locales (issue 8, section 7). The library and the bindings
therefore build strings with std::to_string / std::to_chars only; this test keeps it so.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STREAMS = re.compile(r"#\s*include\s*<(sstream|iostream|ostream|istream|fstream|iomanip|locale)>|"
                     r"std::(o|i)?stringstream|std::(cout|cerr|clog)\b|std::locale\b")


def test_no_stream_formatting_in_the_core_or_the_bindings():
    offenders = []
    for folder in ("csrc", "python"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix not in (".h", ".hpp", ".cpp", ".cu", ".cuh"):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("//", 1)[0]
                if STREAMS.search(code):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "stream or locale use in the core:\n" + "\n".join(offenders)


def test_build_info_is_json_after_torch_was_imported():
    import json
    import subprocess
    import sys

    code = ("import importlib.util, json\n"
            "if importlib.util.find_spec('torch'): import torch\n"
            "from engine import _core\n"
            "print(json.dumps(_core.build_info()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    assert info["cpu_kernel_selected"] in ("avx512", "avx2", "generic")
