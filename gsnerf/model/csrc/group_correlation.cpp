// The plane-sweep warp and group correlation of one cascade level (gsnerf/model/cost_volume.py)
// in one pass, and its backward pass, for the CPU. Built and loaded by
// gsnerf/model/cpu_correlation.py; see its module doc.
//
// For every reference pixel and depth hypothesis, each neighbour's feature vector is read
// bilinearly (zero outside the image) at the pixel's projection, the neighbours' mean is
// formed in registers, and its group-wise correlation with the reference features is written.
// The warped volumes (one float per channel, hypothesis and pixel for every neighbour) are never
// stored, which is what the PyTorch formulation spends most of its time writing and reading.
//
// The coordinates, validity and bilinear weights of LANES pixels of a row are computed at once
// (one vector each); the neighbours' channels are then read pixel by pixel, one vector of
// channels per corner.
//
// Layouts (float32, channels last so that a pixel's CHANNELS floats are contiguous):
//   reference[b][y][x][c], hypotheses[b][d][y][x],
//   neighbours[b][n][y + 1][x + 1][c]: each image with a one-pixel border of zeros, so that
//   the four corners of any point within one pixel of the image are readable without checks,
//   projections[b][n][12]: the 3x3 matrix P (row-major), then the vector t, such that the
//   source pixel of reference pixel (x, y) at z-depth z is p = z P (x, y, 1) + t, (p_x, p_y) /
//   p_z; cost[b][d][y][x][g] (the channels-last 3-D volume the regulariser reads on a CPU).

#include <cstdint>

#include "parallel.h"

#ifndef CHANNELS
#error "define CHANNELS (feature channels), GROUPS and NEIGHBOURS"
#endif
static_assert(CHANNELS % GROUPS == 0, "GROUPS must divide CHANNELS");
#define GROUP_CHANNELS (CHANNELS / GROUPS)

// Pixels per vector: 16 float32 lanes, one AVX-512 register (two AVX2 ones).
#define LANES 16

typedef float Vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t IntVec __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline Vec splat(float value) { return Vec{} + value; }

