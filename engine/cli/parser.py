"""argparse definitions of every subcommand (no heavy imports: `--help` must be instant).

Each subparser sets `handler="module:function"`; engine.cli.main imports it only when
that subcommand runs.
"""
from __future__ import annotations

import argparse

RUNNERS = ("auto", "tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # engine.runners.PRECISIONS (not imported: keep --help fast)
VARIANT_PRECISIONS = ("int8", "bf16")  # engine.network.variants.VARIANT_PRECISIONS
COMPILABLE_RUNNERS = ("torch-cuda", "torch-cpu")  # engine.runners.COMPILABLE (tests check they agree)
COMPILE_MODES = ("default", "max-autotune")  # engine.runners.torch_compile.COMPILE_MODES
DEFAULT_MAX_ERROR = 0.05  # engine.network.variants.DEFAULT_MAX_ERROR
MESH_FORMATS = ("ply", "ply-ascii", "obj")
PARTS = ("all", "alpha", "beta")
FACE_RULES = ("center", "best", "largest")  # engine.descriptors.FACE_RULES (not imported: --help stays fast)
ASSET_NAMES = ("network", "topology")  # engine.fetch.ASSETS (not imported here: keep --help fast)
DEFAULT_THRESHOLD = 0.5
DEFAULT_BATCH = 8
# engine.network.resolve.locate_model_dir, in words (not imported: keep --help fast)
MODEL_DIR_DEFAULT = ("$ENGINE3DMM_MODEL_DIR, else models/cnn3dmm of the source checkout, else the per-user "
                     "~/.local/share/engine3dmm/cnn3dmm (under $XDG_DATA_HOME when set); `info` shows which")

MAIN_EPILOG = """\
quick start:
  %(prog)s info                                   what is installed, which model is active
  %(prog)s reconstruct photo.jpg -o out/          face photo -> out/photo_face0.ply + .npy
  %(prog)s embed photos/ -o descriptors/          198-d descriptors + metadata.csv (resumable)
  %(prog)s verify a.jpg b.jpg                     cosine similarity, same/different

real results (the defaults are SYNTHETIC stand-ins until you convert the official files):
  %(prog)s fetch                                  public network release + mesh topology
  %(prog)s convert                                Caffe files (and your Basel Face Model) -> model card

exit codes: 0 every input succeeded, 1 some input or step failed, 2 usage error, 130 Ctrl-C, 143 SIGTERM
(either keeps finished files and writes no partial one).
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the examples' line breaks; show a default when there is a value to show."""

    def _get_help_string(self, action):
        h = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings and "default" not in h:
            h += " (default: %(default)s)"
        return h


def _common(sub: bool) -> argparse.ArgumentParser:
    """-q/-v, accepted before or after the subcommand. On subparsers the default is
    SUPPRESS so a subcommand does not overwrite a flag given before it."""
    p = argparse.ArgumentParser(add_help=False)
    d = argparse.SUPPRESS if sub else False
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", default=d, help="errors only: no progress bar, no warnings")
    g.add_argument("-v", "--verbose", action="store_true", default=d,
                   help="more detail, and a traceback with every error")
    return p


def _int_in(lo: int, hi: int | None = None, expected: str | None = None):
    """An argparse type: an integer in lo..hi (no upper bound when hi is None), else a usage
    error saying `expected` (default: the bounds)."""
    expected = expected or f"an integer in {lo}..{hi}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = lo - 1
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
        return v
    return parse


_positive_int = _int_in(1, expected="a positive integer")


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, found {text!r}")
    return v


_non_negative_int = _int_in(0, expected="an integer >= 0")

# engine.pipeline.reconstructor's bounds, repeated here so that --help needs no numpy (tests
# check they agree): memory grows with each, and beyond them a value is a typo.
MAX_BATCH_SIZE = 1024
MAX_WORKERS = 64
MAX_THREADS = 1024



def _network_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--runner", choices=RUNNERS, default="auto",
                   help="auto: TensorRT on a GPU, else PyTorch CUDA, else the fastest CPU runner")
    g.add_argument("--network-dir", metavar="DIR",
                   help="model card folder made by `convert`: the converted weights cnn3dmm.safetensors and/or the "
                        f"converted Basel Face Model (default: {MODEL_DIR_DEFAULT}; SYNTHETIC weights stand in "
                        "until you `convert`)")
    g.add_argument("--batch-size", type=_int_in(1, MAX_BATCH_SIZE), metavar="N",
                   help=f"faces per network batch, 1..{MAX_BATCH_SIZE} (default: {DEFAULT_BATCH}; 1 with --camera, "
                        "for the lowest latency); memory grows by about 2 MB per face")
    g.add_argument("--threads", type=_int_in(1, MAX_THREADS), metavar="N",
                   help=f"CPU threads for the network, 1..{MAX_THREADS} (default: the runner's)")
    g.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=2, metavar="N",
                   help=f"threads decoding and cropping images, 1..{MAX_WORKERS}")
    _runner_choice_options(g)
    g.add_argument("--device-input", choices=("auto", "on", "off"), default="auto",
                   help="decode JPEGs with nvJPEG and crop them on the GPU, straight into the network's input "
                        "(engine.pipeline.device_input). auto (default): with a CUDA runner and torchvision, for "
                        "JPEG files with known boxes (--boxes, --cropped); other inputs take the CPU path. on: "
                        "fail when it cannot run. off: the CPU path for every input (libjpeg-turbo's pixels: "
                        "nvJPEG's can differ by a grey level or two)")


