"""`python -m engine.bench`: the smoke run with the documented row keys, and the target maths."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench import measure, report

REPO = Path(__file__).resolve().parents[1]


def _row(stage, thr, batch=8, device="cpu"):
    return measure.Row(stage, "onnxruntime", device, "fp32", batch, 1.0, 2.0, thr, "m")


def test_summarize_uses_total_time_and_percentiles():
    p50, p99, thr = measure.summarize([0.1, 0.2, 0.3, 0.4], faces_per_call=2)
    assert p50 == pytest.approx(250.0) and p99 == pytest.approx(397.0)
    assert thr == pytest.approx(8 / 1.0)


def test_verdicts_compare_each_pipelined_stage_with_the_network():
    rows = [_row("preprocess", 400.0), _row("network", 10.0), _row("decode", 200.0), _row("write", 300.0),
            _row("network_decode", 9.6), _row("end_to_end", 8.9)]
    (line,) = report.verdicts(rows)
    assert "network_decode 96.0% of network (PASS" in line
    assert "end_to_end 89.0% of network (FAIL" in line
    assert "bound by network" in line


def test_verdicts_on_gpu_count_cpu_cores():
    rows = [_row("preprocess", 500.0, device="cuda"), _row("network", 2000.0, device="cuda"),
            _row("decode", 40000.0, device="cuda"), _row("write", 250.0, device="cuda"),
            _row("end_to_end", 240.0, device="cuda")]
    (line,) = report.verdicts(rows)
    assert "end_to_end bound by write" in line  # 4 ms per face on one core against 0.5 ms on the GPU
    assert "CPU cores to keep the GPU busy: 12.0" in line  # (1/500 + 1/250) s per face * 2000 faces/s
    assert "the CPU input path (JPEG decode + crop, 2.00 ms per face per core) needs 4.00 cores" in line


def test_analysis_says_what_bounds_end_to_end_and_what_the_cpu_input_costs_on_every_machine():
    cpu = [_row("preprocess", 250.0), _row("network", 30.0), _row("decode", 200.0), _row("write", 100.0),
           _row("end_to_end", 28.0)]
    (a,) = report.analysis(cpu)
    assert a["end_to_end_bound_by"] == "network" and "device_input_bound_by" not in a
    assert a["cpu_input_ms_per_face"] == pytest.approx(4.0) and a["cpu_input_cores"] == pytest.approx(0.12)
    assert a["targets"]["end_to_end"] == {"ratio": pytest.approx(28 / 30), "target": 0.9, "pass": True}
    assert "cpu_cores_to_keep_gpu_busy" not in a  # a CPU runner shares the cores instead
    (line,) = report.verdicts(cpu)
    assert "needs 0.12 cores to keep up with the network's 30 faces/s" in line


def test_analysis_of_the_device_input_rows():
    gpu = [_row("preprocess", 400.0, device="cuda"), _row("network", 6400.0, device="cuda"),
           _row("decode", 50000.0, device="cuda"), _row("write", 8000.0, device="cuda"),
           _row("end_to_end", 390.0, device="cuda"), _row("device_preprocess", 20000.0, device="cuda"),
           _row("cpu_input", 790.0, device="cuda"), _row("device_input", 5900.0, device="cuda")]
    (a,) = report.analysis(gpu)
    assert a["end_to_end_bound_by"] == "preprocess" and a["device_input_bound_by"] == "network"
    assert a["cpu_input_cores"] == pytest.approx(16.0)  # 6400 faces/s x 2.5 ms
    assert a["device_ms_per_face"] == pytest.approx({"device_preprocess": 0.05, "network": 1e3 / 6400,
                                                     "decode": 0.02})  # device_input writes no file
    assert a["targets"]["device_input"]["pass"] and not a["targets"]["cpu_input"]["pass"]
    (line,) = report.verdicts(gpu)
    assert "device_input 92.2% of network (PASS, target 90%)" in line
    assert "cpu_input 12.3% of network (FAIL" in line and "end_to_end 6.1% of network (FAIL" in line
    assert "device_input bound by network (ms per face, each stage alone: device_preprocess 0.05, network 0.156" in line
    assert "needs 16.00 cores to keep up with the network's 6400 faces/s" in line


def test_the_json_holds_the_analysis(tmp_path):
    rows = [_row("preprocess", 250.0), _row("network", 30.0), _row("decode", 200.0), _row("write", 100.0),
            _row("end_to_end", 28.0)]
    report.write_json(tmp_path / "b.json", rows, measure.Machine("cpu", 2, "Linux"))
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["analysis"] == json.loads(json.dumps(report.analysis(rows)))
    assert doc["analysis"][0]["end_to_end_bound_by"] == "network"


def test_the_device_rows_say_why_they_are_skipped_without_a_gpu(runner, model):
    from engine.bench import stages
    from engine.pipeline import Reconstructor

    with Reconstructor(runner=runner, model=model, batch_size=1, detector=None, device_input=False) as rec:
        ctx = stages.Context(rec, 1, stages.workload(), measure.QUICK, "m")
        drec, why = stages.device_reconstructor(ctx)
    assert drec is None and why == "the runner does not run on a CUDA device"


@pytest.mark.slow
def test_quick_bench_writes_the_documented_rows(tmp_path):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "-m", "engine.bench", "--quick", "--batch-sizes", "1",
                           "--json", str(out), "--markdown", str(md)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    for r in rows:
        assert set(measure.ROW_KEYS) <= set(r), r
        assert r["throughput_per_s"] > 0 and r["latency_ms_p99"] >= r["latency_ms_p50"] > 0
    stages = {r["stage"] for r in rows if r["stage"] != "detect"}
    assert stages == {"preprocess", "network", "decode", "write", "network_decode", "end_to_end"}
    assert {r["batch"] for r in rows if r["stage"] != "detect"} == {1}
    assert "SYNTHETIC" in rows[-1]["model"]  # the default model is labelled as such
    assert f"Model: {rows[-1]['model']}" in proc.stdout and "SYNTHETIC: placeholder" in proc.stdout  # the console too
    assert "end_to_end" in proc.stdout and "of network" in proc.stdout
    assert "Machine:" in md.read_text() and "| network |" in md.read_text()


def test_the_console_table_says_synthetic_when_the_models_are():
    label = "network SYNTHETIC + morphable synthetic-bfm-46990 (SYNTHETIC)"
    rows = [measure.Row("detect", "dlib", "cpu", "-", 1, 80.0, 90.0, 12.0, "dlib HOG"),
            measure.Row("network", "onnxruntime", "cpu", "fp32", 1, 70.0, 80.0, 14.0, label)]
    lines = report.table(rows).splitlines()
    assert lines[0] == f"Model: {label}" and lines[1].startswith("SYNTHETIC: placeholder weights")
    real = [measure.Row("network", "onnxruntime", "cpu", "fp32", 1, 70.0, 80.0, 14.0,
                        "network cnn3dmm + morphable bfm2009")]
    text = report.table(real)
    assert text.splitlines()[0] == "Model: network cnn3dmm + morphable bfm2009" and "SYNTHETIC" not in text
    assert "Model: network SYNTHETIC" in report.markdown(rows, measure.Machine("cpu", 2, "Linux"), "cmd", [])


@pytest.mark.slow
def test_huge_photo_row_measures_a_child_process():
    pytest.importorskip("dlib")
    pytest.importorskip("skimage")
    from engine.bench import huge

    (row,) = huge.rows(None, [512], repeats=1, side=2400, log=lambda m: None)
    assert row.stage == "detect_6mp" and row.runner == "dlib" and row.iterations == 1
    assert row.latency_ms_p50 > 0 and row.peak_rss_mib > 50  # ru_maxrss of the child, in MiB
    assert "2400x2400 JPEG" in row.note and "max side 512" in row.note
    assert row.note.count("landmarks']") + row.note.count("detector']") == 1  # one face found


def test_verdicts_check_the_huge_photo_target():
    rows = [measure.Row("detect_81mp", "dlib", "cpu", "-", 1, 2400.0, 2900.0, 0.4, "dlib HOG", 2, 1028.0, None,
                        "9000x9000 JPEG (81 MP, one face), max side 2048, upsample 1"),
            measure.Row("detect_81mp", "dlib", "cpu", "-", 1, 24800.0, 25400.0, 0.04, "dlib HOG", 2, 4568.0, None,
                        "9000x9000 JPEG (81 MP, one face), full resolution, upsample 1")]
    fast, slow = report.verdicts(rows)
    assert fast == ("detect_81mp (dlib, max side 2048): 2.40 s (PASS, target < 5 s), peak RSS 1028 MiB "
                    "(PASS, target < 1536 MiB)")
    assert slow.startswith("detect_81mp (dlib, full resolution): 24.80 s (FAIL") and "4568 MiB (FAIL" in slow


def test_verdicts_keep_cpu_variants_apart():
    rows = [_row("network", 10.0), _row("end_to_end", 9.5),
            measure.Row("network", "onnxruntime", "cpu", "int8", 8, 1.0, 2.0, 40.0, "m"),
            measure.Row("end_to_end", "onnxruntime", "cpu", "int8", 8, 1.0, 2.0, 30.0, "m")]
    fp32, int8 = report.verdicts(rows)
    assert fp32.startswith("onnxruntime batch 8: ") and "end_to_end 95.0% of network (PASS" in fp32
    assert int8.startswith("onnxruntime int8 batch 8: ") and "end_to_end 75.0% of network (FAIL" in int8


def test_runner_rows_per_precision(tmp_path):
    from engine.bench import stages

    names = ["onnxruntime", "torch-cpu"]
    # no variant card in the folder: fp32 only; explicit precisions: those each runner supports
    assert stages.runner_configs(names, tmp_path, None, False) == [("onnxruntime", "fp32"), ("torch-cpu", "fp32")]
    assert stages.runner_configs(names, tmp_path, ["fp32", "int8", "bf16"], False) == [
        ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch-cpu", "fp32"), ("torch-cpu", "bf16")]
    assert stages.runner_configs(names + ["torch-cuda"], tmp_path, None, True) == [
        ("onnxruntime", None), ("torch-cpu", None), ("torch-cuda", None)]  # --quick: what auto picks


def test_a_precision_no_runner_runs_is_said_not_dropped(tmp_path):
    from engine.bench import stages
    from engine.errors import EngineError

    said = []
    got = stages.runner_configs(["onnxruntime", "torch-cpu"], tmp_path, ["fp16", "int8"], False,
                                skip=lambda *a: said.append(a))
    assert got == [("onnxruntime", "int8")]
    assert said == [("onnxruntime", "fp16", "onnxruntime runs fp32, int8 (fp16 is the GPU runners' precision)"),
                    ("torch-cpu", "fp16", "torch-cpu runs fp32, bf16 (fp16 is the GPU runners' precision)"),
                    ("torch-cpu", "int8", "torch-cpu runs fp32, bf16")]
    with pytest.raises(EngineError) as e:
        stages.runner_configs(["onnxruntime"], tmp_path, ["fp16"], False)
    assert str(e.value) == ("--precisions fp16: none of the runners onnxruntime runs it "
                            "(CPU runners: onnxruntime fp32, int8; torch-cpu fp32, bf16)")


def test_each_runner_and_precision_asked_is_measured_once(tmp_path):
    from engine.bench import stages

    assert stages.runner_configs(["onnxruntime", "torch-cpu", "onnxruntime"], tmp_path, ["int8", "fp32", "int8"],
                                 False) == [("onnxruntime", "int8"), ("onnxruntime", "fp32"), ("torch-cpu", "fp32")]


def test_the_bound_is_named_only_for_a_chain_that_was_measured():
    """`--stages device` on a CPU measures preprocess, write and the network, not end_to_end:
    nothing may be said of what bounds it."""
    rows = [_row("preprocess", 250.0), _row("write", 300.0), _row("network", 30.0)]
    (a,) = report.analysis(rows)
    assert "end_to_end_bound_by" not in a and "ms_per_face" not in a and "device_input_bound_by" not in a
    (line,) = report.verdicts(rows)
    assert "end_to_end" not in line and "bound by" not in line and "needs 0.12 cores" in line
    # end_to_end measured but decode not: the bound would be a guess
    (a,) = report.analysis(rows + [_row("end_to_end", 28.0)])
    assert "end_to_end_bound_by" not in a and a["targets"]["end_to_end"]["pass"]


def test_skips_of_one_reason_merge_over_batch_sizes():
    skipped = []
    for b in (1, 8, 1):
        measure.add_skip(skipped, measure.Skip(("cpu_input",), "onnxruntime", "fp32", "no GPU", (b,)))
    measure.add_skip(skipped, measure.Skip(("cpu_input",), "onnxruntime", "int8", "no GPU", (1,)))
    assert [s.batches for s in skipped] == [(1, 8), (1,)]
    assert skipped[0].describe() == "cpu_input (onnxruntime fp32, batch 1, 8): skipped: no GPU"


def _bench_main(tmp_path, *argv):
    from engine.bench.cli import main

    out, md = tmp_path / "b.json", tmp_path / "b.md"
    assert main(["--quick", "--runners", "onnxruntime", "--batch-sizes", "1", "--network-dir", str(tmp_path),
                 *argv, "--json", str(out), "--markdown", str(md)]) == 0
    return json.loads(out.read_text()), md.read_text()


def test_a_precision_the_runner_falls_back_from_is_skipped_not_measured_under_its_name(tmp_path, capsys):
    """No variant card beside the weights: int8 would run float32. No row may carry it, and the
    reason is in the JSON, the Markdown and the console."""
    pytest.importorskip("onnxruntime")
    doc, md = _bench_main(tmp_path, "--stages", "runners", "--precisions", "int8")
    assert doc["rows"] == [] and doc["analysis"] == []
    (skip,) = doc["skipped"]
    assert skip["runner"] == "onnxruntime" and skip["precision"] == "int8" and skip["batches"] == []
    assert skip["stages"] == ["preprocess", "decode", "write", "network", "network_decode", "end_to_end"]
    assert skip["reason"].startswith("onnxruntime fell back to fp32: --precision int8: no validated variants")
    line = f"- {', '.join(skip['stages'])} (onnxruntime int8): skipped: {skip['reason']}"
    assert line in md.splitlines() and "| int8 |" not in md
    assert f"Skipped: {line[2:]}" in capsys.readouterr().out


def test_device_rows_skipped_on_a_cpu_are_recorded_and_repeats_run_once(tmp_path):
    """--stages device on a CPU runner: the device rows' reason in the JSON and the Markdown, no
    bound named for end_to_end (not measured), and --precisions/--batch-sizes given twice
    measure each row once."""
    pytest.importorskip("onnxruntime")
    doc, md = _bench_main(tmp_path, "--stages", "device", "--precisions", "fp32", "fp32", "--batch-sizes", "1", "1")
    assert [(r["stage"], r["precision"], r["batch"]) for r in doc["rows"]] == [
        ("preprocess", "fp32", 1), ("write", "fp32", 1), ("network", "fp32", 1)]
    assert doc["skipped"] == [{"stages": ["device_preprocess", "cpu_input", "device_input"], "runner": "onnxruntime",
                               "precision": "fp32", "reason": "the runner does not run on a CUDA device",
                               "batches": [1]}]
    assert ("- device_preprocess, cpu_input, device_input (onnxruntime fp32, batch 1): skipped: the runner does not "
            "run on a CUDA device") in md.splitlines()
    (a,) = doc["analysis"]
    assert "end_to_end_bound_by" not in a and "bound by" not in md and "end_to_end" not in md


def _bench_network():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_network", REPO / "bench" / "bench_network.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_network_append_names_each_weights_once(tmp_path):
    """A weights description holds "; " itself: merged runs must not split and repeat it."""
    bn = _bench_network()
    a = "SYNTHETIC weights (built-in, seed 0): coefficients are meaningless; run `convert` on the caffemodel"
    b = "SYNTHETIC weights (built-in, seed 1): coefficients are meaningless"
    row = lambda model, batch: {"model": model, "runner": "onnxruntime", "config": "c", "batch": batch,  # noqa: E731
                                "device": "cpu"}
    old = {"meta": {"weights": a, "notes": ["kept"]}, "rows": [row("m0", 1), row("m0", 8)]}
    meta = {"weights": b}
    rows = bn.merge_appended(old, [row("m1", 1), row("m0", 8)], meta)
    assert meta["weights"] == [a, b] and meta["notes"] == ["kept"] and len(rows) == 3
    again = {"weights": a}
    bn.merge_appended({"meta": meta, "rows": rows}, [row("m0", 1)], again)
    assert again["weights"] == [a, b]
    assert bn.weights_of(again) == [a, b] and bn.weights_of({"weights": a}) == [a]


def test_bench_network_states_the_variant_target():
    bn = _bench_network()

    def row(runner, precision, ms, validated, model="m"):
        return {"model": model, "runner": runner, "precision": precision, "batch": 1, "device": "cpu",
                "latency_ms_p50": ms, "validated_max_sd": validated}

    rows = [row("torch-eager", "fp32", 100.0, None), row("onnxruntime", "fp32", 40.0, 0.0),
            row("onnxruntime", "int8", 20.0, 0.03), row("torch-cpu", "bf16", 50.0, 0.2)]
    lines = bn.target_lines(rows)
    assert lines[0] == ("- m: the fastest variant within 0.05 sd is onnxruntime int8 (validated max 0.03 sd): 5.00x "
                        "torch-eager float32 at batch 1 (PASS, target 4x)")
    assert "torch-cpu bf16 is 2.00x torch-eager at batch 1 but its validated max error is 0.2 sd, over" in lines[1]
    rows[2]["validated_max_sd"] = 0.7
    first = bn.target_lines(rows)[0]
    assert "is onnxruntime fp32" in first and "2.50x" in first and "(FAIL, target 4x)" in first


def test_the_device_rows_run_their_code_with_the_cpu_stand_in(runner, model):
    """device_preprocess, device_crop_difference and end_to_end without writes through a device
    input, here with the CPU stand-in of nvJPEG (engine.pipeline.device_input.HostBackend): the
    benchmark's own code, ahead of the GPU run that measures them for real."""
    from engine.bench import stages
    from engine.pipeline import Reconstructor
    from engine.pipeline.device_input import DeviceInput, HostBackend

    with Reconstructor(runner=runner, model=model, batch_size=2, detector=None, device_input=False) as rec, \
            Reconstructor(runner=runner, model=model, batch_size=2, detector=None,
                          device_input=DeviceInput(HostBackend())) as drec:
        ctx = stages.Context(rec, 2, stages.workload(), measure.QUICK, "m")
        row = stages.device_preprocess(ctx, drec)
        note = stages.device_crop_difference(ctx, drec)
        samples = stages.end_to_end(ctx, 2, rec=drec, write=False)
    assert row.stage == "device_preprocess" and row.batch == 2 and row.throughput_per_s > 0
    assert drec.device_input.decoded >= 2 * row.iterations and not drec.device_input.fallbacks
    max_diff = float(note.split("max ")[1].split(",")[0])
    assert note.startswith("crop vs the CPU path's: max ") and max_diff <= 1  # same decoder here: the crop rule
    assert len(samples.times) == 1 and samples.fill > 0  # 2 batches: one interval
