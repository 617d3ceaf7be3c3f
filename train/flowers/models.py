"""Image models: a small CNN, a Kornia ViT, and the exported wrapper that owns preprocessing.

`ImageClassifier` is what training runs and what gets exported: it takes uint8 or float RGB
images of any size, resizes them to the net's input size and normalises them with Kornia ops,
then runs the net. Training feeds it augmented batches already at the input size, so the
exported graph applies exactly the preprocessing that training did.
"""

import copy
import warnings
from typing import Optional, Union

import torch
from kornia.enhance import normalize
from kornia.geometry.transform import resize
from kornia.models.vit import VisionTransformer
from torch import Tensor, nn


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """VGG-style stages (conv-BN-ReLU, then 2x2 max-pool), global average pool, linear head."""

    scriptable = True

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        widths: list[int],
        blocks_per_stage: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_dim
        for i, w in enumerate(widths):
            for _ in range(blocks_per_stage):
                layers.append(conv_bn(cin, w))
                cin = w
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))  # (H, W) -> (H/2, W/2)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    @torch.jit.export
    def embed(self, x: Tensor) -> Tensor:
        """(B, F): the pooled features the head reads, the drift monitor's embedding."""
        return self.features(x).mean(dim=(2, 3))  # (B, F, h, w) -> (B, F)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S) normalised images -> (B, num_classes) logits."""
        return self.head(self.embed(x))


class KorniaViT(nn.Module):
    """kornia.models.vit.VisionTransformer with a class-token linear head.

    With `stem_widths`, patches come from a small strided conv stem instead of one large-stride
    patch convolution ("early convolutions", Xiao et al. 2021), which trains far better from
    scratch on a few hundred images. Kornia's blocks take **kwargs, which TorchScript rejects,
    so the net is traced at export (`scriptable = False`); its input size is fixed anyway.
    """

    scriptable = False

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        image_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int = 8,
        stem_widths: Optional[list[int]] = None,
        dropout: float = 0.1,
        checkpoint: Optional[str] = None,
    ) -> None:
        super().__init__()
        backbone = None
        if stem_widths:
            # Each stage halves the side: patch size = 2 ** len(stem_widths).
            layers: list[nn.Module] = []
            cin = in_dim
            for w in stem_widths:
                layers += [conv_bn(cin, w), nn.MaxPool2d(2)]
                cin = w
            layers.append(nn.Conv2d(cin, embed_dim, 1))
            backbone = nn.Sequential(*layers)
        self.vit = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            in_channels=in_dim,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            dropout_rate=dropout,
            backbone=backbone,
        )
        self.head = nn.Linear(embed_dim, num_classes)
        if checkpoint:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, path: str) -> None:
        """Loads a state dict of this net (keys `vit.*`, `head.*`) or of Kornia's ViT alone.

        A Kornia hub file (e.g. vit_ti-16.pth, fetched by hand since the hub is unreachable
        here) fits when image_size, patch_size, embed_dim, depth and heads match its variant and
        there is no stem; the head then starts fresh.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("vit.") for k in state):
            self.load_state_dict(state)
        else:
            self.vit.load_state_dict(state)

    def embed(self, x: Tensor) -> Tensor:
        """(B, D): the class token the head reads, the drift monitor's embedding."""
        return self.vit(x)[:, 0]  # (B, 1 + N, D) -> (B, D)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S) normalised images -> (B, num_classes) logits from the class token."""
        return self.head(self.embed(x))


class Preprocess(nn.Module):
    """Float RGB in [0, 1], any (B, 3, H, W) -> resized to (S, S) and normalised, with Kornia.

    Area interpolation averages every source pixel, so downscaling a large photo does not
    alias, and at S x S it is the identity (training batches arrive at S x S).
    """

    def __init__(self, size: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: Tensor) -> Tensor:
        x = resize(x, (self.size, self.size), interpolation="area")
        return normalize(x, self.mean, self.std)


class ImageClassifier(nn.Module):
    """Preprocessing and net in one graph: RGB images of any size in, logits out.

    `images` is a (B, 3, H, W) tensor, or a list of (3, H, W) / (B, 3, H, W) tensors of any
    sizes (one forward for a batch of differently sized photos). uint8 is read as 0..255,
    float as 0..1. With `flip_tta`, eval mode averages the logits of each photo and its
    horizontal mirror (test-time augmentation inside the exported graph).
    """

    def __init__(
        self,
        net: nn.Module,
        input_size: int,
        mean: list[float],
        std: list[float],
        flip_tta: bool = False,
    ):
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.flip_tta = flip_tta
        self.preprocess = Preprocess(input_size, mean, std)

    def _run(self, x: Tensor) -> Tensor:
        """The net on (B, 3, S, S); with flip_tta in eval mode, averaged with the mirror image."""
        if self.flip_tta and not self.training:
            logits = self.net(torch.cat([x, x.flip(-1)]))  # (2B, num_classes)
            n = x.size(0)
            return 0.5 * (logits[:n] + logits[n:])
        return self.net(x)

    def _prepare(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)  # (3, H, W) -> (1, 3, H, W)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return self.preprocess(x)  # (B, 3, H, W) -> (B, 3, S, S)

    def _inputs(self, images: Union[Tensor, list[Tensor]]) -> Tensor:
        """(B, 3, S, S) net inputs from a tensor or a list of photos of any sizes."""
        if isinstance(images, Tensor):
            return self._prepare(images)
        shape = images[0].shape
        same = True
        for x in images:
            same = same and x.shape == shape
        if same and len(shape) == 3:
            return self._prepare(torch.stack(images))  # one resize for the batch
        return torch.cat([self._prepare(x) for x in images])

    @torch.jit.export
    def embed(self, images: Union[Tensor, list[Tensor]]) -> Tensor:
        """(B, F): the net's penultimate features (no flip averaging), for the drift monitor."""
        return self.net.embed(self._inputs(images))

    def forward(self, images: Union[Tensor, list[Tensor]]) -> Tensor:
        """Returns (B, num_classes) logits."""
        return self._run(self._inputs(images))


def for_export(model: ImageClassifier, example: Tensor) -> ImageClassifier:
    """A copy whose Kornia parts are traced, so that the whole wrapper can be scripted.

    Kornia 0.9's resize and normalize do not script (f-string conversions, get_default_dtype).
    Traced at one odd size they still serve every size: the output size is a constant and the
    area pooling reads the input shape at run time (checked by the export and unit tests).
    The net is traced on the fixed (B, 3, S, S) input when it does not script.
    """
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model.preprocess = torch.jit.trace(model.preprocess, example)
        if not getattr(model.net, "scriptable", True):
            s = model.input_size
            x = torch.zeros(2, example.size(1), s, s)
            model.net = torch.jit.trace_module(model.net, {"forward": x, "embed": x})
    return model
