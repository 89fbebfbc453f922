"""Feature networks: the backbone adaptation, the small CNN, the pluggable loaders, the encoder dataset."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from synthmed.datasets.classifier import ClassifierDataset
from synthmed.metrics.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClassifierConfig,
    FeatureNetworkConfig,
    FitConfig,
    TrainedClassifier,
    at_size,
    exported_network,
    feature_network,
    fit_classifier,
    predict_proba,
    to_backbone_input,
    torchvision_backbone,
)


def _separable(n: int = 24, px: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: bright left half; class 1: bright right half (plus noise)."""
    g = torch.Generator().manual_seed(0)
    images = torch.full((n, 1, px, px), -0.8) + 0.05 * torch.randn(n, 1, px, px, generator=g)
    labels = torch.arange(n) % 2
    images[labels == 0, :, :, : px // 2] += 1.2
    images[labels == 1, :, :, px // 2:] += 1.2
    return images.clamp(-1, 1), labels


def test_backbone_input_repeats_grey_and_normalises_like_imagenet():
    grey = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 1, 3, 3).contiguous()
    out = to_backbone_input(grey, input_px=3)
    assert out.shape == (1, 3, 3, 3)
    for c in range(3):  # the same intensities in each channel, ImageNet-normalised
        expected = (torch.tensor([0.0, 0.5, 1.0]) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert torch.allclose(out[0, c, 0], expected, atol=1e-6)
    assert to_backbone_input(torch.zeros(2, 3, 16, 16), input_px=299).shape == (2, 3, 299, 299)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), C in \(1, 3\), got \(2, 2, 8, 8\)"):
        to_backbone_input(torch.zeros(2, 2, 8, 8), input_px=32)



def test_at_size_copies_a_read_only_array_instead_of_sharing_it():
    """A read-only array (a memory-mapped store) becomes a writable tensor, with no PyTorch warning
    about non-writable arrays; a writable one is shared, not copied."""
    import warnings

    import numpy as np

    frozen = np.linspace(-1, 1, 2 * 1 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = at_size(frozen, 8)
    tensor.add_(1.0)  # writable, and the array is untouched
    assert float(frozen[0, 0, 0, 0]) == -1.0 and float(tensor[0, 0, 0, 0]) == 0.0
    shared = np.zeros((1, 1, 8, 8), dtype=np.float32)
    at_size(shared, 8).add_(1.0)
    assert shared.max() == 1.0

def test_at_size_area_averages_down_and_keeps_the_range():
    images = torch.rand(3, 1, 64, 64) * 2 - 1
    small = at_size(images, 32)
    assert small.shape == (3, 1, 32, 32)
    assert torch.allclose(small[0, 0, 0, 0], images[0, 0, :2, :2].mean())
    assert at_size(images, 64) is images


def test_classifier_learns_a_separable_task_deterministically():
    images, labels = _separable()
    config = ClassifierConfig(channels=1, num_classes=2, image_px=16, width=8, feature_dim=8)
    fit = FitConfig(steps=60, batch_size=8, learning_rate=0.01)
    a = fit_classifier(images, labels, config, fit, seed=3)
    b = fit_classifier(images, labels, config, fit, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    probs = predict_proba(a, images)
    assert probs.shape == (24, 2) and torch.allclose(probs.sum(1), torch.ones(24))
    assert (probs.argmax(1) == labels).float().mean() >= 0.9
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        fit_classifier(images, labels + 1, config, fit, seed=0)


def test_classifier_dataset_round_trip_and_refuses_a_corrupt_copy(tmp_path):
    config = ClassifierConfig(channels=1, num_classes=2, image_px=16, width=4, feature_dim=4)
    model = fit_classifier(*_separable(), config, FitConfig(steps=2, batch_size=4), seed=0)
    dataset = ClassifierDataset(path=str(tmp_path / "enc"))
    dataset.save(TrainedClassifier(model, ("left", "right"), {"held_out_accuracy": 0.5}))
    loaded = dataset.load()
    assert loaded.class_names == ("left", "right") and loaded.facts == {"held_out_accuracy": 0.5}
    x = torch.zeros(1, 1, 16, 16)
    assert torch.equal(loaded.model(x), model(x))
    assert json.loads((tmp_path / "enc/classifier.json").read_text())["format"] == "synthmed-classifier/1"
    weights = tmp_path / "enc/weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(Exception, match="does not match its checksum"):
        dataset.load()


def test_domain_network_gives_the_encoder_features():
    config = ClassifierConfig(channels=1, num_classes=2, image_px=16, width=4, feature_dim=6)
    model = fit_classifier(*_separable(), config, FitConfig(steps=2, batch_size=4), seed=0)
    network = feature_network(FeatureNetworkConfig(), model)
    images = torch.rand(5, 1, 32, 32) * 2 - 1  # brought to the encoder's 16 px first
    assert network(images).shape == (5, 6)
    assert torch.allclose(network(images), model.features(at_size(images, 16)), atol=1e-6)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "inception.pth"
    with pytest.raises(FileNotFoundError, match="no file at .*inception.pth.*never downloads"):
        torchvision_backbone("inception_v3", str(missing))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        exported_network(str(missing))
    with pytest.raises(ValueError, match="needs `weights`"):
        FeatureNetworkConfig(kind="torchvision")
    with pytest.raises(ValueError, match=r"kind must be one of \['domain', 'torchvision', 'exported'\]"):
        FeatureNetworkConfig(kind="clip")


def test_an_exported_network_is_a_pluggable_feature_network(tmp_path):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    torch.manual_seed(0)
    tiny = Tiny().eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(tiny, (torch.zeros(2, 3, 32, 32),)), str(path))
    encoder = fit_classifier(*_separable(), ClassifierConfig(1, 2, 16, width=4, feature_dim=4),
                             FitConfig(steps=1, batch_size=4), seed=0)
    network = feature_network(FeatureNetworkConfig(kind="exported", weights=str(path), input_px=32, batch_size=2),
                              encoder)
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    expected = tiny(to_backbone_input(images, input_px=32))
    assert torch.allclose(network(images), expected, atol=1e-5)
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(ValueError, match="not a torch.export program"):
        exported_network(str(tmp_path / "junk.pt2"))
