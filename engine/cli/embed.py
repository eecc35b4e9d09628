"""`embed`: images -> descriptors, resumable.

Output folder:
    descriptors.npy  float32 [N, D] + metadata.csv (row, source, face_index, frame, box, score, network)
    or descriptors.parquet (--parquet): the same columns plus `descriptor` (list<float32>[D])
    provenance.json  which network made them: `network` is SYNTHETIC (placeholder weights) or
                     converted, as in every row's `network` column and the Parquet schema's
                     metadata (key "engine3dmm"); the closing line says SYNTHETIC too
                     It also records the rules the rows were made by: part, frames and `faces` (how
                     faces were found: --cropped, --boxes with the file's sha256, or the detector
                     with --det-threshold/--det-upsample/--det-max-side and its crop box)
    progress.json    which inputs are done (ok or failed, with each file's size and mtime_ns),
                     which chunks hold their rows, and the folder's rules (above)
    chunks/          chunk-NNNNN.npy + .csv (or .parquet): the durable, appended store

Work is saved every --flush-every inputs: first the chunk files, then progress.json
(both atomic), so a crash loses at most the inputs since the last flush and never leaves a
chunk half-recorded. Ctrl-C saves the inputs finished so far and merges them before the
process exits (a second Ctrl-C stops the merge, leaving the earlier merged files whole).
A rerun skips the inputs progress.json lists, runs the rest, and rewrites the merged
descriptors/metadata from all chunks. Merging streams chunk by chunk, so it needs no more
memory than one chunk, and takes about the time of copying the descriptors once.

An input whose file changed since it was embedded (another size or modification time) is
run again and its old rows replaced. Why size and mtime_ns rather than a content hash: a
rerun must cost a stat per done input, not a read of every byte (an LFW folder, or videos of
gigabytes); every ordinary way of replacing a file (save, copy, download, move) changes its
mtime. Not caught: a same-size replacement that also restores the old mtime (cp -p, rsync -t
of another file with the same time stamp). A rerun with other rules (part, frame options,
face settings, network) is refused: one table never mixes descriptors made by different rules.

--ray runs the inputs on a Ray Data actor pool (engine.distributed.embed) instead of this
process's Reconstructor; its results are written here by the same code, so the files, the
progress record and the resume rule are the same, with or without Ray, run after run.
"""
from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np

from engine.cli import common as C
from engine.errors import InputError, ModelFileError

PROGRESS = "progress.json"
PROVENANCE = "provenance.json"  # which network made the descriptors (SYNTHETIC or converted), their part
CHUNKS = "chunks"
COLUMNS = ("source", "face_index", "frame", "x0", "y0", "x1", "y1", "score")
# Provenance fields that decide what the numbers mean: a rerun must not mix descriptors of
# different networks into one table (runner and precision only move the last digits). The
# fingerprint is the sha256 of the weights themselves: the same weights moved to another
# folder (the "network" description names the path) are still the same network.
IDENTITY_KEYS = ("network_fingerprint", "network_synthetic")
# Recorded beside the identity for provenance.json (not compared: the fingerprint already
# covers the mean image, and older folders do not hold these).
DETAIL_KEYS = ("network_mean", "network_fp32_ops")
# Which frames of each video a folder's descriptors hold: a rerun must take the same ones.
DEFAULT_FRAMES = {"frame_step": 1, "max_frames": None}
# How faces were found (see face_settings): a rerun must find them the same way. A record from
# before these were kept holds detector rows made with the default options (engine.detect's);
# whether its rows came from --cropped, --boxes or the detector it cannot tell, so that part
# is taken from the first rerun.
DEFAULT_DETECTOR = {"threshold": None, "upsample": 1, "max_side": 2048}
FACE_FLAGS = {"mode": "how faces were found", "boxes_sha256": "--boxes (the file's contents)",
              "threshold": "--det-threshold", "upsample": "--det-upsample", "max_side": "--det-max-side",
              "crop_box": "the 68-point landmark model (face-recognition-models) installed or not"}


