// Border-padded linear interpolation along one axis of a map or volume, as F.grid_sample
// reads with align_corners=False and padding_mode="border": the position helpers of the C++
// reads (volume_read.cpp; view_gather.cpp uses border_position).

#pragma once

#include <cstdint>

// The sample position along an axis of `size` cells: unnormalised as grid_sample does with
// align_corners=False, then clamped to the border ([0, size - 1]); NaN goes to 0.
static inline float border_position(float normalised, int64_t size) {
    const float position = ((normalised + 1.0f) * size - 1.0f) * 0.5f;
    const float upper = (float)(size - 1);
    return position > 0.0f ? (position < upper ? position : upper) : 0.0f;
}

// The lower corner, its weight's complement (the fraction) and the offset to the upper corner
// along one axis; the upper corner is the lower one at the last cell (its weight is then 0).
static inline void axis_corners(float position, int64_t size, int64_t stride, int64_t &lower,
                                int64_t &step, float &fraction) {
    const int64_t index = (int64_t)position; // position >= 0: truncation is the floor
    fraction = position - (float)index;
    lower = index * stride;
    step = index + 1 < size ? stride : 0;
}
