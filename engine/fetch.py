"""Download what is public: the network release and the release's mesh topology file.

Nothing in the engine downloads at run time; only an explicit ``fetch`` does.

Public API
----------
- ``ASSETS``: {"network": Asset, "topology": Asset}
- ``Asset(name, base_url, path, filename, sha256=None, extract=False, description="")``
  with ``.url(base_url=None) -> str``
- ``download(url, dest, *, sha256=None, timeout=30.0, resume=True, progress=None) -> Path``
- ``extract_zip(zip_path, target_dir, *, max_total_bytes=...) -> list[Path]``
- ``fetch(names=("network", "topology"), dest_dir=".", *, base_url=None, timeout=30.0,
  progress=None) -> dict[str, FetchResult]``
- ``sha256_file(path) -> str``
- ``is_fetched(name, dest_dir) -> bool``  the asset is in `dest_dir` under its name (and verified)
- ``bfm_source() -> str``  where the Basel Face Model comes from (it cannot be fetched), one line
- ``bfm_instructions(dest_dir=None, *, options="", done=()) -> str``  where to put the Basel Face
  Model and how to convert it (the commands carry `options`, the user's folder options; the
  steps in `done`, "bfm" and "topology", are left out)

Errors
------
Network failures (connection refused, timeout, HTTP error, truncated transfer) raise
BackendError (from ``fetch``, saying where to save a file downloaded by hand so that
a rerun uses it); a checksum mismatch raises ModelFileError; bad arguments and unsafe
archives raise InputError. Messages name the URL or file, what was expected and what
was found.

Files on disk
-------------
A download goes to ``<dest>.partial`` and is renamed to ``<dest>`` only after the
checksum (when known) matches, so ``<dest>`` is always complete. The ``.partial`` name
is fixed (not random as in engine.fileio.atomic_write) so that an interrupted or
truncated download resumes with an HTTP Range request on the next run. Archive members
are written with engine.fileio.atomic_write.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException, IncompleteRead
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from engine.errors import BackendError, InputError, ModelFileError
from engine.fileio import atomic_write

USER_AGENT = "engine3dmm-fetch/0.1 (+urllib)"
CHUNK = 1 << 20
ProgressFn = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)


@dataclass(frozen=True)
class Asset:
    """One downloadable file. The URL is ``base_url + "/" + path`` so tests (or a mirror)
    can swap the host with ``base_url`` while keeping the path."""

    name: str
    base_url: str
    path: str
    filename: str
    sha256: str | None = None
    extract: bool = False
    description: str = ""

    def url(self, base_url: str | None = None) -> str:
        return (base_url or self.base_url).rstrip("/") + "/" + self.path.lstrip("/")


TOPOLOGY_COMMIT = "c4b0eb1f91357a6395833ace1df7343d2f680463"  # anhttran/3dmm_cnn

ASSETS: dict[str, Asset] = {
    # The authors' Caffe release (3dmm_cnn_resnet_101.caffemodel, deploy_network.prototxt,
    # mean.binaryproto), mirrored by Yuval Nirkin's face_swap project. The release tag is
    # "0.9" (no "v"): face_swap's README links .../releases/download/0.9/3dmm_cnn_resnet_101.zip.
    # The zip's checksum is not published; we print the one we compute so users can pin it.
    "network": Asset(
        name="network",
        base_url="https://github.com",
        path="YuvalNirkin/face_swap/releases/download/0.9/3dmm_cnn_resnet_101.zip",
        filename="3dmm_cnn_resnet_101.zip",
        sha256=None,
        extract=True,
        description="3DMM-CNN ResNet-101 Caffe release (weights, prototxt, mean image)",
    ),
    # How the release trims the Basel Face Model (vertex subset, faces, landmarks). Pinned to
    # the commit that added the file, not to a branch that can move.
    "topology": Asset(
        name="topology",
        base_url="https://raw.githubusercontent.com",
        path=f"anhttran/3dmm_cnn/{TOPOLOGY_COMMIT}/3DMM_model/mod_struct_expr.mat",
        filename="mod_struct_expr.mat",
        sha256="2b4c1e4716ac58922be8e9e84841f4956c87d65d63e8763b6c05b0bebe945901",
        extract=False,
        description="mesh topology of the release's trimmed Basel Face Model",
    ),
}


@dataclass(frozen=True)
class FetchResult:
    asset: str
    path: Path  # the downloaded file
    sha256: str  # what we computed (compare with Asset.sha256 when that is None)
    extracted: tuple[Path, ...] = ()
    skipped: bool = False  # True when the file was already present and verified


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha(expected: str | None, found: str, url: str, path: Path) -> None:
    if expected is not None and found.lower() != expected.lower():
        raise ModelFileError(f"{url}: sha256 mismatch for {path.name}: expected {expected}, found {found}")


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start > 0:
        req.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start > 0:
            return e  # the caller decides: the partial file may already be complete
        raise BackendError(f"{url}: HTTP {e.code} {e.reason}, expected 200 or 206") from None
    except urllib.error.URLError as e:
        raise BackendError(f"{url}: cannot connect: {e.reason}") from None
    except (socket.timeout, TimeoutError):
        raise BackendError(f"{url}: no answer within {timeout:g} s") from None
    except (OSError, HTTPException) as e:
        raise BackendError(f"{url}: connection failed: {e}") from None


def _resume_offset(resp, start: int, url: str) -> tuple[int, int | None]:
    """(offset to write at, total size or None) from the response to a (Range) request."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if resp.status == 206:
        # Content-Range: bytes START-END/TOTAL; honour the start the server chose.
        cr = resp.headers.get("Content-Range", "")
        try:
            unit, rng = cr.split(" ", 1)
            first, rest = rng.split("-", 1)
            _, total = rest.split("/", 1)
            first_i = int(first)
            total_i = None if total.strip() == "*" else int(total)
        except ValueError:
            raise BackendError(f"{url}: malformed Content-Range {cr!r} in a 206 answer") from None
        if first_i != start:
            raise BackendError(f"{url}: asked to resume at byte {start}, server answered from byte {first_i}")
        return start, total_i
    # 200: the server ignored the Range header; start again from zero.
    return 0, length


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> Path:
    """Download `url` to `dest` (complete, verified, or not at all) and return `dest`.

    Bytes go to ``dest + ".partial"``; with `resume`, an existing partial file is
    continued with an HTTP Range request (a server that ignores Range restarts the
    transfer). `timeout` bounds the connection and every read (seconds), so a stalled
    server cannot hang the call. A transfer that ends early keeps the partial file (run
    again to resume) and raises BackendError; a checksum mismatch deletes it and raises
    ModelFileError.
    """
    dest = Path(dest)
    if sha256 is not None and not (len(sha256) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha256)):
        raise InputError(f"sha256: expected 64 hexadecimal digits, found {sha256!r}")
    if not dest.parent.is_dir():
        raise InputError(f"{dest}: destination folder {dest.parent} does not exist")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InputError(f"timeout: expected a positive number of seconds, found {timeout!r}")
    partial = dest.with_name(dest.name + ".partial")
    start = partial.stat().st_size if (resume and partial.is_file()) else 0
    resp = _open(url, start, timeout)
    if isinstance(resp, urllib.error.HTTPError):  # 416: nothing left to send at this offset
        resp.close()
        found = sha256_file(partial)
        if sha256 is None or found != sha256.lower():
            partial.unlink(missing_ok=True)  # cannot tell if it is complete: start over next time
            raise BackendError(f"{url}: server refused to resume at byte {start} (HTTP 416); partial file removed, run again")
        os.replace(partial, dest)
        return dest
    with resp:
        offset, total = _resume_offset(resp, start, url)
        done = offset
        try:
            _transfer(resp, partial, offset, url, timeout, total, progress)
        except BaseException:
            if offset == 0 and partial.is_file() and partial.stat().st_size == 0:
                partial.unlink(missing_ok=True)  # nothing came: nothing to resume, leave no file
            raise
        done = partial.stat().st_size
    if total is not None and done != total:
        if done == 0:
            partial.unlink(missing_ok=True)  # nothing came: nothing to resume, leave no file
            raise BackendError(f"{url}: transfer truncated: expected {total} bytes, received none")
        raise BackendError(
            f"{url}: transfer truncated: expected {total} bytes, received {done}; "
            f"partial file kept at {partial}, run again to resume"
        )
    found = sha256_file(partial)
    if sha256 is not None and found != sha256.lower():
        partial.unlink(missing_ok=True)  # corrupt: resuming it would never succeed
        _check_sha(sha256, found, url, dest)
    os.replace(partial, dest)  # atomic on POSIX and Windows: dest is complete or absent
    return dest


