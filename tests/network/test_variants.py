"""CPU variants without building one (fast): the face split, the CPU check and its override,
the variant card's freshness checks and the choice rules, the error measures against a plain
reference. The full-size int8 graph is built in test_variants_built.py (slow)."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from engine.errors import InputError
from engine.network import cpu_features, faces
from engine.network import variants as V

ALL = ["onnxruntime", "torch-cpu"]
NO_VNNI = "-avx512_vnni,-avx_vnni,-amx_int8"


def test_face_roles_are_disjoint_and_the_colour_face_is_held_out():
    idx = {r: set(faces.lfw_indices(r)) for r in faces.ROLES}
    assert not (idx["calibration"] & idx["validation"]) and not (idx["calibration"] & idx["model"])
    assert not (idx["validation"] & idx["model"])
    assert sorted(set().union(*idx.values())) == list(range(faces.LFW_FACE_COUNT))
    pytest.importorskip("skimage")
    cal, cal_what = faces.builtin_faces("calibration")
    val, val_what = faces.builtin_faces("validation")
    assert cal.shape == (34, 3, 224, 224) and val.shape == (34, 3, 224, 224) and cal.dtype == np.float32
    assert "astronaut" in val_what and "astronaut" not in cal_what
    # no validation crop equals a calibration crop (the sets share no face, not even a copy)
    same = (np.abs(cal[:, None] - val[None]).reshape(34, 34, -1).max(-1) == 0)
    assert not same.any()
    # the astronaut is the one colour face, first in validation; LFW faces are grey (B = G = R)
    assert np.abs(val[0, 0] - val[0, 2]).max() > 10 and np.abs(val[1:, 0] - val[1:, 2]).max() == 0
    small, what = faces.builtin_faces("validation", limit=3)
    assert len(small) == 3 and np.array_equal(small, val[:3]) and "2 LFW-subset faces" in what


def test_fp16_check_keeps_its_own_faces():
    pytest.importorskip("skimage")
    from engine.network import fp16

    crops, what = fp16.calibration_faces()
    assert crops.shape == (8, 3, 224, 224) and "[0, 13, 27, 41, 55, 69, 83]" in what


def test_cpu_flags_override_replaces_removes_and_adds(monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "avx2 avx512f")
    assert cpu_features.cpu_flags() == {"avx2", "avx512f"}
    assert "int8 needs one of the CPU instructions avx512_vnni, avx_vnni, amx_int8" in cpu_features.missing("int8")
    assert "ENGINE3DMM_CPU_FLAGS" in cpu_features.missing("int8")
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "")
    assert cpu_features.cpu_flags() == frozenset() and cpu_features.missing("bf16")
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+amx_bf16")
    assert cpu_features.missing("bf16") is None and cpu_features.missing("fp32") is None
    real = cpu_features._proc_flags()
    if real is not None:
        monkeypatch.setenv(cpu_features.ENV_FLAGS, NO_VNNI)
        assert cpu_features.cpu_flags() == real - {"avx512_vnni", "avx_vnni", "amx_int8"}
        assert cpu_features.missing("int8") is not None
        monkeypatch.delenv(cpu_features.ENV_FLAGS)
        assert cpu_features.cpu_flags() == real


@pytest.mark.parametrize("value, bad, kept", [
    ("garbage!!", ["'garbage!!'"], None),  # nothing left: the variable is ignored, the CPU's own flags count
    ("avx2, avx512-vnni", ["'avx512-vnni'"], {"avx2"}),  # a hyphen typo: that token only is ignored
    ("+avx512_vnni ++x - *", ["'++x'", "'-'", "'*'"], "+avx512_vnni"),
])
def test_cpu_flags_override_ignores_tokens_that_are_no_flag_names(monkeypatch, caplog, value, bad, kept):
    """A token that is no flag name gives one warning (the variable, the token, the expected
    form) and is ignored; it never becomes a flag of its own (which turned int8 off)."""
    monkeypatch.setattr(cpu_features, "_warned", set())
    monkeypatch.setenv(cpu_features.ENV_FLAGS, value)
    real = cpu_features._proc_flags()
    with caplog.at_level("WARNING", logger="engine"):
        flags = cpu_features.cpu_flags()
        cpu_features.cpu_flags()  # asked again (every choice asks): still one warning
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("$ENGINE3DMM_CPU_FLAGS: ignoring ")
    assert all(b in warnings[0] for b in bad) and "letters, digits, underscores" in warnings[0]
    assert "prefixed by + (add) or - (remove)" in warnings[0]
    assert not any(b.strip("'") in (flags or ()) for b in bad)
    if kept is None:
        assert flags == real and "the variable is ignored" in warnings[0]
        if real is not None and cpu_features.missing("int8") is not None:
            assert "ENGINE3DMM_CPU_FLAGS" not in cpu_features.missing("int8")  # it did not decide
    elif isinstance(kept, set):
        assert flags == kept
    else:
        assert flags == (real or frozenset()) | {"avx512_vnni"}
    caplog.clear()
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "avx2 +AVX512_BF16")  # good tokens: no warning (lower-cased)
    with caplog.at_level("WARNING", logger="engine"):
        assert "avx512_bf16" in cpu_features.cpu_flags()
    assert not caplog.records


def test_max_error_must_be_a_positive_number():
    assert V.check_max_error(None) == V.DEFAULT_MAX_ERROR == 0.05 and V.check_max_error("0.2") == 0.2
    for bad in (0, -1, float("nan"), float("inf"), "x", True):
        with pytest.raises(InputError, match="max_error: expected a number of coefficient sd > 0"):
            V.check_max_error(bad)


def test_compare_agrees_with_a_plain_reference():
    """Each error measure against engine._reference's float64 decode and plain numpy."""
    from engine._reference import decode_reference
    from engine.decode import Decoder
    from engine.morphable import load_model
    from engine.validate import compare

    mm = load_model(None)
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (5, 198)).astype(np.float32)
    got = (ref + rng.normal(0, 0.05, ref.shape)).astype(np.float32)
    e = compare(ref, got, Decoder(mm))

    def plain(c):
        v, _, col = decode_reference(mm.shape_mean, mm.shape_basis, mm.tex_mean, mm.tex_basis, c)
        return v.reshape(len(c), -1, 3), col.reshape(len(c), -1, 3).astype(np.int64)

    (va, ca), (vb, cb) = plain(ref), plain(got)
    dist = np.sqrt(((vb - va) ** 2).sum(-1))
    dcol = np.abs(cb - ca)
    d = np.abs(got.astype(np.float64) - ref)
    g64, r64 = got.astype(np.float64), ref.astype(np.float64)
    cos = 1 - (g64 * r64).sum(1) / np.linalg.norm(g64, axis=1) / np.linalg.norm(r64, axis=1)
    assert e["coeff_max_sd"] == pytest.approx(d.max()) and e["coeff_p99_sd"] == pytest.approx(np.percentile(d, 99))
    assert e["vertex_max_mm"] == pytest.approx(dist.max(), rel=1e-4)
    assert e["vertex_mean_mm"] == pytest.approx(dist.mean(), rel=1e-4)
    # float32 kernel against the float64 oracle: a colour may truncate one level apart
    assert abs(e["color_max_levels"] - dcol.max()) <= 1 and e["color_mean_levels"] == pytest.approx(dcol.mean(), abs=0.01)
    assert e["cosine_max"] == pytest.approx(cos.max(), rel=1e-4) and e["cosine_mean"] == pytest.approx(cos.mean(), rel=1e-4)
    assert e["coeff_max_sd"] > 0.1 and e["vertex_max_mm"] > 0 and e["color_max_levels"] > 0
    same = compare(ref, ref, Decoder(mm))
    assert same["vertex_max_mm"] == 0 and same["coeff_max_sd"] == 0 and same["color_max_levels"] == 0