def _runner_choice_options(g) -> None:
    """--precision, --max-error, --compile, --compile-mode: how a runner is chosen and built
    (engine.runners.create_runner), for the commands that run a network and for serve."""
    g.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default): on CPU the fastest variant that `convert`/`validate` measured within "
                        "--max-error on these weights, else fp32; on a GPU fp16. An explicit precision always wins "
                        "and its validated error is printed: int8 (ONNX Runtime), bf16 (torch-cpu, or torch-cuda "
                        "on a GPU), fp32; fp16 on a GPU runner only (refused on the CPU runners: use int8 or bf16). "
                        "A CPU variant that cannot run here falls back to fp32, saying why")
    g.add_argument("--max-error", type=_positive_float, metavar="SD",
                   help=f"the largest validated coefficient error, in standard deviations, that auto accepts "
                        f"(default: {DEFAULT_MAX_ERROR})")
    g.add_argument("--compile", action="store_true",
                   help="compile the network with torch.compile (Inductor) on a PyTorch runner (torch-cpu, "
                        "torch-cuda; with --runner auto the best of them; refused with onnxruntime and tensorrt). "
                        "Each batch size compiles once on first use: 10-30 s on a CPU (needs a C++ compiler), "
                        "minutes on a GPU under max-autotune; cached for the next run in "
                        "~/.cache/engine3dmm/torchinductor ($TORCHINDUCTOR_CACHE_DIR when set)")
    g.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="with --compile: Inductor's mode (default: max-autotune on a GPU, which takes minutes per "
                        "batch size; default on the CPU)")


# engine.detect's defaults, repeated here so that --help needs no numpy (tests check they agree).
DET_MAX_SIDE = 2048
DET_MAX_UPSAMPLE = 4


def _gpu_share(text: str) -> float:
    """GPUs per Ray actor: a number in 0..64 (fractions share a GPU between actors)."""
    v = _finite_float(text)
    if not 0 <= v <= 64:
        raise argparse.ArgumentTypeError(f"expected a number of GPUs in 0..64, found {text!r}")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text!r}")
    return v


