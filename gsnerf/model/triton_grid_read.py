"""Bilinear reads and grid arithmetic shared by Triton kernels, as ``F.grid_sample`` reads with
align_corners=False and padding_mode="border" (the Triton counterpart of csrc/grid_read.h).

Kernels import these by name: a Triton kernel resolves the functions and constants it uses in
its own module's globals.
"""

from typing import no_type_check

try:
    import triton
    import triton.language as tl
except ImportError:  # A CPU-only torch comes without Triton; nothing here is used then.
    triton = None


if triton is not None:
    # float32's smallest normal number: the floor of a hypothesis span (clamp_min(tiny)).
    TINY = tl.constexpr(1.1754943508222875e-38)

    @triton.jit
    @no_type_check  # keeps jaxtyping's import hook off the kernel (attention_kernel.py)
    def border_position(normalised, size):
        """grid_sample's unnormalised position along an axis of ``size`` cells
        (align_corners=False), clamped to [0, size - 1]; NaN goes to 0."""
        position = ((normalised + 1.0) * size - 1.0) * 0.5
        return tl.where(position > 0.0, tl.minimum(position, size - 1.0), 0.0)

    @triton.jit
    @no_type_check
    def clamp_grid(value):
        """``value`` clamped to [-2, 2], NaN kept (torch.clamp)."""
        return tl.where(value < -2.0, -2.0, tl.where(value > 2.0, 2.0, value))

    @triton.jit
    @no_type_check
    def corners(grid_x, grid_y, height, width):
        """A bilinear read's lower-corner offset in a ``(height, width)`` plane, the steps to
        the upper corners (0 at the last row or column) and the upper corners' weights."""
        x = border_position(grid_x, width)
        y = border_position(grid_y, height)
        column = x.to(tl.int32)  # x, y >= 0: truncation is the floor
        row = y.to(tl.int32)
        step_x = tl.where(column + 1 < width, 1, 0)
        step_y = tl.where(row + 1 < height, width, 0)
        fraction_x = x - column.to(tl.float32)
        fraction_y = y - row.to(tl.float32)
        return row * width + column, step_x, step_y, fraction_x, fraction_y

    @triton.jit
    @no_type_check
    def read_plane(plane_ptr, base, step_x, step_y, fraction_x, fraction_y, mask):
        """Bilinear read of one plane at every point's corners, float32."""
        gx = 1.0 - fraction_x
        gy = 1.0 - fraction_y
        v00 = tl.load(plane_ptr + base, mask=mask, other=0.0).to(tl.float32)
        v01 = tl.load(plane_ptr + base + step_x, mask=mask, other=0.0).to(tl.float32)
        v10 = tl.load(plane_ptr + base + step_y, mask=mask, other=0.0).to(tl.float32)
        v11 = tl.load(plane_ptr + base + step_y + step_x, mask=mask, other=0.0).to(tl.float32)
        return (
            gy * gx * v00
            + gy * fraction_x * v01
            + fraction_y * gx * v10
            + (fraction_y * fraction_x * v11)
        )

    @triton.jit
    @no_type_check
    def read_channels(channels_ptr, base, step_x, step_y, fraction_x, fraction_y, mask):
        """:func:`_read_plane` of a ``(points, channels)`` tile: ``channels_ptr`` ``(1,
        channels)`` points at every channel's plane, ``mask`` is the tile's."""
        return read_plane(
            channels_ptr,
            base[:, None],
            step_x[:, None],
            step_y[:, None],
            fraction_x[:, None],
            fraction_y[:, None],
            mask,
        )
