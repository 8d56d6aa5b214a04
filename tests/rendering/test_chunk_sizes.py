"""How many rays a CPU chunk holds for a sample budget."""

from gsnerf.rendering.chunked import rays_for_samples


def test_rays_for_a_sample_budget() -> None:
    assert rays_for_samples(4096, 4) == 1024
    assert rays_for_samples(4096, 3) == 1365  # whole rays only
    # A budget below one ray's samples still renders one ray per chunk, never an empty chunk.
    assert rays_for_samples(100, 128) == 1
    # No budget: no chunking.
    assert rays_for_samples(0, 4) == 0
