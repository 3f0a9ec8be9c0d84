"""Networks: the small CNN, torchvision backbones without their classifier, the MC-dropout head."""

from __future__ import annotations

import pytest
import torch
import torchvision

from plugins.models.networks import (
    ClassifierNet,
    SmallCNN,
    TorchvisionBackbone,
    build_network,
    load_pretrained,
    resolve_weights_path,
)
from plugins.strategies import InvalidParamsError

torch.set_num_threads(1)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 28), (1, 8), (3, 13)])
def test_small_cnn_embeds_tiny_images(channels: int, size: int) -> None:
    net = SmallCNN(in_channels=channels)
    h = net(torch.rand(5, channels, size, size))
    assert h.shape == (5, 128)
    assert sum(p.numel() for p in net.parameters()) < 1_000_000


def test_small_cnn_exposes_block_feature_maps() -> None:
    net = build_network("small_cnn", n_classes=3, channels=1, dropout=0.5).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        h, maps = net.features(x)
        torch.testing.assert_close(h, net.embed(x))
    assert [m.shape[1] for m in maps] == [32, 64, 128]
    assert [m.shape[-1] for m in maps] == [8, 4, 2]
    assert h.shape == (4, 128)


@pytest.mark.parametrize(("arch", "embed_dim", "n_maps"),
                         [("resnet18", 512, 4), ("mobilenet_v3_small", 1024, 1)])
def test_torchvision_backbone_outputs_penultimate_embedding(arch: str, embed_dim: int, n_maps: int) -> None:
    net = build_network(arch, n_classes=4, channels=1, dropout=0.2).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        h, maps = net.features(x)
        logits = net(x)
    assert net.embed_dim == embed_dim and h.shape == (2, embed_dim)
    assert len(maps) == n_maps
    assert logits.shape == (2, 4)


def test_resnet_embedding_equals_the_full_model_before_its_fc() -> None:
    torch.manual_seed(0)
    full = torchvision.models.get_model("resnet18", weights=None).eval()
    backbone = TorchvisionBackbone("resnet18", in_channels=3).eval()
    backbone.body.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        h = backbone(x)
        torch.testing.assert_close(full.fc(h), full(x))


def test_unknown_and_unsupported_architectures_are_named() -> None:
    with pytest.raises(InvalidParamsError, match="unknown architecture 'resnet7'.*resnet18"):
        build_network("resnet7", n_classes=2, channels=3, dropout=0.0)
    with pytest.raises(InvalidParamsError, match="squeezenet1_0.*supported: small_cnn, resnet"):
        build_network("squeezenet1_0", n_classes=2, channels=3, dropout=0.0)
    with pytest.raises(InvalidParamsError, match="auxiliary"):
        build_network("googlenet", n_classes=2, channels=3, dropout=0.0)


def _net(dropout: float) -> ClassifierNet:
    torch.manual_seed(0)
    return ClassifierNet(torch.nn.Identity(), embed_dim=6, n_classes=3, dropout=dropout).eval()


def test_mc_head_samples_have_shape_n_k_c_and_differ_across_k() -> None:
    net = _net(0.5)
    h = torch.rand(4, 6) * 3
    samples = net.mc_head_probs(h, k=7, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (4, 7, 3)
    torch.testing.assert_close(samples.sum(-1), torch.ones(4, 7))
    assert (samples.std(dim=1) > 1e-4).all()


def test_mc_head_samples_match_a_per_mask_reference() -> None:
    net, p, k = _net(0.3), 0.3, 5
    h = torch.rand(4, 6)
    samples = net.mc_head_probs(h, k, torch.Generator().manual_seed(3))
    keep = torch.rand((k, 4, 6), generator=torch.Generator().manual_seed(3)) >= p
    for j in range(k):
        want = torch.softmax(net.head(h * keep[j] / (1 - p)), dim=1)
        torch.testing.assert_close(samples[:, j], want)


def test_without_dropout_all_samples_equal_the_eval_probabilities() -> None:
    net = _net(0.0)
    h = torch.rand(4, 6)
    samples = net.mc_head_probs(h, k=3)
    for j in range(3):
        torch.testing.assert_close(samples[:, j], torch.softmax(net.head_logits(h), dim=1))


def test_mc_mean_approaches_the_eval_probabilities() -> None:
    net = _net(0.1)
    h = torch.rand(5, 6)
    with torch.no_grad():
        mean = net.mc_head_probs(h, k=4000, generator=torch.Generator().manual_seed(0)).mean(dim=1)
        probs = torch.softmax(net.head_logits(h), dim=1)
    assert float((mean - probs).abs().max()) < 0.02


def test_pretrained_state_dict_loads_and_classifier_keys_are_ignored(tmp_path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.get_model("resnet18", weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)  # a full checkpoint, fc included
    backbone = TorchvisionBackbone("resnet18", in_channels=3)
    assert not torch.equal(backbone.body.conv1.weight, source.conv1.weight)
    load_pretrained(backbone, path)
    torch.testing.assert_close(backbone.body.conv1.weight, source.conv1.weight)
    torch.testing.assert_close(backbone.body.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_wrong_pretrained_files_give_clear_errors(tmp_path) -> None:
    backbone = TorchvisionBackbone("resnet18", in_channels=3)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(InvalidParamsError, match="cannot read .*notes.txt as a state dict"):
        load_pretrained(backbone, text)
    other = tmp_path / "small.pth"
    torch.save(SmallCNN(in_channels=3).state_dict(), other)
    with pytest.raises(InvalidParamsError, match="does not match .* missing keys"):
        load_pretrained(backbone, other)
    with pytest.raises(InvalidParamsError, match="is not a file"):
        resolve_weights_path("resnet18", str(tmp_path / "absent.pth"))


def test_torchvision_cache_is_looked_up_locally_never_downloaded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(InvalidParamsError, match="no cached torchvision weights for resnet18.*downloaded"):
        resolve_weights_path("resnet18", "torchvision")
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    cached = tmp_path / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir()
    cached.write_bytes(b"")
    assert resolve_weights_path("resnet18", "torchvision") == cached


def test_dropout_outside_its_range_is_rejected() -> None:
    with pytest.raises(InvalidParamsError, match="dropout"):
        ClassifierNet(torch.nn.Identity(), embed_dim=3, n_classes=2, dropout=1.0)
