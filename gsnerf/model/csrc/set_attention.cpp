// Masked multi-head attention within small sets of tokens, forward and backward, for the CPU.
// Built and loaded by gsnerf/model/cpu_set_attention.py; see its module doc.
//
// Layouts (float32): qkv [set][token][3][HEADS][HEAD_CHANNELS] (a block's fused query, key and
// value product), key_mask [set][token] (uint8: 1 attended), out and grad_out
// [set][token][HEADS][HEAD_CHANNELS], probabilities [set][HEADS][query][key], grad_qkv like
// qkv. A set's tokens are a few kilobytes at most, so each set is done whole, head by head, in
// the first-level cache; the loops over a head's channels are what the compiler vectorises.

#include <cmath>
#include <cstdint>

#include "parallel.h"

#ifndef HEADS
#error "define HEADS and HEAD_CHANNELS"
#endif

constexpr int C = HEAD_CHANNELS;
constexpr int WIDTH = HEADS * HEAD_CHANNELS;
constexpr int ROW = 3 * WIDTH;  // floats of one token's query, key and value
// Longest sets (the caller checks): the per-query scores live on the stack.
constexpr int MAX_TOKENS = 64;

static inline float dot(const float *a, const float *b) {
    float sum = 0.0f;
    for (int c = 0; c < C; c++) sum += a[c] * b[c];
    return sum;
}

// Sets [set_begin, set_end): for every head and query token, the softmax over the set's
// attended keys of scale * q . k, and the probability-weighted sum of the values. A set whose
// keys are all masked gets NaN (0 / 0), as the library's attention does.
static void set_attention_range(float *out, float *probabilities, const float *qkv,
                                const uint8_t *key_mask, int64_t tokens, float scale,
                                int64_t set_begin, int64_t set_end) {
    for (int64_t set = set_begin; set < set_end; set++) {
        const float *x = qkv + set * tokens * ROW;
        const uint8_t *mask = key_mask + set * tokens;
        for (int h = 0; h < HEADS; h++) {
            for (int64_t i = 0; i < tokens; i++) {
                const float *q = x + i * ROW + h * C;
                float scores[MAX_TOKENS];
                float largest = -INFINITY;
                for (int64_t j = 0; j < tokens; j++) {
                    scores[j] = scale * dot(q, x + j * ROW + WIDTH + h * C);
                    if (mask[j] && scores[j] > largest) largest = scores[j];
                }
                float total = 0.0f;
                for (int64_t j = 0; j < tokens; j++) {
                    scores[j] = mask[j] ? std::exp(scores[j] - largest) : 0.0f;
                    total += scores[j];
                }
                float *p = probabilities + ((set * HEADS + h) * tokens + i) * tokens;
                float attended[C] = {};
                for (int64_t j = 0; j < tokens; j++) {
                    p[j] = scores[j] / total;
                    const float *v = x + j * ROW + 2 * WIDTH + h * C;
                    for (int c = 0; c < C; c++) attended[c] += p[j] * v[c];
                }
                float *o = out + (set * tokens + i) * WIDTH + h * C;
                for (int c = 0; c < C; c++) o[c] = attended[c];
            }
        }
    }
}

// set_attention_range over all `sets`, split among `threads` OpenMP threads.
extern "C" void set_attention(float *out, float *probabilities, const float *qkv,
                              const uint8_t *key_mask, int64_t sets, int64_t tokens, float scale,
                              int64_t threads) {
    parallel_ranges(sets, 1, threads, [&](int64_t set_begin, int64_t set_end) {
        set_attention_range(out, probabilities, qkv, key_mask, tokens, scale, set_begin, set_end);
    });
}

// The gradient of the query, key and value of sets [set_begin, set_end), from the output's
// gradient and the forward pass's probabilities P. Per head, with dO the output gradient:
//   dV_j = sum_i P_ij dO_i,   dP_ij = dO_i . v_j,   dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik),
//   dQ_i = scale sum_j dS_ij k_j,   dK_j = scale sum_i dS_ij q_i.
// Masked keys have P = 0, hence no gradient.
static void set_attention_backward_range(float *grad_qkv, const float *grad_out,
                                         const float *qkv, const float *probabilities,
                                         int64_t tokens, float scale, int64_t set_begin,
                                         int64_t set_end) {
    for (int64_t set = set_begin; set < set_end; set++) {
        const float *x = qkv + set * tokens * ROW;
        float *dx = grad_qkv + set * tokens * ROW;
        for (int64_t i = 0; i < tokens * ROW; i++) dx[i] = 0.0f;
        for (int h = 0; h < HEADS; h++) {
            const float *set_p = probabilities + (set * HEADS + h) * tokens * tokens;
            for (int64_t i = 0; i < tokens; i++) {
                const float *p = set_p + i * tokens;
                const float *d_out = grad_out + (set * tokens + i) * WIDTH + h * C;
                const float *q = x + i * ROW + h * C;
                float d_scores[MAX_TOKENS];
                float weighted = 0.0f;  // sum_k P_ik dP_ik
                for (int64_t j = 0; j < tokens; j++) {
                    d_scores[j] = dot(d_out, x + j * ROW + 2 * WIDTH + h * C);
                    weighted += p[j] * d_scores[j];
                }
                float *d_q = dx + i * ROW + h * C;
                for (int64_t j = 0; j < tokens; j++) {
                    const float d_score = scale * p[j] * (d_scores[j] - weighted);
                    const float *k = x + j * ROW + WIDTH + h * C;
                    float *d_k = dx + j * ROW + WIDTH + h * C;
                    float *d_v = dx + j * ROW + 2 * WIDTH + h * C;
                    for (int c = 0; c < C; c++) {
                        d_q[c] += d_score * k[c];
                        d_k[c] += d_score * q[c];
                        d_v[c] += p[j] * d_out[c];
                    }
                }
            }
        }
    }
}

// set_attention_backward_range over all `sets`, split among `threads` OpenMP threads.
extern "C" void set_attention_backward(float *grad_qkv, const float *grad_out, const float *qkv,
                                       const float *probabilities, int64_t sets, int64_t tokens,
                                       float scale, int64_t threads) {
    parallel_ranges(sets, 1, threads, [&](int64_t set_begin, int64_t set_end) {
        set_attention_backward_range(grad_qkv, grad_out, qkv, probabilities, tokens, scale,
                                     set_begin, set_end);
    });
}
