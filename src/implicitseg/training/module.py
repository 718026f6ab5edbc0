"""Lightning modules: one shared base (config as a plain-dict hyper-parameter, augmentation seeding, Adam) and
one small subclass per kind of target: unsigned distances at points (NUDF), labels on voxels (U-Net, ROI detector) or
labels at points of patches (Implicit U-Net, and the U-Net with its encoder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import torch
from monai.losses import DiceCELoss

from implicitseg.config import (
    ImplicitUnetConfig,
    IsmmConfig,
    NisfConfig,
    NudfConfig,
    RoiDetectorConfig,
    UnetConfig,
    config_from_dict,
    config_to_dict,
)
from implicitseg.data.augment import apply_augmentation, draw_augmentation, warp_volumes
from implicitseg.data.datasets import LabelledVolume, SurfaceSample
from implicitseg.data.patches import LabelledPatch, sample_patch_points
from implicitseg.fitting.latent import fit_latent
from implicitseg.fitting.losses import clamped_l1_loss, shape_losses
from implicitseg.models.implicit_unet import ImplicitUnet, build_patch_network
from implicitseg.models.ismm import build_ismm_model
from implicitseg.models.nisf import NisfModel, NisfNetwork
from implicitseg.models.nudf import NudfModel
from implicitseg.models.unet import build_unet

MODEL_PREFIX = "model."
"""Prefix of the network's parameters in a checkpoint's ``state_dict``."""


class ConfiguredModule(L.LightningModule):
    """Base: builds ``self.model`` from a config of ``config_class``; only the config's plain-dict form is saved
    as a hyper-parameter, so checkpoints load with ``torch.load(weights_only=True)``."""

    config_class: ClassVar[type]
    build_model: ClassVar[Callable[[Any], torch.nn.Module]]
    """``build_model(config)``: the network of a config (a static method of each subclass)."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        if isinstance(config, self.config_class):
            config_dict = config_to_dict(config)
        else:
            config_dict = config_to_dict(config_from_dict(self.config_class, config, where="checkpoint hyper_parameters"))
        self.save_hyperparameters({"config": config_dict})
        self.config = config_from_dict(self.config_class, config_dict)
        self.model = self.build_model(self.config)
        # Created per epoch (on_train_epoch_start); a torch.Generator cannot be sent to spawned DDP processes.
        self._augment_generator: torch.Generator | None = None

    def on_train_epoch_start(self) -> None:
        # Augmentation draws come from a CPU generator seeded by (seed, epoch, rank): DDP ranks draw different
        # transforms, and a resumed run draws what an uninterrupted one would have.
        seed = (self.config.train.seed * 1_000_003 + self.current_epoch) * 4099 + self.global_rank
        self._augment_generator = torch.Generator().manual_seed(seed)

    def _augmented_volumes(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch's images and labelmaps (B, 1, D, H, W), each item moved by its own random rigid
        transform (the same for its image and labels) when augmentation is on."""
        augment = self.config.train.augment
        if augment.probability > 0:
            params = draw_augmentation(augment, image.shape[0], generator=self._augment_generator)
            image, label = warp_volumes(image, label, params)
        return image, label

    def _log_loss(self, name: str, loss: torch.Tensor, batch_size: int) -> None:
        self.log(name, loss, on_step=name.startswith("train"), on_epoch=True, prog_bar=True, batch_size=batch_size,
                 sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.model.parameters(), lr=self.config.train.learning_rate)


class NudfLightningModule(ConfiguredModule):
    """Trains :class:`NudfModel` with the clamped L1 loss; augments training batches on their device."""

    config_class = NudfConfig

    @staticmethod
    def build_model(config: NudfConfig) -> NudfModel:
        return NudfModel(config)

    def forward(self, image: torch.Tensor, points_unit: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 1, D, H, W), ``points_unit`` (B, N, 3) → distances (B, N), unit lengths."""
        return self.model(image, points_unit)

    def _loss(self, image: torch.Tensor, points_unit: torch.Tensor, distances_unit: torch.Tensor) -> torch.Tensor:
        return clamped_l1_loss(self.model(image, points_unit), distances_unit, self.config.train.clamp_unit,
                               keep_gradient_above_clamp=self.config.train.clamp_keeps_gradient)

    def training_step(self, batch: SurfaceSample, batch_idx: int) -> torch.Tensor:
        image, points_unit = batch["image"], batch["points_unit"]
        augment = self.config.train.augment
        if augment.probability > 0:
            params = draw_augmentation(augment, image.shape[0], generator=self._augment_generator)
            image, points_unit = apply_augmentation(image, points_unit, params)
        loss = self._loss(image, points_unit, batch["distances_unit"])
        self._log_loss("train_loss", loss, image.shape[0])
        return loss

    def validation_step(self, batch: SurfaceSample, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch["image"], batch["points_unit"], batch["distances_unit"])
        self._log_loss("val_loss", loss, batch["image"].shape[0])
        return loss


class SegmentationLightningModule(ConfiguredModule):
    """Trains a voxel-wise segmentation network (MONAI U-Net) with Dice + cross-entropy (softmax over classes);
    the image and its labelmap are moved together by the same rigid augmentation."""

    config_class = UnetConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.loss_function = DiceCELoss(to_onehot_y=True, softmax=True)

    @staticmethod
    def build_model(config: UnetConfig | RoiDetectorConfig) -> torch.nn.Module:
        return build_unet(config.model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (B, 1, D, H, W) → class logits (B, 2, D, H, W)."""
        return self.model(image)

    def training_step(self, batch: LabelledVolume, batch_idx: int) -> torch.Tensor:
        image, label = self._augmented_volumes(batch["image"], batch["label"])
        loss = self.loss_function(self.model(image), label)
        self._log_loss("train_loss", loss, image.shape[0])
        return loss

    def validation_step(self, batch: LabelledVolume, batch_idx: int) -> torch.Tensor:
        loss = self.loss_function(self.model(batch["image"]), batch["label"])
        self._log_loss("val_loss", loss, batch["image"].shape[0])
        return loss


class DetectorLightningModule(SegmentationLightningModule):
    """The ROI detector: the same segmentation training on the coarse whole-image grid."""

    config_class = RoiDetectorConfig


class PatchSegmentationModule(ConfiguredModule):
    """Patch-based segmentation with Dice + cross-entropy (softmax over classes), AdamW: the Implicit U-Net on
    points sampled per patch after augmentation (:func:`sample_patch_points`), or the U-Net with the same encoder
    on every voxel of the patch. Validation points are drawn with a fixed seed per batch."""

    config_class = ImplicitUnetConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.loss_function = DiceCELoss(to_onehot_y=True, softmax=True)

    @staticmethod
    def build_model(config: ImplicitUnetConfig) -> torch.nn.Module:
        return build_patch_network(config.model, len(config.labels.names))

    def _loss(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not isinstance(self.model, ImplicitUnet):
            return self.loss_function(self.model(image), label)
        sampling = self.config.sampling
        points, targets = sample_patch_points(label, sampling.points_per_patch, sampling.boundary_fraction,
                                              sampling.boundary_sigma_voxels, generator=generator)
        logits = self.model(image, points)  # (B, N, C)
        return self.loss_function(logits.transpose(1, 2), targets[:, None])

    def training_step(self, batch: LabelledPatch, batch_idx: int) -> torch.Tensor:
        image, label = self._augmented_volumes(batch["image"], batch["label"])
        loss = self._loss(image, label, self._augment_generator)
        self._log_loss("train_loss", loss, image.shape[0])
        return loss

    def validation_step(self, batch: LabelledPatch, batch_idx: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.config.train.seed * 7919 + batch_idx)
        loss = self._loss(batch["image"], batch["label"], generator)
        self._log_loss("val_loss", loss, batch["image"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.model.parameters(), lr=self.config.train.learning_rate,
                                 weight_decay=self.config.train.weight_decay)


def segmentation_point_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NISF's segmentation loss at points: per-class BCE on the one-hot labels + soft Dice of the softmax;
    ``class_logits`` (B, N, C), ``labels`` (B, N) int."""
    one_hot = torch.nn.functional.one_hot(labels, class_logits.shape[-1]).to(class_logits.dtype)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(class_logits, one_hot)
    probabilities = torch.softmax(class_logits, dim=-1)
    overlap = (probabilities * one_hot).sum(dim=1)
    dice = (2.0 * overlap + 1e-5) / (probabilities.sum(dim=1) + one_hot.sum(dim=1) + 1e-5)
    return bce + 1.0 - dice.mean()


def mean_foreground_dice(predicted: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean Dice over the foreground classes present in either labelling (1 when none is)."""
    scores = []
    for value in range(1, n_classes):
        a, b = predicted == value, labels == value
        total = int(a.sum() + b.sum())
        if total:
            scores.append(2.0 * float((a & b).sum()) / total)
    return float(sum(scores) / len(scores)) if scores else 1.0


class NisfLightningModule(ConfiguredModule):
    """NISF prior training: each step one subject's points with its latent row; loss of the spec ("Prior
    training"). Validation fits the validation subjects' codes to their images and records their Dice every
    ``val_record_every`` steps; ``val_loss`` = 1 − the best mean Dice, and that step count becomes the model's
    ``inference_steps``."""

    config_class = NisfConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._validation_curves: list[list[float]] = []

    @staticmethod
    def build_model(config: NisfConfig) -> NisfModel:
        model = config.model
        network = NisfNetwork(4 if config.canonical.with_time else 3, len(config.labels.names),
                              latent_dim=model.latent_dim, hidden=model.hidden, n_layers=model.n_layers,
                              omega0=model.omega0, s0=model.s0)
        return NisfModel(network, config.canonical.n_training_subjects)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        train = self.config.train
        latent = self.model.latents(batch["subject"])
        class_logits, intensity_logits = self.model.network(batch["coordinates"], latent)
        image_loss = torch.nn.functional.binary_cross_entropy_with_logits(intensity_logits, batch["intensity"])
        weights = sum(p.pow(2).sum() for p in self.model.network.parameters())
        loss = (train.image_loss_weight * image_loss + segmentation_point_loss(class_logits, batch["label"])
                + train.latent_l2 * latent.pow(2).mean() + train.weight_l2 * weights)
        self._log_loss("train_loss", loss, len(batch["subject"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        train, n_classes = self.config.train, len(self.config.labels.names)
        curve: list[float] = []
        generator = torch.Generator().manual_seed(train.seed * 7919 + batch_idx)
        for item in range(len(batch["case_id"])):
            coordinates, labels = batch["coordinates"][item], batch["label"][item]

            def record(step: int, network: NisfNetwork, latent: torch.Tensor) -> None:
                with torch.no_grad():
                    predicted = network(coordinates[None], latent)[0][0].argmax(dim=-1)
                curve.append(mean_foreground_dice(predicted, labels, n_classes))

            fit_latent(self.model.network, coordinates, batch["intensity"][item], self.config.fit,
                       steps=train.val_fit_steps, latent_l2=train.latent_l2, generator=generator,
                       every=train.val_record_every, on_step=record)
            self._validation_curves.append(curve)
            curve = []

    def on_validation_epoch_end(self) -> None:
        if not self._validation_curves:
            return
        mean_curve = torch.tensor(self._validation_curves, dtype=torch.float64).mean(dim=0)
        best = int(mean_curve.argmax())
        self.model.inference_steps.fill_(best * self.config.train.val_record_every)
        self.log("val_loss", 1.0 - float(mean_curve[best]), prog_bar=True, sync_dist=True)
        self.log("val_dice", float(mean_curve[best]), sync_dist=True)
        self.log("val_inference_steps", float(best * self.config.train.val_record_every), sync_dist=True)
        self._validation_curves = []


class IsmmLightningModule(ConfiguredModule):
    """ISMM template + deformation training (spec "Losses"): each step a batch of shapes with their code rows.
    Validation runs the same losses on held-out points of every shape (gradients are needed: normals, eikonal);
    ``val_loss`` is their weighted total and ``val_sdf_error`` the mean |SDF error| (canonical units) at held-out
    surface and free-space points."""

    config_class = IsmmConfig
    build_model = staticmethod(build_ismm_model)

    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        rows = batch["row"]
        return shape_losses(self.model, self.model.hyper_codes(rows), self.model.instance_codes(rows),
                            surface_points=batch["surface_points"], surface_normals=batch["surface_normals"],
                            free_points=batch["free_points"], free_sdf=batch["free_sdf"],
                            uniform_points=batch["uniform_points"], weights_config=self.config.loss)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self._losses(batch)
        for name, value in terms.items():
            if name != "total":
                self.log(f"train_{name}", value.detach(), on_step=False, on_epoch=True, batch_size=len(batch["row"]))
        self._log_loss("train_loss", terms["total"], len(batch["row"]))
        return terms["total"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        with torch.enable_grad():
            terms = self._losses(batch)
            rows = batch["row"]
            points = torch.cat([batch["surface_points"], batch["free_points"]], dim=1)
            target = torch.cat([torch.zeros_like(batch["surface_points"][..., 0]), batch["free_sdf"]], dim=1)
            sdf = self.model.instance_sdf(points, self.model.hyper_codes(rows), self.model.instance_codes(rows))["sdf"]
        self._log_loss("val_loss", terms["total"].detach(), len(rows))
        self.log("val_sdf_error", (sdf.detach() - target).abs().mean(), batch_size=len(rows), sync_dist=True)
