"""engine.pipeline.Reconstructor on real photos (skimage.data), with the real runner and decoder.

The network is the default CPU runner on the default weights (synthetic unless converted);
one runner is shared by the whole module (session scope) because building it costs seconds
and each image costs ~0.1-0.3 s, so the tests use few, small batches.
"""
from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from engine.errors import InputError

skimage_data = pytest.importorskip("skimage.data")

BOX = (170.0, 75.0, 280.0, 185.0)  # around the astronaut's face
HAS_DLIB = importlib.util.find_spec("dlib") is not None


@pytest.fixture()
def photos(tmp_path, astronaut):
    """astronaut.jpg, coffee.jpg, a zero-byte .jpg and a text file named .jpg."""
    from PIL import Image

    Image.fromarray(astronaut).save(tmp_path / "astronaut.jpg", quality=92)
    Image.fromarray(skimage_data.coffee()).save(tmp_path / "coffee.jpg", quality=92)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    return tmp_path


def make(runner, model, **kw):
    from engine.pipeline import Reconstructor

    kw.setdefault("batch_size", 2)
    return Reconstructor(runner=runner, model=model, **kw)


def engine_threads():
    return [t for t in threading.enumerate() if t.name.startswith("engine-") and t.is_alive()]


def test_given_box_on_a_real_photo_writes_a_labelled_mesh(runner, model, photos):
    path = str(photos / "astronaut.jpg")
    with make(runner, model, detector=None) as rec:
        (r,) = list(rec.reconstruct([path], boxes={path: [BOX]}))
    assert r.error is None and r.source == path and r.face_index == 0 and r.frame is None
    assert r.box.as_tuple() == BOX and r.box.kind == "given"
    assert r.coeffs.shape == (198,) and r.coeffs.dtype == np.float32 and np.isfinite(r.coeffs).all()
    n = model.num_vertices
    assert r.vertices.shape == (n, 3) and r.colors.shape == (n, 3) and r.records.shape == (n,)
    assert r.faces.shape == (model.num_faces, 3)
    assert r.provenance["network_synthetic"] == runner.synthetic
    assert r.provenance["morphable_synthetic"] is True and r.provenance["runner"] == runner.name
    out = photos / "out.ply"
    r.write_mesh(out)
    data = out.read_bytes()
    header = data[: data.index(b"end_header")].decode()
    assert "synthetic" in header.lower() and f"element vertex {n}" in header
    assert [p.name for p in photos.iterdir() if "partial" in p.name] == []


def test_results_equal_direct_runner_and_decoder_and_are_views(runner, model, photos, astronaut):
    from engine.crop import crop_face
    from engine.decode import Decoder
    from engine.images import load_image

    path = str(photos / "astronaut.jpg")
    boxes = {path: [BOX, (150.0, 60.0, 300.0, 210.0)]}  # two faces of one image: one batch of 2
    # the CPU input path (on a GPU, nvJPEG would decode this JPEG: tests/test_device_input.py)
    with make(runner, model, detector=None, device_input=False) as rec:
        res = list(rec.reconstruct([path], boxes=boxes, keep_crops=True))
    assert [r.face_index for r in res] == [0, 1]
    img = load_image(path)
    crops = np.stack([crop_face(img, b) for b in boxes[path]])
    np.testing.assert_array_equal(np.stack([r.crop for r in res]), crops)
    coeffs = runner.run(crops)
    np.testing.assert_allclose(np.stack([r.coeffs for r in res]), coeffs, rtol=1e-5, atol=1e-5)
    ref = Decoder(model).decode(np.stack([r.coeffs for r in res]))
    for i, r in enumerate(res):
        np.testing.assert_allclose(r.vertices, ref.vertices[i], atol=1e-4)
        np.testing.assert_array_equal(r.colors, ref.colors[i])
        np.testing.assert_array_equal(r.records, ref.records[i])
    # zero-copy: alpha/beta are views of coeffs; faces of a batch are rows of one buffer
    assert np.shares_memory(res[0].alpha, res[0].coeffs) and np.shares_memory(res[0].beta, res[0].coeffs)
    assert res[0].alpha.shape == (99,) and res[0].beta.shape == (99,)
    for name in ("vertices", "colors", "records", "coeffs", "crop"):
        a, b = getattr(res[0], name), getattr(res[1], name)
        assert a.base is not None and a.base is b.base, name
        assert not np.shares_memory(a, b)


