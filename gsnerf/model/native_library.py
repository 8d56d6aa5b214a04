"""Build a C++ source of this package into a shared library once, load it with ctypes.

For CPU kernels that the compiler should specialise to fixed sizes (``defines``) and to this
machine's vector instructions (``-march=native``), as ``torch.compile`` does for its own CPU
code; no torch headers, so a build takes under a second. Libraries are kept in
``$GSNERF_NATIVE_CACHE``, else ``$XDG_CACHE_HOME/gsnerf/native`` (``~/.cache/gsnerf/native``),
under a name hashed from the source and the headers beside it (``csrc/*.h``), the defines, the
compiler and its flags, and this CPU's feature flags (a library built for another CPU could use
instructions this one lacks). A build writes a temporary file and renames it, so processes
building the same library at once (test workers) never load a half-written one.

The kernels split their work among OpenMP threads (``csrc/parallel.h``, built with
``-fopenmp``). Their ``libgomp.so.1`` resolves to the one torch has loaded where torch's wheel
ships it under that name, as the one here does, so they run on torch's own threads; under
another name the system's runtime runs beside it with threads of its own. With a Python thread
pool instead, which competed with torch's workers spinning after each of its parallel regions,
2-thread frames of the tiny model took 105-114 ms cached and 231-235 ms uncached, against
71-76 and 167-181 ms now. A compiler without OpenMP builds them serial, with a warning.

The compiler is ``$CXX``, else the first of ``c++``, ``g++`` and ``clang++`` found. Without one,
or when the build fails, :func:`load_native_library` raises :class:`NativeBuildError` naming
the source, the command and the compiler's message; callers fall back to PyTorch code.
"""

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent / "csrc"

# Argument types of the kernels' C signatures: a tensor's data pointer, a size or index.
POINTER, INT64 = ctypes.c_void_p, ctypes.c_int64

# -march=native: this CPU's vector width (AVX-512 here). No -ffast-math: the kernels handle
# masked values with explicit selects, and reassociation would change results between builds.
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-Wno-psabi",
)

# A build takes under a second; a compiler that hangs must not hang the render.
BUILD_TIMEOUT_S = 300


class NativeBuildError(RuntimeError):
    """No C++ compiler, or the source did not build."""


def cache_dir() -> Path:
    if "GSNERF_NATIVE_CACHE" in os.environ:
        return Path(os.environ["GSNERF_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gsnerf" / "native"


def find_compiler() -> str:
    """``$CXX`` or the first C++ compiler on the PATH; :class:`NativeBuildError` if none."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise NativeBuildError(f"no C++ compiler found (tried {', '.join(candidates)}; set CXX)")


def compiler_present() -> bool:
    try:
        find_compiler()
    except NativeBuildError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _compiler_identity(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _cpu_features() -> str:
    """The CPU's feature flags (Linux), else the machine name: part of a library's key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def library_path(source: Path, defines: dict[str, int], compiler: str) -> Path:
    """Where the library of ``source`` built with ``defines`` by ``compiler`` is kept."""
    key = hashlib.sha256()
    # The headers next to the source too: a changed header must build the library again.
    headers = [header.read_text() for header in sorted(source.parent.glob("*.h"))]
    for part in (
        source.read_text(),
        *headers,
        repr(sorted(defines.items())),
        compiler,
        _compiler_identity(compiler),
        repr(FLAGS + OPENMP_FLAGS),
        _cpu_features(),
    ):
        key.update(part.encode())
        key.update(b"\0")
    return cache_dir() / f"{source.stem}_{key.hexdigest()[:20]}.so"


# OpenMP splits a kernel's range among torch's threads (csrc/parallel.h: the libraries link the
# libgomp torch has loaded); a compiler without OpenMP (clang without libomp) builds the
# kernels serial, with a warning.
OPENMP_FLAGS = ("-fopenmp",)


def _compile(command: list[str], source: Path, partial: str) -> str | None:
    """Run one build command; None on success, else the compiler's message."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        Path(partial).unlink(missing_ok=True)
        raise NativeBuildError(
            f"building {source} took over {BUILD_TIMEOUT_S} s ({' '.join(command)})"
        ) from error
    if result.returncode == 0:
        return None
    Path(partial).unlink(missing_ok=True)
    # The first errors explain the later ones: keep the message's head.
    return f"building {source} failed ({' '.join(command)}):\n{result.stderr[:3000]}"


@functools.lru_cache(maxsize=None)
def _load(source: Path, defines: tuple[tuple[str, int], ...]) -> ctypes.CDLL:
    compiler = find_compiler()
    target = library_path(source, dict(defines), compiler)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(handle)
        command = [compiler, *FLAGS, *(f"-D{name}={value}" for name, value in defines)]
        command += [str(source), "-o", partial]
        failure = _compile([*command, *OPENMP_FLAGS], source, partial)
        if failure is not None:
            if _compile(command, source, partial) is not None:
                raise NativeBuildError(failure)
            log.warning(
                "built %s without OpenMP, its kernels run on one thread: %s", source, failure
            )
        os.replace(partial, target)
    return ctypes.CDLL(str(target))


def load_native_library(source_name: str, defines: dict[str, int]) -> ctypes.CDLL:
    """The library of ``csrc/<source_name>`` built with ``-D<name>=<value>`` for ``defines``.

    Built on the first call for these defines (module doc), loaded from the cache after that;
    the same object for the same arguments within a process.
    """
    source = SOURCE_DIR / source_name
    if not source.is_file():
        raise NativeBuildError(f"native source {source} does not exist")
    return _load(source, tuple(sorted(defines.items())))


Defines = tuple[tuple[str, int], ...]


@functools.lru_cache(maxsize=None)
def native_function(
    source_name: str, function_name: str, argtypes: tuple, defines: Defines
) -> ctypes._CFuncPtr:
    """``function_name`` of the library built from ``csrc/<source_name>`` with ``defines``
    (``(("NAME", value), ...)``), taking ``argtypes`` and returning nothing."""
    function = getattr(load_native_library(source_name, dict(defines)), function_name)
    function.argtypes = list(argtypes)
    function.restype = None
    return function


@functools.lru_cache(maxsize=None)
def native_function_builds(
    source_name: str, function_name: str, argtypes: tuple, defines: Defines
) -> bool:
    """Whether :func:`native_function` loads; a failed build is tried and warned about once."""
    try:
        native_function(source_name, function_name, argtypes, defines)
    except (NativeBuildError, OSError) as error:
        log.warning("C++ kernel %s unavailable, using the PyTorch code: %s", function_name, error)
        return False
    return True


def native_functions_build(
    source_name: str, signatures: dict[str, tuple], defines: Defines
) -> bool:
    """Whether every function of ``signatures`` (``{name: argtypes}``, a kernel and its
    backward pass, say) loads from one library (:func:`native_function_builds`)."""
    return all(
        native_function_builds(source_name, name, argtypes, defines)
        for name, argtypes in signatures.items()
    )
