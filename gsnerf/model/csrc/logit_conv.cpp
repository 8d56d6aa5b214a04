// A 3x3x3 convolution with a single output channel (stride 1, zero padding 1, no bias) of
// channels-last volumes on the CPU, and its gradients. Built and loaded by
// gsnerf/model/cpu_logit_conv.py; see its module doc.
//
// Layouts (float32): in and grad_in dense [n][d][h][w][CHANNELS], out and grad_out dense
// [n][d][h][w], weight [CHANNELS][3][3][3] (torch's [1][C][3][3][3]).
//
// A row of the volume (fixed n, d, h) is W * CHANNELS contiguous floats. Each output cell is a
// sum over 27 taps of dot products over the channels. Instead of reducing every dot product,
// a block of the output row (64 floats: 8 cells of 8 channels) keeps one partial sum per cell
// and channel in registers across the taps: each tap is an element-wise multiply-add of the
// input row, shifted by a cell for the left and right taps, with the tap's weights repeated
// over the lanes (lane k holds channel k % CHANNELS), and the channels are summed once per
// cell at the end. The row's edge cells, which lack a left or right neighbour (the zero
// padding), take loops of their own. The input gradient is the same computation on the output
// gradient, each cell's value repeated over the channels with a zero cell at each end, and the
// taps flipped; the weight gradient sums products of input rows and expanded gradient rows.

#include <cstdint>
#include <vector>

#include "parallel.h"

#ifndef CHANNELS
#error "define CHANNELS (input channels)"
#endif

constexpr int gcd(int a, int b) { return b == 0 ? a : gcd(b, a % b); }
// Floats of one period of the channels' pattern along a row that is also whole vectors of 16
// floats: lane k holds channel k % CHANNELS. 16 for 1, 2, 4, 8 or 16 channels.
constexpr int LANES = CHANNELS / gcd(CHANNELS, 16) * 16;
constexpr int TAPS = 27;

// lanes[tap][k]: the weight of channel k % CHANNELS at tap (kd * 3 + kh) * 3 + kw.
static void tap_lanes(const float *weight, float (*lanes)[LANES]) {
    for (int tap = 0; tap < TAPS; tap++) {
        for (int k = 0; k < LANES; k++) lanes[tap][k] = weight[(k % CHANNELS) * TAPS + tap];
    }
}

// The rows a row of output cells reads: up to 9 source rows, each with the weight lanes of
// its 3 taps along the row (taps[s][kw * LANES + k]).
struct SourceRows {
    const float *rows[9];
    const float *taps[9];
    int count = 0;
};

typedef float Vec __attribute__((vector_size(16 * sizeof(float))));
constexpr int VECTOR = 16;
// Vectors per block of the vectorised loop, held in registers across all taps: whole periods
// of the lanes' channel pattern, at least 64 floats.
constexpr int PERIOD_VECTORS = LANES / VECTOR;
constexpr int BLOCK_VECTORS = PERIOD_VECTORS * (PERIOD_VECTORS < 4 ? 4 / PERIOD_VECTORS : 1);

static inline Vec load(const float *from) {
    Vec value;
    __builtin_memcpy(&value, from, sizeof(Vec));
    return value;
}

// out[j] = sum over source rows s and kw in [kw_begin, kw_end) of
// s.rows[j + (kw - 1) * CHANNELS] * s.taps[kw][j % LANES], for j in [begin, end): the dot
// products of a row of cells with the taps of their left, own and right cell, before the sum
// over channels. `begin` is a multiple of CHANNELS (lane k of a block holds channel
// k % CHANNELS); every read must lie inside its source row.
static inline void gather_taps(float *out, const SourceRows &sources, int kw_begin, int kw_end,
                               int64_t begin, int64_t end) {
    int64_t j = begin;
    if (kw_begin == 0 && kw_end == 3) {
        for (; j + BLOCK_VECTORS * VECTOR <= end; j += BLOCK_VECTORS * VECTOR) {
            Vec sums[BLOCK_VECTORS] = {};
            for (int s = 0; s < sources.count; s++) {
                const float *x = sources.rows[s] + j, *taps = sources.taps[s];
                for (int kw = 0; kw < 3; kw++) {
                    const float *shifted = x + (kw - 1) * CHANNELS;
                    for (int v = 0; v < BLOCK_VECTORS; v++) {
                        const Vec tap = load(taps + kw * LANES + (v % PERIOD_VECTORS) * VECTOR);
                        sums[v] += load(shifted + v * VECTOR) * tap;
                    }
                }
            }
            __builtin_memcpy(out + j, sums, sizeof(sums));
        }
        // Single vectors: the block's pattern goes on from a whole period.
        for (int v = 0; j + VECTOR <= end; j += VECTOR, v = (v + 1) % PERIOD_VECTORS) {
            Vec sum = {};
            for (int s = 0; s < sources.count; s++) {
                const float *x = sources.rows[s] + j, *taps = sources.taps[s];
                for (int kw = 0; kw < 3; kw++) {
                    sum += load(x + (kw - 1) * CHANNELS) * load(taps + kw * LANES + v * VECTOR);
                }
            }
            __builtin_memcpy(out + j, &sum, sizeof(sum));
        }
    }
    for (; j < end; j++) {
        float sum = 0.0f;
        for (int s = 0; s < sources.count; s++) {
            for (int kw = kw_begin; kw < kw_end; kw++) {
                sum += sources.rows[s][j + (kw - 1) * CHANNELS] *
                       sources.taps[s][kw * LANES + j % LANES];
            }
        }
        out[j] = sum;
    }
}