def test_reconstruct_crops_matches_runner_and_shares_the_callers_crops(runner, model, astronaut):
    from engine.crop import crop_face

    crops = np.stack([crop_face(astronaut, BOX), crop_face(astronaut[:, ::-1].copy(), BOX)])
    with make(runner, model) as rec:
        res = rec.reconstruct_crops(crops)
    np.testing.assert_allclose(np.stack([r.coeffs for r in res]), runner.run(crops), rtol=1e-5, atol=1e-5)
    assert [r.face_index for r in res] == [0, 1]
    assert np.shares_memory(res[1].crop, crops) and res[1].vertices.shape == (model.num_vertices, 3)


def test_gpu_record_views_are_zero_copy_and_exact(model):
    """The GPU path copies back only the PLY records and derives vertices/colours as views."""
    from engine.decode import Decoder
    from engine.pipeline.results import record_views

    rng = np.random.default_rng(0)
    d = Decoder(model).decode(rng.standard_normal((2, 198)).astype(np.float32))
    v, c = record_views(d.records)
    assert np.shares_memory(v, d.records) and np.shares_memory(c, d.records)
    np.testing.assert_array_equal(v, d.vertices)
    np.testing.assert_array_equal(c, d.colors)


def test_arrays_pairs_and_bytes(runner, model, astronaut, photos):
    jpeg = (photos / "astronaut.jpg").read_bytes()
    boxes = {"<array 0>": [BOX], "mine": [BOX], "<bytes 1>": [BOX]}
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([astronaut, ("mine", astronaut), jpeg], boxes=boxes))
    assert [(r.source, r.error) for r in res] == [("<array 0>", None), ("mine", None), ("<bytes 1>", None)]
    np.testing.assert_allclose(res[0].coeffs, res[1].coeffs, rtol=1e-5, atol=1e-5)  # same pixels
    assert all(r.vertices is None and r.records is None for r in res)  # embed: no decode
    with pytest.raises(InputError, match="decode=False"):
        res[0].write_mesh(photos / "x.ply")


def test_already_cropped_mode(runner, model, astronaut):
    from engine.crop import crop_bounds, prepare_cropped

    bl, bt, br, bb = crop_bounds(BOX)
    face = np.ascontiguousarray(astronaut[bt:bb, bl:br])
    with make(runner, model, detector=None) as rec:
        (r,) = list(rec.reconstruct([("face", face)], cropped=True, keep_crops=True))
    assert r.error is None and r.box is None
    np.testing.assert_array_equal(r.crop, prepare_cropped(face))
    np.testing.assert_allclose(r.coeffs, runner.run(prepare_cropped(face)[None])[0], rtol=1e-5, atol=1e-5)


def test_bad_inputs_yield_error_results_and_the_run_goes_on(runner, model, photos):
    good = str(photos / "astronaut.jpg")
    inputs = [good, str(photos / "empty.jpg"), str(photos / "text.jpg"), str(photos / "missing.jpg"), good]
    boxes = {good: [BOX]}
    with make(runner, model, detector=None) as rec:
        res = list(rec.reconstruct(inputs, boxes=boxes))
    assert [r.source for r in res] == inputs
    assert [r.face_index for r in res] == [0, -1, -1, -1, 0]
    assert res[0].error is None and res[4].error is None
    assert "empty.jpg" in res[1].error and "0 bytes" in res[1].error
    assert "text.jpg" in res[2].error and "missing.jpg" in res[3].error
    assert all(r.coeffs is None and r.vertices is None for r in res[1:4])
    with pytest.raises(InputError, match="failed"):
        res[1].write_mesh(photos / "x.ply")
    np.testing.assert_allclose(res[0].coeffs, res[4].coeffs, rtol=1e-5, atol=1e-5)


def test_no_box_and_detection_off_is_a_per_input_error(runner, model, astronaut):
    with make(runner, model, detector=None) as rec:
        (r,) = list(rec.reconstruct([astronaut]))
    assert r.face_index == -1 and "detector=None" in r.error


@pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed")
def test_dlib_detection_finds_the_astronaut_and_no_face_in_coffee(runner, model, astronaut):
    with make(runner, model, detector="auto") as rec:
        res = list(rec.reconstruct([("astronaut", astronaut), ("coffee", skimage_data.coffee())]))
    assert [(r.source, r.face_index) for r in res] == [("astronaut", 0), ("coffee", -1)]
    box = res[0].box
    assert box.kind in ("landmarks", "detector") and 150 < (box.x0 + box.x1) / 2 < 290
    assert "no face found" in res[1].error


