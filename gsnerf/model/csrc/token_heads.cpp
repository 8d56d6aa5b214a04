// The view-token stage of a renderer head (gsnerf/model/radiance_head.py, semantic_head.py) in
// one pass over the samples, for CPU inference. Built and loaded by
// gsnerf/model/cpu_token_heads.py; see its module doc.
//
// Per sample (a set of VIEWS view tokens and one global token), on tiles of LANES samples:
// view tokens ELU(Linear([features, in_frustum, visible])), the global token from the mean and
// variance of the features over the attended views through Linear-ELU-Linear-ELU, the
// transformer blocks (token_blocks.h) with the views' key mask, then one of two endings:
//   EPILOGUE 1 (radiance): a blending MLP on [view token, angle encoding] gives a logit per
//     view, a softmax over the attended views the blending weights, and the colour is the blend
//     of the source colours (features COLOURS_AT .. COLOURS_AT + 2); writes the global token,
//     the weights and the colour;
//   EPILOGUE 2 (semantic): a class MLP on [global token, mean of the attended view tokens];
//     writes the class logits.
// Inputs come sample-major as the heads hold them, (sample, view, channel), and are transposed
// into the tile here: up to about 1500 scalar moves per sample (the semantic head's 180
// channels of 8 views) against tens of thousands of multiply-adds, and no channel-major copy of
// the inputs in memory.

#ifndef VIEWS
#error "define VIEWS, WIDTH, HEADS, FFN, PART0..PART2, HIDDEN1, HIDDEN2 and EPILOGUE"
#endif
#define TOKENS (VIEWS + 1)
#include "parallel.h"
#include "token_blocks.h"

#define FEATURES (PART0 + PART1 + PART2)
#if EPILOGUE == 1
#define READ_WIDTH (WIDTH + ANGLE)
#define OUTPUTS 1
#elif EPILOGUE == 2
#define READ_WIDTH (2 * WIDTH)
#define OUTPUTS CLASSES
#else
#error "EPILOGUE must be 1 (radiance) or 2 (semantic)"
#endif

// Floats of the parts of `weights` before the blocks (the ending MLP follows the blocks).
constexpr int64_t EMBED_FLOATS = WIDTH * (FEATURES + 2) + WIDTH;
constexpr int64_t GLOBAL_FLOATS = WIDTH * 2 * FEATURES + WIDTH + WIDTH * WIDTH + WIDTH;

// The tile's samples' channels [0, CHANNELS) of every view, from a (sample, view, channel)
// array, in blocks of 16 channels: each block's 16 vectors (64-byte lines) take the scalar
// stores of all lanes while they stay in the first-level cache. Sample by sample, every store
// went to another line of a tile larger than that cache (93 KB for 180 channels and 8 views),
// and the semantic head's loads took 40 % of its time.
template <int CHANNELS>
static inline void load_part(Vec tile[][VIEWS], const float *part, int64_t first, int lanes) {
    constexpr int BLOCK = 16;
    for (int v = 0; v < VIEWS; v++)
        for (int begin = 0; begin < CHANNELS; begin += BLOCK) {
            const int end = begin + BLOCK < CHANNELS ? begin + BLOCK : CHANNELS;
            for (int lane = 0; lane < lanes; lane++) {
                const float *sample = part + ((first + lane) * VIEWS + v) * CHANNELS;
                for (int c = begin; c < end; c++) tile[c][v][lane] = sample[c];
            }
        }
}

static inline void load_flags(Vec flags[VIEWS], const uint8_t *values, int64_t first, int lanes,
                              float missing) {
    for (int v = 0; v < VIEWS; v++) flags[v] = splat(missing);
    for (int lane = 0; lane < lanes; lane++)
        for (int v = 0; v < VIEWS; v++) flags[v][lane] = values[(first + lane) * VIEWS + v];
}