def _cosine(text: str) -> float:
    """A threshold on cosine similarity: a number in [-1, 1] (no similarity lies outside)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not -1.0 <= v <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected a cosine similarity, a number in [-1, 1], found {text!r}")
    return v


def _det_upsample(text: str) -> int:
    v = _non_negative_int(text)
    if v > DET_MAX_UPSAMPLE:
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{DET_MAX_UPSAMPLE}, found {text!r}")
    return v


def _det_max_side(text: str) -> int:
    v = _non_negative_int(text)
    if 0 < v < 32:
        raise argparse.ArgumentTypeError(f"expected 0 (full resolution) or an integer >= 32, found {text!r}")
    return v


def _input_options(p: argparse.ArgumentParser, nargs: str | None = "+") -> None:
    if nargs:
        p.add_argument("inputs", nargs=nargs, metavar="INPUT",
                       help="image or video files, folders (their images and videos; sub-folders with --recursive) "
                            "or glob patterns ('photos/*.jpg', 'clips/*.mp4', 'lfw/**/*.jpg'; quote them)")
    g = p.add_argument_group("faces")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--cropped", action="store_true", help="inputs are already face crops: no detection")
    m.add_argument("--boxes", metavar="FILE",
                   help="face boxes sidecar (.csv: image,x0,y0,x1,y1[,score]; .json: {image: [[x0,y0,x1,y1], ...]}); "
                        "no detector is run. An image name matches an input that is the same file (relative to the "
                        "working directory or to FILE's folder), its path below the folder given, or the end of one "
                        "input's path alone (a name two inputs end with is an error for both); each box must "
                        "overlap its image")
    m.add_argument("--detector", choices=("auto", "dlib"), default="auto",
                   help="face detector when neither --cropped nor --boxes is given (dlib: pip install dlib-bin)")
    g.add_argument("--det-threshold", type=_finite_float, metavar="T",
                   help="keep every detected face scoring >= T (dlib's adjust_threshold; lower finds more, weaker "
                        "faces) (default: each image's best face from 0, as the release, further faces from 0.5)")
    g.add_argument("--det-upsample", type=_det_upsample, default=1, metavar="N",
                   help=f"times dlib upsamples the image, 0..{DET_MAX_UPSAMPLE} (1, as the release, finds faces of "
                        "about 40 px and up; each step costs about 4x the time)")
    g.add_argument("--det-max-side", type=_det_max_side, default=DET_MAX_SIDE, metavar="PX",
                   help="detect on a copy at most PX pixels on its longer side (boxes mapped back; crops from the "
                        "full image): bounds time and memory on huge photos; 0: full resolution")
    g.add_argument("--recursive", action="store_true",
                   help="also take the images and videos in sub-folders of folder inputs (without it, a warning "
                        "counts the sub-folders left out)")
    g.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="refuse images larger than N pixels (decompression-bomb guard; default: Pillow's "
                        "limit, about 89 million; also $ENGINE3DMM_MAX_PIXELS)")


def _video_options(p: argparse.ArgumentParser, camera: bool) -> None:
    g = p.add_argument_group("video" + (" and camera" if camera else ""))
    if camera:
        g.add_argument("--camera", type=_non_negative_int, metavar="INDEX",
                       help="also read a live camera (OpenCV device index, e.g. 0) until --max-frames or Ctrl-C; "
                            "outputs are named cameraINDEX_fFFFFFF_faceK")
    g.add_argument("--frame-step", type=_positive_int, default=1, metavar="N",
                   help="of each video" + (" or camera" if camera else "") + ", take every N-th frame")
    g.add_argument("--max-frames", type=_positive_int, metavar="N",
                   help="of each video" + (" or camera" if camera else "") + ", take at most N frames")


def _variant_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("CPU variants (engine3dmm validate)")
    g.add_argument("--calibration", metavar="DIR",
                   help="also calibrate int8 on the faces in your photos in DIR (and its sub-folders; found and "
                        "cropped as a run does): every other face calibrates, the others join the held-out "
                        "validation faces. A folder without a usable face builds no int8 variant (runs use fp32)")
    g.add_argument("--variants", nargs="+", choices=VARIANT_PRECISIONS, default=list(VARIANT_PRECISIONS),
                   metavar="P", help=f"which variants to build: {' '.join(VARIANT_PRECISIONS)} (default: both; bf16 "
                                     "needs PyTorch); the others keep their results in the card while these still "
                                     "hold (same weights and validation faces), else a warning says they are dropped")
    if command == "convert":
        g.add_argument("--no-variants", action="store_true",
                       help="do not build the CPU variants now (about a minute); `validate` builds them later")


POSE_CAMERAS = ("perspective", "weak-perspective")  # engine.pose.fit.CAMERA_ALIASES


def _pose_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pose, expression and landmarks (engine.pose)")
    g.add_argument("--pose", action="store_true",
                   help="fit each face's head pose to its 68 landmarks (and its expression, when the morphable "
                        "model has an expression basis): summary.json gets \"pose\" (yaw, pitch, roll in degrees, "
                        "rotation, translation, camera, projection, landmark_error_px) and \"expression\" per face")
    g.add_argument("--pose-camera", choices=POSE_CAMERAS, default=None,
                   help="the camera of the pose fit: the release's perspective camera (the default), or 3DDFA's "
                        "weak perspective (scale, rotation, 2D translation); implies --pose")
    g.add_argument("--posed", action="store_true",
                   help="also write each face's mesh in the photo's pixels (x right, y down, z along the view, "
                        "with its fitted expression) as posed/NAME.ply, to lay over the photo in MeshLab or Blender "
                        "(fits the pose)")
    g.add_argument("--landmarks", action="store_true",
                   help="also write each face's 68 landmarks as NAME.pts, the release's format (one 'x y' line "
                        "per point, image pixels)")


def _ray_address(text: str) -> str:
    """embed --ray ADDRESS: local, auto, ray://HOST:PORT or HOST:PORT. Anything else is most
    likely an input that followed a bare --ray (argparse hands it to the option)."""
    import re

    if text in ("local", "auto") or re.fullmatch(r"(ray://)?[\w.\-]+:\d{1,5}|ray://[\w.\-]+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected local, auto, ray://HOST:PORT or HOST:PORT, found {text!r} (an input "
                                     "after a bare --ray? put --ray last, or write --ray=ADDRESS)")


def _sub(subs, name: str, help_: str, epilog: str, handler: str, aliases=()) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help_, description=help_, epilog=epilog, aliases=list(aliases),
                        formatter_class=_Formatter, parents=[_common(True)])
    p.set_defaults(handler=handler, subparser=p)  # subparser: for usage errors found after parsing
    return p


def build_parser(prog: str = "engine3dmm") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=_Formatter, epilog=MAIN_EPILOG, parents=[_common(False)],
        description="3DMM-CNN (Tran et al., CVPR 2017): face photos to 3D Morphable Model coefficients, "
                    "textured meshes and face descriptors.")
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subs = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = _sub(subs, "reconstruct", "face photos or a video -> textured meshes (PLY/OBJ) and coefficients (.npy)",
             """examples:
  %(prog)s astronaut.png -o out/                 out/astronaut_face0.ply, astronaut_face0.npy, summary.json
  %(prog)s astronaut.png --render -o out/        + out/astronaut.render.png: the posed meshes over the photo
  %(prog)s photos/ 'more/*.jpg' -o out/ --format obj
  %(prog)s crops/ --cropped -o out/              inputs are already face crops
  %(prog)s photos/ --boxes boxes.csv -o out/     your own face boxes (image,x0,y0,x1,y1)
  %(prog)s clip.mp4 -o out/                      every frame: clip_f000000_face0.ply, ...
  %(prog)s clip.mp4 --frame-step 5 -o out/       every 5th frame: clip_f000000, clip_f000005, ...
  %(prog)s lfw/ --recursive --release-layout -o out/
                                                 LFW (lfw/Name/Name_0001.jpg), as the release's demo wrote:
                                                 out/Name_0001.ply, .ply.alpha, .ply.beta (+ SYNTHETIC.txt
                                                 while the models are synthetic)
  %(prog)s --camera 0 --max-frames 300 -o out/   live camera 0, one face batch per frame
  %(prog)s photo.jpg --pose --landmarks -o out/  + head pose in summary.json, out/photo_face0.pts
  %(prog)s photo.jpg --posed -o out/             + out/posed/photo_face0.ply, the mesh laid on the photo""",
             "engine.cli.reconstruct:run")
    _input_options(p, nargs="*")
    _video_options(p, camera=True)
    p.add_argument("-o", "--output", metavar="DIR", default="out", help="output folder (created)")
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--format", choices=MESH_FORMATS,
                        help="mesh file format: binary PLY, ASCII PLY (float32-exact), or OBJ with vertex colours "
                             "(default: ply)")
    layout.add_argument("--release-layout", action="store_true",
                        help="write what the release's demo wrote, for scripts that parse it: NAME.ply in its ASCII "
                             "layout, NAME.ply.alpha and NAME.ply.beta (99 values each, one per line); face 0 of a "
                             "photo is plain NAME (the image's name), other faces and frames get _faceK, _fFFFFFF")
    meshes = p.add_mutually_exclusive_group()
    meshes.add_argument("--no-mesh", action="store_true", help="write coefficients only")
    meshes.add_argument("--render", action="store_true",
                        help="also draw a picture of each photo or video frame, STEM.render.png (STEM_fFFFFFF for "
                             "frames): every face's mesh, posed by fitting it to its 68 landmarks (the pose fit runs "
                             "for it), shaded and in its colours over the photo, with the landmarks as dots. Videos "
                             "are read a second time for it; camera frames are not kept, so they get none")
    p.add_argument("--model", metavar="FILE",
                   help="morphable model (.e3dmm cache, BaselFaceModel_mod.mat/.h5); default: the converted "
                        "Basel Face Model if present, else the SYNTHETIC model (not used with --no-mesh)")
    p.add_argument("--summary-limit", type=_non_negative_int, default=100, metavar="N",
                   help="summary.json lists every face with its files, and with its coefficients too when the run "
                        "has at most N faces")
    _pose_options(p)
    _network_options(p)

    p = _sub(subs, "embed", "face photos -> 198-d descriptors (.npy + metadata.csv, or Parquet); resumable",
             """examples:
  %(prog)s photos/ -o desc/                      desc/descriptors.npy [N, 198] + desc/metadata.csv
  %(prog)s photos/ -o desc/                      run again: inputs already done are skipped
  %(prog)s 'lfw/**/*.jpg' -o desc/ --parquet     desc/descriptors.parquet (needs pyarrow)
  %(prog)s crops/ --cropped --part alpha -o d/   shape coefficients only (99-d)""",
             "engine.cli.embed:run")
    _input_options(p)
    _video_options(p, camera=False)
    p.add_argument("-o", "--output", metavar="DIR", default="descriptors", help="output folder (created)")
    p.add_argument("--parquet", action="store_true", help="write descriptors.parquet instead of .npy + .csv")
    p.add_argument("--part", choices=PARTS, default="all",
                   help="all 198 coefficients, alpha (99 shape) or beta (99 texture)")
    p.add_argument("--retry-failed", action="store_true",
                   help="on a rerun, try again the inputs that failed before, videos with failed frames and photos "
                        "with failed faces (whole; their earlier rows are replaced); without it they are skipped. "
                        "Inputs whose file changed since are always run again")
    p.add_argument("--flush-every", type=_positive_int, default=64, metavar="N",
                   help="save progress every N inputs (what a crash or Ctrl-C can lose at most)")
    p.add_argument("--ray", nargs="?", const="local", type=_ray_address, metavar="ADDRESS",
                   help="run on Ray Data (needs Ray): an actor pool of reconstructors, one per GPU, else one per "
                        "--threads CPU cores (default 1); the same output files and resume rule. Alone: a local "
                        "Ray on this machine's cores; ADDRESS (auto, ray://HOST:10001) joins a cluster, whose "
                        "nodes must read the inputs and the model card at the same paths")
    _network_options(p)

    p = _sub(subs, "verify", "are two faces the same person? cosine similarity of their descriptors",
             """examples:
  %(prog)s a.jpg b.jpg                           similarity and same/different at --threshold
  %(prog)s person1/ person2/ --threshold 0.6     folders: descriptors averaged per folder (a template)
  %(prog)s a.jpg b.jpg --json                    machine-readable answer on stdout