def test_order_is_deterministic_with_several_workers(runner, model, astronaut):
    """Images of different sizes (so prep times differ) with 1 or 2 faces, 3 workers,
    batches that split an image's faces: output order is input order then face order."""
    from engine.crop import crop_faces

    imgs = [("big", np.pad(astronaut, ((0, 600), (0, 600), (0, 0)))), ("small", astronaut[:300, :300].copy()),
            ("flip", astronaut[:, ::-1].copy()), ("plain", astronaut)]
    boxes = {"big": [BOX], "small": [BOX, (160.0, 60.0, 290.0, 200.0)],
             "flip": [(232.0, 75.0, 342.0, 185.0)], "plain": [(160.0, 60.0, 290.0, 200.0)]}
    with make(runner, model, detector=None, workers=3, batch_size=3) as rec:
        res = list(rec.embed(imgs, boxes=boxes))
    assert [(r.source, r.face_index) for r in res] == [("big", 0), ("small", 0), ("small", 1), ("flip", 0),
                                                       ("plain", 0)]
    crops = np.concatenate([crop_faces(img, boxes[name]) for name, img in imgs])
    np.testing.assert_allclose(np.stack([r.coeffs for r in res]), runner.run(crops), rtol=1e-4, atol=1e-4)


def test_input_is_consumed_lazily_and_closing_stops_the_threads(runner, model, astronaut):
    consumed = []

    def endless():
        i = 0
        while True:
            consumed.append(i)
            yield (f"img{i}", astronaut)
            i += 1

    rec = make(runner, model, detector=None, batch_size=1, workers=2)
    it = rec.reconstruct(endless(), boxes={f"img{i}": [BOX] for i in range(100)}, decode=False)
    first = [next(it), next(it)]
    assert [r.source for r in first] == ["img0", "img1"]
    assert len(consumed) < 20  # bounded read-ahead, not the whole (endless) input
    it.close()
    assert engine_threads() == []
    rec.close()


def test_interrupt_in_a_worker_stops_cleanly_without_partial_files(runner, model, astronaut, tmp_path):
    calls = []

    def detector(image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C looks like when it lands in a worker's call
        return [BOX]

    written = []
    with make(runner, model, detector=detector, batch_size=1, workers=1) as rec:
        with pytest.raises(KeyboardInterrupt):
            for r in rec.reconstruct([(f"img{i}", astronaut) for i in range(8)]):
                p = tmp_path / f"{r.name}.ply"
                r.write_mesh(p)
                written.append(p.name)
    assert engine_threads() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)  # whole files only, no .partial
    assert len(written) <= 2


def test_video_frames(runner, model, astronaut, tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "clip.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
    if not w.isOpened():
        pytest.skip("OpenCV cannot write an MJPG .avi here")
    for _ in range(3):
        w.write(astronaut[:, :, ::-1].copy())
    w.release()
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([path], boxes={path: [BOX]}))
    assert [(r.source, r.frame, r.face_index, r.error) for r in res] == [(path, i, 0, None) for i in range(3)]
    assert res[0].name == "clip_f000000_face0"
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([path], boxes={path: [BOX]}, frame_step=2))
        assert [r.frame for r in res] == [0, 2]  # the video's own frame numbers
        res = list(rec.embed([path], boxes={path: [BOX]}, max_frames=1))
        assert [r.frame for r in res] == [0]
        for bad in ({"frame_step": 0}, {"frame_step": 1.5}, {"max_frames": 0}, {"max_frames": True}):
            with pytest.raises(InputError, match=next(iter(bad))):  # at the call, not mid-run
                rec.embed([path], **bad)


def test_bad_arguments_name_the_argument(runner, model):
    from engine.pipeline import Reconstructor

    with pytest.raises(InputError, match="batch_size"):
        Reconstructor(runner=runner, model=model, batch_size=0)
    with pytest.raises(InputError, match="detector"):
        Reconstructor(runner=runner, model=model, detector="mtcnn")
    with make(runner, model) as rec:
        with pytest.raises(InputError, match="boxes"):
            rec.reconstruct([], boxes=[BOX])
        with pytest.raises(InputError, match="inputs"):
            rec.reconstruct(3.5)
        with pytest.raises(InputError, match="crops"):
            rec.reconstruct_crops(np.zeros((1, 3, 100, 100), np.float32))
    with pytest.raises(InputError, match="after close"):
        list(rec.reconstruct([]))