# ---------------------------------------------------------------- cards, written as validate writes them


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The synthetic weights resolved in a folder of this module (no ONNX exported)."""
    from engine.network.resolve import resolve_model

    return resolve_model(tmp_path_factory.mktemp("variants"))


def _errors(max_sd: float) -> dict:
    return {k: (max_sd if k == "coeff_max_sd" else max_sd / 2) for k in V.ERROR_KEYS}


def fake_int8(path, fingerprint: str) -> None:
    """A small valid ONNX file carrying the metadata of an int8 variant (the choice reads
    metadata and sha256, it never runs the file). Its one node is an operator no runtime
    has, so ONNX Runtime refuses to load it."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("NotAKernel", ["crops"], ["coeffs"], domain="engine3dmm.test")], "g",
                          [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["b", 3, 224, 224])],
                          [helper.make_tensor_value_info("coeffs", TensorProto.FLOAT, ["b", 198])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("engine3dmm.test", 1)])
    for k, v in {"weights_sha256": fingerprint, "precision": "int8"}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


def write_card(model, folder, int8_sd=0.03, bf16_sd=0.2, speeds=(40.0, 15.0, 60.0, 30.0), int8_file=True):
    """A card for `model` in `folder` as validate writes it: fp32 and int8 (onnxruntime),
    fp32 and bf16 (torch-cpu), with the given validated errors and batch-1 speeds."""
    from engine.network.convert import file_sha256

    int8 = {"runner": "onnxruntime", "precision": "int8", "status": "ok", "errors": _errors(int8_sd),
            "validation_faces": 34, "speed": {"batch1_ms": speeds[1], "batch8_ms_per_face": speeds[1]}}
    if int8_file:
        path = folder / f"{model.tag}.int8.onnx"
        fake_int8(path, model.fingerprint)
        int8.update(file=path.name, sha256=file_sha256(path))
    entries = [
        {"runner": "onnxruntime", "precision": "fp32", "status": "ok", "errors": _errors(0.0), "validation_faces": 34,
         "speed": {"batch1_ms": speeds[0], "batch8_ms_per_face": speeds[0]}},
        int8,
        {"runner": "torch-cpu", "precision": "fp32", "status": "ok", "errors": _errors(1e-5), "validation_faces": 34,
         "speed": {"batch1_ms": speeds[2], "batch8_ms_per_face": speeds[2]}},
        {"runner": "torch-cpu", "precision": "bf16", "status": "ok", "errors": _errors(bf16_sd), "validation_faces": 34,
         "speed": {"batch1_ms": speeds[3], "batch8_ms_per_face": speeds[3]}}]
    doc = {"format": V.CARD_FORMAT, "version": V.CARD_VERSION, "weights_sha256": model.fingerprint,
           "synthetic": True, "variants": entries}
    (folder / f"{model.tag}.variants.json").write_text(json.dumps(doc))
    return doc


