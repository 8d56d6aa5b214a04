"""Helpers of the C++ kernels' tests: running a kernel on several torch thread counts (its
numbers must not depend on how its work is split), recording which inputs reach it, a machine
without a compiler, and renders with a kernel off and on."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
import torch
from small_models import small_gsnerf_cfg

from gsnerf.evaluation.benchmark_scene import plane_example
from gsnerf.model import native_library
from gsnerf.model.compiled_heads import compile_heads
from gsnerf.model.gsnerf import GSNeRF

# The image renders_off_and_on renders, and its chunks.
RENDER_HEIGHT, RENDER_WIDTH, RENDER_CHUNK_RAYS = 16, 24, 96

Result = TypeVar("Result")


def on_thread_counts(run: Callable[[], Result], counts: tuple[int, ...] = (1, 3)) -> list[Result]:
    """``run()``'s result with each of ``counts`` torch threads; the thread count is restored."""
    saved = torch.get_num_threads()
    results = []
    try:
        for threads in counts:
            torch.set_num_threads(threads)
            results.append(run())
    finally:
        torch.set_num_threads(saved)
    return results


def record_call_shapes(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list:
    """Replace ``module.name`` by a wrapper that calls it and appends the shape of its first
    argument to the returned list (for the test's duration)."""
    calls = []
    function = getattr(module, name)

    def recorded(*args):
        calls.append(args[0].shape)
        return function(*args)

    monkeypatch.setattr(module, name, recorded)
    return calls


@contextlib.contextmanager
def without_compiler(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[None]:
    """Inside: ``CXX`` names no compiler and the library cache ``cache_dir`` is empty; the
    loaders' remembered results are forgotten on the way in and out."""
    monkeypatch.setenv("GSNERF_NATIVE_CACHE", str(cache_dir))
    monkeypatch.setenv("CXX", "no-such-compiler")
    caches = (native_library._load, native_library.native_function)
    caches += (native_library.native_function_builds,)
    for cache in caches:
        cache.cache_clear()
    try:
        yield
    finally:
        for cache in caches:
            cache.cache_clear()


def assert_renders_close(render: object, reference: object, tolerance: float = 1e-4) -> None:
    """Colour, depth, semantic logits and opacity of two image renders within ``tolerance``."""
    for name in ("rgb", "depth", "semantic_logits", "opacity"):
        error = (getattr(render, name) - getattr(reference, name)).abs().max()
        assert error < tolerance, (name, error)


def renders_off_and_on(
    module: ModuleType, compiled: bool, device: str = "cpu"
) -> tuple[object, object]:
    """A small model's render of the 3-view plane scene with ``module.enabled`` False, then True
    (and the gathering compiled if ``compiled``), in chunks of :data:`RENDER_CHUNK_RAYS`; the
    switch stays on."""
    torch.manual_seed(0)
    model = GSNeRF(small_gsnerf_cfg(), num_classes=5).eval().to(device)
    example = plane_example(3, RENDER_HEIGHT, RENDER_WIDTH, 5, seed=0).to(device)
    with torch.no_grad():
        geometry = model.encode_sources(example)
        module.enabled = False
        plain = model.render_image(example, geometry, RENDER_CHUNK_RAYS)
        module.enabled = True
        if compiled:
            compile_heads(model, "default", ["gather"])
        return plain, model.render_image(example, geometry, RENDER_CHUNK_RAYS)