def test_ctrl_c_while_waiting_for_the_network_stops_without_hanging(runner, model, astronaut, tmp_path):
    """SIGINT delivered to the main thread while it waits on the pipeline (as a real Ctrl-C)."""
    import _thread

    rec = make(runner, model, detector=None, batch_size=1, workers=2)
    inputs = [(f"img{i}", astronaut) for i in range(200)]
    timer = threading.Timer(0.3, _thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        for r in rec.reconstruct(inputs, boxes={n: [BOX] for n, _ in inputs}):
            r.write_mesh(tmp_path / f"{r.name}.ply")
            if not timer.is_alive() and not timer.finished.is_set():
                timer.start()  # the interrupt lands while the loop waits for later faces
    timer.cancel()
    assert engine_threads() == []
    written = sorted(tmp_path.iterdir())
    assert all(p.suffix == ".ply" for p in written)  # no partial files
    # Stopped after the faces in flight, not after all 200 (one face takes tens of ms).
    assert 1 <= len(written) < 100, len(written)
    rec.close()


def test_folder_glob_and_csv_sidecar(runner, model, photos):
    """A folder expands in path order; the CSV sidecar names files by file name; inputs
    without a box (detection off) and unreadable files are error results in their place."""
    sidecar = photos / "boxes.csv"
    sidecar.write_text("image,x0,y0,x1,y1\nastronaut.jpg,%g,%g,%g,%g\n" % BOX)
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([str(photos), str(photos / "nothing*.png")], boxes=sidecar))
    names = [(r.source.replace(str(photos), "D"), r.face_index) for r in res]
    assert names == [("D/astronaut.jpg", 0), ("D/coffee.jpg", -1), ("D/empty.jpg", -1), ("D/text.jpg", -1),
                     ("D/nothing*.png", -1)]
    assert res[0].box.kind == "given" and res[0].box.as_tuple() == BOX
    assert "detector=None" in res[1].error and "matched no image or video files" in res[4].error


def test_closing_the_reconstructor_mid_run_raises_instead_of_truncating(runner, model, astronaut):
    from engine.errors import BackendError

    rec = make(runner, model, detector=None, batch_size=1)
    inputs = [(f"img{i}", astronaut) for i in range(50)]
    it = rec.embed(inputs, boxes={n: [BOX] for n, _ in inputs})
    assert next(it).source == "img0"
    rec.close()
    with pytest.raises(BackendError, match="closed before all results"):
        list(it)
    assert engine_threads() == []


def _core_has_cuda() -> bool:
    from engine import _core

    return _core.has_cuda()


@pytest.mark.cuda
@pytest.mark.skipif(not _core_has_cuda(), reason="needs an NVIDIA GPU and the CUDA build of engine._C")
def test_gpu_pipeline_decodes_on_the_device_and_matches_the_cpu_decoder(model, astronaut):
    """torch-cuda runner: coefficients go to the CUDA decode kernel on the runner's stream;
    the records copied back equal the CPU kernel's decode of the same coefficients."""
    from engine.decode import Decoder
    from engine.pipeline import Reconstructor

    with Reconstructor(runner="torch-cuda", model=model, batch_size=2, detector=None) as rec:
        assert rec.on_gpu and rec.provenance["decode_device"] == "cuda"
        res = list(rec.reconstruct([("a", astronaut), ("b", astronaut[:, ::-1].copy())],
                                   boxes={"a": [BOX], "b": [(232.0, 75.0, 342.0, 185.0)]}))
    coeffs = np.stack([r.coeffs for r in res])
    ref = Decoder(model).decode(coeffs)
    for i, r in enumerate(res):
        np.testing.assert_allclose(r.vertices, ref.vertices[i], atol=1e-3)
        assert np.abs(r.colors.astype(int) - ref.colors[i]).max() <= 1
        assert np.shares_memory(r.vertices, r.records) and np.shares_memory(r.colors, r.records)


