"""Fuzz target: the CPU variants' card (engine.network.variants.load_card) and every reader of
it: the choice (auto and explicit, within any budget), the per-variant summary `info` and
`validate` print (with each variant's usability here), the file checks it names (sha256, ONNX
metadata), and what `validate` keeps of it when it rebuilds some variants (engine.validate).

A card is a file in the model folder a user can edit, copy or damage. Whatever it holds, the
answer is a card or a reason to run float32 (`load_card` returns None and why), never an
exception; EXPECTED lists the engine's typed errors only so that the harness reports any other
exception as the finding it is.
"""
from __future__ import annotations

import functools
import json

from _scratch import scratch

from engine.errors import InputError, ModelFileError

EXPECTED = (InputError, ModelFileError)
CI_RUNS = 10000  # about 10 s
RUNNERS = ["onnxruntime", "torch-cpu"]


@functools.lru_cache(maxsize=1)
def _model():
    """The synthetic weights resolved in the scratch folder (the card's fingerprint)."""
    from engine.network.resolve import resolve_model

    folder = scratch() / "card"
    folder.mkdir(exist_ok=True)
    return resolve_model(folder)


def seeds() -> list[bytes]:
    """Cards written by engine.network.variants.write_card, as validate fills them."""
    from engine.network import variants as V

    model = _model()
    errors = {k: 0.01 * (i + 1) for i, k in enumerate(V.ERROR_KEYS)}
    entries = [
        {"runner": "onnxruntime", "precision": "fp32", "status": "ok", "errors": {k: 0.0 for k in V.ERROR_KEYS},
         "validation_faces": 34, "speed": {"batch1_ms": 40.0, "batch8_ms_per_face": 35.0}},
        {"runner": "onnxruntime", "precision": "int8", "status": "ok", "file": f"{model.tag}.int8.onnx",
         "sha256": "0" * 64, "errors": errors, "validation_faces": 34, "calibration_faces": 34,
         "speed": {"batch1_ms": 14.0, "batch8_ms_per_face": 10.0}},
        {"runner": "torch-cpu", "precision": "bf16", "status": "unavailable", "why": "PyTorch is not installed"}]
    data = {"weights": model.describe(), "synthetic": True, "built": "2026-11-30 12:00 UTC", "build_seconds": 17.0,
            "machine": {"cpu": "AMD EPYC", "flags": ["avx512_vnni"], "threads": 2, "load_1m": 1.0},
            "calibration": {"faces": 34, "what": "faces"}, "validation": {"faces": 34, "what": "faces"},
            "variants": entries}
    out = []
    for d in (data, {**data, "variants": entries[:1]}, {**data, "variants": entries[::-1]}):
        V.write_card(model, d)
        out.append(V.card_path(model).read_bytes())
    return out


def one_input(data: bytes) -> None:
    from engine.network import variants as V

    model = _model()
    V.card_path(model).write_bytes(data)
    card, why = V.load_card(model)
    assert (card is None) != (why is None), (card, why)  # the file exists: a card, or why not
    for precision in (None, "int8", "bf16", "fp32"):
        for runner, explicit in (("onnxruntime", False), ("onnxruntime", True), ("torch-cpu", True)):
            if explicit and precision not in (None, *V.PRECISIONS_OF[runner]):
                continue
            c = V.choose(model, runner, explicit_runner=explicit, precision=precision, max_error=1e9, available=RUNNERS)
            assert c.precision in ("fp32", "int8", "bf16") and c.runner in RUNNERS, c
            json.dumps(c.variant)  # what provenance records must be JSON
    if card is not None:
        V.summary_lines(card, available=RUNNERS)
        for e in card.entries():
            V.unusable_reason(card, e, RUNNERS)
    # `validate` reads the previous card to keep what it does not rebuild: whatever the card holds,
    # a list of entries to keep (each a variant validate builds, once), never an exception
    from engine.validate import ORDER, _keep_previous

    now = {"validation_sha256": "0" * 64, "validation_what": "faces", "morphable_sha256": "0" * 64,
           "morphable_model": "m", "cpu": "AMD EPYC", "threads": 2, "versions": {"onnxruntime": "1", "torch": None}}
    kept, calibration = _keep_previous(model, [{"runner": "onnxruntime", "precision": "fp32"}], now, lambda m: None)
    pairs = [(e["runner"], e["precision"]) for e in kept]
    assert len(set(pairs)) == len(pairs) and all(p in ORDER[1:] for p in pairs), pairs
    json.dumps(kept)