Calibrate --threshold on labelled pairs with `evaluate` (it prints the best threshold).""",
             "engine.cli.verify:run_verify")
    p.add_argument("first", metavar="A", help="an image or a folder of images of one person")
    p.add_argument("second", metavar="B", help="an image or a folder of images of one person")
    p.add_argument("--threshold", type=_cosine, default=DEFAULT_THRESHOLD, metavar="T",
                   help="'same' when the cosine similarity >= T, a number in [-1, 1] (`evaluate` prints one "
                        "chosen on labelled pairs)")
    p.add_argument("--part", choices=PARTS, default="all", help="which coefficients form the descriptor")
    p.add_argument("--face", choices=FACE_RULES, default="best",
                   help="which face describes an image that holds several: center (the one nearest the image "
                        "centre), best (the most confident) or largest; default: best (each such image is named "
                        "in the output, with the face used)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _input_options(p, nargs=None)
    _network_options(p)

    p = _sub(subs, "evaluate", "verification accuracy (10-fold) and ROC AUC on an LFW-style pairs file",
             """examples:
  %(prog)s pairs.txt lfw/                        LFW: lfw/Name/Name_0001.jpg; the paper reports 92.35%%
  %(prog)s pairs.txt lfw/ --descriptors lfw-desc/  embed once (resumable), evaluate again in seconds
  %(prog)s pairs.txt lfw-crops/ --cropped --json result.json
  %(prog)s pairs.txt lfw/ --fallback-box center   an image without a detected face: LFW's centre face box