class _NaNOnBlackRunner:
    """The real runner, except that an all-black crop gives NaN coefficients (and one with
    a zero first pixel, +Inf): a network blowing up on one face of a batch."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.device, self.precision = inner.name, "cpu", inner.precision

    @staticmethod
    def _poison(out, crops):
        flat = np.asarray(crops).reshape(crops.shape[0], -1)
        for i in np.flatnonzero((flat == 0).all(axis=1)):
            out[int(i), 5] = float("nan")
        for i in np.flatnonzero((flat != 0).any(axis=1) & (flat[:, 0] == 0)):
            out[int(i), 0] = float("inf")
        return out

    def run(self, crops):
        return self._poison(self.inner.run(crops), crops)


class _NaNOnBlackCudaRunner(_NaNOnBlackRunner):
    """The same on a CUDA runner: the NaN/Inf are written on the runner's stream."""

    def __init__(self, inner):
        super().__init__(inner)
        self.device, self.stream = "cuda", inner.stream

    def run_device(self, crops):
        import torch

        out = self.inner.run_device(crops)
        # The runner returns an inference-mode tensor: writing into it needs inference mode too
        # (found on an H200: "Inplace update to inference tensor outside InferenceMode").
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            return self._poison(out, crops)


def test_non_finite_coefficients_fail_that_face_only_and_the_run_goes_on(runner, model, astronaut):
    black = np.zeros_like(astronaut)
    dark_corner = astronaut.copy()
    dark_corner[:40, :40] = 0  # the box below starts outside the image: zero first pixel
    inputs = [("a", astronaut), ("black", black), ("corner", dark_corner), ("b", astronaut)]
    boxes = {"a": [BOX], "black": [BOX, BOX], "corner": [(0.0, 0.0, 60.0, 60.0)], "b": [BOX]}
    fake = _NaNOnBlackRunner(runner)
    with make(fake, model, detector=None, batch_size=3) as rec:
        res = list(rec.reconstruct(inputs, boxes=boxes))
        emb = list(rec.embed(inputs, boxes=boxes))
        zero, ok = rec.reconstruct_crops(np.stack([np.zeros((3, 224, 224), np.float32),
                                                   np.full((3, 224, 224), 50, np.float32)]))
    assert [(r.source, r.face_index) for r in res] == [("a", 0), ("black", 0), ("black", 1), ("corner", 0), ("b", 0)]
    for bad in (res[1], res[2], res[3], emb[1], emb[2], emb[3]):
        assert bad.error is not None and "non-finite coefficients" in bad.error
        assert bad.error.startswith(f"{bad.source} face {bad.face_index}:")
        assert bad.coeffs is None and bad.vertices is None and bad.box is not None
        with pytest.raises(InputError, match="failed"):
            bad.write_mesh("never.ply")
    for good in (res[0], res[4]):
        assert good.error is None and np.isfinite(good.vertices).all()
    np.testing.assert_allclose(res[0].coeffs, res[4].coeffs, rtol=1e-5, atol=1e-5)
    assert emb[0].error is None and emb[4].error is None and emb[0].vertices is None
    assert zero.error == "<crops> face 0: the network produced non-finite coefficients (NaN or Inf); no mesh"
    assert ok.error is None and np.isfinite(ok.vertices).all()


def test_a_huge_caller_box_is_cropped_without_a_huge_allocation(runner, model, astronaut):
    # The largest box the box rule admits on this 512 px image (+-10 x its side): its padded
    # crop would need ~4 GB; it is sampled straight from the image (engine.crop).
    huge = (-5120, -5120, 5120, 5120)
    inputs = [("huge", astronaut), ("a", astronaut)]
    with make(runner, model, detector=None) as rec:
        res = list(rec.reconstruct(inputs, boxes={"huge": [huge], "a": [BOX]}, keep_crops=True))
    assert [(r.source, r.face_index, r.error) for r in res] == [("huge", 0, None), ("a", 0, None)]
    from engine.crop import crop_face

    np.testing.assert_array_equal(res[0].crop, crop_face(astronaut, huge))
    assert np.isfinite(res[0].vertices).all()
    assert np.isfinite(res[1].vertices).all()


