// GroupNorm followed by a LeakyReLU on channels-last volumes, for CPU inference. Built and
// loaded by gsnerf/model/cpu_volume_norm.py; see its module doc.
//
// Layouts (float32): in[n][position][channel] with `in_stride` floats between positions (the
// channels of a position are contiguous; a stride above CHANNELS reads a channel slice of a
// wider volume), out[n][position][channel] dense. Positions are the volume's D * H * W cells.
// Each item's statistics come from two passes (mean, then centred squares: no cancellation of
// E[x^2] - E[x]^2), summed in float over blocks of positions and in double across blocks; the
// third pass writes the normalised, scaled, shifted and activated values.

#include <cmath>
#include <cstdint>

#ifndef CHANNELS
#error "define CHANNELS (volume channels)"
#endif

// Positions summed in float before the block's sums go into the double totals.
static const int64_t BLOCK_POSITIONS = 256;

// Per-channel sums of (x - centre[c])^2 when `squares`, else of x, over all positions.
template <bool squares>
static void channel_sums(const float *x, int64_t positions, int64_t stride, const float *centre,
                         double *sums) {
    for (int c = 0; c < CHANNELS; c++) sums[c] = 0.0;
    for (int64_t begin = 0; begin < positions; begin += BLOCK_POSITIONS) {
        const int64_t end = begin + BLOCK_POSITIONS < positions ? begin + BLOCK_POSITIONS : positions;
        float block[CHANNELS] = {};
        for (int64_t p = begin; p < end; p++) {
            const float *row = x + p * stride;
            for (int c = 0; c < CHANNELS; c++) {
                const float value = squares ? row[c] - centre[c] : row[c];
                block[c] += squares ? value * value : value;
            }
        }
        for (int c = 0; c < CHANNELS; c++) sums[c] += block[c];
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

// Items [item_begin, item_end) of the batch.
extern "C" void volume_norm_act(float *out, const float *in, const float *weight,
                                const float *bias, int64_t positions, int64_t in_stride,
                                int64_t group_channels, float eps, float slope,
                                int64_t item_begin, int64_t item_end) {
    const double count = (double)positions * (double)group_channels;
    for (int64_t item = item_begin; item < item_end; item++) {
        const float *x = in + item * positions * in_stride;
        float *y = out + item * positions * CHANNELS;
        double sums[CHANNELS];
        float means[CHANNELS], variances[CHANNELS];
        channel_sums<false>(x, positions, in_stride, nullptr, sums);
        group_means(sums, group_channels, count, means);
        channel_sums<true>(x, positions, in_stride, means, sums);
        group_means(sums, group_channels, count, variances);
        float scale[CHANNELS], shift[CHANNELS];
        for (int c = 0; c < CHANNELS; c++) {
            scale[c] = weight[c] / std::sqrt(variances[c] + eps);
            shift[c] = bias[c] - means[c] * scale[c];
        }
        for (int64_t p = 0; p < positions; p++) {
            const float *row = x + p * in_stride;
            float *result = y + p * CHANNELS;
            for (int c = 0; c < CHANNELS; c++) {
                const float value = row[c] * scale[c] + shift[c];
                result[c] = value > 0.0f ? value : value * slope;
            }
        }
    }
}
