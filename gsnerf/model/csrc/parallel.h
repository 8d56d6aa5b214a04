// Splitting a kernel's range among threads: OpenMP threads of the process's OpenMP runtime,
// which are torch's own where torch has loaded its libgomp as libgomp.so.1 (the libraries'
// dependency resolves to it), so a kernel neither competes with torch's workers, which spin
// for a while after each of its parallel regions, nor starts threads of its own. Built without
// OpenMP, the range runs in the calling thread.

#pragma once

#include <cstdint>

// body(begin, end) for at most `threads` ranges covering [0, total), each starting at a
// multiple of `multiple`. Example: total 40, multiple 16, threads 2: [0, 32) and [32, 40).
template <typename Body>
static void parallel_ranges(int64_t total, int64_t multiple, int64_t threads, Body body) {
    const int64_t blocks = (total + multiple - 1) / multiple;
    const int64_t parts = threads < blocks ? threads : blocks;
    if (parts <= 1) {
        if (total > 0) body((int64_t)0, total);
        return;
    }
    const int64_t per_part = (blocks + parts - 1) / parts * multiple;
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int64_t part = 0; part < parts; part++) {
        const int64_t begin = part * per_part;
        const int64_t end = begin + per_part < total ? begin + per_part : total;
        if (begin < end) body(begin, end);
    }
}