@pytest.mark.cuda
@pytest.mark.skipif(not _core_has_cuda(), reason="needs an NVIDIA GPU and the CUDA build of engine._C")
def test_gpu_pipeline_non_finite_coefficients_fail_that_face_only(model, astronaut):
    from engine.runners import create_runner

    inputs = [("a", astronaut), ("black", np.zeros_like(astronaut)), ("b", astronaut)]
    boxes = {"a": [BOX], "black": [BOX], "b": [BOX]}
    with create_runner("torch-cuda", max_batch=8) as inner, \
            make(_NaNOnBlackCudaRunner(inner), model, detector=None, batch_size=3) as rec:
        assert rec.on_gpu
        res = list(rec.reconstruct(inputs, boxes=boxes))
        emb = list(rec.embed(inputs, boxes=boxes))
    for bad in (res[1], emb[1]):
        assert bad.error == "black face 0: the network produced non-finite coefficients (NaN or Inf); no mesh"
        assert bad.coeffs is None and bad.vertices is None
    for good in (res[0], res[2]):
        assert good.error is None and np.isfinite(good.vertices).all()
    assert emb[0].error is None and emb[2].error is None


# --------------------------------------------------------------------------- faces: sidecars, detector options


def test_bad_sidecar_rows_and_absurd_boxes_fail_their_input_only(runner, model, photos):
    """Issue 13 finding 6: a bad number in a --boxes sidecar (or an API box) fails that image,
    with the file, line and value; before, 1e308 raised OverflowError and stopped the run."""
    from PIL import Image

    src = Image.open(photos / "astronaut.jpg")
    names = ["good.jpg", "e308.jpg", "digits.jpg", "far.jpg", "last.jpg"]
    for n in names:
        src.save(photos / n, quality=92)
    sidecar = photos / "boxes.csv"
    sidecar.write_text("image,x0,y0,x1,y1\n"
                       f"good.jpg,{','.join(map(str, BOX))}\n"
                       "e308.jpg,10,10,1e308,100\n"
                       f"digits.jpg,{'9' * 400},10,20,30\n"
                       "far.jpg,0,0,1000000,1000000\n"  # fine alone; 2,000 x this 512 px image
                       f"last.jpg,{','.join(map(str, BOX))}\n")
    paths = [str(photos / n) for n in names]
    with make(runner, model, detector=None) as rec:
        res = list(rec.reconstruct(paths, boxes=str(sidecar)))
        jpeg = (photos / "good.jpg").read_bytes()
        api = list(rec.reconstruct([("a", jpeg), ("b", jpeg)],
                                   boxes={"a": [(10, 10, 1e308, 100)], "b": [BOX]}))
    assert [(r.source, r.face_index) for r in res] == [(paths[0], 0), (paths[1], -1), (paths[2], -1),
                                                       (paths[3], -1), (paths[4], 0)]
    assert res[1].error == f"{sidecar} line 3, field x1: expected a finite number within +-2147483648 px, found 1e+308"
    assert res[2].error.startswith(f"{sidecar} line 4, field x0: expected a finite number, found '999")
    assert res[3].error == (f"{sidecar} line 5, field x1: expected a coordinate within +-5120 px (10 x the longer "
                            "side of this 512x512 image), found 1e+06")
    np.testing.assert_allclose(res[0].coeffs, res[4].coeffs, rtol=1e-5, atol=1e-5)
    assert [(r.source, r.face_index) for r in api] == [("a", -1), ("b", 0)]
    assert "field x1: expected a finite number within +-2147483648 px, found 1e+308" in api[0].error


def test_an_unexpected_error_preparing_one_input_fails_that_input_only(runner, model, astronaut):
    """Anything a worker raises that is not an engine error (a caller's detector failing, a
    library's untyped error) is that input's failure, named, and the run goes on."""
    def detector(image):
        if image[0, 0, 0] == 0:
            raise RuntimeError("the caller's detector gave up")
        return [BOX]

    black_corner = astronaut.copy()
    black_corner[0, 0] = 0
    inputs = [("a", astronaut), ("bad", black_corner), ("b", astronaut)]
    with make(runner, model, detector=detector) as rec:
        res = list(rec.reconstruct(inputs))
    assert [(r.source, r.face_index) for r in res] == [("a", 0), ("bad", -1), ("b", 0)]
    assert res[1].error == ("bad: unexpected error while reading, detecting or cropping this input: "
                            "RuntimeError: the caller's detector gave up")


@pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed")
def test_detector_options_reach_the_detector(runner, model, astronaut):
    from PIL import Image, ImageFilter

    # The astronaut's face cut out and blurred: dlib's only box scores under 0.5 (tests/inputs/test_detect.py).
    blurred = np.asarray(Image.fromarray(astronaut).crop((100, 0, 356, 256)).filter(ImageFilter.GaussianBlur(3)))
    with make(runner, model) as rec:
        (default,) = list(rec.reconstruct([("blurred", blurred)]))
    with make(runner, model, det_threshold=0.5, det_upsample=0, det_max_side=None) as rec:
        (strict,) = list(rec.reconstruct([("blurred", blurred)]))
    assert default.error is None and 0 < default.box.score < 0.5
    assert strict.error == ("blurred: no face found (dlib HOG detector: faces from score 0.5, upsample 0, "
                            "full size)")
    for kw, msg in [({"det_threshold": float("inf")}, "det_threshold"), ({"det_upsample": 9}, "det_upsample"),
                    ({"det_max_side": 8}, "det_max_side")]:
        with pytest.raises(InputError, match=f"^Reconstructor: {msg}"):
            make(runner, model, **kw)


@pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed")
def test_a_missing_landmark_model_is_said_once_per_run(runner, model, astronaut, monkeypatch, caplog):
    """The release cropped from the 68-landmark box; without the landmark model the faces are
    cropped from dlib's box. One warning per run says so, however many faces and workers."""
    import logging

    from engine import detect
    from engine.crop import crop_rule

    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="engine"):
        m.setattr(detect, "landmark_model_path", lambda: None)  # as on a machine without the package
        with make(runner, model, workers=2) as rec:
            res = list(rec.reconstruct([("a", astronaut), ("b", astronaut), ("c", astronaut)]))
    assert [r.error for r in res] == [None] * 3
    assert [crop_rule(r.box) for r in res] == ["detector"] * 3
    said = [r for r in caplog.records if "landmark model" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in caplog.records]
    if detect.landmark_model_path() is None:
        return  # nothing to compare with on a machine without the package
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine"), make(runner, model, workers=2) as rec:
        assert [crop_rule(r.box) for r in rec.reconstruct([("a", astronaut)])] == ["landmarks"]
    assert not [r for r in caplog.records if "landmark model" in r.getMessage()]


def test_a_cut_video_yields_its_whole_frames_then_a_failure_naming_the_first_lost(runner, model, astronaut, tmp_path):
    # engine.images drops the frame at the break (decoded partly grey, without an error) and
    # the pipeline reports the video's failure in its place, with that frame's number.
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 256))
    if not w.isOpened():
        pytest.skip("OpenCV cannot write an MJPG .avi here")
    for i in range(8):  # the astronaut, the view moving 8 px per frame
        w.write(np.ascontiguousarray(cv2.resize(astronaut[8 * i:8 * i + 400, 8 * i:8 * i + 400, ::-1], (256, 256))))
    w.release()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 5 // 8])
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([str(path)], cropped=True))
    *frames, failure = res
    assert [r.frame for r in frames] == list(range(len(frames))) and all(r.ok for r in frames)
    assert failure.error is not None and failure.face_index == -1 and failure.frame == len(frames)
    assert f"frame {len(frames)} of 8: the video ends early" in failure.error and 2 <= len(frames) <= 6


# --------------------------------------------------------------------------- the tester's findings, through the API


