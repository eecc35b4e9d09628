"""Pictures of results: a z-buffer rasteriser for posed meshes, overlays on the photo, PNG files.

    rasterize(vertices_img, faces, colors, width, height) -> (rgb, mask, depth)
    render_buffers(...)                                   -> RenderBuffers(rgb, mask, depth, triangle)
    overlay(photo_rgb, [(vertices_img, colors, landmarks), ...], triangles) -> uint8 [H, W, 3]
    stamp(rgb, lines)                                     text in a box at the top left (SYNTHETIC)
    write_png(path, rgb, text={...})                      atomic PNG, optional text chunks

Vertices are in image coordinates (engine.pose's posed vertices): x right and y down in
pixels of the photo, pixel centres at integers, z in the same units with SMALLER z nearer the
camera. The rasteriser is compiled (csrc/src/raster.cpp, engine._C); `engine.render.reference`
is the same rule in plain numpy, its test oracle. This room depends only on numpy, Pillow and
the compiled core, never on the pipeline.
"""
from __future__ import annotations

from engine.render.overlay import LANDMARK_GROUPS_68, overlay, stamp
from engine.render.png import write_png
from engine.render.raster import DEFAULT_AMBIENT, DEFAULT_LIGHT, RenderBuffers, rasterize, render_buffers

__all__ = ["DEFAULT_AMBIENT", "DEFAULT_LIGHT", "LANDMARK_GROUPS_68", "RenderBuffers", "overlay", "rasterize",
           "render_buffers", "stamp", "write_png"]