def face_settings(args) -> dict:
    """How this run finds faces, as the folder records it: {"mode": "cropped"}, {"mode":
    "boxes", "boxes_sha256": the sidecar's digest}, or {"mode": "detector", "threshold": None
    (the default rule) or T, "upsample": N, "max_side": PX or None (full size), "crop_box":
    "landmarks" or "detector" (which box a face is cropped from: the landmark model decides)}.
    Only the settings that change the rows are kept: the detector's options mean nothing with
    --cropped or --boxes."""
    if args.cropped:
        return {"mode": "cropped"}
    if args.boxes:  # read after load_boxes took it (bounded size, a missing file named there)
        import hashlib

        return {"mode": "boxes", "boxes_sha256": hashlib.sha256(Path(args.boxes).read_bytes()).hexdigest()}
    from engine.detect import landmark_model_path

    side = args.det_max_side
    return {"mode": "detector", "threshold": args.det_threshold, "upsample": args.det_upsample,
            "max_side": None if side == 0 else side,
            "crop_box": "landmarks" if landmark_model_path() is not None else "detector"}


def _face_value(key: str, faces: dict) -> str:
    """One face setting in words, for the refusal message."""
    if key not in faces:
        return "not used"
    v = faces[key]
    if key == "mode":
        return {"cropped": "--cropped", "boxes": "--boxes", "detector": "the detector"}.get(v, str(v))
    if key == "threshold" and v is None:
        return "the default rule"
    if key == "max_side" and v is None:
        return "full resolution (0)"
    if key == "boxes_sha256":
        return f"sha256 {str(v)[:12]}..."
    return str(v)


