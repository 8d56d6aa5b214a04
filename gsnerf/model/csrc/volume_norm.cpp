// GroupNorm followed by a LeakyReLU on channels-last volumes, forward and backward, for the
// CPU. Built and loaded by gsnerf/model/cpu_volume_norm.py; see its module doc.
//
// Layouts (float32): in[n][position][channel] with `in_stride` floats between positions (the
// channels of a position are contiguous; a stride above CHANNELS reads a channel slice of a
// wider volume), out, grad_out and grad_in dense [n][position][channel]. Positions are the
// volume's D * H * W cells. Each item's statistics come from two passes (mean, then centred
// squares: no cancellation of E[x^2] - E[x]^2), summed in float over blocks of positions and
// in double across blocks; a third pass writes the normalised, scaled, shifted and activated
// values.
//
// Dense volumes are visited in rows of LANES floats (one 16-float vector for volumes of 1, 2,
// 4, 8 or 16 channels; lane k holds channel k % CHANNELS), which the compiler vectorises: a
// cell of 8 channels alone fills half a vector.

#include <cmath>
#include <cstdint>

#include "parallel.h"

#ifndef CHANNELS
#error "define CHANNELS (volume channels)"
#endif

constexpr int LANES = CHANNELS < 16 && 16 % CHANNELS == 0 ? 16 : CHANNELS;
constexpr int64_t ROW_POSITIONS = LANES / CHANNELS;

// Positions summed in float before the block's sums go into the double totals (a multiple of
// ROW_POSITIONS).
static const int64_t BLOCK_POSITIONS = 256;

// visit(in_offset, out_offset, lane) for every value of positions [begin, end) (begin a
// multiple of ROW_POSITIONS): its offsets in the input (in_stride floats between positions)
// and in a dense output, and its lane in per-lane arrays (its channel is lane % CHANNELS).
template <typename Visit>
static inline void for_each_value(int64_t begin, int64_t end, int64_t in_stride, Visit visit) {
    int64_t p = begin;
    if (in_stride == CHANNELS) {
        for (; p + ROW_POSITIONS <= end; p += ROW_POSITIONS) {
            const int64_t base = p * CHANNELS;
            for (int k = 0; k < LANES; k++) visit(base + k, base + k, k);
        }
    }
    for (; p < end; p++) {
        for (int c = 0; c < CHANNELS; c++) visit(p * in_stride + c, p * CHANNELS + c, c);
    }
}

// A per-channel array repeated over the lanes.
static inline void to_lanes(const float *per_channel, float *per_lane) {
    for (int k = 0; k < LANES; k++) per_lane[k] = per_channel[k % CHANNELS];
}

// Per-channel sums over all positions of the TERMS values that terms(in_offset, lane, values)
// writes for each value, in blocks: sums[t][channel].
template <int TERMS, typename Terms>
static void channel_sums(int64_t positions, int64_t in_stride, double (*sums)[CHANNELS],
                         Terms terms) {
    double lane_sums[TERMS][LANES] = {};
    for (int64_t begin = 0; begin < positions; begin += BLOCK_POSITIONS) {
        const int64_t end =
            begin + BLOCK_POSITIONS < positions ? begin + BLOCK_POSITIONS : positions;
        float block[TERMS][LANES] = {};
        for_each_value(begin, end, in_stride, [&](int64_t i, int64_t, int k) {
            float values[TERMS];
            terms(i, k, values);
            for (int t = 0; t < TERMS; t++) block[t][k] += values[t];
        });
        for (int t = 0; t < TERMS; t++) {
            for (int k = 0; k < LANES; k++) lane_sums[t][k] += block[t][k];
        }
    }
    for (int t = 0; t < TERMS; t++) {
        for (int c = 0; c < CHANNELS; c++) sums[t][c] = 0.0;
        for (int k = 0; k < LANES; k++) sums[t][k % CHANNELS] += lane_sums[t][k];
    }
}

