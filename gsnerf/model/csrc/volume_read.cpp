// Trilinear, border-padded reads of volumes at normalised points (F.grid_sample with
// align_corners=False, padding_mode="border"), for CPU inference. Built and loaded by
// gsnerf/model/cpu_volume_read.py; see its module doc.
//
// Layouts (float32, contiguous): volumes[n][c][d][h][w], points[n][p][3] (x, y, z in [-1, 1]
// spanning the width, height and depth), out[n][c][p]. Each point's eight corner offsets and
// weights are computed once and serve all CHANNELS channels.

#include <cstdint>

#include "grid_read.h"
#include "parallel.h"

#ifndef CHANNELS
#error "define CHANNELS (volume channels)"
#endif

// Points [point_begin, point_end) of the flattened (n, p) axis.
static void volume_read_range(float *out, const float *volumes, const float *points,
                              int64_t points_per_volume, int64_t depth, int64_t height,
                              int64_t width, int64_t point_begin, int64_t point_end) {
    const int64_t plane = height * width, channel_stride = depth * plane;
    for (int64_t flat = point_begin; flat < point_end; flat++) {
        const int64_t n = flat / points_per_volume, p = flat % points_per_volume;
        const float *point = points + flat * 3;
        int64_t x0, dx, y0, dy, z0, dz;
        float fx, fy, fz;
        axis_corners(border_position(point[0], width), width, 1, x0, dx, fx);
        axis_corners(border_position(point[1], height), height, width, y0, dy, fy);
        axis_corners(border_position(point[2], depth), depth, plane, z0, dz, fz);
        const float gx = 1.0f - fx, gy = 1.0f - fy, gz = 1.0f - fz;
        const float weights[8] = {gz * gy * gx, gz * gy * fx, gz * fy * gx, gz * fy * fx,
                                  fz * gy * gx, fz * gy * fx, fz * fy * gx, fz * fy * fx};
        const int64_t base = z0 + y0 + x0;
        const int64_t offsets[8] = {base,           base + dx,           base + dy,
                                    base + dy + dx, base + dz,           base + dz + dx,
                                    base + dz + dy, base + dz + dy + dx};
        const float *volume = volumes + n * CHANNELS * channel_stride;
        float *result = out + n * CHANNELS * points_per_volume + p;
        for (int c = 0; c < CHANNELS; c++) {
            const float *channel = volume + c * channel_stride;
            float sum = 0.0f;
            for (int k = 0; k < 8; k++) sum += weights[k] * channel[offsets[k]];
            result[c * points_per_volume] = sum;
        }
    }
}

// volume_read_range over the whole range, split among `threads` OpenMP threads.
extern "C" void volume_read(float *out, const float *volumes, const float *points,
                            int64_t points_per_volume, int64_t depth, int64_t height, int64_t width,
                            int64_t point_count, int64_t threads) {
    parallel_ranges(point_count, 1, threads, [&](int64_t point_begin, int64_t point_end) {
        volume_read_range(out, volumes, points, points_per_volume, depth, height, width,
                          point_begin, point_end);
    });
}

