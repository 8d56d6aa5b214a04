"""Train gsnerf: ``python train.py [overrides]`` (Hydra). The default run is the CPU quickstart."""

import logging

import hydra
from omegaconf import DictConfig

from gsnerf.config import load_config
from gsnerf.data.dataset import MultiViewDataset, open_split

log = logging.getLogger("gsnerf.train")


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    cfg = load_config(dict_cfg)
    scenes = {split: open_split(cfg.dataset, split) for split in ("train", "test")}
    for split, readers in scenes.items():
        dataset = MultiViewDataset(readers, cfg.dataset, split, seed=cfg.seed)
        frames = sum(len(reader.frame_ids) for reader in readers)
        log.info("%s: %d scenes, %d frames, %d items", split, len(readers), frames, len(dataset))
    log.info("training pipeline not implemented yet")


if __name__ == "__main__":
    main()
