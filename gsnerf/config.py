"""The typed configuration tree and its one conversion from Hydra's DictConfig.

Each ``*Cfg`` dataclass lives beside the code it configures; :class:`RootCfg` only assembles
them. :func:`load_config` is called once, at the entry point: an unknown key or a value of the
wrong type raises an error that names the key.
"""

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gsnerf.data.dataset import DatasetCfg


@dataclass
class PathsCfg:
    # Folder holding the datasets (synthetic, scannet, replica), relative to the launch folder.
    data_root: str = "data"
    # Folder of this run's outputs (checkpoints, logs, metrics); Hydra's run directory.
    output_dir: str = "outputs"


@dataclass
class RootCfg:
    # Seed of every random choice of the run (weights, items, rays); spec 4 uses 123.
    seed: int = 123
    # Where data lives and where outputs go.
    paths: PathsCfg = field(default_factory=PathsCfg)
    # Which scenes, at which size, with which views (spec 1).
    dataset: DatasetCfg = field(default_factory=DatasetCfg)


class ConfigError(ValueError):
    """A configuration key is unknown or has a value of the wrong type."""


def load_config(dict_cfg: DictConfig) -> RootCfg:
    """Merge Hydra's config into the typed schema and return plain dataclasses.

    Hydra's own ``hydra`` node is dropped first; everything else must match the schema.
    """
    schema = OmegaConf.structured(RootCfg)
    user = OmegaConf.masked_copy(dict_cfg, [k for k in dict_cfg.keys() if k != "hydra"])
    try:
        merged = OmegaConf.merge(schema, user)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {error.msg if hasattr(error, 'msg') else error}")