// Per-channel means of each channel's group (group_channels consecutive channels).
static void group_means(const double *sums, int64_t group_channels, double count, float *means) {
    for (int c0 = 0; c0 < CHANNELS; c0 += group_channels) {
        double total = 0.0;
        for (int c = c0; c < c0 + group_channels; c++) total += sums[c];
        for (int c = c0; c < c0 + group_channels; c++) means[c] = (float)(total / count);
    }
}

// An item's per-channel mean and inverse standard deviation (of the channel's group).
static void item_statistics(const float *x, int64_t positions, int64_t stride,
                            int64_t group_channels, float eps, float *means, float *inverse_std) {
    const double count = (double)positions * (double)group_channels;
    double sums[1][CHANNELS];
    float variances[CHANNELS], mean_lanes[LANES];
    channel_sums<1>(positions, stride, sums, [&](int64_t i, int, float *value) { *value = x[i]; });
    group_means(sums[0], group_channels, count, means);
    to_lanes(means, mean_lanes);
    channel_sums<1>(positions, stride, sums, [&](int64_t i, int k, float *value) {
        const float centred = x[i] - mean_lanes[k];
        *value = centred * centred;
    });
    group_means(sums[0], group_channels, count, variances);
    for (int c = 0; c < CHANNELS; c++) inverse_std[c] = 1.0f / std::sqrt(variances[c] + eps);
}

// Items [item_begin, item_end) of the batch. `statistics` (may be null) receives each item's
// means and inverse standard deviations, [item][2][CHANNELS], for the backward pass.
static void volume_norm_act_range(float *out, float *statistics, const float *in,
                                  const float *weight, const float *bias, int64_t positions,
                                  int64_t in_stride, int64_t group_channels, float eps, float slope,
                                  int64_t item_begin, int64_t item_end) {
    for (int64_t item = item_begin; item < item_end; item++) {
        const float *x = in + item * positions * in_stride;
        float *y = out + item * positions * CHANNELS;
        float means[CHANNELS], inverse_std[CHANNELS], scale[CHANNELS], shift[CHANNELS];
        item_statistics(x, positions, in_stride, group_channels, eps, means, inverse_std);
        for (int c = 0; c < CHANNELS; c++) {
            scale[c] = weight[c] * inverse_std[c];
            shift[c] = bias[c] - means[c] * scale[c];
        }
        if (statistics != nullptr) {
            for (int c = 0; c < CHANNELS; c++) {
                statistics[(item * 2) * CHANNELS + c] = means[c];
                statistics[(item * 2 + 1) * CHANNELS + c] = inverse_std[c];
            }
        }
        float scale_lanes[LANES], shift_lanes[LANES];
        to_lanes(scale, scale_lanes);
        to_lanes(shift, shift_lanes);
        for_each_value(0, positions, in_stride, [&](int64_t i, int64_t o, int k) {
            const float value = x[i] * scale_lanes[k] + shift_lanes[k];
            y[o] = value > 0.0f ? value : value * slope;
        });
    }
}

// volume_norm_act_range over the whole range, split among `threads` OpenMP threads.
extern "C" void volume_norm_act(float *out, float *statistics, const float *in, const float *weight,
                                const float *bias, int64_t positions, int64_t in_stride,
                                int64_t group_channels, float eps, float slope, int64_t items,
                                int64_t threads) {
    parallel_ranges(items, 1, threads, [&](int64_t item_begin, int64_t item_end) {
        volume_norm_act_range(out, statistics, in, weight, bias, positions, in_stride,
                              group_channels, eps, slope, item_begin, item_end);
    });
}

