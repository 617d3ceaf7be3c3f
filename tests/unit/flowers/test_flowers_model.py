"""Flower models: preprocessing inside the scripted graph, any input size, augmentation, export."""

import pytest
import torch
from omegaconf import OmegaConf

from train.flowers.models import ImageClassifier, KorniaViT, SmallCNN, for_export
from train.flowers.run import canvas, make_augment

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
AUGMENT = OmegaConf.create(
    {
        "crop_scale": [0.35, 1.0],
        "crop_ratio": [0.75, 1.3333],
        "hflip": 0.5,
        "jitter": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.0, "p": 0.8},
    }
)


def nets():
    torch.manual_seed(0)
    return {
        "cnn": SmallCNN(3, 5, [8, 16, 32]),
        "vit": KorniaViT(3, 5, 32, embed_dim=32, depth=2, num_heads=2, stem_widths=[8, 16]),
    }


def images(*sizes):
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in sizes]


@pytest.fixture(params=["cnn", "vit"])
def scripted(request, tmp_path):
    """(eager model, the exported TorchScript file reloaded) for each net."""
    model = ImageClassifier(nets()[request.param], 32, MEAN, STD).eval()
    exported = torch.jit.script(for_export(model, torch.rand(1, 3, 45, 71)))
    exported.save(str(tmp_path / "model.pt"))
    return model, torch.jit.load(str(tmp_path / "model.pt"))


def test_scripted_module_serves_any_size_like_eager(scripted):
    model, loaded = scripted
    mixed = images((32, 32), (240, 180), (17, 300), (1, 1), (1000, 750))
    with torch.no_grad():
        out = loaded(mixed)
        assert out.shape == (5, 5)
        torch.testing.assert_close(out, model(mixed), atol=1e-5, rtol=1e-4)
        # Each image alone gives its row of the mixed batch: no cross-talk between sizes.
        for i, img in enumerate(mixed):
            torch.testing.assert_close(loaded([img])[0], out[i], atol=1e-5, rtol=1e-4)


def test_uint8_and_float_tensors_and_lists_agree(scripted):
    _, loaded = scripted
    a, b = images((120, 90), (120, 90))
    with torch.no_grad():
        from_list = loaded([a, b])
        torch.testing.assert_close(loaded(torch.stack([a, b])), from_list)
        torch.testing.assert_close(loaded(torch.stack([a, b]).float() / 255), from_list)
        torch.testing.assert_close(loaded(a), from_list[:1])  # (3, H, W) alone
        torch.testing.assert_close(loaded([torch.stack([a, b])]), from_list)


def test_preprocessing_is_area_resize_then_normalise():
    model = ImageClassifier(torch.nn.Identity(), 4, MEAN, STD)
    img = torch.zeros(1, 3, 8, 8)
    img[:, :, :2, :2] = 1.0  # one 2x2 block -> one output pixel of value 1
    out = model(img)
    assert out.shape == (1, 3, 4, 4)
    expected = (torch.zeros(1, 3, 4, 4) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    expected[:, :, 0, 0] = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out, expected)
    # At the input size the resize is the identity: training batches pass through unchanged.
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(
        model(x), (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    )


def test_augmentation_pipeline_gives_input_size_batches_that_vary():
    torch.manual_seed(0)
    augment = make_augment(AUGMENT, 32)
    batch = canvas(images((60, 80), (200, 150), (40, 40), (90, 90)), 40)
    assert batch.shape == (4, 3, 40, 40) and batch.dtype == torch.float32
    out1, out2 = augment(batch), augment(batch)
    assert out1.shape == (4, 3, 32, 32) and out1.device == batch.device
    assert 0.0 <= float(out1.min()) and float(out1.max()) <= 1.0
    assert not torch.allclose(out1, out2)  # random per call
    # Training runs augmented batches through the same forward the exported graph has.
    model = ImageClassifier(nets()["cnn"], 32, MEAN, STD)
    assert model(out1).shape == (4, 5)


def test_vit_checkpoint_loads_own_and_kornia_state_dicts(tmp_path):
    torch.manual_seed(0)
    kwargs = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}
    source = KorniaViT(3, 5, 32, **kwargs).eval()
    torch.save(source.state_dict(), tmp_path / "net.pt")
    torch.save(source.vit.state_dict(), tmp_path / "kornia_vit.pt")
    x = torch.rand(2, 3, 32, 32)
    own = KorniaViT(3, 5, 32, checkpoint=str(tmp_path / "net.pt"), **kwargs).eval()
    torch.testing.assert_close(own(x), source(x))
    backbone = KorniaViT(3, 5, 32, checkpoint=str(tmp_path / "kornia_vit.pt"), **kwargs).eval()
    torch.testing.assert_close(backbone.vit(x), source.vit(x))


