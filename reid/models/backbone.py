"""Backbones returning a feature map: torchvision families, and torchreid's zoo as ``torchreid:NAME``.

torchvision families: ResNets (18…152, ResNeXt-50, Wide ResNet-50) use their ``conv1…layer4``
trunk; MobileNetV2/V3 and EfficientNets use their ``features`` trunk (MobileNetV2: 1,280-d at
stride 32). ``last_stride=1`` removes the last stride-2 step (BoT): in a ResNet's ``layer4``, in a
``features`` trunk the last stride-2 convolution (a depthwise one, in a block without residual).

Pretrained weights: ``pretrained="imagenet"`` uses torchvision's weights API (downloads into the
torch hub cache when online; offline it fails with the file name and folder to place it in), or a
path to a local state dict with torchvision's key names; the classifier (``fc.*``,
``classifier.*``) is ignored, every trunk tensor must be present and fit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import ReidError
from ..optional import require_torchreid

log = logging.getLogger(__name__)

RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "wide_resnet50_2",
)
FEATURE_TRUNKS = (
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "efficientnet_b1",
)
TORCHVISION = RESNETS + FEATURE_TRUNKS
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


class PretrainedWeightsError(ReidError):
    """Pretrained weights could not be loaded; the message says where to put the file."""


def _trunk(net: nn.Module, name: str) -> nn.Module:
    if name in RESNETS:
        return nn.Sequential(
            net.conv1,
            net.bn1,
            net.relu,
            net.maxpool,
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
    return net.features


def _remove_last_stride(trunk: nn.Module, name: str) -> None:
    if name in RESNETS:
        block = trunk[7][0]  # layer4's first block
        # Bottleneck (v1.5) strides in conv2, BasicBlock in conv1
        (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)
        block.downsample[0].stride = (1, 1)
        return
    strided = [m for m in trunk.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    strided[-1].stride = (1, 1)


class TorchvisionBackbone(nn.Module):
    """The convolutional trunk of a torchvision classification model (``body``)."""

    def __init__(self, name: str, last_stride: int = 1):
        super().__init__()
        if last_stride not in (1, 2):
            raise ReidError(f"model.last_stride={last_stride}: valid: 1 or 2")
        self.name = name
        self.body = _trunk(getattr(torchvision.models, name)(weights=None), name)
        if last_stride == 1:
            _remove_last_stride(self.body, name)
        with torch.no_grad():
            self.out_channels = self.body.eval()(torch.zeros(1, 3, 64, 32)).shape[1]
        self.body.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def load_torchvision_state(self, state: dict, source: str) -> None:
        """Load a torchvision state dict of the whole classification model (classifier ignored)."""
        state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
        net = getattr(torchvision.models, self.name)(weights=None)
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when strict=False
            raise PretrainedWeightsError(
                f"{source}: does not fit torchvision {self.name}: {str(exc).splitlines()[0]} …"
            ) from None
        missing = [k for k in missing if not k.startswith(CLASSIFIER_PREFIXES)]
        if missing or unexpected:
            raise PretrainedWeightsError(
                f"{source}: does not fit torchvision {self.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.body.load_state_dict(_trunk(net, self.name).state_dict())


class TorchreidBackbone(nn.Module):
    """A torchreid zoo model used up to its ``featuremaps``."""

    def __init__(self, name: str):
        super().__init__()
        require_torchreid(f"model.backbone=torchreid:{name}")
        from torchreid.reid import models

        factory = getattr(
            models, "__model_factory"
        )  # a module global, name-mangled if written plainly
        if name not in factory:
            raise KeyError(f"unknown torchreid model {name!r}; valid: {', '.join(sorted(factory))}")
        self.net = models.build_model(name, num_classes=1, loss="softmax", pretrained=False)
        if not hasattr(self.net, "featuremaps"):
            raise KeyError(
                f"torchreid model {name!r} has no featuremaps(); pick a ResNet/OSNet family model"
            )
        with torch.no_grad():
            was_training = self.net.training
            self.net.eval()
            self.out_channels = self.net.featuremaps(torch.zeros(1, 3, 64, 32)).shape[1]
            self.net.train(was_training)
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.featuremaps(x)


def load_pretrained(backbone: nn.Module, pretrained: str | None) -> None:
    if not pretrained:
        return
    if not isinstance(backbone, TorchvisionBackbone):
        raise PretrainedWeightsError(
            "pretrained weights are supported for torchvision backbones only"
        )
    if pretrained == "imagenet":
        weights = torchvision.models.get_model_weights(backbone.name).DEFAULT
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as exc:  # network errors come as many types (URLError, OSError, ...)
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise PretrainedWeightsError(
                f"cannot download ImageNet weights for {backbone.name} ({exc.__class__.__name__}: {exc}). "
                f"Offline? Place {Path(weights.url).name} in {hub} (torch hub cache), "
                f"or set model.pretrained to the path of a local torchvision state dict."
            ) from None
        backbone.load_torchvision_state(state, weights.url)
        return
    path = Path(pretrained)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: pretrained weights file not found (use 'imagenet' or a state-dict path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: cannot read state dict ({exc})") from None
    backbone.load_torchvision_state(state.get("state_dict", state), str(path))
    log.info("loaded pretrained weights from %s", path)


def build_backbone(name: str, last_stride: int = 1, pretrained: str | None = None) -> nn.Module:
    if name.startswith("torchreid:"):
        backbone = TorchreidBackbone(name.split(":", 1)[1])
    elif name in TORCHVISION:
        backbone = TorchvisionBackbone(name, last_stride)
    else:
        raise KeyError(
            f"unknown backbone {name!r}; valid: {', '.join(TORCHVISION)}, or torchreid:NAME"
        )
    load_pretrained(backbone, pretrained)
    return backbone
