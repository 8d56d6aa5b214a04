// The blocks of a token transformer (gsnerf/model/transformer.py) on tiles of LANES sets, for
// the CPU kernels token_transformer.cpp and token_heads.cpp.
//
// Layout: a tile holds x[c][t], one vector per channel c and token t whose lanes are LANES
// consecutive sets, so every product, the attention, the residuals and the LayerNorms work on
// whole vectors of sets while the tile sits in the first-level cache. Sizes are compile-time
// constants (one library per shape), so that the compiler keeps the accumulators of a product
// in registers.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if !defined(WIDTH) || !defined(HEADS) || !defined(FFN) || !defined(TOKENS)
#error "define WIDTH (token channels), HEADS, FFN (feed-forward width) and TOKENS"
#endif
#define HEAD_WIDTH (WIDTH / HEADS)
static_assert(WIDTH % HEADS == 0, "HEADS must divide WIDTH");

// Sets per vector: 16 float32 lanes, one AVX-512 register (two AVX2 ones). 8 and 32 lanes were
// slower on this project's CPU (18.0 and 80 against 16.3 ms for 4096 sets of 9 tokens).
#define LANES 16

typedef float Vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t IntVec __attribute__((vector_size(LANES * sizeof(int32_t))));

static inline Vec splat(float value) { return Vec{} + value; }
static inline Vec max(Vec a, Vec b) { return a > b ? a : b; }
static inline Vec min(Vec a, Vec b) { return a < b ? a : b; }

// exp(x) for x <= 0 (larger x are clamped to 0, smaller to -87): x = n ln 2 + r with
// |r| <= ln(2) / 2, exp(r) from a degree-7 polynomial (the Cephes single-precision
// coefficients), times 2^n built in the exponent bits. Relative error about 1e-7.
static inline Vec exp_nonpositive(Vec x) {
    x = min(max(x, splat(-87.0f)), splat(0.0f));
    // Round x / ln 2 to the nearest integer: adding 1.5 * 2^23 leaves no fraction bits.
    Vec n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    // ln 2 in two parts, so that n ln 2 loses no bits of r.
    Vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
    Vec poly = splat(1.9875691500e-4f);
    poly = poly * r + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    poly = poly * r * r + r + 1.0f;
    IntVec exponent_bits = (__builtin_convertvector(n, IntVec) + 127) << 23;
    return poly * (Vec)exponent_bits;  // the same bits read as floats
}

static inline Vec inverse_sqrt(Vec x) {
    Vec result;
    for (int lane = 0; lane < LANES; lane++) result[lane] = 1.0f / __builtin_sqrtf(x[lane]);
    return result;
}

// One block's parameters, row-major as in torch (weights are (out, in)).
struct Block {
    const float *qkv, *out, *attention_norm_weight, *attention_norm_bias;
    const float *ffn_in, *ffn_in_bias, *ffn_out, *ffn_out_bias, *ffn_norm_weight, *ffn_norm_bias;
};

// out[i][t] = bias[i] + sum_k weight[i][k] in[k][t] for i < RB rows, t < COLS: RB x COLS
// accumulators in registers, each input vector loaded once for the RB rows.
template <int RB, int DEPTH, int COLS>
static inline void product_rows(Vec out[][COLS], const float *weight, const Vec in[][COLS],
                                const float *bias) {
    Vec sums[RB][COLS];
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < COLS; t++) sums[i][t] = splat(bias ? bias[i] : 0.0f);
    for (int k = 0; k < DEPTH; k++)
        for (int t = 0; t < COLS; t++) {
            const Vec value = in[k][t];
            for (int i = 0; i < RB; i++) sums[i][t] += weight[i * DEPTH + k] * value;
        }
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < COLS; t++) out[i][t] = sums[i][t];
}

// out[r][t] = bias[r] + sum_k weight[r][k] in[k][t] for r < ROWS, t < COLS, in blocks of rows
// whose accumulators fill about 24 of the 32 vector registers: two rows of 9 tokens, three of
// 8 views, eight of one column (where fewer independent sums would wait on each other).
template <int ROWS, int DEPTH, int COLS = TOKENS>
static inline void product(Vec out[][COLS], const float *weight, const Vec in[][COLS],
                           const float *bias) {
    constexpr int FIT = 24 / COLS < 1 ? 1 : (24 / COLS > 8 ? 8 : 24 / COLS);
    constexpr int RB = FIT < ROWS ? FIT : ROWS;
    int r = 0;
    for (; r + RB <= ROWS; r += RB)
        product_rows<RB, DEPTH, COLS>(out + r, weight + r * DEPTH, in, bias ? bias + r : nullptr);
    for (; r < ROWS; r++)
        product_rows<1, DEPTH, COLS>(out + r, weight + r * DEPTH, in, bias ? bias + r : nullptr);
}

// ELU with alpha 1: x for x > 0, exp(x) - 1 otherwise (as the heads' compiled CPU code).
static inline Vec elu(Vec x) { return x > 0.0f ? x : exp_nonpositive(x) - 1.0f; }

// LayerNorm over the channels of every token (population variance, as torch). The sums run
// over the channels with one accumulator per token, so that the tokens' sums proceed together
// instead of each waiting on its previous addition.
static void layer_norm(Vec x[WIDTH][TOKENS], const float *weight, const float *bias, float eps) {
    Vec mean[TOKENS], variance[TOKENS], scale[TOKENS];
    for (int t = 0; t < TOKENS; t++) mean[t] = variance[t] = splat(0.0f);
    for (int c = 0; c < WIDTH; c++)
        for (int t = 0; t < TOKENS; t++) mean[t] += x[c][t];
    for (int t = 0; t < TOKENS; t++) mean[t] *= 1.0f / WIDTH;
    for (int c = 0; c < WIDTH; c++)
        for (int t = 0; t < TOKENS; t++) {
            const Vec centred = x[c][t] - mean[t];
            variance[t] += centred * centred;
        }
    for (int t = 0; t < TOKENS; t++) scale[t] = inverse_sqrt(variance[t] * (1.0f / WIDTH) + eps);
    for (int c = 0; c < WIDTH; c++)
        for (int t = 0; t < TOKENS; t++)
            x[c][t] = (x[c][t] - mean[t]) * scale[t] * weight[c] + bias[c];
}

