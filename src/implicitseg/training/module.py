"""Lightning module that trains a NUDF network (NUDF spec, "Training")."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from implicitseg.config import NudfConfig, config_from_dict, config_to_dict
from implicitseg.data.augment import apply_augmentation, draw_augmentation
from implicitseg.data.datasets import SurfaceSample
from implicitseg.models.nudf import NudfModel, build_model
from implicitseg.training.losses import clamped_l1_loss

MODEL_PREFIX = "model."
"""Prefix of the network's parameters in a checkpoint's ``state_dict``."""


class NudfLightningModule(L.LightningModule):
    """Trains :class:`NudfModel` with the clamped L1 loss and Adam; augments training batches on their device.

    ``config``: a :class:`NudfConfig` or its plain-dict form. Only the plain dict is saved as a hyper-parameter,
    so checkpoints load with ``torch.load(weights_only=True)``.
    """

    def __init__(self, config: NudfConfig | dict) -> None:
        super().__init__()
        if isinstance(config, NudfConfig):
            config_dict = config_to_dict(config)
        else:
            config_dict = config_to_dict(config_from_dict(NudfConfig, config, where="checkpoint hyper_parameters"))
        self.save_hyperparameters({"config": config_dict})
        self.config: NudfConfig = config_from_dict(NudfConfig, config_dict)
        self.model: NudfModel = build_model(self.config)
        # Created per epoch (on_train_epoch_start); a torch.Generator cannot be sent to spawned DDP processes.
        self._augment_generator: torch.Generator | None = None

    def forward(self, image: torch.Tensor, points_unit: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 1, D, H, W), ``points_unit`` (B, N, 3) → distances (B, N), unit lengths."""
        return self.model(image, points_unit)

    def on_train_epoch_start(self) -> None:
        # Augmentation draws come from a CPU generator seeded by (seed, epoch, rank): DDP ranks draw different
        # transforms, and a resumed run draws what an uninterrupted one would have.
        seed = (self.config.train.seed * 1_000_003 + self.current_epoch) * 4099 + self.global_rank
        self._augment_generator = torch.Generator().manual_seed(seed)

    def _loss(self, image: torch.Tensor, points_unit: torch.Tensor, distances_unit: torch.Tensor) -> torch.Tensor:
        return clamped_l1_loss(self.model(image, points_unit), distances_unit, self.config.train.clamp_unit)

    def training_step(self, batch: SurfaceSample, batch_idx: int) -> torch.Tensor:
        image, points_unit = batch["image"], batch["points_unit"]
        augment = self.config.train.augment
        if augment.probability > 0:
            params = draw_augmentation(augment, image.shape[0], generator=self._augment_generator)
            image, points_unit = apply_augmentation(image, points_unit, params)
        loss = self._loss(image, points_unit, batch["distances_unit"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=image.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch: SurfaceSample, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch["image"], batch["points_unit"], batch["distances_unit"])
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0],
                 sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.train.learning_rate)