def test_api_boxes_follow_the_one_matching_rule(runner, model, photos, caplog, monkeypatch):
    """Box mappings and sidecars given to the API match inputs as --boxes does (engine.box_match):
    a bare name two inputs share fails both, a path below the folder given finds its file, and
    the entries that match nothing are one warning."""
    import logging

    from PIL import Image

    monkeypatch.chdir(photos)
    for sub in ("a", "b"):
        (photos / "album" / sub).mkdir(parents=True)
        Image.open(photos / "astronaut.jpg").save(photos / "album" / sub / "img.jpg", quality=92)
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed(["album/a", "album/b"], boxes={"img.jpg": [BOX]}))
        assert [(r.source, r.face_index) for r in res] == [("album/a/img.jpg", -1), ("album/b/img.jpg", -1)]
        assert res[0].error.startswith("album/a/img.jpg: boxes: entry 'img.jpg' matches 2 inputs ('album/a/img.jpg', "
                                       "'album/b/img.jpg')")
        with caplog.at_level(logging.WARNING, logger="engine"):
            res = list(rec.embed(["album"], boxes={"a/img.jpg": [BOX], "zzz.jpg": [BOX]}, recursive=True))
        assert [(r.source, r.face_index) for r in res] == [("album/a/img.jpg", 0), ("album/b/img.jpg", -1)]
        assert res[1].error == ("album/b/img.jpg: no face box given for this input and detection is off "
                                "(detector=None): pass boxes for it, or cropped=True")
        said = [r.getMessage() for r in caplog.records if "match" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("boxes: 1 of its 2 entries matches no input of this run: "
                                                     "'zzz.jpg'")
        # A one-shot iterator is read lazily: each input is matched alone (the same file, or
        # below its folder), never by a bare name that another input might share.
        res = list(rec.embed(iter(["album/a/img.jpg", "./astronaut.jpg"]), boxes={"astronaut.jpg": [BOX],
                                                                                  "img.jpg": [BOX]}))
        assert [(r.source, r.face_index) for r in res] == [("album/a/img.jpg", -1), ("./astronaut.jpg", 0)]


def test_api_boxes_wholly_outside_the_image_fail_that_input(runner, model, astronaut):
    with make(runner, model, detector=None) as rec:
        res = list(rec.embed([("far", astronaut), ("ok", astronaut)],
                             boxes={"far": [(-5000, -5000, -4000, -4000)], "ok": [BOX]}))
    assert [(r.source, r.face_index) for r in res] == [("far", -1), ("ok", 0)]
    assert res[0].error == ("boxes['far']: the box (x0=-5000 y0=-5000 x1=-4000 y1=-4000) lies wholly outside this "
                            "512x512 image: expected part of it inside (x0 < 512, x1 > 0, y0 < 512, y1 > 0)")


def test_api_folders_give_their_videos_and_say_what_they_left_out(runner, model, astronaut, tmp_path, caplog):
    import logging

    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "a.jpg", quality=92)
    Image.fromarray(astronaut).save(tmp_path / "sub" / "b.jpg", quality=92)
    w = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
    if not w.isOpened():
        pytest.skip("OpenCV cannot write an MJPG .avi here")
    for _ in range(2):
        w.write(astronaut[:, :, ::-1].copy())
    w.release()
    with make(runner, model, detector=None) as rec, caplog.at_level(logging.WARNING, logger="engine"):
        res = list(rec.embed([str(tmp_path)], cropped=True))
        assert [(r.source.replace(str(tmp_path), "D"), r.frame) for r in res] == [("D/a.jpg", None),
                                                                                 ("D/clip.avi", 0), ("D/clip.avi", 1)]
        said = [r.getMessage() for r in caplog.records]
        assert said == [f"{tmp_path}: 1 sub-folder(s) holding images or videos were not searched "
                        f"({tmp_path / 'sub'}/): recursive=True searches them"]
        res = list(rec.embed(str(tmp_path / "*.avi"), cropped=True))  # patterns take videos
        assert [r.frame for r in res] == [0, 1] and all(r.ok for r in res)
        res = list(rec.embed([str(tmp_path)], cropped=True, recursive=True))
        assert [r.source.replace(str(tmp_path), "D") for r in res] == ["D/a.jpg", "D/clip.avi", "D/clip.avi",
                                                                       "D/sub/b.jpg"]


def test_api_sizes_are_bounded(runner, model):
    from engine.pipeline import Reconstructor

    for kw, msg in [({"batch_size": 100000}, "batch_size: expected an integer in 1..1024, found 100000"),
                    ({"workers": 65}, "workers: expected an integer in 0..64, found 65"),
                    ({"threads": 5000}, "threads: expected an integer in 1..1024, found 5000"),
                    ({"threads": 0}, "threads: expected an integer in 1..1024, found 0")]:
        with pytest.raises(InputError, match=f"^Reconstructor: {msg}$"):
            Reconstructor(runner=runner, model=model, **kw)
    Reconstructor(runner=runner, model=model, batch_size=1024, workers=64).close()


def test_api_pixel_limit_message(runner, model, photos):
    with make(runner, model, detector=None, max_pixels=100) as rec:
        (r,) = list(rec.embed([str(photos / "astronaut.jpg")], cropped=True))
    assert r.error == (f"{photos / 'astronaut.jpg'}: image too large: 512x512 = 262144 pixels, limit is 100 "
                       "(raise max_pixels=)")
    with pytest.raises(InputError, match="max_pixels"):
        make(runner, model, max_pixels=0)