// The volume's rows around a row: calls visit(neighbour, neighbour_row) for each of the 9
// (kd, kh) pairs whose row (d + kd - 1, h + kh - 1) lies inside the volume; neighbour is
// kd * 3 + kh and neighbour_row that row's index among all rows of the batch.
template <typename Visit>
static inline void for_each_neighbour_row(int64_t row, int64_t depth, int64_t height,
                                          Visit visit) {
    const int64_t h = row % height, d = (row / height) % depth, item = row / (height * depth);
    for (int kd = 0; kd < 3; kd++) {
        const int64_t dd = d + kd - 1;
        if (dd < 0 || dd >= depth) continue;
        for (int kh = 0; kh < 3; kh++) {
            const int64_t hh = h + kh - 1;
            if (hh < 0 || hh >= height) continue;
            visit(kd * 3 + kh, (item * depth + dd) * height + hh);
        }
    }
}

// Output rows [row_begin, row_end): out[w] = sum over taps and channels of
// weight[c][kd][kh][kw] * in[d + kd - 1][h + kh - 1][w + kw - 1][c].
static void logit_conv_range(float *out, const float *in, const float *weight, int64_t depth,
                             int64_t height, int64_t width, int64_t row_begin, int64_t row_end) {
    float lanes[TAPS][LANES];
    tap_lanes(weight, lanes);
    const int64_t row_floats = width * CHANNELS;
    std::vector<float> products(row_floats);
    for (int64_t row = row_begin; row < row_end; row++) {
        SourceRows sources;
        for_each_neighbour_row(row, depth, height, [&](int neighbour, int64_t in_row) {
            sources.rows[sources.count] = in + in_row * row_floats;
            sources.taps[sources.count++] = lanes[neighbour * 3];
        });
        // The edge cells lack a left or right neighbour (zero padding): their own loops.
        float *p = products.data();
        gather_taps(p, sources, 1, width > 1 ? 3 : 2, 0, CHANNELS);
        if (width > 1) {
            gather_taps(p, sources, 0, 3, CHANNELS, row_floats - CHANNELS);
            gather_taps(p, sources, 0, 2, row_floats - CHANNELS, row_floats);
        }
        float *y = out + row * width;
        for (int64_t w = 0; w < width; w++) {
            float total = 0.0f;
            for (int c = 0; c < CHANNELS; c++) total += p[w * CHANNELS + c];
            y[w] = total;
        }
    }
}

// logit_conv_range over all `rows` (n * d * h), split among `threads` OpenMP threads.
extern "C" void logit_conv(float *out, const float *in, const float *weight, int64_t depth,
                           int64_t height, int64_t width, int64_t rows, int64_t threads) {
    parallel_ranges(rows, 1, threads, [&](int64_t row_begin, int64_t row_end) {
        logit_conv_range(out, in, weight, depth, height, width, row_begin, row_end);
    });
}

// A row of the output gradient with each cell's value repeated over the channels, with a cell
// of zeros at each end: expanded[(w + 1) * CHANNELS + c] = grad_out_row[w].
static void expand_row(const float *grad_out_row, int64_t width, float *expanded) {
    for (int c = 0; c < CHANNELS; c++) {
        expanded[c] = 0.0f;
        expanded[(width + 1) * CHANNELS + c] = 0.0f;
    }
    for (int64_t w = 0; w < width; w++) {
        for (int c = 0; c < CHANNELS; c++) expanded[(w + 1) * CHANNELS + c] = grad_out_row[w];
    }
}

