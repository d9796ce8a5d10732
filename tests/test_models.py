"""Models: shapes, widths, depth, initialisation schemes and the zero-bias rule."""
import math

import pytest
import torch
from torch import nn

from gofau.lab import models


@pytest.mark.parametrize("arch", models.ARCHS)
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(arch, size):
    m = models.build(arch, num_classes=7, width=0.125, image_size=size).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, size, size)).shape == (2, 7)


def _convs(m):
    return [x for x in m.modules() if isinstance(x, nn.Conv2d)]


def test_depth_and_width():
    # weighted layers: convolutions in the residual path plus the classifier (shortcuts excluded)
    def depth(arch):
        m = models.build(arch, width=0.125)
        return sum(1 for c in _convs(m) if c.kernel_size != (1, 1) or c.stride == (1, 1)) + 1
    assert depth("resnet18") == 18 and depth("resnet34") == 34
    assert depth("vgg16") == 14  # 13 convolutions + 1 linear in the CIFAR head
    assert [c.out_channels for c in _convs(models.build("resnet9"))][:2] == [64, 128]
    assert [c.out_channels for c in _convs(models.build("resnet9", width=0.25))][:2] == [16, 32]
    r50 = models.build("resnet50", width=0.5)
    assert r50.fc.in_features == 2048 // 2
    assert sum(isinstance(b, models.Bottleneck) for b in models.build("resnet101", width=0.125).modules()) == 33


def test_cifar_stem_has_no_pooling_and_tiny_variant_halves():
    m32 = models.build("resnet18", width=0.125, image_size=32)
    m64 = models.build("resnet18", width=0.125, image_size=64)
    assert m32.features[0][0].stride == (1, 1) and m32.features[0][0].kernel_size == (3, 3)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m32.modules())
    # the 64x64 variant reaches the first residual stage at 32x32
    h = m64.features[:2](torch.randn(1, 3, 64, 64))
    assert h.shape[-1] == 32


def _weights(m):
    return [x.weight for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("init", models.INITS)
def test_biases_and_norm_shifts_are_zero(init):
    m = models.build("resnet18", width=0.125, init=init, init_scale=0.1 if init == "scaled" else 1.0)
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)) and mod.bias is not None:
            assert not mod.bias.any()
        if isinstance(mod, nn.BatchNorm2d):
            assert not mod.bias.any() and torch.all(mod.weight == 1)


def test_init_statistics():
    torch.manual_seed(0)
    m = models.build("vgg16", width=0.5, init="he")
    w = _weights(m)[5]  # a 3x3 conv with fan_in = 9 * cin
    fan_in = w[0].numel()
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    m = models.build("vgg16", width=0.5, init="xavier")
    w = _weights(m)[5]
    a = math.sqrt(6 / (fan_in + w.shape[0] * 9))
    assert w.abs().max().item() <= a and w.abs().max().item() > 0.95 * a
    m = models.build("vgg16", width=0.5, init="uniform")
    assert all(x.abs().max().item() <= 0.05 for x in _weights(m))
    m = models.build("vgg16", width=0.5, init="default")
    w = _weights(m)[5]
    assert w.abs().max().item() <= 1 / math.sqrt(fan_in)


def test_scaled_is_default_times_scale():
    torch.manual_seed(3)
    ref = [w.clone() for w in _weights(models.build("resnet9", width=0.125))]
    torch.manual_seed(3)
    big = _weights(models.build("resnet9", width=0.125, init="scaled", init_scale=10.0))
    assert all(torch.allclose(b, 10 * r) for b, r in zip(big, ref))


def test_bad_settings():
    with pytest.raises(ValueError, match="arch must be one of"):
        models.build("resnet7")
    with pytest.raises(ValueError, match="width must be a positive number"):
        models.build("resnet9", width=0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        models.build("resnet9", num_classes=0)
    with pytest.raises(ValueError, match="init must be one of"):
        models.build("resnet9", init="orthogonal")
    with pytest.raises(ValueError, match="init_scale applies only to init='scaled'"):
        models.build("resnet9", init="he", init_scale=2.0)
    with pytest.raises(ValueError, match="init_scale must be a positive number"):
        models.build("resnet9", init="scaled", init_scale=-1.0)


@pytest.mark.parametrize("arch", models.ARCHS)
def test_without_batchnorm_the_network_keeps_its_convolutions(arch):
    torch.manual_seed(0)
    with_bn = models.build(arch, width=0.125, norm="batch")
    torch.manual_seed(0)
    without = models.build(arch, width=0.125, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())
    in_bn = {id(p) for m in with_bn.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    convs = [(n, p) for n, p in with_bn.named_parameters() if id(p) not in in_bn]
    assert [(n, p.shape) for n, p in without.named_parameters()] == [(n, p.shape) for n, p in convs]
    assert all(torch.equal(p, dict(convs)[n]) for n, p in without.named_parameters())  # same draws, same weights
    assert without(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="norm must be one of"):
        models.build(arch, norm="layer")


def test_channels_last_refuses_a_cpu_kernel_that_corrupts_memory():
    # resnet18 at width 1/16: its first shortcut is a 1x1 stride-2 convolution from 4 channels
    with pytest.raises(ValueError, match=r"channels_last: convolution features\.3\.short\.0 \(1x1, stride 2\) has 4 "
                                         r"input channels.*use channels_last false"):
        models.channels_last(models.build("resnet18", width=0.0625), torch.device("cpu"))
    model = models.channels_last(models.build("resnet18", width=0.25), torch.device("cpu"))  # 16 channels: fine
    assert model.features[3].short[0].weight.is_contiguous(memory_format=torch.channels_last)
    air = models.channels_last(models.build("airnet", width=0.0625), torch.device("cpu"))  # no 1x1 stride 2
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in air.parameters() if p.dim() == 4)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_a_channels_last_network_that_is_accepted_gets_the_right_shortcut_gradients(arch):
    # every strided 1x1 convolution's weight gradient, in situ, against float64 from its own input and output grad
    torch.manual_seed(0)
    model = models.channels_last(models.build(arch, width=0.25), torch.device("cpu"))
    short = {n: c for n, c in model.named_modules()
             if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1) and c.stride != (1, 1)}
    seen = {}
    for n, c in short.items():
        c.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, [i[0].detach()]))
        c.register_full_backward_hook(lambda mod, gi, go, n=n: seen[n].append(go[0].detach()))
    x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    nn.functional.cross_entropy(model(x), torch.randint(0, 10, (32,))).backward()
    assert len(short) == 3 and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in short.values())
    for n, c in short.items():
        xi, go = seen[n]
        s = c.stride[0]
        want = torch.einsum("bchw,bohw->oc", xi[:, :, ::s, ::s].double(), go.double())
        assert torch.allclose(c.weight.grad.squeeze().double(), want, rtol=1e-4, atol=1e-6 * want.abs().max().item()), n