// Softmax attention of every head, masked over the keys: keep[t] is 1 for an attended key and
// 0 for one no query may attend to (every set keeps at least one key).
static void attention(Vec attended[WIDTH][TOKENS], const Vec x[WIDTH][TOKENS], const float *qkv,
                      const Vec keep[TOKENS]) {
    const float scale = 1.0f / __builtin_sqrtf(static_cast<float>(HEAD_WIDTH));
    Vec query[HEAD_WIDTH][TOKENS], key[HEAD_WIDTH][TOKENS], value[HEAD_WIDTH][TOKENS];
    for (int h = 0; h < HEADS; h++) {
        product<HEAD_WIDTH, WIDTH>(query, qkv + (h * HEAD_WIDTH) * WIDTH, x, nullptr);
        product<HEAD_WIDTH, WIDTH>(key, qkv + (WIDTH + h * HEAD_WIDTH) * WIDTH, x, nullptr);
        product<HEAD_WIDTH, WIDTH>(value, qkv + (2 * WIDTH + h * HEAD_WIDTH) * WIDTH, x, nullptr);
        for (int tq = 0; tq < TOKENS; tq++) {
            // Scores of every key, accumulated over the head's channels (one sum per key).
            Vec weights[TOKENS];
            for (int tk = 0; tk < TOKENS; tk++) weights[tk] = splat(0.0f);
            for (int c = 0; c < HEAD_WIDTH; c++) {
                const Vec q = query[c][tq] * scale;
                for (int tk = 0; tk < TOKENS; tk++) weights[tk] += q * key[c][tk];
            }
            Vec highest = splat(-3.0e38f);
            for (int tk = 0; tk < TOKENS; tk++)
                highest = keep[tk] != 0.0f ? max(highest, weights[tk]) : highest;
            Vec total = splat(0.0f);
            for (int tk = 0; tk < TOKENS; tk++) {
                weights[tk] = exp_nonpositive(weights[tk] - highest) * keep[tk];
                total += weights[tk];
            }
            const Vec inverse_total = 1.0f / total;
            // The weighted values, one sum per channel.
            Vec sums[HEAD_WIDTH];
            for (int c = 0; c < HEAD_WIDTH; c++) sums[c] = splat(0.0f);
            for (int tk = 0; tk < TOKENS; tk++)
                for (int c = 0; c < HEAD_WIDTH; c++) sums[c] += weights[tk] * value[c][tk];
            for (int c = 0; c < HEAD_WIDTH; c++)
                attended[h * HEAD_WIDTH + c][tq] = sums[c] * inverse_total;
        }
    }
}

// Post-norm block: x = LN(x + out(attention(x))); x = LN(x + ffn(x)).
static void run_block(Vec x[WIDTH][TOKENS], const Block &block, const Vec keep[TOKENS],
                      float eps) {
    Vec attended[WIDTH][TOKENS], update[WIDTH][TOKENS], hidden[FFN][TOKENS];
    attention(attended, x, block.qkv, keep);
    product<WIDTH, WIDTH>(update, block.out, attended, nullptr);
    for (int c = 0; c < WIDTH; c++)
        for (int t = 0; t < TOKENS; t++) x[c][t] += update[c][t];
    layer_norm(x, block.attention_norm_weight, block.attention_norm_bias, eps);
    product<FFN, WIDTH>(hidden, block.ffn_in, x, block.ffn_in_bias);
    for (int f = 0; f < FFN; f++)
        for (int t = 0; t < TOKENS; t++) hidden[f][t] = max(hidden[f][t], splat(0.0f));
    product<WIDTH, FFN>(update, block.ffn_out, hidden, block.ffn_out_bias);
    for (int c = 0; c < WIDTH; c++)
        for (int t = 0; t < TOKENS; t++) x[c][t] += update[c][t];
    layer_norm(x, block.ffn_norm_weight, block.ffn_norm_bias, eps);
}

// Floats of one block in `weights`, in the order of struct Block.
constexpr int64_t BLOCK_FLOATS =
    4 * WIDTH * WIDTH + 2 * WIDTH + FFN * WIDTH + FFN + WIDTH * FFN + 3 * WIDTH;

// `blocks` blocks of BLOCK_FLOATS floats each, from `weights`, on one tile.
static void run_blocks(Vec x[WIDTH][TOKENS], const float *weights, int blocks,
                       const Vec keep[TOKENS], float eps) {
    for (int b = 0; b < blocks; b++) {
        const float *p = weights + b * BLOCK_FLOATS;
        Block block;
        block.qkv = p, p += 3 * WIDTH * WIDTH;
        block.out = p, p += WIDTH * WIDTH;
        block.attention_norm_weight = p, p += WIDTH;
        block.attention_norm_bias = p, p += WIDTH;
        block.ffn_in = p, p += FFN * WIDTH;
        block.ffn_in_bias = p, p += FFN;
        block.ffn_out = p, p += WIDTH * FFN;
        block.ffn_out_bias = p, p += WIDTH;
        block.ffn_norm_weight = p, p += WIDTH;
        block.ffn_norm_bias = p;
        run_block(x, block, keep, eps);
    }
}
