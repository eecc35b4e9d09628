"""Which weights the engine runs, and the artifacts derived from them.

A model folder (an explicit `model_dir`, else `$ENGINE3DMM_MODEL_DIR`, else `models/cnn3dmm/`
of the source checkout the package runs from, else the per-user
`$XDG_DATA_HOME/engine3dmm/cnn3dmm`, by default `~/.local/share/engine3dmm/cnn3dmm`: an
installed package never writes into site-packages) holds the model card and, once a user has run
`convert_caffe`, the converted weights `cnn3dmm.safetensors`. When that file is absent
the built-in synthetic weights are used, and everything says so: `ResolvedModel.synthetic`,
`describe()`, the ONNX metadata, the runners' `synthetic` attribute and a log warning.

A folder the user NAMED (the CLI's --network-dir, or $ENGINE3DMM_MODEL_DIR, which it defaults
to) must be a model card for every command that reads one: check_model_card, one rule for both,
so a typo is an error rather than a silent run on the synthetic weights. `fetch` and `convert`
create the card and take a new or empty folder either way.

ONNX files are derived artifacts: written next to the weights on first use (with a
log message, never silently), tagged with the weights' sha256, and rebuilt when the
weights change.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError
from engine.network import weights as W

log = logging.getLogger("engine.network")

WEIGHTS_FILE = "cnn3dmm.safetensors"
# The Basel Face Model `convert --bfm` writes into the model card (engine.morphable's .e3dmm cache):
# runs, `info` and the variants' validation decode with it when no --model is given.
MORPHABLE_CACHE_FILE = "bfm2009_trimmed.e3dmm"
ENV_MODEL_DIR = "ENGINE3DMM_MODEL_DIR"


CARD_NAME = "cnn3dmm"
# What marks a source checkout: the model card's manifest, tracked in git beside `engine/`.
# An installed copy (site-packages) has no such file next to it, and must never write there.
CHECKOUT_MARKER = Path("models") / CARD_NAME / "manifest.json"


def checkout_model_dir() -> Path | None:
    """`models/cnn3dmm` of the source checkout this package runs from (editable install,
    PYTHONPATH), or None when it runs from an installed copy."""
    root = Path(__file__).resolve().parents[2]
    return root / CHECKOUT_MARKER.parent if (root / CHECKOUT_MARKER).is_file() else None


def user_model_dir() -> Path:
    """The per-user model card: $XDG_DATA_HOME/engine3dmm/cnn3dmm, by default
    ~/.local/share/engine3dmm/cnn3dmm (%LOCALAPPDATA%\\engine3dmm\\cnn3dmm on Windows)."""
    root = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(root):  # the XDG spec: a relative value is invalid and ignored
        local = os.environ.get("LOCALAPPDATA", "") if os.name == "nt" else ""
        root = local if os.path.isabs(local) else os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(root) / "engine3dmm" / CARD_NAME


# Where the model card folder came from (locate_model_dir's second value, `info`'s "from ...").
FROM_OPTION = "--network-dir"
FROM_ENV = f"${ENV_MODEL_DIR}"
FROM_CHECKOUT = "the source checkout"
FROM_USER = "the per-user data folder"
# The folders a user named: a typo there must be an error, never a silent run on synthetic weights.
NAMED = (FROM_OPTION, FROM_ENV)
VARIANTS_CARD_GLOB = "*.variants.json"  # engine.network.variants.card_path: what `validate` writes


def locate_model_dir(network_dir=None) -> tuple[Path, str]:
    """(the model card folder, why that one): `network_dir` (the CLI's --network-dir) when
    given, else $ENGINE3DMM_MODEL_DIR, else the checkout's models/cnn3dmm when running from a
    source checkout, else the per-user folder (user_model_dir). The folder need not exist
    yet: `fetch` and `convert` create it. The reason is one of FROM_OPTION, FROM_ENV,
    FROM_CHECKOUT, FROM_USER."""
    if network_dir:
        return Path(network_dir), FROM_OPTION
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env).expanduser(), FROM_ENV
    checkout = checkout_model_dir()
    if checkout is not None:
        return checkout, FROM_CHECKOUT
    return user_model_dir(), FROM_USER


def default_model_dir() -> Path:
    """The model card used when none is given: see locate_model_dir. Not checked: a command
    that reads the card checks it with check_model_card; `fetch` and `convert` create it."""
    return locate_model_dir()[0]


def model_card_problem(folder: Path) -> str | None:
    """Why `folder` is no model card, or None when it is one: a folder holding the converted
    network weights (WEIGHTS_FILE), the converted Basel Face Model (MORPHABLE_CACHE_FILE, with
    which runs use the SYNTHETIC network and say so) or validated variants (`validate`'s
    *.variants.json), or any of them together."""
    folder = Path(folder)
    if not folder.is_dir():
        return "is not a folder" if folder.exists() else "does not exist"
    if ((folder / WEIGHTS_FILE).is_file() or (folder / MORPHABLE_CACHE_FILE).is_file()
            or any(p.is_file() for p in folder.glob(VARIANTS_CARD_GLOB))):
        return None
    return (f"not a model card: it holds neither converted network weights ({WEIGHTS_FILE}) nor a converted Basel "
            f"Face Model ({MORPHABLE_CACHE_FILE}) nor validated variants ({VARIANTS_CARD_GLOB})")


def check_model_card(network_dir=None) -> Path:
    """The model card folder a command that READS one uses (locate_model_dir), checked by one
    rule whichever way the user named it (--network-dir, or $ENGINE3DMM_MODEL_DIR, which
    --network-dir defaults to): a named folder must be a model card (model_card_problem).
    Silently running the synthetic set there (what the engine does for the default folder of
    a fresh install) would hide a typo. The unnamed defaults (checkout, per-user folder) are
    not checked. Commands that CREATE a card (`convert`, `fetch`) do not call this.
    Errors: ModelFileError naming the option or variable, the folder, what it lacks and the
    command that makes a card there."""
    import shlex

    folder, origin = locate_model_dir(network_dir)
    if origin not in NAMED:
        return folder
    problem = model_card_problem(folder)
    if problem is None:
        return folder
    if origin == FROM_OPTION:
        label, convert = f"--network-dir {folder}", f"engine3dmm convert --network-dir {shlex.quote(str(folder))}"
        default = "leave --network-dir out"
    else:  # `convert` writes where the variable points: no option to repeat
        label, convert, default = f"{FROM_ENV}={folder}", "engine3dmm convert", f"unset {ENV_MODEL_DIR}"
    if problem.startswith("not a model card"):
        raise ModelFileError(f"{label}: {problem}; run `{convert}`, or {default} to use the default model card")
    raise ModelFileError(f"{label}: {problem}; expected a model card folder made by `{convert}`")


def weights_fingerprint(weights: dict[str, np.ndarray], mean: np.ndarray) -> str:
    """sha256 over names and bytes of every tensor: identifies the weights in derived artifacts."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(np.ascontiguousarray(weights[k], np.float32).tobytes())
    h.update(b"mean")
    h.update(np.ascontiguousarray(mean, np.float32).tobytes())
    return h.hexdigest()


def synthetic_cache_dir() -> Path:
    """Where built synthetic weights are kept between processes ($XDG_CACHE_HOME/engine3dmm)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "engine3dmm"


class _WeightSet(dict):
    """A synthetic set's weights {name: array}, with its mean image, metadata and fingerprint:
    a dict that can be weakly referenced, so the cache below never keeps it alive by itself."""

    __slots__ = ("__weakref__", "fingerprint", "mean", "meta")


# seed -> the synthetic set while anything (a ResolvedModel, a runner being built) still holds it.
# Held weakly: once a runner has its own copy (ONNX Runtime's session, a PyTorch module) nothing
# needs the 170 MB of arrays, and a strong cache kept them resident for the whole process
# (bench/results/engine_bench_cpu.md, reconstruct_81mp). A later call reloads them from the disk
# cache (about 0.2 s).
_SYNTHETIC_SETS: weakref.WeakValueDictionary[int, _WeightSet] = weakref.WeakValueDictionary()
_SYNTHETIC_LOCK = threading.Lock()


def _synthetic(seed: int) -> _WeightSet:
    with _SYNTHETIC_LOCK:
        found = _SYNTHETIC_SETS.get(seed)
        if found is None:
            found = _SYNTHETIC_SETS[seed] = _load_synthetic(seed)
        return found


def _load_synthetic(seed: int) -> _WeightSet:
    from engine.network.synthetic import RECIPE, make_synthetic, synthetic_metadata

    # Building the set runs a calibration forward pass (seconds); every later process
    # loads the cached copy instead. Any problem with the cache just means rebuilding.
    path = synthetic_cache_dir() / f"synthetic-seed{seed}-recipe{RECIPE}.safetensors"
    try:
        w, mean, meta = W.load_weights(path)
        if str(meta.get("recipe")) != str(RECIPE) or str(meta.get("seed")) != str(seed):
            raise ModelFileError(f"{path}: other recipe or seed")
        meta = synthetic_metadata(seed)
    except Exception:
        w, mean, meta = make_synthetic(seed)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            W.save_weights(path, w, mean, meta)
        except Exception as e:  # read-only home, no safetensors: fine, just slower next time
            log.info("not caching synthetic weights at %s: %s", path, e)
    for a in (*w.values(), mean):
        a.setflags(write=False)  # shared between callers through the cache
    out = _WeightSet(w)
    out.mean, out.meta, out.fingerprint = mean, meta, weights_fingerprint(w, mean)
    return out


MEAN_IMAGE, CHANNEL_MEAN = "image", "per-channel"
_FP16_PLANS: dict[str, object] = {}  # weights fingerprint -> Fp16Plan, computed once per process


def mean_kind(metadata: dict) -> str:
    """MEAN_IMAGE (the release's mean.binaryproto) or CHANNEL_MEAN (its three channel means only)."""
    kind = metadata.get("mean_kind")
    if kind in (MEAN_IMAGE, CHANNEL_MEAN):
        return kind
    # Files converted before `mean_kind` existed: no mean file recorded means the channel mean.
    src = metadata.get("source")
    mean = src.get("mean") if isinstance(src, dict) else None
    return CHANNEL_MEAN if isinstance(mean, dict) and not mean.get("file") else MEAN_IMAGE


@dataclass
class ResolvedModel:
    model_dir: Path
    synthetic: bool
    weights: dict[str, np.ndarray] = field(repr=False)
    mean: np.ndarray = field(repr=False)
    metadata: dict
    fingerprint: str
    weights_path: Path | None = None

    @property
    def mean_kind(self) -> str:
        """MEAN_IMAGE or CHANNEL_MEAN (a conversion without the release's mean image)."""
        return CHANNEL_MEAN if self.synthetic else mean_kind(self.metadata)

    def describe(self) -> str:
        if self.synthetic:
            return (f"SYNTHETIC weights (built-in, seed {self.metadata.get('seed')}): coefficients are meaningless; "
                    f"run `convert` on the release's caffemodel to use the trained network")
        note = (" (PER-CHANNEL MEAN: converted without the release's mean image, outputs differ from the "
                "release's)" if self.mean_kind == CHANNEL_MEAN else "")
        return f"converted 3DMM-CNN weights from {self.weights_path}{note}"

    def fp16_plan(self):
        """The engine.network.fp16.Fp16Plan of these weights: stored with converted weights,
        else measured once per process (a numpy forward pass over the calibration faces)."""
        from engine.network import fp16

        plan = _FP16_PLANS.get(self.fingerprint)
        if plan is None:
            plan = fp16.Fp16Plan.from_json(str(self.metadata.get("fp16_plan", "")))
        if plan is None:
            plan = fp16.make_plan(W.fuse(self.weights), self.mean)
        _FP16_PLANS[self.fingerprint] = plan
        return plan

    @property
    def tag(self) -> str:
        """File-name tag of derived artifacts: 'cnn3dmm' or 'cnn3dmm.synthetic-seed0'."""
        return f"cnn3dmm.synthetic-seed{self.metadata.get('seed')}" if self.synthetic else "cnn3dmm"

    def onnx_path(self, precision: str = "fp32") -> Path:
        """The ONNX file of these weights at `precision`, exported now if absent or stale."""
        from engine.network.onnx_export import EXPORT_VERSION, read_metadata

        path = self.model_dir / f"{self.tag}.{precision}.onnx"
        if path.is_file():
            try:
                meta = read_metadata(path)
                if meta.get("weights_sha256") == self.fingerprint and meta.get("export_version") == EXPORT_VERSION:
                    return path
                log.info("%s was built from other weights or by an older version; rebuilding it", path)
            except Exception as e:  # unreadable: rebuild rather than fail
                log.warning("%s is unreadable (%s); rebuilding it", path, e)
        export_onnx(self, precision, path)
        return path


def export_onnx(model: ResolvedModel, precision: str, path: Path) -> Path:
    from engine.fileio import atomic_write
    from engine.network.onnx_export import build_onnx

    log.info("exporting %s ONNX of the %s weights to %s (one time)", precision,
             "synthetic" if model.synthetic else "converted", path)
    meta = {"weights_sha256": model.fingerprint, "synthetic": str(model.synthetic).lower(),
            "source": model.describe(), "mean": model.mean_kind}
    plan = None
    if precision == "fp16":
        from engine.network.fp16 import log_plan

        plan = model.fp16_plan()
        log_plan(plan, f"{path.name}: float16")
    onnx_model = build_onnx(W.fuse(model.weights), model.mean, precision, meta, fp16_plan=plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        f.write(onnx_model.SerializeToString())
    return path


def resolve_model(model_dir=None, *, synthetic_seed: int = 0, allow_synthetic: bool = True) -> ResolvedModel:
    """The converted weights in `model_dir` if present, else the synthetic set (logged)."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    path = model_dir / WEIGHTS_FILE
    if path.is_file():
        w, mean, meta = W.load_weights(path)
        return ResolvedModel(model_dir, bool(meta.get("synthetic")), w, mean, meta,
                             weights_fingerprint(w, mean), path)
    if not allow_synthetic:
        raise ModelFileError(f"{path}: converted weights not found; run convert_caffe (CLI: convert) "
                             "on the release's deploy_network.prototxt, caffemodel and mean.binaryproto")
    found = _synthetic(synthetic_seed)
    log.warning("no converted weights at %s: using the built-in SYNTHETIC weights (seed %d)", path, synthetic_seed)
    # `weights` is the cached set itself: it stays shared while this model lives, and no longer.
    return ResolvedModel(model_dir, True, found, found.mean, dict(found.meta), found.fingerprint, None)