def file_stamp(path) -> dict | None:
    """What tells a changed input: {"size": bytes, "mtime_ns": ...}; None when it cannot be
    read now (the run then meets and reports the real error)."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# A progress record holds about 200 bytes per input: this bounds a run to about a million inputs
# per output folder, and the memory a damaged or hostile record can make the parser take.
PROGRESS_MAX_BYTES = 256 * 2 ** 20


def read_progress(path: Path) -> dict:
    """An output folder's progress record, parsed with bounded size and nesting (a damaged or
    hostile file is a ModelFileError naming it, never a RecursionError or MemoryError)."""
    from engine.fileio import read_json

    try:
        return read_json(path, max_bytes=PROGRESS_MAX_BYTES)
    except ModelFileError as e:
        raise ModelFileError(f"unreadable progress record: {e}; delete it (and {CHUNKS}/) to start this output "
                             "folder again") from None


class Store:
    """The output folder's progress record and chunk files."""

    def __init__(self, out: Path, fmt: str, part: str, frames: dict | None = None, faces: dict | None = None,
                 flag: str = "--output"):
        """faces: this run's face_settings (None: whatever the folder holds, for readers such as
        merge). flag: the option that named the folder, for messages."""
        self.out, self.fmt, self.part, self.flag = out, fmt, part, flag
        self.frames = dict(DEFAULT_FRAMES if frames is None else frames)
        self.faces = None if faces is None else dict(faces)
        self.path = out / PROGRESS
        self.state = {"version": 1, "format": fmt, "part": part, "frames": self.frames, "faces": self.faces,
                      "identity": None, "chunks": [], "inputs": {}}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        state = read_progress(self.path)
        self._check_fields(state)
        # Records written before frame options existed took every frame.
        state.setdefault("frames", dict(DEFAULT_FRAMES))
        for key, mine in (("format", self.fmt), ("part", self.part), ("frames", self.frames)):
            if state.get(key) != mine:
                flag = {"format": "--parquet", "part": "--part", "frames": "--frame-step/--max-frames"}[key]
                raise InputError(f"{self.out}: holds descriptors made with {key} {state.get(key)!r}, this run asks "
                                 f"for {mine!r} ({flag}); use another {self.flag} folder")
        upgraded = state.get("faces") is None and self.faces is not None
        if upgraded:  # a record from before faces were kept
            state["faces"] = {**self.faces, **{k: v for k, v in DEFAULT_DETECTOR.items() if k in self.faces}}
        if self.faces is not None and state.get("faces") != self.faces:
            theirs = state["faces"]
            if theirs.get("mode") != self.faces.get("mode"):  # the other settings then mean nothing
                differ = [f"{_face_value('mode', theirs)} there, {_face_value('mode', self.faces)} in this run"]
            else:
                keys = set(theirs) | set(self.faces)
                order = [k for k in FACE_FLAGS if k in keys] + sorted(keys - set(FACE_FLAGS))
                differ = [f"{FACE_FLAGS.get(k, k)}: {_face_value(k, theirs)} there, {_face_value(k, self.faces)} in "
                          "this run" for k in order if theirs.get(k) != self.faces.get(k)]
            raise InputError(f"{self.out}: holds descriptors whose faces were found otherwise ("
                             + "; ".join(differ) + f"); use another {self.flag} folder")
        self.faces = state.get("faces")
        for name in state["chunks"]:  # every recorded chunk must still be there
            for p in self.chunk_files(name):
                if not p.is_file():
                    raise ModelFileError(f"{p}: recorded in {self.path} but missing; delete {self.path} and "
                                         f"{self.out / CHUNKS} to start this output folder again")
        self.state = state
        if upgraded:  # kept from now on, also when this run has nothing new to record
            C.write_json(self.path, state)

    def _check_fields(self, state) -> None:
        """Every field the run relies on, with the right type (explicit: `assert` vanishes under -O)."""
        def bad(field: str, expected: str):
            return ModelFileError(f"{self.path}: field {field!r}: expected {expected}; delete it (and {CHUNKS}/) "
                                  "to start this output folder again")

        if not isinstance(state, dict):
            raise bad("(top level)", "a JSON object")
        for field, kind, expected in (("inputs", dict, "an object"), ("chunks", list, "a list")):
            if field not in state:
                raise bad(field, f"{expected}, found none")
            if not isinstance(state[field], kind):
                raise bad(field, f"{expected}, found {type(state[field]).__name__}")
        if "identity" not in state:
            raise bad("identity", "an object or null, found none")
        for field in ("identity", "faces"):
            if state.get(field) is not None and not isinstance(state[field], dict):
                raise bad(field, f"an object or null, found {type(state[field]).__name__}")
        for i, name in enumerate(state["chunks"]):
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
                raise bad(f"chunks[{i}]", f"a chunk name, found {name!r}")
        for key, rec in state["inputs"].items():
            if not isinstance(rec, dict) or rec.get("status") not in ("ok", "failed"):
                raise bad(f"inputs[{key!r}]", 'an object with "status" "ok" or "failed"')
            if rec["status"] == "failed" and not isinstance(rec.get("error"), str):
                raise bad(f"inputs[{key!r}].error", "the failure's message")
            if rec.get("chunk") is not None and not isinstance(rec.get("source"), str):
                raise bad(f"inputs[{key!r}].source", "the input's name as its rows give it")
            stamp = rec.get("file")
            if stamp is not None and not (isinstance(stamp, dict) and all(
                    type(stamp.get(k)) is int for k in ("size", "mtime_ns"))):
                raise bad(f"inputs[{key!r}].file", 'null or {"size": bytes, "mtime_ns": integer}')

    def chunk_files(self, name: str) -> list[Path]:
        d = self.out / CHUNKS
        return [d / f"{name}.parquet"] if self.fmt == "parquet" else [d / f"{name}.npy", d / f"{name}.csv"]

    def check_identity(self, provenance: dict) -> None:
        ident = {k: provenance.get(k) for k in IDENTITY_KEYS}
        if self.state["identity"] is None:
            self.state["identity"] = {**ident, **{k: provenance.get(k) for k in DETAIL_KEYS}}
            return
        # Only the identity fields count (records of earlier versions hold more, e.g. the path).
        mine = {k: self.state["identity"].get(k) for k in IDENTITY_KEYS}
        if mine != ident:
            raise InputError(f"{self.out}: holds descriptors of another network ({mine}), this "
                             f"run uses {ident}; use another {self.flag} folder")

    def done(self, key: str, retry_failed: bool, stamp: dict | None = None) -> dict | None:
        """The input's record when this run should skip it, else None. With retry_failed,
        failed inputs and inputs with some failed results (video frames, faces of a photo) run
        again (whole). An input whose file changed since (`stamp`, file_stamp's, differs from
        the recorded one) runs again; a record without a stamp (older runs) counts as unchanged."""
        rec = self.state["inputs"].get(key)
        if rec is None or (retry_failed and (rec["status"] == "failed" or rec.get("failed_results"))):
            return None
        if self.changed(key, stamp):
            return None
        return rec

    def changed(self, key: str, stamp: dict | None) -> bool:
        """Whether the recorded input `key` has another file now than when it was embedded."""
        rec = self.state["inputs"].get(key)
        return bool(rec and rec.get("file") is not None and rec["file"] != stamp)

    def live_sources(self) -> dict[str, set[str]]:
        """{chunk: sources whose current record names that chunk}. A row is current when
        its chunk is its input's recorded one: an input run again (--retry-failed on a
        video with failed frames) leaves superseded rows behind in an older chunk."""
        live: dict[str, set[str]] = {}
        for rec in self.state["inputs"].values():
            if rec.get("chunk"):
                live.setdefault(rec["chunk"], set()).add(rec["source"])
        return live

    def flush(self, rows: list[dict], descs: list[np.ndarray], finished: dict[str, dict]) -> None:
        """Write one chunk (if there are rows), then record it and `finished` inputs."""
        if not finished:
            return
        name = None
        if rows:
            name = f"chunk-{len(self.state['chunks']):05d}"
            (self.out / CHUNKS).mkdir(exist_ok=True)
            _write_chunk(self.chunk_files(name), self.fmt, rows, np.stack(descs))
            self.state["chunks"].append(name)
        for key, rec in finished.items():
            self.state["inputs"][key] = {**rec, "chunk": name if rec["status"] == "ok" else None}
        C.write_json(self.path, self.state)


