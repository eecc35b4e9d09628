"""CPU variants built for real: the full-size int8 graph (ONNX Runtime static quantisation),
validated on a few held-out faces, chosen, run, recorded in provenance, shown by `info`, and
replaced by float32 when it must not run. One small card is built per module (4 calibration
and 5 validation faces: about 20 s), hence slow."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from engine.network import cpu_features, faces
from engine.network import variants as V

pytestmark = pytest.mark.slow
pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")
NO_VNNI = "-avx512_vnni,-avx_vnni,-amx_int8"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folder, model, card, validation crops): the synthetic weights' variants, validated."""
    from engine.network.resolve import resolve_model
    from engine.validate import validate_variants

    folder = tmp_path_factory.mktemp("built")
    model = resolve_model(folder)
    val = faces.builtin_faces("validation", 5)
    card = validate_variants(model, calibration=faces.builtin_faces("calibration", 4), validation=val)
    return folder, model, card, val[0]


@pytest.fixture(autouse=True)
def _vnni(monkeypatch):
    """The tests below are about the variants, not this CPU: say it has VNNI and bf16 (the
    fallback test removes them again). Without them the int8 numbers are not the validated ones."""
    if cpu_features.missing("int8") is not None:
        pytest.skip("this CPU has no VNNI: the int8 variant is refused here (see the fallback tests)")
    monkeypatch.delenv(cpu_features.ENV_FLAGS, raising=False)


def test_the_card_records_what_was_measured(built):
    import onnx

    folder, model, card, _ = built
    d = json.loads(card.path.read_text())  # read back with the standard library
    assert d["format"] == V.CARD_FORMAT and d["weights_sha256"] == model.fingerprint and d["synthetic"] is True
    assert d["calibration"]["faces"] == 4 and d["validation"]["faces"] == 5 and d["build_seconds"] > 0
    assert "astronaut" in d["validation"]["what"] and d["morphable_model"].endswith("(SYNTHETIC)")
    by = {(e["runner"], e["precision"]): e for e in d["variants"]}
    assert by["onnxruntime", "fp32"]["errors"]["coeff_max_sd"] == 0  # the reference
    int8 = by["onnxruntime", "int8"]
    assert int8["status"] == "ok" and int8["calibration_faces"] == 4 and int8["validation_faces"] == 5
    assert set(int8["errors"]) == set(V.ERROR_KEYS) and all(np.isfinite(v) for v in int8["errors"].values())
    assert int8["errors"]["coeff_max_sd"] >= int8["errors"]["coeff_p99_sd"] > 0
    assert int8["errors"]["vertex_max_mm"] >= int8["errors"]["vertex_mean_mm"] > 0
    assert all(e["speed"]["batch1_ms"] > 0 for e in d["variants"] if e["status"] == "ok")
    path = folder / int8["file"]
    assert int8["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # the int8 graph, read by onnx: QDQ with int8 per-channel weights, the head left float32
    m = onnx.load(str(path))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["weights_sha256"] == model.fingerprint and meta["precision"] == "int8"
    assert json.loads(meta["quantization"])["calibration_method"] == "MinMax"
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 100 and ops.count("DequantizeLinear") > 200
    int8_weights = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8_weights) == 104  # every convolution of ResNet-101
    assert not [t for t in m.graph.initializer if t.name.startswith("fc_ftnew") and t.data_type != onnx.TensorProto.FLOAT]
    if ("torch-cpu", "bf16") in by:
        assert by["torch-cpu", "bf16"]["status"] in ("ok", "unavailable")


def test_the_int8_runner_reproduces_its_validated_error(built):
    """Run again, and against the exact PyTorch module (another implementation): the card's
    number is what the variant does on those faces."""
    from engine.runners import create_runner

    folder, model, card, val = built
    with create_runner("onnxruntime", folder, precision="int8") as r8, \
            create_runner("onnxruntime", folder, precision="fp32") as r32:
        assert (r8.precision, r32.precision) == ("int8", "fp32")
        got, ref = r8.run(val), r32.run(val)
    recorded = card.entry("onnxruntime", "int8")["errors"]["coeff_max_sd"]
    assert np.abs(got - ref).max() == pytest.approx(recorded, rel=1e-3)
    torch = pytest.importorskip("torch")
    from engine.network.torch_model import build

    net = build(model.weights, model.mean, fused=False, synthetic=True)
    with torch.inference_mode():
        exact = net(torch.from_numpy(val)).numpy()
    assert np.abs(got - exact).max() == pytest.approx(recorded, rel=0.01, abs=1e-4)


def test_auto_chooses_from_the_card_and_explicit_wins(built):
    from engine.runners import create_runner

    folder, _, card, _ = built
    ort = sorted((e for e in card.entries() if e["runner"] == "onnxruntime"), key=lambda e: e["speed"]["batch1_ms"])
    with create_runner("onnxruntime", folder, max_error=1e6) as r:  # everything is within budget
        assert r.precision == ort[0]["precision"]  # the one the card timed fastest
    with create_runner("onnxruntime", folder, max_error=1e-9) as r:  # only float32 is
        assert r.precision == "fp32" and "over the budget: onnxruntime int8" in (r.variant_note or "")
    with create_runner("auto", folder, precision="int8") as r:
        assert (r.name, r.precision) == ("onnxruntime", "int8")
        assert r.variant["errors"] == card.entry("onnxruntime", "int8")["errors"]
        assert "(asked for): validated max" in r.variant_note
        assert "int8 variant, validated max" in r.model_description and "SYNTHETIC" in r.model_description


