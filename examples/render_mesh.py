"""Render a reconstructed face to a PNG, no display needed.

    python examples/render_mesh.py                           # -> ./mesh.png (the astronaut)
    python examples/render_mesh.py --image me.jpg --output me.png
    python examples/render_mesh.py --output docs/mesh.png    # the README's picture (from the checkout)

Writes into the current folder unless --output says otherwise: never into the repository
unless asked. Reconstructs skimage.data.astronaut() (or --image) with the default model card
(engine.network.resolve.default_model_dir): its converted network weights and Basel Face
Model, each SYNTHETIC until you convert the official files; the caption names the image and
says which were used. Panels: the input with its face box, the textured mesh from the front
and turned 35 degrees, the bare geometry, and the morphable model's mean face (all
coefficients 0) for reference. Synthetic network weights are not trained: their coefficients
are of the right size (the caption prints the largest) but say nothing about the person, so
the reconstruction is a plausible face that is not theirs; a synthetic morphable model
decodes even trained coefficients into a placeholder face.

Face box: dlib's detector when installed, else --box X0,Y0,X1,Y1 (the astronaut's own box
is built in).

The rasteriser is deliberately small: orthographic projection, painter's algorithm
(triangles sorted far to near and filled by Pillow), each triangle coloured by the mean of
its vertex colours times Lambert shading, drawn at 2x and downsampled for anti-aliasing.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import engine

PANEL = 256
ASTRONAUT_BOX = (179, 87, 272, 178)  # dlib's box, used when dlib is not installed
LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])


def render(vertices, colors, faces, *, yaw_deg: float = 0.0, textured: bool = True, size: int = PANEL,
           background=(255, 255, 255)) -> Image.Image:
    """Mesh (float [N,3] mm, uint8 [N,3], int [F,3]) -> RGB image of size x size."""
    ss = 2  # supersampling factor
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    v = (np.asarray(vertices, np.float64) - np.asarray(vertices, np.float64).mean(axis=0)) @ rot.T
    extent = np.abs(v[:, :2]).max()
    scale = 0.45 * size * ss / extent
    px = np.stack([v[:, 0] * scale + size * ss / 2, size * ss / 2 - v[:, 1] * scale], axis=1)  # y up -> rows down
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1  # face the viewer: hidden sides are painted over anyway
    shade = 0.3 + 0.7 * np.clip(n @ LIGHT, 0, 1)
    base = colors[faces].mean(axis=1) if textured else np.full((len(faces), 3), 205.0)
    rgb = np.clip(base * shade[:, None], 0, 255).astype(np.uint8)
    order = np.argsort(tri[:, :, 2].mean(axis=1))  # far (small z) first, near last
    img = Image.new("RGB", (size * ss, size * ss), background)
    draw = ImageDraw.Draw(img)
    corners = px[faces]
    for i in order:
        draw.polygon([tuple(p) for p in corners[i]], fill=tuple(int(c) for c in rgb[i]))
    return img.resize((size, size), Image.LANCZOS)


def photo_panel(image: np.ndarray, box, size: int = PANEL) -> Image.Image:
    """The input around the face, with the face box drawn."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 1.3 * max(x1 - x0, y1 - y0)
    region = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    im = Image.fromarray(image).crop(region)
    draw = ImageDraw.Draw(im)
    draw.rectangle((x0 - region[0], y0 - region[1], x1 - region[0], y1 - region[1]), outline=(255, 60, 60), width=2)
    return im.resize((size, size), Image.LANCZOS)


def card_morphable() -> str | None:
    """The Basel Face Model `convert --bfm` wrote into the default model card, or None (the
    built-in synthetic model): what the CLI decodes with (engine.cli.common.default_morphable)."""
    from engine.network.resolve import MORPHABLE_CACHE_FILE, default_model_dir

    path = default_model_dir() / MORPHABLE_CACHE_FILE
    return str(path) if path.is_file() else None


