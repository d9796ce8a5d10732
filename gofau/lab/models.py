"""Image classifiers: ResNet9 (DAWNBench style), AirNet (airbench style), CIFAR-form ResNet18/34/50/101
and VGG16-BN.

Every model takes ``num_classes`` and ``width`` (a multiplier on every layer's channel count,
rounded, at least 1). ``image_size`` 32 builds the CIFAR form (3x3 stride-1 stem, no max-pool);
ResNets at ``image_size`` 64 (Tiny ImageNet) add a 3x3 stride-2 max-pool after that stem, so the
residual stages see 32x32 maps and cost what they cost on CIFAR. All heads pool globally, so any
input size works.

Initialisation (:func:`init_weights`), applied to every convolution and linear weight:

* ``"default"``: PyTorch's own (Kaiming uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
* ``"he"``: Kaiming normal, N(0, 2 / fan_in).
* ``"xavier"``: Glorot uniform, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).
* ``"uniform"``: U(-0.05, 0.05), a fixed scale that ignores the layer's size.
* ``"scaled"``: PyTorch's default multiplied by ``init_scale``.

Biases: every bias, and every BatchNorm shift beta, starts at exactly zero under every scheme
(BatchNorm scales gamma start at one). This is stated because the multiplicative rule
theta <- theta - eta_out |theta| tanh(eta_in u) cannot move a parameter that is zero: under the pure
rule those parameters stay at zero for the whole run (give them an additive parameter group to train them).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS = ("resnet9", "airnet", "resnet18", "resnet34", "resnet50", "resnet101", "vgg16")
INITS = ("default", "he", "xavier", "uniform", "scaled")
NORMS = ("batch", "none")


def _c(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _norm(channels: int, norm: str) -> nn.Module:
    """BatchNorm over ``channels``, or nothing (``norm="none"``: the same network without it)."""
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         _norm(cout, norm), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, f: nn.Module):
        super().__init__()
        self.f = f

    def forward(self, x):
        return x + self.f(x)


class ResNet9(nn.Module):
    """The DAWNBench ResNet9 (Page, 2018; used by airbench): prep 64, [128 + pool + res],
    [256 + pool], [512 + pool + res], global max-pool, linear, output scaled by 1/8."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, image_size: int = 32, norm: str = "batch"):
        super().__init__()
        c1, c2, c3, c4 = (_c(c, width) for c in (64, 128, 256, 512))

        def cb(cin, cout):
            return conv_bn(cin, cout, norm=norm)

        self.features = nn.Sequential(
            cb(3, c1),
            cb(c1, c2), nn.MaxPool2d(2), Residual(nn.Sequential(cb(c2, c2), cb(c2, c2))),
            cb(c2, c3), nn.MaxPool2d(2),
            cb(c3, c4), nn.MaxPool2d(2), Residual(nn.Sequential(cb(c4, c4), cb(c4, c4))),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c4, num_classes)
        self.scale = 0.125

    def forward(self, x):
        return self.fc(self.features(x)) * self.scale


class AirNet(nn.Module):
    """A small, fast CIFAR network after Jordan's airbench (2024): a 2x2 stem convolution, then three
    groups [conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU] of 64, 256 and 256
    channels (times ``width``), a global max-pool and a bias-free linear head scaled by 1/9. airbench's
    other tricks (whitened, frozen stem; frozen BatchNorm scales; look-ahead; test-time flips) are left
    out, so every parameter trains under the rule being compared."""

    def __init__(self, num_classes=10, width=1.0, image_size=32, norm="batch"):
        super().__init__()
        c0, c1, c2, c3 = _c(24, width), _c(64, width), _c(256, width), _c(256, width)

        def group(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding="same", bias=False), nn.MaxPool2d(2),
                                 _norm(cout, norm), nn.GELU(),
                                 nn.Conv2d(cout, cout, 3, padding="same", bias=False), _norm(cout, norm),
                                 nn.GELU())

        self.features = nn.Sequential(nn.Conv2d(3, c0, 2, bias=True), nn.GELU(), group(c0, c1), group(c1, c2),
                                      group(c2, c3), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c3, num_classes, bias=False)

    def forward(self, x):
        return self.fc(self.features(x)) / 9


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, norm="batch"):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, planes, stride, norm=norm),
                                  nn.Conv2d(planes, planes, 3, 1, 1, bias=False), _norm(planes, norm))
        self.short = _shortcut(cin, planes * self.expansion, stride, norm)

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, norm="batch"):
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(conv_bn(cin, planes, 1, 1, norm), conv_bn(planes, planes, stride, norm=norm),
                                  nn.Conv2d(planes, out, 1, bias=False), _norm(out, norm))
        self.short = _shortcut(cin, out, stride, norm)

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def _shortcut(cin, cout, stride, norm="batch"):
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout, norm))


_RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6, 3)),
            "resnet50": (Bottleneck, (3, 4, 6, 3)), "resnet101": (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """He et al. (2016) ResNet in its CIFAR form: 3x3 stride-1 stem, no max-pool (32x32 input);
    at 64x64 input (Tiny ImageNet) a 3x3 stride-2 max-pool follows the stem."""

    def __init__(self, block, layers, num_classes=10, width=1.0, image_size=32, norm="batch"):
        super().__init__()
        c = _c(64, width)
        stem = [conv_bn(3, c, norm=norm)]
        if image_size >= 64:
            stem.append(nn.MaxPool2d(3, 2, 1))
        stages, cin = [], c
        for i, n in enumerate(layers):
            planes = _c(64 * 2 ** i, width)
            for j in range(n):
                stages.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, norm))
                cin = planes * block.expansion
        self.features = nn.Sequential(*stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


class VGG16(nn.Module):
    """VGG16 (Simonyan & Zisserman, 2015) with BatchNorm after every convolution, CIFAR head:
    global average pool and one linear layer."""

    cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, num_classes=10, width=1.0, image_size=32, norm="batch"):
        super().__init__()
        layers, cin = [], 3
        for v in self.cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn(cin, _c(v, width), norm=norm))
                cin = _c(v, width)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def init_weights(model: nn.Module, init: str = "default", init_scale: float = 1.0) -> nn.Module:
    """Initialise conv/linear weights by scheme ``init`` (see the module docstring); zero all biases
    and BatchNorm shifts, set BatchNorm scales to one. Draws from torch's global generator."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not (isinstance(init_scale, (int, float)) and init_scale > 0):
        raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
    if init != "scaled" and init_scale != 1.0:
        raise ValueError(f"init_scale applies only to init='scaled' (got init={init!r}, init_scale={init_scale})")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            if init in ("default", "scaled"):
                m.reset_parameters()
                if init == "scaled":
                    with torch.no_grad():
                        w.mul_(init_scale)
            elif init == "he":
                nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_uniform_(w)
            else:
                nn.init.uniform_(w, -0.05, 0.05)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build(arch: str, num_classes: int = 10, width: float = 1.0, image_size: int = 32,
          init: str = "default", init_scale: float = 1.0, norm: str = "batch") -> nn.Module:
    """Model ``arch`` (one of :data:`ARCHS`), initialised by :func:`init_weights`; ``norm="none"``
    leaves every BatchNorm out (the same convolutions, so weight scale is no longer normalised away)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (isinstance(width, (int, float)) and width > 0):
        raise ValueError(f"width must be a positive number, got {width!r}")
    if arch == "resnet9":
        model = ResNet9(num_classes, width, image_size, norm)
    elif arch == "airnet":
        model = AirNet(num_classes, width, image_size, norm)
    elif arch == "vgg16":
        model = VGG16(num_classes, width, image_size, norm)
    else:
        block, layers = _RESNETS[arch]
        model = ResNet(block, layers, num_classes, width, image_size, norm)
    return init_weights(model, init, init_scale)


def channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in the channels_last memory format. On a CPU it refuses a 1x1 convolution of stride > 1
    with fewer input channels than oneDNN's channel block (8 floats with AVX2, 16 with AVX-512): its
    channels_last weight gradient writes past its buffer there (oneDNN issue 6035), which crashes the
    process or, on some CPUs, silently corrupts the gradient. ResNets below width 0.125 (0.25 with
    AVX-512) have one."""
    if device.type == "cpu":
        block = 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1) and m.in_channels < block:
                raise ValueError(f"channels_last: convolution {name} (1x1, stride {m.stride[0]}) has {m.in_channels} "
                                 f"input channels, fewer than the {block} that oneDNN's channels_last kernels handle "
                                 "correctly on this CPU; use channels_last false, or a width that gives it at least "
                                 f"{block}")
    return model.to(memory_format=torch.channels_last)