def _write_chunk(files: list[Path], fmt: str, rows: list[dict], descs: np.ndarray) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from engine.fileio import atomic_write

        with atomic_write(files[0]) as f:
            pq.write_table(_arrow_table(rows, descs), f)
        return
    C.save_npy(files[0], descs.astype(np.float32))
    _write_csv(files[1], rows, start=0)


def _write_csv(path: Path, rows: list[dict], start: int) -> None:
    from engine.fileio import atomic_write

    with atomic_write(path, "w") as f:
        w = csv.writer(f)
        w.writerow(("row",) + COLUMNS)
        for i, r in enumerate(rows):
            w.writerow([start + i] + ["" if r[c] is None else r[c] for c in COLUMNS])


def _arrow_table(rows: list[dict], descs: np.ndarray):
    import pyarrow as pa

    cols = {c: [r[c] for r in rows] for c in COLUMNS}
    types = {"source": pa.string(), "face_index": pa.int32(), "frame": pa.int64(), "score": pa.float64(),
             **{c: pa.float64() for c in ("x0", "y0", "x1", "y1")}}
    arrays = {c: pa.array(cols[c], type=types[c]) for c in COLUMNS}
    flat = pa.array(np.ascontiguousarray(descs, np.float32).reshape(-1))
    arrays["descriptor"] = pa.FixedSizeListArray.from_arrays(flat, descs.shape[1])
    return pa.table(arrays)


def _lazy_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        from engine.errors import UnavailableError

        raise UnavailableError("--parquet needs pyarrow: pip install pyarrow (or the 'parquet' extra)") from None


def network_label(store: Store) -> str:
    """What made the descriptors, as every merged row and the sidecar say it: "SYNTHETIC"
    (placeholder weights: the numbers are meaningless), "converted" (weights converted from a caffemodel), or
    "" while nothing has been embedded."""
    ident = store.state.get("identity") or {}
    if "network_synthetic" not in ident:
        return ""
    return "SYNTHETIC" if ident["network_synthetic"] else "converted"


def _provenance(store: Store) -> dict:
    label = network_label(store)
    ident = store.state.get("identity") or {}
    return {"network": label or None, "synthetic": (label == "SYNTHETIC") if label else None,
            "network_fingerprint": ident.get("network_fingerprint"),
            "network_mean": ident.get("network_mean"),  # "per-channel": converted without the mean image
            "network_fp32_ops": ident.get("network_fp32_ops"),
            "part": store.part, "frames": store.frames,
            # how faces were found (face_settings): --cropped, --boxes (sha256 of the file), or the
            # detector's --det-threshold (None: the default rule), --det-upsample, --det-max-side
            # (None: full resolution) and crop box
            "faces": store.faces,
            "note": ("SYNTHETIC network weights: these descriptors are placeholders, meaningless until you "
                     "`engine3dmm convert` the official model") if label == "SYNTHETIC" else None}