def reconstruct(image: np.ndarray, name: str, box, model: str | None):
    """The first face of `image` with the default card's models: in `box` when given, else
    dlib's detector (SystemExit when neither is available)."""
    has_dlib = importlib.util.find_spec("dlib") is not None
    if box is None and not has_dlib:
        raise SystemExit(f"{name}: dlib is not installed, so no face can be found: pass --box X0,Y0,X1,Y1")
    boxes = None if box is None else {name: [box]}
    with engine.Reconstructor(detector="dlib" if box is None else None, model=model) as rec:
        for r in rec.reconstruct([(name, image)], boxes=boxes):
            if r.error:
                raise SystemExit(f"{name}: {r.error}")
            # copy: the result's arrays are views into the batch buffers
            return (r.box, np.array(r.coeffs), np.array(r.vertices), np.array(r.colors), np.array(r.faces),
                    dict(r.provenance))
    raise SystemExit(f"{name}: no result")


def caption(provenance: dict, coeffs_max: float, name: str) -> list[str]:
    """What the picture shows, true for any image: `name` is the input's, and what the models
    are comes from the run's provenance."""
    net = "SYNTHETIC network weights" if provenance["network_synthetic"] else "the converted 3DMM-CNN network"
    mm = "the SYNTHETIC morphable model" if provenance["morphable_synthetic"] else "the Basel Face Model"
    lines = [f"{name} reconstructed by engine3dmm with {net} and {mm} (runner {provenance['runner']}); "
             f"largest |coefficient| {coeffs_max:.1f} sd."]
    if provenance["network_synthetic"]:
        lines.append(f"The network weights are untrained placeholders: the coefficients are of the right size but "
                     f"say nothing about the person in {name}, so this is not their face.")
    elif provenance["morphable_synthetic"]:
        lines.append(f"The morphable model is a placeholder: it decodes the coefficients of the person in {name} "
                     "into a face that is not theirs.")
    lines.append("Right: the morphable model's mean face (all coefficients 0).")
    return lines


def parse_box(text: str):
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 with X1 > X0 and Y1 > Y0, found {text!r}")
    return box


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="mesh.png",
                    help="the PNG to write (default: mesh.png in the current folder; the README's picture is "
                         "docs/mesh.png)")
    ap.add_argument("--image", help="a photo instead of skimage.data.astronaut()")
    ap.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1",
                    help="the face's box in pixels (default: dlib's detector; without dlib, required with --image)")
    args = ap.parse_args(argv)
    if args.image:
        image, name = np.asarray(Image.open(args.image).convert("RGB")), Path(args.image).name
        box = args.box
    else:
        from skimage import data

        image, name = data.astronaut(), "skimage.data.astronaut()"
        box = args.box or (None if importlib.util.find_spec("dlib") else ASTRONAUT_BOX)
    morphable = card_morphable()
    box, coeffs, vertices, colors, faces, prov = reconstruct(image, name, box, morphable)
    model = engine.load_model(morphable)  # the model the mesh was decoded with: its mean face
    mean_v = model.shape_mean.reshape(-1, 3)
    mean_c = np.clip(model.tex_mean.reshape(-1, 3), 0, 255).astype(np.uint8)
    b = box.as_tuple() if hasattr(box, "as_tuple") else box
    panels = [(photo_panel(image, b), "input and face box"),
              (render(vertices, colors, faces), "reconstruction"),
              (render(vertices, colors, faces, yaw_deg=35), "turned 35 degrees"),
              (render(vertices, colors, faces, yaw_deg=35, textured=False), "geometry"),
              (render(mean_v, mean_c, model.faces, yaw_deg=20), "mean face (coefficients 0)")]
    lines = caption(prov, float(np.abs(coeffs).max()), name)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    top, strip = 20, 12 + 18 * len(lines)  # a label row above the panels, the caption below
    out = Image.new("RGB", (PANEL * len(panels), top + PANEL + strip), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    for i, (p, label) in enumerate(panels):
        out.paste(p, (i * PANEL, top))
        draw.text((i * PANEL + 6, 3), label, fill=(90, 90, 90), font=font)
    for k, line in enumerate(lines):
        draw.text((8, top + PANEL + 6 + 18 * k), line, fill=(30, 30, 30), font=font)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    out.save(args.output, optimize=True)
    print(f"wrote {args.output}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
