// Bilinear, border-padded reads of a 3x3 patch of pixels around points of per-view maps
// (F.grid_sample with align_corners=False, padding_mode="border", at the point and at one
// pixel's offset in each direction), for CPU inference. Built and loaded by
// gsnerf/model/cpu_patch_read.py; see its module doc.
//
// Layouts (float32, contiguous): maps[n][c][h][w] and points[n][p][2] (x, y in [-1, 1]
// spanning the width and height) with n = b * views + v, and
// out[b][p][v][k][c] for the k-th point of the patch (rows major, then columns): the layout
// in which the semantic head reads them, one row of 9 * CHANNELS features per sample and view.
//
// The nine reads of a patch share their fractional offsets, and together touch a 4x4 window of
// pixels: where the window lies inside the map (no border clamp), each channel's window rows
// are read once, interpolated along x into 3 values per row, then along y into the 9 outputs.
// Near the border each of the nine points is read on its own, with the clamp.

#include <cstdint>

#include "parallel.h"

#ifndef CHANNELS
#error "define CHANNELS (map channels)"
#endif

// The sample position along an axis of `size` pixels: unnormalised as grid_sample does with
// align_corners=False; NaN goes to -1 (then clamped to the border).
static inline float unnormalised(float normalised, int64_t size) {
    const float position = ((normalised + 1.0f) * size - 1.0f) * 0.5f;
    return position == position ? position : -1.0f;
}

static inline float clamp_to_border(float position, int64_t size) {
    const float upper = (float)(size - 1);
    return position > 0.0f ? (position < upper ? position : upper) : 0.0f;
}

// One bilinear read of every channel at (x, y) after the border clamp, into out[0..CHANNELS).
static void read_point(float *out, const float *map, int64_t height, int64_t width, float x,
                       float y) {
    x = clamp_to_border(x, width);
    y = clamp_to_border(y, height);
    const int64_t x0 = (int64_t)x, y0 = (int64_t)y;  // x, y >= 0: truncation is the floor
    const float fx = x - (float)x0, fy = y - (float)y0;
    const int64_t dx = x0 + 1 < width ? 1 : 0, dy = y0 + 1 < height ? width : 0;
    const float w00 = (1.0f - fy) * (1.0f - fx), w01 = (1.0f - fy) * fx;
    const float w10 = fy * (1.0f - fx), w11 = fy * fx;
    const int64_t plane = height * width;
    const float *corner = map + y0 * width + x0;
    for (int c = 0; c < CHANNELS; c++) {
        const float *channel = corner + c * plane;
        out[c] = w00 * channel[0] + w01 * channel[dx] + w10 * channel[dy] + w11 * channel[dy + dx];
    }
}

// Points [point_begin, point_end) of the flattened (n, p) axis.
static void patch_read_range(float *out, const float *maps, const float *points,
                             int64_t points_per_map, int64_t views, int64_t height, int64_t width,
                             int64_t point_begin, int64_t point_end) {
    const int64_t plane = height * width;
    for (int64_t flat = point_begin; flat < point_end; flat++) {
        const int64_t n = flat / points_per_map, p = flat % points_per_map;
        const float x = unnormalised(points[flat * 2], width);
        const float y = unnormalised(points[flat * 2 + 1], height);
        const float *map = maps + n * CHANNELS * plane;
        const int64_t b = n / views, v = n % views;
        float *result = out + ((b * points_per_map + p) * views + v) * 9 * CHANNELS;
        // The window's first column and row: the floor of the patch's first point.
        const float first_x = x - 1.0f, first_y = y - 1.0f;
        const bool inside = first_x >= 0.0f && first_y >= 0.0f && first_x + 3.0f < (float)width &&
                            first_y + 3.0f < (float)height;
        if (!inside) {
            for (int row = 0; row < 3; row++)
                for (int column = 0; column < 3; column++)
                    read_point(result + (row * 3 + column) * CHANNELS, map, height, width,
                               x + (float)(column - 1), y + (float)(row - 1));
            continue;
        }
        const int64_t x0 = (int64_t)first_x, y0 = (int64_t)first_y;
        const float fx = first_x - (float)x0, fy = first_y - (float)y0;
        const float gx = 1.0f - fx, gy = 1.0f - fy;
        const float *window = map + y0 * width + x0;
        for (int c = 0; c < CHANNELS; c++) {
            const float *channel = window + c * plane;
            float along_x[4][3];
            for (int row = 0; row < 4; row++) {
                const float *line = channel + row * width;
                for (int column = 0; column < 3; column++)
                    along_x[row][column] = gx * line[column] + fx * line[column + 1];
            }
            for (int row = 0; row < 3; row++)
                for (int column = 0; column < 3; column++)
                    result[(row * 3 + column) * CHANNELS + c] =
                        gy * along_x[row][column] + fy * along_x[row + 1][column];
        }
    }
}

// patch_read_range over the whole range, split among `threads` OpenMP threads.
extern "C" void patch_read(float *out, const float *maps, const float *points,
                           int64_t points_per_map, int64_t views, int64_t height, int64_t width,
                           int64_t point_count, int64_t threads) {
    parallel_ranges(point_count, 1, threads, [&](int64_t point_begin, int64_t point_end) {
        patch_read_range(out, maps, points, points_per_map, views, height, width, point_begin,
                         point_end);
    });
}