def test_flip_tta_averages_the_mirror_in_eval_and_exports(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN(3, 5, [8, 16, 32])
    model = ImageClassifier(net, 32, MEAN, STD, flip_tta=True).eval()
    photos = images((40, 50), (64, 30))
    with torch.no_grad():
        plain = torch.stack([net(model.preprocess(p[None].float() / 255))[0] for p in photos])
        mirror = torch.stack(
            [net(model.preprocess(p[None].flip(-1).float() / 255))[0] for p in photos]
        )
        out = model(photos)
        torch.testing.assert_close(out, 0.5 * (plain + mirror), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(out, plain, atol=1e-4)  # the mirror counts
        # Mirror-invariant by construction; in train mode it is the plain net.
        torch.testing.assert_close(model([p.flip(-1) for p in photos]), out, atol=1e-5, rtol=1e-4)
        exported = torch.jit.script(for_export(model, torch.rand(1, 3, 45, 71)))
        torch.testing.assert_close(exported(photos), out, atol=1e-5, rtol=1e-4)
    model.train()
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(3)  # the same dropout mask both times
    trained = model(x)
    torch.manual_seed(3)
    torch.testing.assert_close(trained, net(model.preprocess(x)))


def test_ema_follows_the_weights_and_is_what_evaluates():
    from train.flowers.run import FlowerClassifier

    torch.manual_seed(0)
    model = ImageClassifier(SmallCNN(3, 5, [8, 16]), 16, MEAN, STD)
    module = FlowerClassifier(model, torch.nn.Identity(), {"ema": 0.9})
    assert module.final_model() is module.ema
    # The optimiser sees the trained model's parameters only.
    assert all(not p.requires_grad for p in module.ema.parameters())
    start = {k: v.clone() for k, v in module.ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # step 0: decay min(0.9, 1/10) = 0.1
    for key, value in module.ema.state_dict().items():
        if value.dtype.is_floating_point and "running" not in key:
            cur = model.state_dict()[key]
            torch.testing.assert_close(value, 0.1 * start[key] + 0.9 * cur)
    assert FlowerClassifier(model, torch.nn.Identity(), {"ema": None}).final_model() is model


def test_upscaled_photos_are_large_jpegs_decoded_as_served():
    from train.flowers.run import upscaled

    photo = images((180, 240))[0]
    big, bigger = upscaled([photo], 512, draft=256)[0], upscaled([photo], 1024, draft=256)[0]
    assert big.dtype == torch.uint8 and tuple(big.shape[1:]) == (384, 512)  # short side < 512
    # 1024 x 768: at least twice the draft size on its short side, so decoded at 1/2 scale.
    assert tuple(bigger.shape[1:]) == (384, 512)


def test_channels_last_training_is_the_same_step_and_exports_contiguous(tmp_path):
    """model.channels_last trains the same function in NHWC (faster on CPU), and the export
    goes back to contiguous weights."""
    from train.flowers.run import FlowerClassifier, export_image_model

    def one_step(channels_last: bool) -> FlowerClassifier:
        torch.manual_seed(0)
        model = ImageClassifier(SmallCNN(3, 5, [8, 16]), 16, MEAN, STD)
        module = FlowerClassifier(
            model, torch.nn.Identity(), {"label_smoothing": 0.0}, channels_last
        )
        module.log = lambda *a, **k: None  # no trainer attached
        x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
        module.training_step((x, y), 0).backward()
        return module

    nchw, nhwc = one_step(False), one_step(True)
    conv = next(m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    for (name, a), b in zip(nchw.model.named_parameters(), nhwc.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    photos = images((20, 24), (16, 16))
    export_image_model(nhwc.model, photos, str(tmp_path), {"name": "t"}, {})
    reloaded = torch.jit.load(str(tmp_path / "model.pt"))
    assert all(p.is_contiguous() for p in reloaded.parameters())
