// The radiance head's inputs of every sample point in every source view in one pass, for CPU
// inference: projection, the cascade levels' depth windows and volume reads, the full-resolution
// read of image features and colours, the occlusion test and the view-angle encoding
// (gsnerf.model.feature_gather.project_to_sources and gather_features). Built and loaded by
// gsnerf/model/cpu_view_gather.py; see its module doc.
//
// Layouts (float32 unless said, contiguous), n = b * views + v, q the points of a batch element
// (rays * samples):
//   points[b][q][3], directions[b][q][3] (the unit target ray of each point),
//   cameras[n][21]: world-to-camera rows (3 x 4) then the intrinsics (3 x 3), row major,
//   centres[n][3], image_features[n][IMAGE_CHANNELS][H][W], images[n][3][H][W],
//   levels[LEVELS][6] (int64, coarse first): pointers to ranges[n][2][h][w] (first and last
//   hypothesis), depth[n][h][w] and volume[n][VOLUME_CHANNELS][d][h][w], then d, h, w.
// Outputs: grid[n][q][2], depth_out[n][q], and per (b, q, v): volume_out[LEVELS *
// VOLUME_CHANNELS], image_out[IMAGE_CHANNELS], colour_out[3], angle_out[2 * FREQUENCIES],
// in_frustum[1], visible[1] (bytes 0 or 1, torch.bool).

#include <cmath>
#include <cstdint>

#include "grid_read.h"
#include "parallel.h"

#if !defined(LEVELS) || !defined(VOLUME_CHANNELS) || !defined(IMAGE_CHANNELS) ||                   \
    !defined(FREQUENCIES)
#error "define LEVELS, VOLUME_CHANNELS, IMAGE_CHANNELS and FREQUENCIES"
#endif

// Offsets within one view's maps and volumes are 32-bit (the Python side checks that a view's
// volume has fewer than 2^31 cells): the indices of 32-bit vector gathers.

// The corners and fractions of a bilinear read, shared by every channel and by a trilinear read's
// two planes: lower corner offsets, the steps to the upper ones, and the upper ones' weights.
struct Bilinear {
    int32_t x0, dx, y0, dy;
    float fx, fy;
};

static inline Bilinear bilinear_corners(float grid_x, float grid_y, int32_t height, int32_t width) {
    const float x = border_position(grid_x, width), y = border_position(grid_y, height);
    const int32_t column = (int32_t)x, row = (int32_t)y; // x, y >= 0: truncation is the floor
    Bilinear read;
    read.x0 = column;
    read.dx = column + 1 < width ? 1 : 0;
    read.y0 = row * width;
    read.dy = row + 1 < height ? width : 0;
    read.fx = x - (float)column;
    read.fy = y - (float)row;
    return read;
}

static inline float read_plane(const float *plane, const Bilinear &read) {
    const float gx = 1.0f - read.fx, gy = 1.0f - read.fy;
    const int32_t base = read.y0 + read.x0;
    return gy * gx * plane[base] + gy * read.fx * plane[base + read.dx] +
           read.fy * gx * plane[base + read.dy] +
           read.fy * read.fx * plane[base + read.dy + read.dx];
}

static inline float clamp_grid(float value) {
    return value < -2.0f ? -2.0f : (value > 2.0f ? 2.0f : value);
}

struct Level {
    const float *ranges, *depth, *volume;
    int32_t count, height, width;
};

// Trilinear read of a view's volume channels at the in-plane corners of `plane` and the
// normalised depth coordinate `grid_z`, into out[0..VOLUME_CHANNELS).
static inline void read_volume(float *out, const float *volume, const Bilinear &plane, float grid_z,
                               const Level &level) {
    const int32_t plane_size = level.height * level.width;
    const int32_t channel_stride = level.count * plane_size;
    const float z = border_position(grid_z, level.count);
    const int32_t slice = (int32_t)z;
    const float fz = z - (float)slice;
    const int32_t z0 = slice * plane_size, dz = slice + 1 < level.count ? plane_size : 0;
    const float gx = 1.0f - plane.fx, gy = 1.0f - plane.fy, gz = 1.0f - fz;
    const float fx = plane.fx, fy = plane.fy;
    const float weights[8] = {gz * gy * gx, gz * gy * fx, gz * fy * gx, gz * fy * fx,
                              fz * gy * gx, fz * gy * fx, fz * fy * gx, fz * fy * fx};
    const int32_t base = z0 + plane.y0 + plane.x0, dx = plane.dx, dy = plane.dy;
    const int32_t offsets[8] = {base,      base + dx,      base + dy,      base + dy + dx,
                                base + dz, base + dz + dx, base + dz + dy, base + dz + dy + dx};
#pragma GCC unroll 64
    for (int c = 0; c < VOLUME_CHANNELS; c++) {
        const float *channel = volume + c * channel_stride;
        float sum = 0.0f;
#pragma GCC unroll 64
        for (int k = 0; k < 8; k++)
            sum += weights[k] * channel[offsets[k]];
        out[c] = sum;
    }
}