// The input gradient's rows [row_begin, row_end): in[d'][h'][w'][c] met output cell
// (d' - kd + 1, h' - kh + 1, w' - kw + 1) through weight[c][kd][kh][kw], so the input gradient
// is the forward convolution of the output gradient (each cell's value repeated over the
// channels, expand_row) with the taps flipped in all three axes.
static void logit_conv_input_grad_range(float *grad_in, const float *grad_out,
                                        const float *weight, int64_t depth, int64_t height,
                                        int64_t width, int64_t row_begin, int64_t row_end) {
    float lanes[TAPS][LANES], flipped[TAPS][LANES];
    tap_lanes(weight, lanes);
    for (int tap = 0; tap < TAPS; tap++) {
        for (int k = 0; k < LANES; k++) flipped[tap][k] = lanes[TAPS - 1 - tap][k];
    }
    const int64_t row_floats = width * CHANNELS, expanded_floats = row_floats + 2 * CHANNELS;
    std::vector<float> expanded(9 * expanded_floats);
    for (int64_t row = row_begin; row < row_end; row++) {
        SourceRows sources;
        for_each_neighbour_row(row, depth, height, [&](int neighbour, int64_t out_row) {
            float *g = expanded.data() + sources.count * expanded_floats;
            expand_row(grad_out + out_row * width, width, g);
            sources.rows[sources.count] = g + CHANNELS;
            sources.taps[sources.count++] = flipped[neighbour * 3];
        });
        // The expanded rows' zero cells stand for the padding: no edge cells here.
        gather_taps(grad_in + row * row_floats, sources, 0, 3, 0, row_floats);
    }
}

// Items [item_begin, item_end): each item's weight gradient, weight_parts[item][c][tap] =
// sum over its output cells of grad_out * the input cell at the tap's offset. Each output
// row's sums are taken in float per lane and added into double totals.
static void logit_conv_weight_grad_range(float *weight_parts, const float *grad_out,
                                         const float *in, int64_t depth, int64_t height,
                                         int64_t width, int64_t item_begin, int64_t item_end) {
    const int64_t row_floats = width * CHANNELS;
    std::vector<float> expanded(row_floats + 2 * CHANNELS);
    for (int64_t item = item_begin; item < item_end; item++) {
        double totals[TAPS][LANES] = {};
        for (int64_t row = item * depth * height; row < (item + 1) * depth * height; row++) {
            expand_row(grad_out + row * width, width, expanded.data());
            for_each_neighbour_row(row, depth, height, [&](int tap_row, int64_t in_row) {
                const float *x = in + in_row * row_floats;
                for (int kw = 0; kw < 3; kw++) {
                    // Input cell w' met output cell w' - kw + 1.
                    const float *g = expanded.data() + (2 - kw) * CHANNELS;
                    float row_sums[LANES] = {};
                    int64_t i = 0;
                    for (; i + LANES <= row_floats; i += LANES) {
                        for (int k = 0; k < LANES; k++) row_sums[k] += x[i + k] * g[i + k];
                    }
                    for (; i < row_floats; i++) row_sums[i % LANES] += x[i] * g[i];
                    for (int k = 0; k < LANES; k++) totals[tap_row * 3 + kw][k] += row_sums[k];
                }
            });
        }
        for (int c = 0; c < CHANNELS; c++) {
            for (int tap = 0; tap < TAPS; tap++) {
                double total = 0.0;
                for (int k = c; k < LANES; k += CHANNELS) total += totals[tap][k];
                weight_parts[(item * CHANNELS + c) * TAPS + tap] = (float)total;
            }
        }
    }
}

// Both gradients of logit_conv: grad_in over all rows, then the weight's per-item parts
// (summed over items by the caller), each split among `threads` OpenMP threads.
extern "C" void logit_conv_backward(float *grad_in, float *weight_parts, const float *grad_out,
                                    const float *in, const float *weight, int64_t depth,
                                    int64_t height, int64_t width, int64_t items,
                                    int64_t threads) {
    parallel_ranges(items * depth * height, 1, threads, [&](int64_t row_begin, int64_t row_end) {
        logit_conv_input_grad_range(grad_in, grad_out, weight, depth, height, width, row_begin,
                                    row_end);
    });
    parallel_ranges(items, 1, threads, [&](int64_t item_begin, int64_t item_end) {
        logit_conv_weight_grad_range(weight_parts, grad_out, in, depth, height, width,
                                     item_begin, item_end);
    });
}
