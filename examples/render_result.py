"""Draw reconstructions over their photo with the API: each face's posed mesh and its 68 landmarks.

    python examples/render_result.py                         # skimage's astronaut -> astronaut.render.png
    python examples/render_result.py photo.jpg -o photo.render.png

What `engine3dmm reconstruct --render` writes, in a few lines: fit each face's pose to its
landmarks (reconstruct(..., pose=True)), then draw the posed meshes with engine.render.
With the built-in SYNTHETIC models the mesh is a placeholder, not the person: the picture
says so.
"""
from __future__ import annotations

import argparse

import numpy as np

import engine
from engine.render import overlay, stamp, write_png


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", help="a photo (default: skimage.data.astronaut())")
    ap.add_argument("-o", "--output", help="the PNG to write (default: NAME.render.png here)")
    args = ap.parse_args(argv)
    if args.image:
        from pathlib import Path

        from engine.images import load_image

        photo, name = load_image(args.image), Path(args.image).stem
    else:
        from skimage import data

        photo, name = data.astronaut(), "astronaut"

    drawn, triangles, synthetic = [], None, False
    with engine.Reconstructor() as rec:
        for face in rec.reconstruct([(name, photo)], pose=True):
            if face.error or face.posed_vertices is None:
                print(f"{name}: {face.error or face.pose_error}")
                continue
            p = face.pose
            print(f"{face.name}: yaw {p.yaw:.1f}, pitch {p.pitch:.1f}, roll {p.roll:.1f} degrees; "
                  f"landmarks fitted to {p.landmark_error_px:.1f} px")
            # Copies: a result's arrays are views of its batch's buffers.
            drawn.append((face.posed_vertices, np.array(face.colors), face.landmarks))
            triangles = face.faces
            synthetic |= bool(face.provenance["network_synthetic"] or face.provenance["morphable_synthetic"])

    picture = overlay(photo, drawn, triangles) if drawn else photo
    if synthetic:
        picture = stamp(picture, ["SYNTHETIC models: not a real reconstruction"])
    write_png(args.output or f"{name}.render.png", picture)
    print(f"wrote {args.output or f'{name}.render.png'}")


if __name__ == "__main__":
    main()