def merge(store: Store) -> tuple[Path, int]:
    """Rewrite the merged output from every chunk, streaming; returns (path, rows). Every row
    says which network made it (column `network`: SYNTHETIC or converted), and so do the
    sidecar provenance.json and, for Parquet, the schema's metadata (key b"engine3dmm")."""
    import json

    from engine.fileio import atomic_write

    names = store.state["chunks"]
    live = store.live_sources()
    out = store.out
    dim = 198 if store.part == "all" else 99
    label = network_label(store)
    provenance = _provenance(store)
    C.write_json(out / PROVENANCE, provenance)
    if store.fmt == "parquet":
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        meta = {b"engine3dmm": json.dumps(provenance, allow_nan=False).encode()}

        def labelled(t):
            t = t.append_column("network", pa.array([label] * t.num_rows, pa.string()))
            return t.replace_schema_metadata({**(t.schema.metadata or {}), **meta})

        target = out / "descriptors.parquet"
        n = 0
        with atomic_write(target) as f:
            writer = None
            for name in names:
                t = pq.read_table(store.chunk_files(name)[0])
                t = labelled(t.filter(pc.is_in(t["source"], value_set=pa.array(sorted(live.get(name, ())),
                                                                                pa.string()))))
                writer = writer or pq.ParquetWriter(f, t.schema)
                writer.write_table(t)
                n += t.num_rows
            if writer is None:  # nothing embedded (yet): a valid, empty table
                pq.write_table(labelled(_arrow_table([], np.zeros((0, dim), np.float32))), f)
            else:
                writer.close()
        return target, n
    # Which rows are current, from the small CSVs; then one chunk open at a time: thousands
    # of chunks must not need thousands of open files (or memory maps) at once.
    keep = {}
    for name in names:
        npy, csv_path = store.chunk_files(name)
        rows, n_npy = _csv_rows(csv_path), _npy_rows(npy, dim)
        if len(rows) != n_npy:
            raise ModelFileError(f"{csv_path}: {len(rows)} rows, but its .npy holds {n_npy}; delete "
                                 f"{out / PROGRESS} and {out / CHUNKS} to start this output folder again")
        keep[name] = np.array([r[1] in live.get(name, ()) for r in rows], dtype=bool)
    total = int(sum(int(k.sum()) for k in keep.values()))
    target = out / "descriptors.npy"
    # Both files are written under temporary names and renamed together, with Ctrl-C (and SIGTERM)
    # held back between the two renames: an interruption never leaves a new table beside old metadata.
    with C.StopSignals() as held, atomic_write(target) as f, atomic_write(out / "metadata.csv", "w") as meta_f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (total, dim)})
        for name in names:
            try:
                a = np.load(store.chunk_files(name)[0], allow_pickle=False)
            except (OSError, ValueError) as e:  # e.g. cut short after its header
                raise _damaged(store.chunk_files(name)[0], f"unreadable descriptor chunk ({e})") from None
            f.write(np.ascontiguousarray(a[keep[name]], "<f4").tobytes())
            del a
        meta_f.write(",".join(("row",) + COLUMNS + ("network",)) + "\n")
        row = 0
        for name in names:
            for rec, current in zip(_csv_rows(store.chunk_files(name)[1]), keep[name]):
                if not current:
                    continue
                buf = io.StringIO()
                csv.writer(buf).writerow([row] + rec[1:] + [label])
                meta_f.write(buf.getvalue().replace("\r\n", "\n"))
                row += 1
        held.hold()  # the renames run next, as the with statement closes
    return target, total


def _damaged(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: {what}; delete {path.parent.parent / PROGRESS} and {path.parent} to start "
                          "this output folder again")


def _csv_rows(path: Path) -> list[list[str]]:
    """A chunk's metadata rows (header dropped): [row, source, face_index, ...]."""
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))[1:]
    except (OSError, UnicodeDecodeError, csv.Error) as e:  # csv.Error: e.g. a field over csv's size limit
        raise _damaged(path, f"unreadable descriptor chunk metadata ({e})") from None
    for i, r in enumerate(rows):
        if len(r) != len(COLUMNS) + 1:
            raise _damaged(path, f"row {i + 1}: expected {len(COLUMNS) + 1} fields, found {len(r)}")
    return rows


