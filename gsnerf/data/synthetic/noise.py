"""Deterministic lattice noise for the procedural textures of the synthetic rooms.

Everything is a pure function of the query points and an integer seed: an integer hash of the
lattice cell (32-bit multiply-xorshift, so the same seed gives the same bits on every machine)
and smooth value noise built on it. Points are in metres of a surface's own frame, which makes
every texture multi-view consistent.
"""

import numpy as np
from jaxtyping import Float, Int, UInt32

# Odd 32-bit multipliers of the cell hash (one per axis, then two avalanche rounds).
_AXIS_PRIMES = (np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F))
_MIX_1 = np.uint32(0x2C1B3C6D)
_MIX_2 = np.uint32(0x297A2D39)


def _avalanche(value: UInt32[np.ndarray, " n"]) -> Float[np.ndarray, " n"]:
    """Mix the bits of 32-bit hashes (xorshift-multiply) and map them to [0, 1)."""
    with np.errstate(over="ignore"):
        value ^= value >> np.uint32(15)
        value *= _MIX_1
        value ^= value >> np.uint32(12)
        value *= _MIX_2
        value ^= value >> np.uint32(15)
    return (value >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _axis_terms(cells: Int[np.ndarray, "n k"]) -> list[UInt32[np.ndarray, " n"]]:
    """Per axis, the cell coordinate times that axis' odd multiplier (mod 2^32)."""
    with np.errstate(over="ignore"):
        return [
            cells[:, axis].astype(np.int32).view(np.uint32) * _AXIS_PRIMES[axis % 3]
            for axis in range(cells.shape[1])
        ]


def hash_cells(cells: Int[np.ndarray, "n k"], seed: int) -> Float[np.ndarray, " n"]:
    """Uniform value in [0, 1) per integer cell: ``k`` coordinates hashed with ``seed``.

    ``avalanche(seed ^ c_0 P_0 ^ c_1 P_1 ^ ...)`` in 32-bit arithmetic. Example:
    ``hash_cells(np.array([[1, 2]]), 7)`` is a fixed number in [0, 1); changing the cell or the
    seed gives an unrelated number.
    """
    value = np.full(cells.shape[0], np.uint32(seed & 0xFFFFFFFF), dtype=np.uint32)
    for term in _axis_terms(cells):
        value ^= term
    return _avalanche(value)


def _smooth(weight: Float[np.ndarray, "*s"]) -> Float[np.ndarray, "*s"]:
    """Hermite fade ``3 w^2 - 2 w^3`` (continuous slope across cells)."""
    return weight * weight * (3.0 - 2.0 * weight)


def value_noise(points: Float[np.ndarray, "n k"], seed: int) -> Float[np.ndarray, " n"]:
    """Smooth value noise in [0, 1] on the unit lattice, for k = 1, 2 or 3 dimensions.

    The value at a lattice point is ``hash_cells`` of that point; in between it is the
    multilinear blend with Hermite-faded weights. Example: at integer points it equals the hash.
    """
    base = np.floor(points)
    fade = _smooth((points - base).astype(np.float32))
    low = _axis_terms(base.astype(np.int64))
    with np.errstate(over="ignore"):
        high = [term + _AXIS_PRIMES[axis % 3] for axis, term in enumerate(low)]
    dims = points.shape[1]
    seed_bits = np.uint32(seed & 0xFFFFFFFF)
    corners = []
    for corner in range(1 << dims):
        value = np.full(points.shape[0], seed_bits, dtype=np.uint32)
        for axis in range(dims):
            value ^= high[axis] if (corner >> axis) & 1 else low[axis]
        corners.append(_avalanche(value))
    # Blend pairs along axis 0, then axis 1, ...: corner bit ``axis`` selects low / high.
    for axis in range(dims):
        weight = fade[:, axis]
        corners = [a + (b - a) * weight for a, b in zip(corners[0::2], corners[1::2])]
    return corners[0]


def fractal_noise(
    points: Float[np.ndarray, "n k"], seed: int, octaves: int = 3
) -> Float[np.ndarray, " n"]:
    """Sum of ``octaves`` value-noise layers, each at twice the frequency and half the weight.

    Normalised to [0, 1]; with one octave it is :func:`value_noise`.
    """
    total = np.zeros(points.shape[0], dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(points * (2.0**octave), seed + 7919 * octave)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


def cell_noise(
    points: Float[np.ndarray, "n k"], cell_size: float, seed: int
) -> Float[np.ndarray, " n"]:
    """Piecewise-constant noise in [0, 1): one hash per cube of side ``cell_size`` metres."""
    return hash_cells(np.floor(points / cell_size).astype(np.int64), seed)