// The gradients of volume_norm_act for items [item_begin, item_end): of its input (dense
// channels-last, like grad_out and in), and each item's share of the weight's and bias's
// (weight_parts, bias_parts: [item][CHANNELS], summed over items by the caller). With x^ the
// normalised input, g the output gradient through the activation (grad_out, times the slope
// where the pre-activation is not positive) and r the inverse standard deviation:
//   d bias_c = sum_p g,  d weight_c = sum_p g x^,
//   d x = r (weight_c g - mean_group(weight g) - x^ mean_group(weight g x^)).
static void volume_norm_act_backward_range(float *grad_in, float *weight_parts, float *bias_parts,
                                           const float *grad_out, const float *in,
                                           const float *statistics, const float *weight,
                                           const float *bias, int64_t positions,
                                           int64_t group_channels, float slope,
                                           int64_t item_begin, int64_t item_end) {
    const double count = (double)positions * (double)group_channels;
    float weight_lanes[LANES], bias_lanes[LANES];
    to_lanes(weight, weight_lanes);
    to_lanes(bias, bias_lanes);
    for (int64_t item = item_begin; item < item_end; item++) {
        const int64_t offset = item * positions * CHANNELS;
        const float *x = in + offset, *g_out = grad_out + offset;
        float mean_lanes[LANES], inverse_std_lanes[LANES];
        to_lanes(statistics + item * 2 * CHANNELS, mean_lanes);
        to_lanes(statistics + (item * 2 + 1) * CHANNELS, inverse_std_lanes);
        const auto normalised = [&](int64_t i, int k) {
            return (x[i] - mean_lanes[k]) * inverse_std_lanes[k];
        };
        const auto activated_gradient = [&](int64_t i, int k, float x_hat) {
            const float pre = x_hat * weight_lanes[k] + bias_lanes[k];
            return pre > 0.0f ? g_out[i] : g_out[i] * slope;
        };
        // sums[0]: of g, sums[1]: of g x^.
        double sums[2][CHANNELS];
        channel_sums<2>(positions, CHANNELS, sums, [&](int64_t i, int k, float *values) {
            const float x_hat = normalised(i, k);
            values[0] = activated_gradient(i, k, x_hat);
            values[1] = values[0] * x_hat;
        });
        // Group means of weight * g and of weight * g * x^.
        double weighted[CHANNELS], weighted_x_hat[CHANNELS];
        for (int c = 0; c < CHANNELS; c++) {
            bias_parts[item * CHANNELS + c] = (float)sums[0][c];
            weight_parts[item * CHANNELS + c] = (float)sums[1][c];
            weighted[c] = weight[c] * sums[0][c];
            weighted_x_hat[c] = weight[c] * sums[1][c];
        }
        float mean_g[CHANNELS], mean_g_x_hat[CHANNELS], mean_g_lanes[LANES];
        float mean_g_x_hat_lanes[LANES];
        group_means(weighted, group_channels, count, mean_g);
        group_means(weighted_x_hat, group_channels, count, mean_g_x_hat);
        to_lanes(mean_g, mean_g_lanes);
        to_lanes(mean_g_x_hat, mean_g_x_hat_lanes);
        float *dx = grad_in + offset;
        for_each_value(0, positions, CHANNELS, [&](int64_t i, int64_t, int k) {
            const float x_hat = normalised(i, k);
            const float g = activated_gradient(i, k, x_hat);
            dx[i] = inverse_std_lanes[k] *
                    (weight_lanes[k] * g - mean_g_lanes[k] - x_hat * mean_g_x_hat_lanes[k]);
        });
    }
}

// volume_norm_act_backward_range over the whole range, split among `threads` OpenMP threads.
extern "C" void volume_norm_act_backward(float *grad_in, float *weight_parts, float *bias_parts,
                                         const float *grad_out, const float *in,
                                         const float *statistics, const float *weight,
                                         const float *bias, int64_t positions,
                                         int64_t group_channels, float slope, int64_t items,
                                         int64_t threads) {
    parallel_ranges(items, 1, threads, [&](int64_t item_begin, int64_t item_end) {
        volume_norm_act_backward_range(grad_in, weight_parts, bias_parts, grad_out, in, statistics,
                                       weight, bias, positions, group_channels, slope, item_begin,
                                       item_end);
    });
}
