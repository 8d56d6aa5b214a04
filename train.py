"""Train gsnerf: ``python train.py [overrides]`` (Hydra). The default run is the CPU quickstart:
train the tiny model on the synthetic training rooms, then evaluate it on the held-out rooms."""

import hydra
from omegaconf import DictConfig

from gsnerf.config import load_config, register_schema
from gsnerf.engine.interruption import exit_quietly_when_interrupted
from gsnerf.engine.runs import run_training

register_schema()


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    with exit_quietly_when_interrupted():
        run_training(load_config(dict_cfg))


if __name__ == "__main__":
    main()
