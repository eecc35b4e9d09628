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
            _row("write", 250.0, device="cuda")]
    (line,) = report.verdicts(rows)
    assert "bound by write" in line  # 4 ms per face on one core against 0.5 ms on the GPU
    assert "CPU cores to keep the GPU busy: 12.0" in line  # (1/500 + 1/250) s per face * 2000 faces/s


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
