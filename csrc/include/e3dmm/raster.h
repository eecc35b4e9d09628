/// @file raster.h
/// @brief A z-buffer rasteriser for posed, vertex-coloured meshes (the pictures of issue 9).
///
/// Image coordinates, as engine.pose writes them: x to the right and y down in pixels, pixel
/// centres at integer coordinates (pixel (0, 0) is centred on x = 0, y = 0, as dlib's
/// landmarks are); z along the viewing direction in the same units, SMALLER z nearer the
/// camera. Projection is orthographic along z: a vertex lands on pixel (x, y) whatever its z.
///
/// What one call computes, exactly (engine/render/reference.py is the same rule in numpy,
/// and the tests hold the two equal except at triangle edges):
///  - A triangle (a, b, c) covers the pixel centre p when its three edge functions
///      w0 = (cx-bx)(py-by) - (cy-by)(px-bx),  w1 = (ax-cx)(py-cy) - (ay-cy)(px-cx),
///      w2 = (bx-ax)(py-ay) - (by-ay)(px-ax)
///    evaluated in double all have the sign of area2 = (bx-ax)(cy-ay) - (by-ay)(cx-ax), zero
///    included (the closed triangle), and p lies in the triangle's bounding box. Both windings
///    draw: nothing is culled, since a face turned away from the camera can still be the
///    nearest surface. area2 == 0 covers nothing.
///  - Its depth there is z = (w0 za + w1 zb + w2 zc) * (1 / area2) (double, then float32). The
///    nearest (smallest float32 z) covering triangle wins; between equal depths the lower
///    triangle index wins, so the picture does not depend on the thread count.
///  - Shading (Gouraud): each vertex's normal is the sum of the unnormalised normals
///    (b - a) x (c - a) of its triangles, normalised, turned to face the camera (n_z <= 0;
///    a zero normal becomes (0, 0, -1)). Its shade is ambient + (1 - ambient) * max(0, n.l)
///    with l the unit vector towards the light; its shaded colour is colour * shade. A pixel's
///    colour is the barycentric mix (weights w_i * (1 / area2)) of its triangle's shaded vertex colours,
///    clamped to [0, 255] and rounded half up.
///  - Pixels no triangle covers keep their rgb (the caller's background), get mask 0,
///    depth +inf and triangle -1.
#pragma once

#include <cstdint>

namespace e3dmm {

constexpr int64_t kMaxRasterSide = int64_t(1) << 16;     ///< width, height <= 65,536
/// width * height <= 2^27 (134,217,728: above Pillow's default MAX_IMAGE_PIXELS, 89,478,485, so
/// every photo the engine loads by default can be drawn on); the four output planes then take
/// at most 1.5 GiB.
constexpr int64_t kMaxRasterPixels = int64_t(1) << 27;
/// Pixel tests one call may make: the sum over triangles of their bounding boxes clipped to
/// the image. A face at 8192 x 8192 takes about 10^8; 2^32 (seconds of work) bounds a hostile
/// mesh of huge triangles, which is refused before anything is drawn.
constexpr int64_t kMaxRasterWork = int64_t(1) << 32;

/// Everything one rasterize() call reads and writes. Host memory, C-contiguous.
struct RasterParams {
  const float* vertices = nullptr;   ///< [num_vertices, 3] image coordinates (see above)
  int64_t num_vertices = 0;          ///< N in [0, kMaxVertices]
  const int32_t* faces = nullptr;    ///< [num_faces, 3] vertex indices in [0, N)
  int64_t num_faces = 0;             ///< F in [0, kMaxFaces]
  const uint8_t* colors = nullptr;   ///< [N, 3] RGB per vertex, or null for a uniform grey (kDefaultGrey)
  int64_t width = 0;                 ///< W in [1, kMaxRasterSide]
  int64_t height = 0;                ///< H in [1, kMaxRasterSide]; W * H <= kMaxRasterPixels
  float light[3] = {0.0f, 0.0f, -1.0f};  ///< towards the light (any finite non-zero length); default: from the camera
  float ambient = 0.3f;              ///< in [0, 1]: the shade of a surface the light does not reach

  uint8_t* rgb = nullptr;            ///< in/out [H, W, 3]: covered pixels written, others kept; or null
  uint8_t* mask = nullptr;           ///< out [H, W] 1 where a triangle is drawn, else 0; or null
  float* depth = nullptr;            ///< out [H, W] z of the drawn surface, +inf elsewhere; or null
  int32_t* triangle = nullptr;       ///< out [H, W] index of the drawn triangle, -1 elsewhere; or null
};

constexpr uint8_t kDefaultGrey = 200;  ///< the vertex colour when `colors` is null

/// Checks every field (sizes against limits.h and the bounds above, pointers, finite
/// vertices, light and ambient, indices in range). Throws InvalidInput naming the field,
/// the expected and the found value (and the first offending vertex or face).
void validate(const RasterParams& p);

/// Draws the mesh with up to `num_threads` threads (0: all available). Validates first and
/// refuses (InvalidInput) a mesh whose pixel tests would exceed kMaxRasterWork; nothing is
/// written before every check has passed.
void rasterize(const RasterParams& p, int num_threads = 0);

}  // namespace e3dmm