// [sin(2^k theta), cos(2^k theta)] for k < FREQUENCIES, theta the angle between the target ray
// and the source centre -> point direction (feature_gather.angle_encoding).
static inline void angle_terms(float *out, const float *direction, const float *point,
                               const float *centre) {
    const float ox = point[0] - centre[0], oy = point[1] - centre[1], oz = point[2] - centre[2];
    const float dx = direction[0], dy = direction[1], dz = direction[2];
    float cosine = dx * ox + dy * oy + dz * oz;
    const float cx = dy * oz - dz * oy, cy = dz * ox - dx * oz, cz = dx * oy - dy * ox;
    float sine = std::sqrt(cx * cx + cy * cy + cz * cz);
    const float radius = std::sqrt(sine * sine + cosine * cosine);
    const bool seen = radius > 0.0f;
    const float safe_radius = seen ? radius : 1.0f;
    sine = seen ? sine / safe_radius : 0.0f;
    cosine = seen ? cosine / safe_radius : 1.0f;
#pragma GCC unroll 64
    for (int k = 0; k < FREQUENCIES; k++) {
        out[2 * k] = sine;
        out[2 * k + 1] = cosine;
        const float doubled_sine = 2.0f * sine * cosine;
        cosine = (cosine - sine) * (cosine + sine);
        sine = doubled_sine;
    }
}

// One view n = b * views + v: its camera and where its maps and volumes start.
struct View {
    float world_to_camera[12]; // rows of [R^T | -R^T t]
    float intrinsics[6];       // the first two rows of K (the third is 0 0 1)
    const float *centre, *features, *colours;
    const float *ranges[LEVELS], *depth[LEVELS], *volume[LEVELS];
};

static View view_of(int64_t n, const float *cameras, const float *centres,
                    const float *image_features, const float *images, int64_t image_plane,
                    const Level *levels) {
    const float *w = cameras + n * 21, *k = w + 12;
    View view;
    for (int i = 0; i < 12; i++)
        view.world_to_camera[i] = w[i];
    for (int i = 0; i < 6; i++)
        view.intrinsics[i] = k[i];
    view.centre = centres + n * 3;
    view.features = image_features + n * IMAGE_CHANNELS * image_plane;
    view.colours = images + n * 3 * image_plane;
#pragma GCC unroll 64
    for (int l = 0; l < LEVELS; l++) {
        const int64_t plane = (int64_t)levels[l].height * levels[l].width;
        view.ranges[l] = levels[l].ranges + n * 2 * plane;
        view.depth[l] = levels[l].depth + n * plane;
        view.volume[l] = levels[l].volume + n * VOLUME_CHANNELS * levels[l].count * plane;
    }
    return view;
}

