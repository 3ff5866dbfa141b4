"""Backbones returning a feature map: torchvision ResNets, and torchreid's zoo as ``torchreid:NAME``.

Pretrained weights: ``pretrained="imagenet"`` uses torchvision's weights API (downloads into the
torch hub cache when online; offline it fails with the file name and folder to place it in), or a
path to a local state dict in torchvision's format (``fc.*`` keys are ignored).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be loaded; the message says where to put the file."""


class TorchvisionResNet(nn.Module):
    def __init__(self, name: str, last_stride: int = 1):
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        if last_stride == 1:  # BoT: last stage keeps resolution (16×8 map at 256×128)
            block = net.layer4[0]
            # Bottleneck (v1.5) strides in conv2, BasicBlock in conv1
            (block.conv2 if hasattr(block, "conv3") else block.conv1).stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.body = nn.Sequential(
            net.conv1,
            net.bn1,
            net.relu,
            net.maxpool,
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels = net.fc.in_features
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def load_torchvision_state(self, state: dict, source: str) -> None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        mapping = {
            "conv1": "0",
            "bn1": "1",
            "layer1": "4",
            "layer2": "5",
            "layer3": "6",
            "layer4": "7",
        }
        renamed = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head not in mapping:
                raise PretrainedWeightsError(
                    f"{source}: unexpected key {key!r}; not a torchvision {self.name} state dict"
                )
            renamed[f"{mapping[head]}.{rest}"] = value
        try:
            missing, unexpected = self.body.load_state_dict(renamed, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when strict=False
            raise PretrainedWeightsError(
                f"{source}: does not fit torchvision {self.name}: {exc}"
            ) from None
        if missing or unexpected:
            raise PretrainedWeightsError(
                f"{source}: does not fit torchvision {self.name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )


class TorchreidBackbone(nn.Module):
    """A torchreid zoo model used up to its ``featuremaps``."""

    def __init__(self, name: str):
        super().__init__()
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
    if not isinstance(backbone, TorchvisionResNet):
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
        backbone = TorchvisionResNet(name, last_stride)
    else:
        raise KeyError(
            f"unknown backbone {name!r}; valid: {', '.join(TORCHVISION)}, or torchreid:NAME"
        )
    load_pretrained(backbone, pretrained)
    return backbone
