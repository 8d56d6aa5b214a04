"""JSON records of the benchmark scripts, their configs and their common command-line run."""

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from gsnerf.model.gsnerf import GSNeRFCfg

MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def write_json_record(record: dict, output_dir: str, name: str) -> Path:
    """``<output_dir>/<record's creation time>_<name>.json`` (folder created); its path.

    Example: created "2026-11-27T18:27:08", name "gsnerf_320x240_cuda_bf16" ->
    ``benchmarks/20261127T182708_gsnerf_320x240_cuda_bf16.json``.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["created"].replace(":", "").replace("-", "")
    path = folder / f"{stamp}_{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def parse_config(config_class: type, arguments: list[str]) -> object:
    """``key=value`` command-line overrides merged onto the dataclass ``config_class``.

    Typed and strict: an unknown key or a value of the wrong type is an error naming the key.
    """
    overrides = OmegaConf.from_dotlist(list(arguments))
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_class), overrides))


def load_model_cfg(name: str, num_samples: int, overrides: Sequence[str] = ()) -> GSNeRFCfg:
    """``configs/model/<name>.yaml`` with ``key=value`` overrides, as a typed
    :class:`GSNeRFCfg` with N guided samples only.

    Example: ``load_model_cfg("gsnerf", 4, ["geo_reasoner.cost_volume.channels_last=true"])``.
    """
    path = MODEL_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in MODEL_CONFIGS.glob("*.yaml"))
        raise ValueError(f"benchmark model={name!r}: no {path}; choose one of {choices}")
    overriding = OmegaConf.from_dotlist(list(overrides))
    merged = OmegaConf.merge(OmegaConf.structured(GSNeRFCfg), OmegaConf.load(path), overriding)
    cfg = OmegaConf.to_object(merged)
    sampler = dataclasses.replace(cfg.sampler, num_samples=num_samples, num_uniform=0)
    return dataclasses.replace(cfg, sampler=sampler)


def run_from_command_line(
    arguments: list[str],
    parse: Callable[[list[str]], object],
    run: Callable[[object], dict],
    write: Callable[[dict, object], Path],
    report: Callable[[dict], str],
) -> dict:
    """Parse the ``key=value`` arguments, run, write the record, print the report, then the
    record's path as the last line; returns the record. Progress is logged to stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    cfg = parse(arguments)
    record = run(cfg)
    path = write(record, cfg)
    print(report(record))
    print(path)
    return record


def ratios(results: list[dict]) -> dict:
    """Cached over uncached speed-up per N, and largest-N over smallest-N frame time."""
    speedups = {str(r["samples"]): r["uncached"]["ms"] / r["cached"]["ms"] for r in results}
    smallest = min(results, key=lambda r: r["samples"])
    largest = max(results, key=lambda r: r["samples"])
    return {
        "cached_speedup": speedups,
        "largest_over_smallest_n": {
            mode: largest[mode]["ms"] / smallest[mode]["ms"] for mode in ("uncached", "cached")
        },
    }