// Rows [row_begin, row_end) of the flattened (b, d, y) axis.
static void group_correlation_range(float *cost, const float *reference, const float *neighbours,
                                    const float *hypotheses, const float *projections,
                                    int64_t depths, int64_t height, int64_t width,
                                    int64_t row_begin, int64_t row_end) {
    const int64_t pixels = height * width;
    const int64_t padded_width = width + 2, padded_pixels = (height + 2) * (width + 2);
    Vec lane_index;
    for (int lane = 0; lane < LANES; lane++) lane_index[lane] = (float)lane;
    for (int64_t row = row_begin; row < row_end; row++) {
        const int64_t y = row % height;
        const int64_t d = (row / height) % depths;
        const int64_t b = row / (height * depths);
        const float *row_depths = hypotheses + (b * depths + d) * pixels + y * width;
        const float *row_reference = reference + (b * pixels + y * width) * CHANNELS;
        float *row_cost = cost + ((b * depths + d) * pixels + y * width) * GROUPS;
        for (int64_t x_begin = 0; x_begin < width; x_begin += LANES) {
            const int lanes = width - x_begin < LANES ? (int)(width - x_begin) : LANES;
            Vec z = {};
            for (int lane = 0; lane < lanes; lane++) z[lane] = row_depths[x_begin + lane];
            const Vec x = lane_index + (float)x_begin;
            float sum[LANES][CHANNELS] = {};
            for (int n = 0; n < NEIGHBOURS; n++) {
                const float *m = projections + (b * NEIGHBOURS + n) * 12;
                // The order of the PyTorch warp: the ray M (x, y, 1), times z, plus t.
                const Vec ray_x = m[0] * x + (m[1] * y + m[2]);
                const Vec ray_y = m[3] * x + (m[4] * y + m[5]);
                const Vec ray_z = m[6] * x + (m[7] * y + m[8]);
                const Vec p_z = ray_z * z + m[11];
                // Behind the source camera, nothing is seen; a divisor of 1 keeps the lane finite.
                const IntVec in_front = p_z > 0.0f;
                const Vec safe_z = in_front ? p_z : splat(1.0f);
                Vec u = (ray_x * z + m[9]) / safe_z, v = (ray_y * z + m[10]) / safe_z;
                // Points beyond one pixel outside the image read only zeros (and NaN compares
                // false): they add nothing, so they are parked on the zero border.
                const IntVec seen = in_front & (u > -1.0f) & (v > -1.0f) & (u < (float)width) &
                                    (v < (float)height);
                u = seen ? u : splat(-1.0f);
                v = seen ? v : splat(-1.0f);
                // Truncation is the floor here: u, v > -1, so u + 1, v + 1 > 0.
                const IntVec column = __builtin_convertvector(u + 1.0f, IntVec);
                const IntVec line = __builtin_convertvector(v + 1.0f, IntVec);
                const Vec fx = (u + 1.0f) - __builtin_convertvector(column, Vec);
                const Vec fy = (v + 1.0f) - __builtin_convertvector(line, Vec);
                const Vec none = {};
                const Vec w00 = seen ? (1.0f - fx) * (1.0f - fy) : none;
                const Vec w01 = seen ? fx * (1.0f - fy) : none;
                const Vec w10 = seen ? (1.0f - fx) * fy : none;
                const Vec w11 = seen ? fx * fy : none;
                const IntVec corner = line * (int32_t)padded_width + column;
                const float *image = neighbours + (b * NEIGHBOURS + n) * padded_pixels * CHANNELS;
                for (int lane = 0; lane < lanes; lane++) {
                    const float *top = image + (int64_t)corner[lane] * CHANNELS;
                    const float *bottom = top + padded_width * CHANNELS;
                    for (int c = 0; c < CHANNELS; c++)
                        sum[lane][c] += w00[lane] * top[c] + w01[lane] * top[CHANNELS + c] +
                                        w10[lane] * bottom[c] + w11[lane] * bottom[CHANNELS + c];
                }
            }
            // Mean over the neighbours, then the mean over each group's channels.
            const float scale = 1.0f / (NEIGHBOURS * GROUP_CHANNELS);
            for (int lane = 0; lane < lanes; lane++) {
                const float *ref = row_reference + (x_begin + lane) * CHANNELS;
                for (int g = 0; g < GROUPS; g++) {
                    float dot = 0.0f;
                    for (int c = g * GROUP_CHANNELS; c < (g + 1) * GROUP_CHANNELS; c++)
                        dot += ref[c] * sum[lane][c];
                    row_cost[(x_begin + lane) * GROUPS + g] = dot * scale;
                }
            }
        }
    }
}

// group_correlation_range over the whole range, split among `threads` OpenMP threads.
extern "C" void group_correlation(float *cost, const float *reference, const float *neighbours,
                                  const float *hypotheses, const float *projections, int64_t depths,
                                  int64_t height, int64_t width, int64_t rows, int64_t threads) {
    parallel_ranges(rows, 1, threads, [&](int64_t row_begin, int64_t row_end) {
        group_correlation_range(cost, reference, neighbours, hypotheses, projections, depths,
                                height, width, row_begin, row_end);
    });
}