// Linear-ELU-Linear-ELU-Linear on COLS columns (the heads' mlp() with two hidden layers).
template <int COLS>
static inline void ending_mlp(Vec out[OUTPUTS][COLS], const Vec in[READ_WIDTH][COLS],
                              const float *p) {
    Vec first[HIDDEN1][COLS], second[HIDDEN2][COLS];
    product<HIDDEN1, READ_WIDTH, COLS>(first, p, in, p + HIDDEN1 * READ_WIDTH);
    p += HIDDEN1 * READ_WIDTH + HIDDEN1;
    for (int r = 0; r < HIDDEN1; r++)
        for (int t = 0; t < COLS; t++) first[r][t] = elu(first[r][t]);
    product<HIDDEN2, HIDDEN1, COLS>(second, p, first, p + HIDDEN2 * HIDDEN1);
    p += HIDDEN2 * HIDDEN1 + HIDDEN2;
    for (int r = 0; r < HIDDEN2; r++)
        for (int t = 0; t < COLS; t++) second[r][t] = elu(second[r][t]);
    product<OUTPUTS, HIDDEN2, COLS>(out, p, second, p + OUTPUTS * HIDDEN2);
}

// Samples [begin, end) of `samples`. part0..part2: (samples, VIEWS, PARTk) floats (null where
// PARTk is 0); in_frustum, visible, mask: (samples, VIEWS) bools (mask: the views attended,
// at least one per sample); angle: (samples, VIEWS, ANGLE) for EPILOGUE 1, else null.
// weights: embedding, global embedding (*_FLOATS above), `blocks` blocks, ending MLP, each
// layer's weight (out, in) then bias, as torch holds them.
// Outputs of EPILOGUE 1: out0 global tokens (samples, WIDTH), out1 blending weights (samples,
// VIEWS), out2 colours (samples, 3); of EPILOGUE 2: out0 logits (samples, CLASSES).
static void token_head_range(const float *part0, const float *part1, const float *part2,
                             const uint8_t *in_frustum, const uint8_t *visible,
                             const uint8_t *mask, const float *angle, const float *weights,
                             int blocks, float eps, float *out0, float *out1, float *out2,
                             int64_t begin, int64_t end) {
    const float *embed = weights;
    const float *global = embed + EMBED_FLOATS;
    const float *block_weights = global + GLOBAL_FLOATS;
    const float *ending = block_weights + blocks * BLOCK_FLOATS;
    for (int64_t first = begin; first < end; first += LANES) {
        const int lanes = static_cast<int>(end - first < LANES ? end - first : LANES);
        // Rows FEATURES and FEATURES + 1: the in-frustum and visible flags of the embedding.
        Vec features[FEATURES + 2][VIEWS];
        // Lanes past the end of a partial tile stay 0 (a full tile's are all written).
        if (lanes < LANES) std::memset(features, 0, sizeof(features));
        if (PART0) load_part<PART0>(features, part0, first, lanes);
        if (PART1) load_part<PART1>(features + PART0, part1, first, lanes);
        if (PART2) load_part<PART2>(features + PART0 + PART1, part2, first, lanes);
        load_flags(features[FEATURES], in_frustum, first, lanes, 0.0f);
        load_flags(features[FEATURES + 1], visible, first, lanes, 0.0f);
        // Lanes past the end attend to every view, so that their arithmetic stays finite.
        Vec attended[VIEWS];
        load_flags(attended, mask, first, lanes, 1.0f);

        Vec x[WIDTH][TOKENS];
        {
            Vec views[WIDTH][VIEWS];
            product<WIDTH, FEATURES + 2, VIEWS>(views, embed, features,
                                                embed + WIDTH * (FEATURES + 2));
            for (int c = 0; c < WIDTH; c++)
                for (int v = 0; v < VIEWS; v++) x[c][1 + v] = elu(views[c][v]);
        }
        Vec count = splat(0.0f);
        for (int v = 0; v < VIEWS; v++) count += attended[v];
        const Vec inverse_count = 1.0f / max(count, splat(1.0f));
        {
            // [mean, population variance] over the attended views, then the global embedding.
            Vec moments[2 * FEATURES][1], hidden[WIDTH][1], token[WIDTH][1];
            for (int c = 0; c < FEATURES; c++) {
                Vec sum = splat(0.0f);
                for (int v = 0; v < VIEWS; v++) sum += attended[v] * features[c][v];
                const Vec mean = sum * inverse_count;
                Vec squares = splat(0.0f);
                for (int v = 0; v < VIEWS; v++) {
                    const Vec centred = features[c][v] - mean;
                    squares += attended[v] * (centred * centred);
                }
                moments[c][0] = mean;
                moments[FEATURES + c][0] = squares * inverse_count;
            }
            product<WIDTH, 2 * FEATURES, 1>(hidden, global, moments, global + WIDTH * 2 * FEATURES);
            for (int c = 0; c < WIDTH; c++) hidden[c][0] = elu(hidden[c][0]);
            const float *second = global + WIDTH * 2 * FEATURES + WIDTH;
            product<WIDTH, WIDTH, 1>(token, second, hidden, second + WIDTH * WIDTH);
            for (int c = 0; c < WIDTH; c++) x[c][0] = elu(token[c][0]);
        }
        Vec keep[TOKENS];
        keep[0] = splat(1.0f);  // the global token is always attended
        for (int v = 0; v < VIEWS; v++) keep[1 + v] = attended[v];
        run_blocks(x, block_weights, blocks, keep, eps);

#if EPILOGUE == 1
        Vec read[READ_WIDTH][VIEWS] = {}, logits[1][VIEWS];
        for (int c = 0; c < WIDTH; c++)
            for (int v = 0; v < VIEWS; v++) read[c][v] = x[c][1 + v];
        load_part<ANGLE>(read + WIDTH, angle, first, lanes);
        ending_mlp<VIEWS>(logits, read, ending);
        Vec highest = splat(-3.0e38f), total = splat(0.0f), blend[VIEWS];
        for (int v = 0; v < VIEWS; v++)
            highest = attended[v] != 0.0f ? max(highest, logits[0][v]) : highest;
        for (int v = 0; v < VIEWS; v++) {
            blend[v] = exp_nonpositive(logits[0][v] - highest) * attended[v];
            total += blend[v];
        }
        const Vec inverse_total = 1.0f / total;
        for (int v = 0; v < VIEWS; v++) blend[v] *= inverse_total;
        Vec rgb[3];
        for (int c = 0; c < 3; c++) {
            rgb[c] = splat(0.0f);
            for (int v = 0; v < VIEWS; v++) rgb[c] += blend[v] * features[COLOURS_AT + c][v];
        }
        for (int lane = 0; lane < lanes; lane++) {
            const int64_t sample = first + lane;
            for (int c = 0; c < WIDTH; c++) out0[sample * WIDTH + c] = x[c][0][lane];
            for (int v = 0; v < VIEWS; v++) out1[sample * VIEWS + v] = blend[v][lane];
            for (int c = 0; c < 3; c++) out2[sample * 3 + c] = rgb[c][lane];
        }
#else
        Vec read[READ_WIDTH][1], logits[CLASSES][1];
        for (int c = 0; c < WIDTH; c++) {
            Vec sum = splat(0.0f);
            for (int v = 0; v < VIEWS; v++) sum += attended[v] * x[c][1 + v];
            read[c][0] = x[c][0];
            read[WIDTH + c][0] = sum * inverse_count;
        }
        ending_mlp<1>(logits, read, ending);
        for (int lane = 0; lane < lanes; lane++)
            for (int k = 0; k < CLASSES; k++)
                out0[(first + lane) * CLASSES + k] = logits[k][0][lane];
#endif
    }
}

// token_head_range over the whole range, split among `threads` OpenMP threads.
extern "C" void token_head(const float *part0, const float *part1, const float *part2,
                           const uint8_t *in_frustum, const uint8_t *visible, const uint8_t *mask,
                           const float *angle, const float *weights, int blocks, float eps,
                           float *out0, float *out1, float *out2, int64_t samples,
                           int64_t threads) {
    parallel_ranges(samples, LANES, threads, [&](int64_t begin, int64_t end) {
        token_head_range(part0, part1, part2, in_frustum, visible, mask, angle, weights, blocks,
                         eps, out0, out1, out2, begin, end);
    });
}