Every pair of the file is scored: a pair with an image without a descriptor is a wrong decision
(--missing skip leaves it out), outside the ROC AUC, and named in the output.""",
             "engine.cli.verify:run_evaluate")
    p.add_argument("pairs", help="pairs file in LFW pairs.txt format ('FOLDS N' header, then name n1 n2 / name1 n1 name2 n2)")
    p.add_argument("root", help="image root: each image is ROOT/name/name_NNNN.jpg")
    p.add_argument("--part", choices=PARTS, default="all", help="which coefficients form the descriptor")
    p.add_argument("--json", metavar="FILE", help="also write the result to FILE")
    p.add_argument("--descriptors", metavar="DIR",
                   help="keep the descriptors in DIR (an `embed` output folder): images already embedded there "
                        "are not run again, so an interrupted evaluation resumes and a rerun takes seconds")
    p.add_argument("--missing", choices=("wrong", "skip"), default="wrong",
                   help="a pair with an image without a descriptor: a wrong decision in the accuracy, as the LFW "
                        "protocol scores every pair, or left out of it (skip); either way it is outside the ROC "
                        "AUC and counted in the output")
    p.add_argument("--face", choices=FACE_RULES, default="center",
                   help="which face describes an image that holds several: center (the one nearest the image "
                        "centre: LFW images are centred on their subject), best (the most confident) or largest; "
                        "default: center (such images are counted in the output)")
    p.add_argument("--fallback-box", choices=("none", "center"), default="none",
                   help="center: describe an image where detection finds no face from LFW's fixed face region "
                        "(LFWcrop's box (83,92)-(166,175) of 250x250, scaled to the image); counted in the output")
    _input_options(p, nargs=None)
    _network_options(p)

    p = _sub(subs, "convert", "official files -> the model card: Caffe network (and your Basel Face Model)",
             """examples:
  %(prog)s                                        what `fetch` downloaded (NETWORK_DIR/downloads): the one
                                                  *.caffemodel, *.prototxt and *.binaryproto found there
  %(prog)s --prototxt deploy_network.prototxt --caffemodel 3dmm_cnn_resnet_101.caffemodel \\
           --mean mean.binaryproto
  %(prog)s --bfm 01_MorphableModel.mat --topology mod_struct_expr.mat""",
             "engine.cli.setup:run_convert")
    p.add_argument("--prototxt", metavar="FILE",
                   help="the deploy network definition (deploy_network.prototxt or 3dmm_cnn_resnet_101_deploy."
                        "prototxt; default: the one *.prototxt under DOWNLOADS that describes this network)")
    p.add_argument("--caffemodel", metavar="FILE",
                   help="the weights, 3dmm_cnn_resnet_101.caffemodel (default: the one *.caffemodel under DOWNLOADS)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--mean", metavar="FILE",
                   help="the mean image, mean.binaryproto or 3dmm_cnn_resnet_101_mean.binaryproto (default: the one "
                        "*.binaryproto under DOWNLOADS); it is part of the network and required")
    m.add_argument("--channel-mean", action="store_true",
                   help="convert without the mean image, subtracting the release's per-channel mean instead "
                        "(outputs move by up to about 10%% of their spread; info and every result say so)")
    p.add_argument("--bfm", metavar="FILE", help="01_MorphableModel.mat of the Basel Face Model 2009 (registration)")
    p.add_argument("--topology", metavar="FILE", help="the release's mod_struct_expr.mat (`fetch topology`)")
    p.add_argument("--expression", metavar="FILE",
                   help="3DDFA's Model_Expression.mat (from its authors): adds the release's 29-component expression "
                        "basis to the morphable model (with --bfm, or to the one converted before); needs --topology")
    p.add_argument("--downloads", metavar="DIR", help="where to look for files not named (default: NETWORK_DIR/downloads)")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder to write (default: {MODEL_DIR_DEFAULT})")
    p.add_argument("--no-onnx", action="store_true",
                   help="write the weights only (ONNX is exported on first use; no variants are built)")
    _variant_options(p, "convert")

    p = _sub(subs, "validate", "build the CPU variants (int8, bf16) of the network and measure them against float32",
             """examples:
  %(prog)s                                        the model card's weights (or the SYNTHETIC ones)
  %(prog)s --calibration my_faces/               calibrate int8 on your photos too (faces found by dlib)
  %(prog)s --json                                 the card as JSON on stdout

