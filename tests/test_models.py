"""Backbones, BNNeck, pretrained-weight loading (local file, offline ImageNet), feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from reid.models import FeatureExtractor, PretrainedWeightsError, ReIDModel


def test_bnneck_last_stride_and_shapes():
    model = ReIDModel("resnet18", last_stride=1, pooling="gem", embedding_dim=64).eval()
    assert model.backbone(torch.zeros(1, 3, 128, 64)).shape[-2:] == (8, 4)
    assert ReIDModel("resnet18", last_stride=2).backbone(torch.zeros(1, 3, 128, 64)).shape[-2:] == (
        4,
        2,
    )
    global_feature, bn_feature = model.forward_both(torch.randn(2, 3, 128, 64))
    assert global_feature.shape == bn_feature.shape == (2, 64)
    assert not model.neck.bias.requires_grad and float(model.neck.bias.abs().sum()) == 0.0


def test_local_pretrained_state_dict(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = ReIDModel("resnet18", pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.backbone.body[0].weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.backbone.body[7][1].bn2.running_var, reference.layer4[1].bn2.running_var
    )
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="bad.pth: does not fit torchvision resnet18"):
        ReIDModel("resnet18", pretrained=str(tmp_path / "bad.pth"))
    with pytest.raises(
        PretrainedWeightsError, match="missing.pth: pretrained weights file not found"
    ):
        ReIDModel("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_imagenet_offline_message(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        PretrainedWeightsError, match=r"resnet18-f37072fd.pth in .*checkpoints \(torch hub cache\)"
    ):
        ReIDModel("resnet18", pretrained="imagenet")


def test_torchreid_backbone_and_unknown_names():
    model = ReIDModel("torchreid:osnet_x0_25").eval()
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, model.feature_dim)
    with pytest.raises(KeyError, match="unknown backbone 'vgg16'"):
        ReIDModel("vgg16")
    with pytest.raises(KeyError, match="unknown torchreid model 'nope'"):
        ReIDModel("torchreid:nope")


def test_feature_extractor_paths_images_and_flip(tmp_path, make_jpeg):
    from PIL import Image

    paths = [tmp_path / f"{i}.jpg" for i in range(5)]
    for i, path in enumerate(paths):
        make_jpeg(path, seed=i, size=(32, 16))
    model = ReIDModel("resnet18", last_stride=1)
    extractor = FeatureExtractor(model, image_size=(64, 32), device="cpu", batch_size=2)
    from_paths = extractor([str(p) for p in paths])
    from_images = extractor([Image.open(p) for p in paths])
    assert from_paths.shape == (5, 512)
    np.testing.assert_allclose(np.linalg.norm(from_paths, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(from_paths, from_images, atol=1e-6)
    flipped = FeatureExtractor(model, image_size=(64, 32), device="cpu", flip=True)([str(paths[0])])
    image = extractor.transform(Image.open(paths[0]).convert("RGB"))[None]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(image) + model(image.flip(3)), dim=1).numpy()
    np.testing.assert_allclose(flipped, expected, atol=1e-5)
