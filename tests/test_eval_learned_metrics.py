"""Loading paths of the learned metrics (I3D, LPIPS, CLIP): small random nets saved in the real formats."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stillmotion.evaluation.clip_consistency import CLIPConsistency
from stillmotion.evaluation.frechet import SmallSampleWarning, frechet_distance_features
from stillmotion.evaluation.i3d import I3DFeatures, InceptionI3d, find_i3d, preprocess_videos
from stillmotion.evaluation.lpips import LPIPS, LPIPSMetric, find_lpips_files
from stillmotion.evaluation.weights import MetricUnavailable


def _videos(n=2, t=16, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)


class _ScriptedI3D(nn.Module):
    """Stand-in with the I/O of StyleGAN-V's i3d_torchscript.pt: (B, 3, T, 224, 224) in [-1, 1] -> (B, 400)"""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ):
        if x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise ValueError("bad input shape")
        stats = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], 1)
        y = self.proj(stats)
        if not return_features:
            y = y.softmax(-1)
        return y


def test_i3d_torchscript_path(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_ScriptedI3D()).save(str(path))
    feats = I3DFeatures(path, device="cpu")
    assert feats.kind == "torchscript"
    v = _videos()
    f = feats.features(v)
    assert f.shape == (2, 400)
    # the features are the raw (pre-softmax) outputs on [-1, 1] 224x224 input
    ref = _ScriptedI3D()
    ref.load_state_dict(torch.jit.load(str(path)).state_dict())
    x = preprocess_videos(v)
    assert x.shape == (2, 3, 16, 224, 224) and x.min() >= -1 and x.max() <= 1
    assert np.allclose(f, ref(x, return_features=True).detach().numpy(), atol=1e-5)
    # found through the standard folder, and FVD of a set with itself is 0 (with the rank warning)
    assert find_i3d(tmp_path) == path
    with pytest.warns(SmallSampleWarning):
        assert frechet_distance_features(f, f) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_i3d_state_dict_path(tmp_path, fmt):
    torch.manual_seed(0)
    net = InceptionI3d(num_classes=400, width=1 / 16).eval()
    # non-trivial BatchNorm statistics so a mis-loaded buffer would show
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / ("i3d_kinetics400.safetensors" if fmt == "safetensors" else "rgb_imagenet.pt")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    # key layout of the pytorch-i3d ports
    assert {"Conv3d_1a_7x7.conv3d.weight", "Mixed_5c.b3b.bn.running_var", "logits.conv3d.bias"} <= set(sd)
    assert "Mixed_3b.b3a.conv3d.weight" not in sd  # b3a is the max-pool branch
    feats = I3DFeatures(path, device="cpu")
    assert feats.kind == "state-dict"
    v = _videos(seed=1)
    f = feats.features(v)
    assert f.shape == (2, 400)
    with torch.no_grad():
        ref = net(preprocess_videos(v)).mean(2).numpy()
    assert np.allclose(f, ref, atol=1e-5)
    assert not np.allclose(f[0], f[1])


def test_i3d_shapes_of_the_real_architecture():
    # the full-width network has I3D's parameter count and maps 16x224x224 to per-time 400 logits
    net = InceptionI3d()
    assert 12.5e6 < sum(p.numel() for p in net.parameters()) < 12.8e6
    assert net.Mixed_5c.out_channels == 1024