// The gradients of group_correlation for items [item_begin, item_end) of the batch (one item's
// writes never meet another's, so items can run in parallel): of the reference features,
// grad_reference[b][y][x][c], and of the bordered neighbour images, grad_neighbours in the
// layout of `neighbours` (their border cells collect what fell on the zero padding), both
// zeroed by the caller. With s = 1 / (NEIGHBOURS * GROUP_CHANNELS) and m_c the neighbours'
// summed bilinear reads at a pixel and hypothesis,
//   d reference_c += s * d cost_g(c) * m_c,
//   d neighbour_n at each read corner += s * d cost_g(c) * reference_c * corner weight.
static void group_correlation_backward_range(float *grad_reference, float *grad_neighbours,
                                             const float *grad_cost, const float *reference,
                                             const float *neighbours, const float *hypotheses,
                                             const float *projections, int64_t depths,
                                             int64_t height, int64_t width, int64_t item_begin,
                                             int64_t item_end) {
    const int64_t pixels = height * width;
    const int64_t padded_width = width + 2, padded_pixels = (height + 2) * (width + 2);
    const float scale = 1.0f / (NEIGHBOURS * GROUP_CHANNELS);
    for (int64_t b = item_begin; b < item_end; b++) {
        for (int64_t d = 0; d < depths; d++) {
            for (int64_t y = 0; y < height; y++) {
                for (int64_t x = 0; x < width; x++) {
                    const int64_t cell = (b * depths + d) * pixels + y * width + x;
                    const float z = hypotheses[cell];
                    const float *g_cost = grad_cost + cell * GROUPS;
                    const float *ref = reference + (b * pixels + y * width + x) * CHANNELS;
                    float *g_ref = grad_reference + (b * pixels + y * width + x) * CHANNELS;
                    float g_channel[CHANNELS], splat_value[CHANNELS];
                    for (int c = 0; c < CHANNELS; c++) {
                        g_channel[c] = g_cost[c / GROUP_CHANNELS] * scale;
                        splat_value[c] = g_channel[c] * ref[c];
                    }
                    for (int n = 0; n < NEIGHBOURS; n++) {
                        const float *m = projections + (b * NEIGHBOURS + n) * 12;
                        const float px = (float)x, py = (float)y;
                        const float ray_x = m[0] * px + (m[1] * py + m[2]);
                        const float ray_y = m[3] * px + (m[4] * py + m[5]);
                        const float ray_z = m[6] * px + (m[7] * py + m[8]);
                        const float p_z = ray_z * z + m[11];
                        if (!(p_z > 0.0f)) continue;
                        const float u = (ray_x * z + m[9]) / p_z, v = (ray_y * z + m[10]) / p_z;
                        if (!(u > -1.0f && v > -1.0f && u < (float)width && v < (float)height))
                            continue;
                        const int64_t column = (int64_t)(u + 1.0f), line = (int64_t)(v + 1.0f);
                        const float fx = (u + 1.0f) - (float)column, fy = (v + 1.0f) - (float)line;
                        const float w00 = (1.0f - fx) * (1.0f - fy), w01 = fx * (1.0f - fy);
                        const float w10 = (1.0f - fx) * fy, w11 = fx * fy;
                        const int64_t image_offset =
                            (b * NEIGHBOURS + n) * padded_pixels * CHANNELS;
                        const int64_t corner = (line * padded_width + column) * CHANNELS;
                        const float *top = neighbours + image_offset + corner;
                        const float *bottom = top + padded_width * CHANNELS;
                        float *g_top = grad_neighbours + image_offset + corner;
                        float *g_bottom = g_top + padded_width * CHANNELS;
                        for (int c = 0; c < CHANNELS; c++) {
                            const float read = w00 * top[c] + w01 * top[CHANNELS + c] +
                                               w10 * bottom[c] + w11 * bottom[CHANNELS + c];
                            g_ref[c] += g_channel[c] * read;
                            g_top[c] += w00 * splat_value[c];
                            g_top[CHANNELS + c] += w01 * splat_value[c];
                            g_bottom[c] += w10 * splat_value[c];
                            g_bottom[CHANNELS + c] += w11 * splat_value[c];
                        }
                    }
                }
            }
        }
    }
}

// group_correlation_backward_range over the whole range, split among `threads` OpenMP threads.
extern "C" void group_correlation_backward(float *grad_reference, float *grad_neighbours,
                                           const float *grad_cost, const float *reference,
                                           const float *neighbours, const float *hypotheses,
                                           const float *projections, int64_t depths, int64_t height,
                                           int64_t width, int64_t items, int64_t threads) {
    parallel_ranges(items, 1, threads, [&](int64_t item_begin, int64_t item_end) {
        group_correlation_backward_range(grad_reference, grad_neighbours, grad_cost, reference,
                                         neighbours, hypotheses, projections, depths, height, width,
                                         item_begin, item_end);
    });
}
