"""The typed configuration tree and its one conversion from Hydra's DictConfig.

Each ``*Cfg`` dataclass lives beside the code it configures; :class:`RootCfg` only assembles
them. :func:`load_config` is called once, at the entry point: an unknown key or a value of the
wrong type raises an error that names the key.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from gsnerf.data.dataset import DatasetCfg
from gsnerf.engine.train_config import TrainCfg
from gsnerf.evaluation.evaluator import EvalCfg
from gsnerf.losses import LossCfg
from gsnerf.model.gsnerf import GSNeRFCfg


@dataclass
class PathsCfg:
    # Folder holding the datasets (synthetic, scannet, replica), relative to the launch folder.
    data_root: str = "data"
    # Folder of this run's outputs (checkpoints, logs, metrics); Hydra's run directory.
    output_dir: str = "outputs"


@dataclass
class LoggerCfg:
    # Write TensorBoard event files (scalars, image strips) under <run dir>/tensorboard.
    tensorboard: bool = True


@dataclass
class RootCfg:
    # Seed of every random choice of the run (weights, items, rays); spec 4 uses 123.
    seed: int = 123
    # Where data lives and where outputs go.
    paths: PathsCfg = field(default_factory=PathsCfg)
    # Which scenes, at which size, with which views (spec 1).
    dataset: DatasetCfg = field(default_factory=DatasetCfg)
    # The network: geo-reasoner, guide depth, sampler, renderer (spec 2).
    model: GSNeRFCfg = field(default_factory=GSNeRFCfg)
    # Loss terms and weights (spec 3).
    loss: LossCfg = field(default_factory=LossCfg)
    # Optimisation, precision, validation and checkpoint cadence (spec 4).
    train: TrainCfg = field(default_factory=TrainCfg)
    # Test-time rendering and what the evaluation writes (spec 5).
    eval: EvalCfg = field(default_factory=EvalCfg)
    # Where logs go.
    logger: LoggerCfg = field(default_factory=LoggerCfg)
    # Resume: "" (fresh run), "true" (newest last.pt of this run or its sibling runs), a run
    # directory or a checkpoint file.
    resume: str = ""
    # Checkpoint to evaluate (eval.py) or to start fine-tuning from (finetune.py); mandatory
    # there, null in train.yaml.
    ckpt: str | None = MISSING
    # Scene to fine-tune on (finetune.py), e.g. scene0376_02; mandatory there, null elsewhere.
    scene: str | None = MISSING


SCHEMA_NAME = "gsnerf_schema"


def register_schema() -> None:
    """Give Hydra the typed schema, so overrides of any field work and unknown keys fail early.

    The primary configs list ``gsnerf_schema`` first in their defaults; entry points call this
    before ``hydra.main`` composes.
    """
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RootCfg)


class ConfigError(ValueError):
    """A configuration key is unknown or has a value of the wrong type."""


def load_config(dict_cfg: DictConfig, schema: type = RootCfg) -> RootCfg:
    """Merge Hydra's config into the typed schema and return plain dataclasses.

    Hydra's own ``hydra`` node is dropped first; everything else must match ``schema`` (a
    subclass of :class:`RootCfg` for entry points with extra sections, e.g. render.py).
    """
    user = OmegaConf.masked_copy(dict_cfg, [k for k in dict_cfg.keys() if k != "hydra"])
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), user))
    except MissingMandatoryValue as error:
        key = error.full_key or "?"
        message = f"config key '{key}' has no value: add {key}=... to the command"
        raise ConfigError(message) from None
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None) or "?"
        raise ConfigError(
            f"config key '{key}': {error.msg if hasattr(error, 'msg') else error}"
        ) from error