def _npy_rows(path: Path, dim: int) -> int:
    """Rows of a chunk's [rows, dim] array, from its header only (the file is closed again)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: unreadable descriptor chunk ({e}); delete {path.parent.parent / PROGRESS} "
                             f"and {path.parent} to start this output folder again") from None
    if len(shape) != 2 or shape[1] != dim or dtype.kind != "f":
        raise ModelFileError(f"{path}: expected float descriptors [rows, {dim}], found {dtype} {list(shape)}")
    return int(shape[0])


def _partial_words(videos: int, photos: int, video_words: str, photo_words: str) -> str:
    """'1 video(s) with failed frames, 2 photo(s) with failed faces' (the parts that apply)."""
    return ", ".join(f"{n} {w}" for n, w in ((videos, video_words), (photos, photo_words)) if n)


def _is_video(rec: dict) -> bool:
    """Whether a recorded input was a video (its results had frames); records of older runs
    do not say, and are told by the file name as the pipeline tells them."""
    if "video" in rec:
        return bool(rec["video"])
    from engine.images import is_video_path

    return is_video_path(rec.get("source") or "")


@contextlib.contextmanager
def _embedder(args):
    """What turns the inputs into results: this process's Reconstructor, or with --ray the
    actors of a Ray Data job (engine.distributed.embed). Both yield the same FaceResults,
    written below by the same code into the same files."""
    if getattr(args, "ray", None) is None:
        with C.make_reconstructor(args, decode=False) as rec:
            yield rec.embed
        return
    from engine.detect import DEFAULT_MAX_SIDE, DEFAULT_UPSAMPLE
    from engine.distributed import embed as distributed_embed

    C.check_network_dir(args)
    side = getattr(args, "det_max_side", DEFAULT_MAX_SIDE)

    def embed_fn(paths, **options):  # options: boxes (matched here, over every input), cropped, frames
        return distributed_embed(
            paths, address=None if args.ray == "local" else args.ray, network_dir=args.network_dir,
            runner=args.runner, precision=getattr(args, "precision", None), max_error=getattr(args, "max_error", None),
            batch_size=C.batch_size(args), workers=args.workers, threads=args.threads, detector=C.detector_mode(args),
            det_threshold=getattr(args, "det_threshold", None),
            det_upsample=getattr(args, "det_upsample", DEFAULT_UPSAMPLE), det_max_side=None if side == 0 else side,
            quiet=bool(getattr(args, "quiet", False)), device_input=C.device_input_choice(args),
            compile=bool(getattr(args, "compile", False)), compile_mode=getattr(args, "compile_mode", None), **options)
    yield embed_fn


def run(args) -> int:
    from engine.descriptors import descriptor

    if getattr(args, "ray", None) is not None:
        from engine.distributed.cluster import check_reachable
        from engine.distributed.embed import require_ray

        require_ray()  # UnavailableError before the output folder is made
        check_reachable(None if args.ray == "local" else args.ray, "--ray")  # a dead address: seconds, not minutes

    if args.parquet:
        _lazy_pyarrow()
    out = C.prepare_output_dir(args.output)
    C.apply_max_pixels(args.max_pixels)
    report = C.Report()
    paths = C.expand_each(args.inputs, report, recursive=args.recursive)
    boxes = C.load_boxes_arg(args)  # a missing or bad sidecar: its own error, before anything runs
    store = Store(out, "parquet" if args.parquet else "npy", args.part,
                  {"frame_step": args.frame_step, "max_frames": args.max_frames}, face_settings(args),
                  flag=getattr(args, "output_flag", "--output"))
    todo, skipped, changed, kept_partial = [], 0, 0, {True: 0, False: 0}
    stamps = {}  # input key -> its file's size and mtime_ns, taken before it is read
    for p in paths:
        key = C.source_key(p)
        stamps[key] = file_stamp(p)
        rec = store.done(key, args.retry_failed, stamps[key])
        if rec is None:
            changed += store.changed(key, stamps[key])
            todo.append(p)
            continue
        skipped += 1
        if rec.get("failed_results"):
            kept_partial[_is_video(rec)] += 1
        if rec["status"] == "failed":  # still a failure of this output folder: say it again
            report.fail(p, f"{rec['error']} (recorded by an earlier run; --retry-failed to try again)")
    if skipped and not args.quiet:
        partly = _partial_words(kept_partial[True], kept_partial[False], "video(s) with failed frames",
                                "photo(s) with failed faces")
        C.say(f"engine3dmm: embed: {skipped} input(s) already done in {out}, skipped"
              + (f" ({partly}: --retry-failed runs them again)" if partly else ""))
    if changed and not args.quiet:
        C.say(f"engine3dmm: embed: {changed} input(s) changed since they were embedded in {out} (another size or "
              "modification time): embedding them again, their old rows replaced")
    rows, descs, finished = [], [], {}
    partial: dict[str, bool] = {}  # inputs kept with some results failed (source -> is a video): not failed inputs
    # [key, source, rows, descs, first error, failed results, is a video] of the input whose results are arriving
    cur = None

    def close_current():
        nonlocal cur
        if cur is None:
            return
        key, source, crow, cdesc, err, nfailed, video = cur
        # A video's frames share one input: a frame that failed (no face, a bad frame) is
        # reported, but the rows of the other frames are kept. The input failed only when
        # it gave no row at all.
        ok = bool(crow) or err is None
        if ok and nfailed:
            partial[source] = video
        rows.extend(crow)
        descs.extend(cdesc)
        finished[key] = {"source": source, "status": "ok" if ok else "failed", "faces": len(crow),
                         "error": None if ok else err, "failed_results": nfailed, "video": video,
                         "file": stamps.get(key)}
        cur = None

    def flush():
        store.flush(rows, descs, finished)
        rows.clear(), descs.clear(), finished.clear()

    interrupted = None  # the KeyboardInterrupt (Ctrl-C, or SIGTERM: common.Interrupted) that stopped the run
    if todo:
        with _embedder(args) as embed_fn:
            bar = C.progress(len(todo), "img", "embed", args.quiet)
            results = embed_fn([str(p) for p in todo], boxes=boxes, cropped=args.cropped,
                               frame_step=args.frame_step, max_frames=args.max_frames)
            try:
                for r in results:
                    key = C.source_key(r.source)
                    if cur is None or cur[0] != key:
                        close_current()
                        report.flush()  # the last input's failures, said once each
                        bar.update(1)
                        if len(finished) >= args.flush_every:
                            flush()
                        cur = [key, str(r.source), [], [], None, 0, False]
                    cur[6] = cur[6] or r.frame is not None
                    if r.error is not None:
                        report.fail(r.source, r.error, frame=r.frame)
                        cur[4] = cur[4] or r.error
                        cur[5] += 1
                        continue
                    store.check_identity(r.provenance or {})
                    cur[2].append({"source": str(r.source), "face_index": r.face_index, "frame": r.frame,
                                   **dict(zip(("x0", "y0", "x1", "y1"), C.box_list(r.box) or [None] * 4)),
                                   "score": C.box_score(r.box)})
                    cur[3].append(descriptor(r.coeffs, args.part))
                close_current()  # the stream ended: the last input is complete
            except KeyboardInterrupt as e:
                # Ctrl-C or SIGTERM: the finished inputs are saved (below) and merged, then the
                # interruption goes on to main (exit 130 or 143). The input whose results were still
                # arriving (cur) is dropped and will be redone.
                interrupted = e
            finally:
                results.close()
                bar.close()
                report.flush()
                flush()  # every complete input, also on Ctrl-C or an error
    target, n = merge(store)
    if interrupted is not None:
        if not args.quiet:
            C.say(f"engine3dmm: embed: interrupted ({C.interruption(interrupted)[1]}): the {n} descriptor(s) of the "
                  f"inputs finished so far are in {target}; run the same command again to do the rest (the "
                  "finished inputs are skipped)")
        raise interrupted
    if not args.quiet:
        failed = len({f["source"] for f in report.failures} - set(partial))
        videos = sum(partial.values())
        partly = _partial_words(videos, len(partial) - videos, "video(s) kept with some frames failed",
                                "photo(s) kept with some faces failed")
        C.say(f"engine3dmm: embed: {n} descriptor(s) in {target}"
              + (" from SYNTHETIC network weights (placeholders, meaningless until you `convert` the official "
                 "model)" if network_label(store) == "SYNTHETIC" else "")
              + (f"; {failed} input(s) failed" if failed else "")
              + (f"; {partly}" if partly else "")
              + (" (listed above)" if failed or partial else ""))
    return report.exit_code