def _transfer(resp, partial: Path, offset: int, url: str, timeout: float, total, progress) -> None:
    """The response's body into `partial` from byte `offset`; BackendError/InputError on failure."""
    done = offset
    try:
        with open(partial, "r+b" if offset > 0 else "wb") as f:
            f.seek(offset)
            f.truncate()
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except IncompleteRead as e:  # chunked transfer cut short: keep what came
                    chunk = e.partial
                    f.write(chunk)
                    done += len(chunk)
                    break
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except (socket.timeout, TimeoutError):
        raise BackendError(
            f"{url}: no data for {timeout:g} s after {done} bytes; partial file kept at {partial}, run again to resume"
        ) from None
    except OSError as e:
        if e.filename is not None:
            raise InputError(f"{partial}: cannot write: {e.strerror}") from None
        raise BackendError(f"{url}: connection lost after {done} bytes ({e}); partial file kept at {partial}") from None
    except HTTPException as e:
        raise BackendError(f"{url}: connection lost after {done} bytes ({e}); partial file kept at {partial}") from None


def _safe_member_path(info: zipfile.ZipInfo, target: Path, zip_path: Path) -> Path | None:
    """Where `info` goes under `target`, or InputError when it would escape. None for folders."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise InputError(f"{zip_path}: member {name!r} is a symbolic link; refusing to extract this archive")
    norm = name.replace("\\", "/")
    pure = PurePosixPath(norm)
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in pure.parts:
        raise InputError(f"{zip_path}: member {name!r} escapes the target folder; refusing to extract this archive")
    if name.endswith("/") or not pure.parts or pure.parts == (".",):
        return None  # a folder entry: folders are created for the files inside them
    out = (target / Path(*pure.parts)).resolve()
    root = target.resolve()
    if root != out and root not in out.parents:
        raise InputError(f"{zip_path}: member {name!r} escapes the target folder; refusing to extract this archive")
    return out


def extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike, *, max_total_bytes: int = 8 << 30,
                bad_archive_advice: str = "") -> list[Path]:
    """Extract a zip into `target_dir`, refusing the whole archive (before writing
    anything) if any member is absolute, contains '..', or is a symbolic link, or if
    the declared uncompressed size exceeds `max_total_bytes`. Each member is written
    atomically. Returns the extracted file paths in archive order.
    `bad_archive_advice`: appended to every error about the archive itself (unreadable,
    unsafe, too big, a corrupt member), e.g. how to get a good copy."""
    zip_path = Path(zip_path)
    target = Path(target_dir)
    advice = f"; {bad_archive_advice}" if bad_archive_advice else ""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{zip_path}: not a readable zip archive: {e}{advice}") from None
    with zf:
        infos = zf.infolist()
        try:
            plan = [(i, _safe_member_path(i, target, zip_path)) for i in infos]
        except InputError as e:
            raise InputError(f"{e}{advice}") from None
        total = sum(i.file_size for i in infos)
        if total > max_total_bytes:
            raise InputError(f"{zip_path}: archive expands to {total} bytes, limit is {max_total_bytes}{advice}")
        out = []
        for info, dest in plan:
            if dest is None:
                continue
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, atomic_write(dest) as f:
                    shutil.copyfileobj(src, f, CHUNK)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
                raise ModelFileError(f"{zip_path}: member {info.filename!r} is corrupt: {e}{advice}") from None
            except OSError as e:
                raise InputError(f"{dest}: cannot write member {info.filename!r} of {zip_path}: {e.strerror or e}") from None
            out.append(dest)
    return out


def fetch(
    names: Iterable[str] = ("network", "topology"),
    dest_dir: str | os.PathLike = ".",
    *,
    base_url: str | None = None,
    timeout: float = 30.0,
    progress: ProgressFn | None = None,
) -> dict[str, FetchResult]:
    """Download (and extract) the named assets into `dest_dir` (created if missing).

    A file already under its final name is not downloaded again (downloads are renamed
    into place only when complete); when the asset's sha256 is known the file must also
    match it, else it is fetched again. `base_url`
    replaces every asset's host (a mirror, or a local test server). Zips are extracted
    into ``dest_dir`` itself (the release's files sit at the top of the archive).
    """
    names = list(names)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise InputError(f"fetch: unknown asset {unknown[0]!r}, expected one of {sorted(ASSETS)}")
    dest_dir = Path(dest_dir)
    created = _missing_folders(dest_dir)  # outermost first
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(created)
        raise InputError(f"{dest_dir}: cannot create the download folder: {e.strerror}") from None
    try:
        return _fetch_into(names, dest_dir, base_url, timeout, progress)
    except BaseException:
        # A failed fetch leaves nothing it created: the folders made above go again, unless a
        # partial download (kept to resume) or another file now lives in them.
        _remove_empty(created)
        raise


def _missing_folders(path: Path) -> list[Path]:
    """The folders `path.mkdir(parents=True)` would create, outermost first."""
    out = []
    p = path.absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out[::-1]


def _remove_empty(folders: list[Path]) -> None:
    for d in reversed(folders):  # innermost first
        try:
            d.rmdir()  # only ever removes an empty folder
        except OSError:
            pass


def _present(asset: Asset, dest: Path) -> tuple[str | None, bool]:
    """(sha256 of the file at `dest` or None, whether it counts as fetched). A file under its
    final name is complete (download renames only at the end); with a known checksum it must
    also match it (else it is fetched again)."""
    present = sha256_file(dest) if dest.is_file() else None
    return present, present is not None and (asset.sha256 is None or present == asset.sha256)


def is_fetched(name: str, dest_dir: str | os.PathLike) -> bool:
    """Whether asset `name` is in `dest_dir` as `fetch` leaves it (so fetching it is done):
    under its file name and, where its sha256 is pinned, matching it."""
    asset = ASSETS[name]
    return _present(asset, Path(dest_dir) / asset.filename)[1]


def _fetch_into(names: list, dest_dir: Path, base_url, timeout, progress) -> dict[str, FetchResult]:
    results = {}
    for name in names:
        asset = ASSETS[name]
        dest = dest_dir / asset.filename
        url = asset.url(base_url)
        present, skipped = _present(asset, dest)
        by_hand = (f"download {asset.url()} elsewhere and save it as {dest.resolve()}; running fetch again then "
                   "uses that file" + (" (and checks its sha256)" if asset.sha256 else " (and extracts it)"
                                       if asset.extract else ""))
        if not skipped:
            try:
                download(url, dest, sha256=asset.sha256, timeout=timeout, progress=progress)
            except BackendError as e:  # offline, blocked, server down: say how to do it by hand
                wrong = (f" The file now at {dest} is not the release's (sha256 {present}, expected "
                         f"{asset.sha256})." if present is not None else "")
                raise BackendError(f"{e}.{wrong} To install it by hand, {by_hand}") from None
        digest = present if skipped else sha256_file(dest)
        advice = f"delete {dest} and run fetch again to download it anew, or {by_hand}"
        extracted = tuple(extract_zip(dest, dest_dir, bad_archive_advice=advice)) if asset.extract else ()
        results[name] = FetchResult(name, dest, digest, extracted, skipped)
    return results


BFM_FILE = "01_MorphableModel.mat"
BFM_URL = "https://faces.dmi.unibas.ch/bfm/"
# Where the Basel Face Model comes from: the one text `fetch`'s guidance and `convert`'s
# messages share (bfm_source, bfm_instructions).
BFM_NOT_DOWNLOADABLE = ("the Basel Face Model 2009 cannot be downloaded automatically: its owners (University of "
                        "Basel) require each user to register and accept their licence")
BFM_DOWNLOAD = f'register and download {BFM_FILE} at {BFM_URL} ("Basel Face Model 2009", about 230 MB, MATLAB v5 format)'
BFM_STEPS = ("bfm", "topology")  # the steps bfm_instructions can leave out as done


def bfm_source() -> str:
    """Where the Basel Face Model comes from, in one line (for an error message): it cannot
    be fetched, and how a user gets it. bfm_instructions says the same."""
    return f"{BFM_NOT_DOWNLOADABLE}; {BFM_DOWNLOAD}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def bfm_instructions(dest_dir: str | os.PathLike | None = None, *, options: str = "", done=()) -> str:
    """How to obtain the Basel Face Model, where to put it (`dest_dir`, default: the default
    model card's downloads folder) and the commands that follow, with `options` (the user's
    folder options, e.g. "--network-dir card") repeated in each so they act on the same folders.
    `done`: the steps already done, left out ("bfm": 01_MorphableModel.mat is in `dest_dir`;
    "topology": mod_struct_expr.mat is fetched); the conversion is always left to do (once it is
    done the caller prints no instructions). The steps are numbered as they are shown."""
    done = set(done)
    if done - set(BFM_STEPS):
        raise ValueError(f"done: expected steps among {BFM_STEPS}, found {sorted(done - set(BFM_STEPS))}")
    if dest_dir is None:
        from engine.network.resolve import default_model_dir

        dest_dir = default_model_dir() / "downloads"
    opts = f" {options}" if options else ""
    steps = []
    if "bfm" not in done:
        steps += [_sentence(BFM_DOWNLOAD), f"Put {BFM_FILE} in {dest_dir}."]
    if "topology" not in done:
        steps.append(f"Download the release's topology file (public): engine3dmm fetch topology{opts}\n"
                     f"   ({ASSETS['topology'].filename}, sha256 {ASSETS['topology'].sha256}).")
    steps.append(f"Convert: engine3dmm convert{opts} (reads {BFM_FILE} and {ASSETS['topology'].filename};\n"
                 "   keeps the release's 46,990 vertices and first 99 shape/texture components, shape in\n"
                 "   millimetres, as the original trimBaselFace.py did).")
    head = (_sentence(BFM_NOT_DOWNLOADABLE) if "bfm" not in done
            else f"The Basel Face Model ({BFM_FILE} under {dest_dir}) is there, not converted yet:")
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
    return f"{head}\n\n{numbered}\n\nThe engine never redistributes the Basel Face Model; keep your copy private.\n"