@pytest.fixture
def card_model(model, tmp_path):
    """`model` seen from a fresh folder (same weights, fingerprint and tag)."""
    import dataclasses

    return dataclasses.replace(model, model_dir=tmp_path)


@pytest.fixture(scope="module")
def fp32_graph(model):
    """The float32 graph of `model`, exported once into the module's folder."""
    pytest.importorskip("onnx")
    return model.onnx_path("fp32")


def choose(model, runner="onnxruntime", explicit=False, precision=None, max_error=None, available=ALL):
    return V.choose(model, runner, explicit_runner=explicit, precision=precision, max_error=max_error,
                    available=available)


def test_auto_picks_the_fastest_variant_within_the_budget(card_model, monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni,+avx512_bf16")  # whatever this CPU is
    folder = card_model.model_dir
    write_card(card_model, folder, int8_sd=0.03)
    c = choose(card_model)
    assert (c.runner, c.precision) == ("onnxruntime", "int8") and c.warning is None
    assert c.variant["errors"]["coeff_max_sd"] == 0.03 and "fastest variant within the 0.05 sd budget" in c.note
    c = choose(card_model, max_error=0.01)  # int8 is over a tighter budget: float32
    assert (c.runner, c.precision) == ("onnxruntime", "fp32") and "onnxruntime int8 max 0.03 sd" in c.note
    write_card(card_model, folder, int8_sd=0.5, bf16_sd=0.04)  # now bf16 (30 ms) is the fastest within budget
    c = choose(card_model)
    assert (c.runner, c.precision) == ("torch-cpu", "bf16")
    c = choose(card_model, available=["onnxruntime"])  # the lean install: no PyTorch, no bf16
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    c = choose(card_model, "onnxruntime", explicit=True)  # --runner onnxruntime: its own variants only
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    assert choose(card_model, "torch-cuda").precision is None  # a GPU runner keeps its default


def test_without_a_card_auto_is_float32_and_an_explicit_variant_falls_back(card_model):
    c = choose(card_model)
    assert (c.runner, c.precision, c.warning, c.variant) == ("onnxruntime", "fp32", None, None)
    c = choose(card_model, precision="int8")
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    assert c.warning.startswith("--precision int8: no validated variants for these weights in")
    assert "`engine3dmm validate` builds them" in c.warning and c.warning.endswith("running float32 (onnxruntime)")
    # bf16 needs no file: asked for, it runs (where the CPU can), unvalidated, and says so
    if cpu_features.missing("bf16") is None:
        c = choose(card_model, precision="bf16")
        assert (c.runner, c.precision) == ("torch-cpu", "bf16")
        assert "running torch-cpu bf16 unvalidated" in c.warning and "error against float32" in c.warning


def test_an_explicit_precision_wins_over_the_budget_and_says_its_error(card_model, monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni,+avx512_bf16")
    write_card(card_model, card_model.model_dir, int8_sd=0.4, bf16_sd=0.2)
    c = choose(card_model, precision="int8")
    assert (c.runner, c.precision, c.warning) == ("onnxruntime", "int8", None)
    assert "validated max 0.4 sd" in c.note and "OVER the 0.05 sd budget" in c.note and "SYNTHETIC" in c.note
    c = choose(card_model, precision="bf16")
    assert (c.runner, c.precision) == ("torch-cpu", "bf16") and "max 0.2 sd" in c.note
    c = choose(card_model, precision="int8", max_error=1.0)
    assert "within the 1 sd budget" in c.note
    with pytest.raises(InputError, match=r"precision: the torch-cpu runner supports \['fp32', 'bf16'\], found 'int8'"
                                         r" \(use --runner onnxruntime or auto\)"):
        choose(card_model, "torch-cpu", explicit=True, precision="int8")


@pytest.mark.parametrize("spoil, why", [
    ("stale", "is stale: its variants were built from other weights (the card's sha256 000000000000..., these "
              "weights' {fingerprint}...)"),
    ("garbage card", "the variant card is unreadable"),
    ("other version", "made by another version of the engine (card version 99, this one reads 1)"),
    ("other format", "not a variant card of this engine (expected format 'engine3dmm-network-variants', found "
                     "format 'something-else')"),
    ("card is a folder", "cnn3dmm.synthetic-seed0.variants.json is a folder, not a variant card file"),
    ("file missing", ".int8.onnx is missing (run `engine3dmm validate`"),
    ("file is a folder", ".int8.onnx is a folder, not the variant's ONNX file"),
    ("file changed", ".int8.onnx changed since it was validated (sha256 {found}... differs from the card's "
                     "{recorded}...)"),
    ("file corrupt", ".int8.onnx changed since it was validated (sha256 {found}... differs from the card's "
                     "{recorded}...)"),
    ("cpu without vnni", "this CPU cannot run onnxruntime int8 as validated: int8 needs one of the CPU instructions"),
])
def test_a_bad_variant_falls_back_to_float32_saying_why(card_model, monkeypatch, caplog, spoil, why):
    """Each reason names what was expected and what was found: both sha256 (12 hex digits),
    what is where a file should be."""
    folder = card_model.model_dir
    doc = write_card(card_model, folder, int8_sd=0.03)
    card = folder / f"{card_model.tag}.variants.json"
    int8 = folder / f"{card_model.tag}.int8.onnx"
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni")
    if spoil == "stale":
        card.write_text(json.dumps({**doc, "weights_sha256": "0" * 64}))
    elif spoil == "garbage card":
        card.write_bytes(b"{\"format\": [[[" + b"\xff" * 10)
    elif spoil == "other version":
        card.write_text(json.dumps({**doc, "version": 99}))
    elif spoil == "other format":
        card.write_text(json.dumps({**doc, "format": "something-else"}))
    elif spoil == "card is a folder":
        card.unlink()
        card.mkdir()
    elif spoil == "file missing":
        int8.unlink()
    elif spoil == "file is a folder":
        int8.unlink()
        int8.mkdir()
    elif spoil == "file changed":
        fake_int8(int8, "1" * 64)
    elif spoil == "file corrupt":
        int8.write_bytes(int8.read_bytes()[:20])
    else:
        monkeypatch.setenv(cpu_features.ENV_FLAGS, NO_VNNI)
    recorded = next(e for e in doc["variants"] if e["precision"] == "int8")["sha256"]
    found = hashlib.sha256(int8.read_bytes()).hexdigest() if int8.is_file() else ""
    why = why.format(fingerprint=card_model.fingerprint[:12], found=found[:12], recorded=recorded[:12])
    c = choose(card_model, precision="int8")
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    assert why in c.warning and c.warning.startswith("--precision int8: "), c.warning
    # auto, with a budget int8 would meet: float32, and the same reason in a warning
    V._warned.clear()
    with caplog.at_level("WARNING", logger="engine"):
        c = choose(card_model)
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    assert why in caplog.text


def test_the_cpu_check_is_not_needed_for_float32(card_model, monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "")
    write_card(card_model, card_model.model_dir, int8_sd=0.01, bf16_sd=0.01)
    c = choose(card_model)
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    c = choose(card_model, precision="bf16")
    assert (c.runner, c.precision) == ("onnxruntime", "fp32") and "avx512_bf16, amx_bf16" in c.warning


def test_bf16_without_pytorch_falls_back(card_model, monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_bf16")
    write_card(card_model, card_model.model_dir, bf16_sd=0.01)
    c = choose(card_model, precision="bf16", available=["onnxruntime"])
    assert (c.runner, c.precision) == ("onnxruntime", "fp32")
    assert "needs the torch-cpu runner, not available here (PyTorch is not installed)" in c.warning


def test_create_runner_falls_back_and_names_what_runs(card_model, fp32_graph, monkeypatch, caplog):
    """create_runner with a card whose int8 file is no ONNX Runtime graph (a valid ONNX file
    of one Identity node, sha256 and metadata as the card says): float32, with a warning."""
    pytest.importorskip("onnxruntime")
    from engine.runners import create_runner

    folder = card_model.model_dir
    shutil.copy(fp32_graph, folder)
    write_card(card_model, folder, int8_sd=0.03)
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni")
    with caplog.at_level("WARNING", logger="engine"):
        with create_runner("auto", folder, precision="int8") as r:
            assert (r.name, r.precision, r.variant) == ("onnxruntime", "fp32", None)
            assert r.run(np.zeros((1, 3, 224, 224), np.float32)).shape == (1, 198)
    assert "onnxruntime int8 variant cannot be used" in caplog.text and "running float32" in caplog.text


def test_runner_and_precision_arguments_are_checked(model):
    from engine.runners import create_runner

    with pytest.raises(InputError, match=r"precision: expected 'auto' or one of \['fp32', 'fp16', 'bf16', 'int8'\]"):
        create_runner("auto", model.model_dir, precision="int4")
    with pytest.raises(InputError, match="max_error"):
        create_runner("auto", model.model_dir, max_error=-1)


def test_fp16_is_refused_on_the_cpu_runners(card_model, fp32_graph):
    """fp16 is no CPU variant: ONNX Runtime's CPU provider computes a float16 graph in float32
    (no faster) and no card validates it. Asked for on a CPU runner it is an error naming the
    validated CPU variants, and nothing is written (the 87 MB float16 graph was)."""
    from engine.runners import create_runner

    for runner, explicit in (("onnxruntime", False), ("onnxruntime", True), ("torch-cpu", True)):
        with pytest.raises(InputError, match=r"precision fp16: the CPU runners do not run float16") as e:
            choose(card_model, runner, explicit=explicit, precision="fp16")
        assert "--precision int8 (onnxruntime) or bf16 (torch-cpu)" in str(e.value)
        assert "GPU runners' precision (tensorrt, torch-cuda; this machine has none)" in str(e.value)
    c = choose(card_model, "torch-cuda", explicit=True, precision="fp16", available=["torch-cuda"] + ALL)
    assert (c.runner, c.precision) == ("torch-cuda", "fp16")  # a GPU runner runs it as before
    folder = card_model.model_dir
    shutil.copy(fp32_graph, folder)
    before = sorted(p.name for p in folder.iterdir())
    for name in ("auto", "onnxruntime"):
        if name == "auto":
            from engine.runners import available_runners

            if any(r not in V.CPU_RUNNERS for r in available_runners()):
                continue  # a GPU machine: auto picks a GPU runner, where fp16 is its own default
        with pytest.raises(InputError, match="use --precision int8"):
            create_runner(name, folder, precision="fp16")
    assert sorted(p.name for p in folder.iterdir()) == before  # no float16 graph written
    from engine.runners.ort import OrtRunner

    with pytest.raises(InputError, match=r"supports \['fp32', 'int8'\], found 'fp16' \(fp16 is a GPU precision"):
        OrtRunner(card_model, precision="fp16")


def test_an_explicit_variant_the_card_lacks_names_what_it_has(card_model, monkeypatch):
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni,+avx512_bf16")
    doc = write_card(card_model, card_model.model_dir)
    doc["variants"] = doc["variants"][:2]  # as `validate --variants int8` wrote it before it kept the others
    (card_model.model_dir / f"{card_model.tag}.variants.json").write_text(json.dumps(doc))
    c = choose(card_model, precision="bf16")
    assert (c.runner, c.precision) == ("torch-cpu", "bf16")
    assert (f"the card {card_model.model_dir / (card_model.tag + '.variants.json')} has no torch-cpu bf16 entry "
            "(it has onnxruntime fp32, onnxruntime int8; `engine3dmm validate --variants bf16` measures it)") \
        in c.warning


@pytest.mark.parametrize("spoil", ["deleted", "corrupted", "cpu without vnni", "usable"])
def test_info_shows_whether_each_variant_is_usable_with_the_runners_reason(card_model, monkeypatch, capsys, spoil):
    """`info` says of each variant "usable" or "not usable here: " and the very reason a run
    that asks for it gives when it falls back (one check: variants.unusable_reason)."""
    from engine.cli import main

    folder = card_model.model_dir
    write_card(card_model, folder, int8_sd=0.03)
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni,+avx512_bf16")
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(folder))
    int8 = folder / f"{card_model.tag}.int8.onnx"
    if spoil == "deleted":
        int8.unlink()
    elif spoil == "corrupted":
        data = bytearray(int8.read_bytes())
        data[len(data) // 2] ^= 0xFF
        int8.write_bytes(bytes(data))
    elif spoil == "cpu without vnni":
        monkeypatch.setenv(cpu_features.ENV_FLAGS, "-avx512_vnni,-avx_vnni,-amx_int8,+avx512_bf16")
    c = choose(card_model, precision="int8")
    capsys.readouterr()
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    names = ("onnxruntime fp32", "onnxruntime int8", "torch-cpu fp32", "torch-cpu bf16")
    lines = {ln.split(":", 1)[0].strip(): ln for ln in out.splitlines() if ln.strip().startswith(
        tuple(f"{n}:" for n in names))}
    assert set(lines) == set(names), out
    for name in ("onnxruntime fp32", "torch-cpu fp32", "torch-cpu bf16"):
        assert lines[name].endswith("; usable"), lines[name]
    assert main(["info", "--json"]) == 0
    entry = next(e for e in json.loads(capsys.readouterr().out)["network"]["variants"]["entries"]
                 if e["precision"] == "int8")
    if spoil == "usable":
        assert c.warning is None and lines["onnxruntime int8"].endswith("; usable")
        assert entry["usable"] is True and entry["unusable_here"] is None
        return
    why = c.warning[len("--precision int8: "):-len("; running float32 (onnxruntime)")]
    assert c.warning == f"--precision int8: {why}; running float32 (onnxruntime)"
    assert lines["onnxruntime int8"].endswith(f"; not usable here: {why}"), (lines["onnxruntime int8"], why)
    assert entry["usable"] is False and entry["unusable_here"] == why