// Points [point_begin, point_end) of the flattened (b, q) axis, every view.
static void view_gather_range(float *grid, float *depth_out, float *volume_out, float *image_out,
                              float *colour_out, float *angle_out, uint8_t *in_frustum,
                              uint8_t *visible, const float *points, const float *directions,
                              const float *cameras, const float *centres,
                              const float *image_features, const float *images, const Level *levels,
                              int64_t per_batch, int64_t views, int64_t height, int64_t width,
                              float tolerance, bool tolerance_in_span, int64_t point_begin,
                              int64_t point_end) {
    const int64_t image_plane = height * width;
    const float width_f = (float)width, height_f = (float)height;
    // A float, not a bool, so that the compiler can select with it in the vector loop.
    const float in_span = tolerance_in_span ? 1.0f : 0.0f;
    // Views outermost: consecutive points are neighbouring samples, which read nearby cells of
    // the same view's maps and volumes.
    for (int64_t v = 0; v < views; v++) {
        for (int64_t b = point_begin / per_batch; b * per_batch < point_end; b++) {
            const int64_t n = b * views + v;
            const View view =
                view_of(n, cameras, centres, image_features, images, image_plane, levels);
            const int64_t begin = point_begin > b * per_batch ? point_begin : b * per_batch;
            const int64_t end = point_end < (b + 1) * per_batch ? point_end : (b + 1) * per_batch;
            // Vectorised across points (the corners' reads are vector gathers); the loops inside
            // are unrolled (GCC unroll) so that the compiler vectorises this one.
#pragma omp simd
            for (int64_t flat = begin; flat < end; flat++) {
                const int64_t q = flat - b * per_batch, out_index = flat * views + v;
                const float *point = points + flat * 3;
                const float px = point[0], py = point[1], pz = point[2];
                // p = K (R^T (X - t)) with R^T and -R^T t precomputed (project_points).
                const float *r = view.world_to_camera, *intrinsics = view.intrinsics;
                const float cx = r[0] * px + r[1] * py + r[2] * pz + r[3];
                const float cy = r[4] * px + r[5] * py + r[6] * pz + r[7];
                const float z = r[8] * px + r[9] * py + r[10] * pz + r[11];
                const float safe_z = std::fabs(z) < 1e-8f ? 1e-8f : z;
                const float x =
                    (intrinsics[0] * cx + intrinsics[1] * cy + intrinsics[2] * z) / safe_z;
                const float y =
                    (intrinsics[3] * cx + intrinsics[4] * cy + intrinsics[5] * z) / safe_z;
                in_frustum[out_index] = z > 0.0f && x >= -0.5f && x <= width_f - 0.5f &&
                                        y >= -0.5f && y <= height_f - 0.5f;
                const float grid_x = clamp_grid((2.0f * x + 1.0f) / width_f - 1.0f);
                const float grid_y = clamp_grid((2.0f * y + 1.0f) / height_f - 1.0f);
                grid[(n * per_batch + q) * 2] = grid_x;
                grid[(n * per_batch + q) * 2 + 1] = grid_y;
                depth_out[n * per_batch + q] = z;

                float first = 0.0f, last = 0.0f, source_depth = 0.0f;
#pragma GCC unroll 64
                for (int l = 0; l < LEVELS; l++) {
                    const Level &level = levels[l];
                    const int32_t plane = level.height * level.width;
                    const Bilinear read =
                        bilinear_corners(grid_x, grid_y, level.height, level.width);
                    first = read_plane(view.ranges[l], read);
                    last = read_plane(view.ranges[l] + plane, read);
                    source_depth = read_plane(view.depth[l], read);
                    // (last - first).clamp_min(tiny), NaN kept.
                    float span = last - first;
                    span = span > 1.17549435e-38f ? span : (span == span ? 1.17549435e-38f : span);
                    const float index = (z - first) / span * (float)(level.count - 1);
                    const float grid_z =
                        clamp_grid((2.0f * index + 1.0f) / (float)level.count - 1.0f);
                    read_volume(volume_out + out_index * (LEVELS * VOLUME_CHANNELS) +
                                    l * VOLUME_CHANNELS,
                                view.volume[l], read, grid_z, level);
                }
                // Occlusion against the finest level, the loop's last.
                const float allowed = in_span > 0.5f ? tolerance * (last - first) : tolerance;
                visible[out_index] = (z - source_depth) < allowed;

                const Bilinear full =
                    bilinear_corners(grid_x, grid_y, (int32_t)height, (int32_t)width);
#pragma GCC unroll 64
                for (int c = 0; c < IMAGE_CHANNELS; c++)
                    image_out[out_index * IMAGE_CHANNELS + c] =
                        read_plane(view.features + c * image_plane, full);
#pragma GCC unroll 64
                for (int c = 0; c < 3; c++)
                    colour_out[out_index * 3 + c] =
                        read_plane(view.colours + c * image_plane, full);
                angle_terms(angle_out + out_index * 2 * FREQUENCIES, directions + flat * 3, point,
                            view.centre);
            }
        }
    }
}

// view_gather_range over every (b, q) point, split among `threads` OpenMP threads.
extern "C" void view_gather(float *grid, float *depth_out, float *volume_out, float *image_out,
                            float *colour_out, float *angle_out, uint8_t *in_frustum,
                            uint8_t *visible, const float *points, const float *directions,
                            const float *cameras, const float *centres, const float *image_features,
                            const float *images, const int64_t *level_table, int64_t batch,
                            int64_t per_batch, int64_t views, int64_t height, int64_t width,
                            double tolerance, int64_t tolerance_in_span, int64_t threads) {
    Level levels[LEVELS];
#pragma GCC unroll 64
    for (int l = 0; l < LEVELS; l++) {
        const int64_t *row = level_table + l * 6;
        levels[l] = {(const float *)row[0], (const float *)row[1], (const float *)row[2],
                     (int32_t)row[3],       (int32_t)row[4],       (int32_t)row[5]};
    }
    parallel_ranges(batch * per_batch, 1, threads, [&](int64_t begin, int64_t end) {
        view_gather_range(grid, depth_out, volume_out, image_out, colour_out, angle_out, in_frustum,
                          visible, points, directions, cameras, centres, image_features, images,
                          levels, per_batch, views, height, width, (float)tolerance,
                          tolerance_in_span != 0, begin, end);
    });
}
