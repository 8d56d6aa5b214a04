// A whole token transformer (gsnerf/model/transformer.py) in one pass over the tokens, for
// CPU inference. Built and loaded by gsnerf/model/cpu_transformer.py; see its module doc.
//
// Layout: the tokens come channel-major, in[c][t][n] for channel c, token t and set n, so that
// LANES consecutive sets form one vector (token_blocks.h). Each tile of LANES sets is loaded
// once, goes through every block, and is written once.

#include "parallel.h"
#include "token_blocks.h"

// Sets [begin, end) of `sets`: out[c][t][n] = transformer(in)[c][t][n]. keep: [TOKENS][sets]
// of 1 and 0, or null (every key attended). weights: `blocks` blocks of BLOCK_FLOATS each.
static void token_transformer_range(float *out, const float *in, const float *keep, int64_t sets,
                                    int64_t begin, int64_t end, const float *weights, int blocks,
                                    float eps) {
    const int64_t plane = TOKENS * sets;
    for (int64_t first = begin; first < end; first += LANES) {
        const int64_t lanes = end - first < LANES ? end - first : LANES;
        Vec x[WIDTH][TOKENS], keep_tile[TOKENS];
        for (int c = 0; c < WIDTH; c++)
            for (int t = 0; t < TOKENS; t++) {
                x[c][t] = splat(0.0f);
                std::memcpy(&x[c][t], in + c * plane + t * sets + first, lanes * sizeof(float));
            }
        for (int t = 0; t < TOKENS; t++) {
            keep_tile[t] = splat(1.0f);
            if (keep) std::memcpy(&keep_tile[t], keep + t * sets + first, lanes * sizeof(float));
        }
        run_blocks(x, weights, blocks, keep_tile, eps);
        for (int c = 0; c < WIDTH; c++)
            for (int t = 0; t < TOKENS; t++)
                std::memcpy(out + c * plane + t * sets + first, &x[c][t], lanes * sizeof(float));
    }
}

// token_transformer_range over the whole range, split among `threads` OpenMP threads.
extern "C" void token_transformer(float *out, const float *in, const float *keep, int64_t sets,
                                  int64_t threads, const float *weights, int blocks, float eps) {
    parallel_ranges(sets, LANES, threads, [&](int64_t begin, int64_t end) {
        token_transformer_range(out, in, keep, sets, begin, end, weights, blocks, eps);
    });
}