def test_i3d_missing_and_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("STILLMOTION_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.delenv("STILLMOTION_I3D", raising=False)
    with pytest.raises(MetricUnavailable, match="FVD not computed") as info:
        find_i3d()
    assert any("i3d_torchscript.pt" in p for p in info.value.looked_in)
    with pytest.raises(MetricUnavailable, match="does not exist"):
        find_i3d(tmp_path / "nope.pt")
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(ValueError, match="not an InceptionI3d state dict"):
        I3DFeatures(bad)


def _save_lpips_files(folder, seed=0):
    torch.manual_seed(seed)
    model = LPIPS()
    backbone = {f"features.{k}": v for k, v in model.net.features.state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)  # torchvision files also hold the classifier
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(heads, folder / "alex.pth")
    return backbone, heads


def test_lpips_loads_torchvision_and_lpips_layouts(tmp_path):
    backbone, heads = _save_lpips_files(tmp_path)
    metric = LPIPSMetric(tmp_path, device="cpu")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 80, 3), dtype=np.uint8)
    noise = rng.integers(-40, 40, a.shape)
    b_small = np.clip(a + noise // 4, 0, 255).astype(np.uint8)
    b_big = np.clip(a + noise, 0, 255).astype(np.uint8)
    assert np.allclose(metric.per_frame(a, a), 0.0, atol=1e-7)
    small, big = metric.per_frame(a, b_small), metric.per_frame(a, b_big)
    assert np.all(small > 0) and np.all(big > small)

    # an independent re-computation of LPIPS v0.1 from the two files
    def feats(x):
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor(
            [0.458, 0.448, 0.450]
        ).view(1, 3, 1, 1)
        outs = []
        for conv, pool_before in ((0, False), (3, True), (6, True), (8, False), (10, False)):
            if pool_before:
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(F.conv2d(x, backbone[f"features.{conv}.weight"], backbone[f"features.{conv}.bias"],
                                stride=4 if conv == 0 else 1, padding={0: 2, 3: 2}.get(conv, 1)))  # fmt: skip
            outs.append(x)
        return outs

    x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(b_big).permute(0, 3, 1, 2).float() / 127.5 - 1
    ref = 0
    for i, (fx, fy) in enumerate(zip(feats(x), feats(y), strict=True)):
        fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        ref = ref + ((fx - fy) ** 2 * heads[f"lin{i}.model.1.weight"]).sum(1).mean(dim=(1, 2))
    assert np.allclose(big, ref.numpy(), rtol=1e-4)


def test_lpips_safetensors_and_missing_files(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    backbone, heads = _save_lpips_files(tmp_path / "", seed=1)
    st = tmp_path / "st"
    st.mkdir()
    save_file({k: v.contiguous() for k, v in backbone.items()}, str(st / "alexnet.safetensors"))
    save_file(heads, str(st / "lpips_alex.safetensors"))
    a = np.random.default_rng(0).integers(0, 256, (1, 40, 40, 3), dtype=np.uint8)
    b = a[:, ::-1].copy()
    assert np.allclose(LPIPSMetric(st).per_frame(a, b), LPIPSMetric(tmp_path).per_frame(a, b), atol=1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetricUnavailable, match="LPIPS not computed.*AlexNet backbone and linear heads"):
        find_lpips_files(empty)
    (empty / "alex.pth").write_bytes((tmp_path / "alex.pth").read_bytes())
    with pytest.raises(MetricUnavailable, match="missing AlexNet backbone \\(looked in: .*alexnet-owt"):
        find_lpips_files(empty)


def _tiny_clip(folder, seed=0):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, projection_dim=16, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8,
    )  # fmt: skip
    model = CLIPVisionModelWithProjection(cfg).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return model


def test_clip_tem_cons_from_a_local_folder(tmp_path):
    model = _tiny_clip(tmp_path / "clip")
    tc = CLIPConsistency(tmp_path / "clip", device="cpu")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    still = np.stack([img] * 4)
    assert np.allclose(tc.per_frame(still), 1.0, atol=1e-5)
    changing = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    cos = tc.per_frame(changing)
    assert cos.shape == (3,) and np.all(cos < 0.9999)
    # the embeddings are the model's own image_embeds, normalised
    inputs = tc.processor(images=list(changing[:2]), return_tensors="pt")
    with torch.no_grad():
        ref = F.normalize(model(pixel_values=inputs["pixel_values"]).image_embeds, dim=-1)
    assert np.allclose(tc.embeddings(changing[:2]), ref.numpy(), atol=1e-5)


def test_clip_missing_reports_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MetricUnavailable, match="Tem-Cons not computed") as info:
        CLIPConsistency(tmp_path / "no_clip")
    assert str(tmp_path / "no_clip") in info.value.looked_in[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MetricUnavailable) as info:
            CLIPConsistency(None)
    assert any("openai/clip-vit-base-patch32" in p for p in info.value.looked_in)