def test_provenance_names_the_variant(built):
    from engine.pipeline import Reconstructor
    from engine.runners import create_runner

    folder, _, _, val = built
    with create_runner("auto", folder, precision="int8") as runner, \
            Reconstructor(runner=runner, detector=None) as rec:
        (res,) = rec.reconstruct_crops(val[:1], decode=False)
    assert res.provenance["precision"] == "int8" and res.provenance["runner"] == "onnxruntime"
    assert "onnxruntime int8 variant, validated max" in res.provenance["network"]


@pytest.mark.parametrize("spoil", ["cpu without vnni", "flipped byte", "deleted", "card of other weights"])
def test_a_built_variant_that_must_not_run_gives_float32(built, tmp_path, monkeypatch, caplog, spoil):
    from engine.runners import create_runner

    folder, model, card, val = built
    copy = tmp_path / "card"
    shutil.copytree(folder, copy)
    int8 = copy / card.entry("onnxruntime", "int8")["file"]
    if spoil == "cpu without vnni":
        monkeypatch.setenv(cpu_features.ENV_FLAGS, NO_VNNI)
        why = "this CPU cannot run onnxruntime int8 as validated: int8 needs one of the CPU instructions"
    elif spoil == "flipped byte":
        data = bytearray(int8.read_bytes())
        data[len(data) // 2] ^= 0xFF
        int8.write_bytes(bytes(data))
        why = "changed since it was validated"
    elif spoil == "deleted":
        int8.unlink()
        why = "is missing (run `engine3dmm validate`"
    else:
        c = json.loads((copy / card.path.name).read_text())
        (copy / card.path.name).write_text(json.dumps({**c, "weights_sha256": "f" * 64}))
        why = "is stale: its variants were built from other weights"
    with caplog.at_level("WARNING", logger="engine"):
        with create_runner("auto", copy, precision="int8") as r:
            assert (r.name, r.precision) == ("onnxruntime", "fp32")
            assert np.isfinite(r.run(val[:1])).all()
    assert why in caplog.text and "running float32" in caplog.text


def test_reconstruct_and_info_show_the_variant(built, tmp_path, monkeypatch, capsys):
    from PIL import Image
    from skimage.data import astronaut

    from engine.cli import main

    folder, model, card, _ = built
    monkeypatch.setenv("ENGINE3DMM_MODEL_DIR", str(folder))  # the synthetic card: no --network-dir needed
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut()).save(photo)
    capsys.readouterr()
    rc = main(["reconstruct", str(photo), "-o", str(tmp_path / "out"), "--precision", "int8", "--no-mesh"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "network: onnxruntime int8 (asked for): validated max" in err and "held-out faces" in err
    prov = json.loads((tmp_path / "out" / "summary.json").read_text())["provenance"]
    assert prov["precision"] == "int8" and "int8 variant" in prov["network"]
    # the CPU check says no: float32, with the reason on stderr
    monkeypatch.setenv(cpu_features.ENV_FLAGS, NO_VNNI)
    rc = main(["reconstruct", str(photo), "-o", str(tmp_path / "out2"), "--precision", "int8", "--no-mesh"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: --precision int8: this CPU cannot run onnxruntime int8" in err
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["provenance"]["precision"] == "fp32"
    monkeypatch.delenv(cpu_features.ENV_FLAGS)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"CPU variants:    {card.path}" in out and "SYNTHETIC weights" in out
    assert "onnxruntime int8: max " in out and "auto picks onnxruntime" in out
    assert main(["info", "--json"]) == 0
    var = json.loads(capsys.readouterr().out)["network"]["variants"]
    assert var["status"] == "validated" and var["validation"]["faces"] == 5
    entry = next(e for e in var["entries"] if e["precision"] == "int8")
    assert entry["errors"] == card.entry("onnxruntime", "int8")["errors"] and entry["unusable_here"] is None


def test_user_photos_join_calibration_and_a_folder_without_a_face_builds_no_int8(tmp_path, caplog):
    pytest.importorskip("dlib")
    from PIL import Image
    from skimage import data

    from engine.network.resolve import resolve_model
    from engine.validate import validate_variants

    model = resolve_model(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    Image.fromarray(data.astronaut()).save(mine / "astronaut.png")  # one face: calibration (faces 0, 2, ...)
    Image.fromarray(data.coffee()).save(mine / "coffee.jpg")  # no face
    (mine / "broken.jpg").write_bytes(b"not a jpeg")
    small = dict(calibration=faces.builtin_faces("calibration", 2), validation=faces.builtin_faces("validation", 2),
                 precisions=("int8",))
    card = validate_variants(model, calibration_dir=mine, **small)
    assert card.data["calibration"]["faces"] == 3 and "1 of your faces" in card.data["calibration"]["what"]
    assert card.data["validation"]["faces"] == 2 and card.entry("onnxruntime", "int8")["status"] == "ok"
    empty = tmp_path / "nofaces"
    empty.mkdir()
    Image.fromarray(data.coffee()).save(empty / "coffee.jpg")
    with caplog.at_level("WARNING", logger="engine"):
        card = validate_variants(model, calibration_dir=empty, **small)
    e = card.entry("onnxruntime", "int8")
    assert e["status"] == "not built" and "no usable face" in e["why"] and "1 image(s) without a detected face" in e["why"]
    assert "the int8 variant is not built; runs use float32" in caplog.text
    c = V.choose(model, "onnxruntime", explicit_runner=False, precision="int8", available=["onnxruntime"])
    assert c.precision == "fp32" and "int8 was not built: calibration folder" in c.warning


def test_rebuilding_some_variants_keeps_the_others_while_they_hold(built, tmp_path, monkeypatch, caplog):
    """`validate --variants int8` keeps bf16 and torch-cpu fp32 as validated (same weights, same
    validation faces); a rebuild that cannot keep them (a changed int8 file; other validation
    faces) drops them with one warning naming them and why, and the card says what it has."""
    import dataclasses

    from engine.validate import validate_variants

    folder, model, card, _ = built
    before = {(e["runner"], e["precision"]): e for e in json.loads(card.path.read_text())["variants"]}
    if before.get(("torch-cpu", "bf16"), {}).get("status") != "ok":
        pytest.skip("no torch-cpu bf16 variant here (PyTorch without oneDNN bf16)")
    copy = tmp_path / "card"
    shutil.copytree(folder, copy)
    m = dataclasses.replace(model, model_dir=copy)
    monkeypatch.setenv(cpu_features.ENV_FLAGS, "+avx512_vnni,+avx512_bf16")  # the choice below, whatever this CPU
    val = faces.builtin_faces("validation", 5)  # the faces `built` validated on
    small = dict(calibration=faces.builtin_faces("calibration", 4), validation=val)

    with caplog.at_level("WARNING", logger="engine"):
        again = validate_variants(m, precisions=("int8",), **small)
    assert "not keeping" not in caplog.text
    after = {(e["runner"], e["precision"]): e for e in again.entries()}
    assert list(after) == [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch-cpu", "fp32"),
                           ("torch-cpu", "bf16")]
    for key in (("torch-cpu", "fp32"), ("torch-cpu", "bf16")):
        assert {k: after[key][k] for k in ("errors", "speed", "validation_faces")} == \
               {k: before[key][k] for k in ("errors", "speed", "validation_faces")}
    c = V.choose(m, "onnxruntime", explicit_runner=False, precision="bf16", available=["onnxruntime", "torch-cpu"])
    assert (c.runner, c.precision, c.warning) == ("torch-cpu", "bf16", None)
    assert c.variant["errors"] == before["torch-cpu", "bf16"]["errors"] and "(asked for): validated" in c.note

    # bf16 rebuilt while the int8 file changed since it was validated: int8 is dropped, and said so
    int8 = copy / after["onnxruntime", "int8"]["file"]
    data = bytearray(int8.read_bytes())
    data[len(data) // 2] ^= 0xFF
    int8.write_bytes(bytes(data))
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine"):
        again = validate_variants(m, precisions=("bf16",), **small)
    assert [(e["runner"], e["precision"]) for e in again.entries()] == [
        ("onnxruntime", "fp32"), ("torch-cpu", "fp32"), ("torch-cpu", "bf16")]
    (warning,) = [r.getMessage() for r in caplog.records if "not keeping" in r.getMessage()]
    assert warning.startswith(f"{again.path.name}: not keeping onnxruntime int8 from the previous validation: {int8} "
                              "changed since it was validated (sha256 ")
    assert warning.endswith("`engine3dmm validate --variants bf16 int8` measures it again")

    # other validation faces: nothing measured on the old ones is kept
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine"):
        again = validate_variants(m, precisions=("int8",), calibration=small["calibration"],
                                  validation=faces.builtin_faces("validation", 3))
    assert [(e["runner"], e["precision"]) for e in again.entries()] == [("onnxruntime", "fp32"),
                                                                      ("onnxruntime", "int8")]
    (warning,) = [r.getMessage() for r in caplog.records if "not keeping" in r.getMessage()]
    assert warning.startswith(f"{again.path.name}: not keeping torch-cpu fp32, torch-cpu bf16 from the previous "
                              "validation: they were validated on other faces (5 built-in real faces")
    assert "this run: 3 built-in real faces" in warning and "--variants bf16 int8` measures them again" in warning
    c = V.choose(m, "onnxruntime", explicit_runner=False, precision="bf16", available=["onnxruntime", "torch-cpu"])
    assert "has no torch-cpu bf16 entry (it has onnxruntime fp32, onnxruntime int8" in c.warning