Each variant is compared with float32 on held-out real faces (never the calibration ones): the
coefficients (sd), the decoded mesh (mm, colour levels) and the descriptor (cosine), and timed on
this machine. The results go into the model card; `--precision auto` picks the fastest variant
within --max-error. `convert` runs this too; run it again after changing the weights or the CPU.""",
             "engine.cli.setup:run_validate")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder (default: {MODEL_DIR_DEFAULT})")
    p.add_argument("--max-error", type=_positive_float, metavar="SD",
                   help=f"the budget the summary judges by, as auto would (default: {DEFAULT_MAX_ERROR})")
    p.add_argument("--threads", type=_int_in(1, MAX_THREADS), metavar="N", help="CPU threads (default: all)")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    _variant_options(p, "validate")

    p = _sub(subs, "build", "build (or load from cache) the TensorRT engine: needs an NVIDIA GPU and TensorRT",
             """examples:
  %(prog)s                                        FP16 engine for batch 1..128
  %(prog)s --precision fp32 --max-batch 32""",
             "engine.cli.setup:run_build")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--max-batch", type=_positive_int, default=128, help="largest batch the engine accepts")
    p.add_argument("--opt-batch", type=_positive_int, help="batch size TensorRT optimises for (default: max)")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder (default: {MODEL_DIR_DEFAULT})")

    p = _sub(subs, "fetch", "download the public files (network release, mesh topology); explain the Basel Face Model",
             """examples:
  %(prog)s                                        both assets into NETWORK_DIR/downloads, where `convert` looks
  %(prog)s topology --downloads somewhere/        (then: convert --downloads somewhere/)
  %(prog)s --base-url http://mirror.example/files   same paths, another host""",
             "engine.cli.setup:run_fetch")
    p.add_argument("assets", nargs="*", metavar="ASSET",
                   help=f"what to download: {', '.join(ASSET_NAMES)} (default: all)")
    p.add_argument("--downloads", "--dest", dest="downloads", metavar="DIR",
                   help="download folder, as `convert --downloads` (default: NETWORK_DIR/downloads, where `convert` "
                        "looks)")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder (default: {MODEL_DIR_DEFAULT})")
    p.add_argument("--base-url", metavar="URL", help="replace the host of every asset URL (a mirror)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds without data before giving up")

    p = _sub(subs, "info",
             "what is installed and usable, and which models are active (SYNTHETIC, converted, or verified official)",
             """examples:
  %(prog)s
  %(prog)s --json""",
             "engine.cli.info:run", aliases=("doctor",))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder to inspect (default: {MODEL_DIR_DEFAULT})")
    p.add_argument("--model", metavar="FILE", help="morphable model file to inspect")

    # serve (engine.serve, engine.cli.serve): the Ray Serve face service; Ray is the [serve] extra
    p = _sub(subs, "serve", "the face service over HTTP (Ray Serve, dynamic batching): POST /v1/faces, /v1/mesh",
             """examples:
  %(prog)s                                        http://127.0.0.1:8000 on a local Ray (all CPUs)
  %(prog)s --port 9000 --max-batch-size 16 --batch-wait-ms 5
  %(prog)s --address auto --replicas 4            join the running Ray cluster, 4 replicas
  curl --data-binary @photo.jpg 'http://127.0.0.1:8000/v1/faces?pose=true'
  curl --data-binary @photo.jpg -o face.ply 'http://127.0.0.1:8000/v1/mesh?face=0'

Ctrl-C or SIGTERM stops the service, and the local Ray it started. Needs pip install "engine3dmm[serve]".""",
             "engine.cli.serve:run")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_int_in(1, 65535), default=8000, metavar="N", help="HTTP port")
    p.add_argument("--replicas", type=_int_in(1, 1024), default=1, metavar="N",
                   help="replicas, each with its own network runner and worker threads")
    p.add_argument("--replica-cpus", type=_positive_float, default=1.0, metavar="N",
                   help="CPUs Ray reserves for each replica")
    p.add_argument("--max-batch-size", type=_int_in(1, MAX_BATCH_SIZE), default=DEFAULT_BATCH, metavar="N",
                   help="requests run as one network batch at most")
    p.add_argument("--batch-wait-ms", type=_finite_float, default=10.0, metavar="MS",
                   help="how long a request waits for others to join its batch (0..10000)")
    p.add_argument("--max-body-mb", type=_positive_float, default=20.0, metavar="MB",
                   help="the largest request body in MiB; larger gets HTTP 413")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="refuse images larger than N pixels (decompression-bomb guard; default: Pillow's "
                        "limit, about 89 million; also $ENGINE3DMM_MAX_PIXELS)")
    p.add_argument("--address", metavar="ADDRESS",
                   help="join this running Ray cluster (auto, HOST:6379, ray://HOST:10001); default: start a "
                        "local Ray, stopped with the service")
    p.add_argument("--num-cpus", type=_positive_int, metavar="N", help="CPUs of the local Ray (default: all)")
    p.add_argument("--metrics-port", type=_int_in(1, 65535), metavar="N",
                   help="the local Ray's Prometheus metrics on http://127.0.0.1:N/metrics, Serve's included "
                        "(default: a port Ray picks)")
    p.add_argument("--runner", choices=RUNNERS, default="auto",
                   help="auto: TensorRT on a GPU, else PyTorch CUDA, else the fastest CPU runner")
    p.add_argument("--network-dir", metavar="DIR", help=f"model card folder (default: {MODEL_DIR_DEFAULT})")
    p.add_argument("--threads", type=_int_in(1, MAX_THREADS), metavar="N",
                   help="CPU threads of each replica's network runner (default: the runner's)")
    p.add_argument("--workers", type=_int_in(1, MAX_WORKERS), default=2, metavar="N",
                   help="threads per replica detecting and cropping faces")
    p.add_argument("--replica-gpus", type=_gpu_share, metavar="N",
                   help="GPUs Ray reserves for each replica, 0..64 (a fraction such as 0.5 shares one; default: 1 "
                        "when the runner can use a GPU and the cluster has one, else 0). Ray hides the GPUs from a "
                        "replica that reserves none")
    _runner_choice_options(p.add_argument_group("network variant (each replica builds its own runner)"))
    p.add_argument("--direct-ingress", action="store_true",
                   help="the replica itself listens on --port, skipping Ray's HTTP proxy hop (about 7 ms a request "
                        "on 2 cores). EXPERIMENTAL in Ray (RAY_SERVE_ENABLE_DIRECT_INGRESS). One replica on a local "
                        "Ray only (refused with --replicas > 1 or --address); Ray's proxy still runs, on a free port; "
                        "a replica that dies closes its connections unanswered, and --port refuses connections "
                        "until Ray has restarted it")
    return parser
