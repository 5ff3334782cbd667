"""The paper's architectures (MATH.md §10) and a loader for its published weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .network import Network
from .ops import Normalize

INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "svhn": (3, 32, 32), "har": (561,)}


def conv_small(in_channels: int = 1, in_size: int = 28, n_classes: int = 10) -> nn.Sequential:
    """Conv(16, 4×4, s2, p1) – ReLU – Conv(32, 4×4, s2, p1) – ReLU – Flatten – Linear(100) – ReLU – Linear."""
    side = in_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * side * side, 100),
        nn.ReLU(),
        nn.Linear(100, n_classes),
    )


def har_mlp(hidden: int = 500) -> nn.Sequential:
    """Linear(561 → hidden) – ReLU – Linear(hidden → 6)."""
    return nn.Sequential(nn.Linear(561, hidden), nn.ReLU(), nn.Linear(hidden, 6))


def random_mlp(widths: list[int], seed: int, bias_std: float = 1.0) -> nn.Sequential:
    """A random dense ReLU network (Appendix B): weights N(0, 1/n_in) (std 1/√n_in), biases N(0, bias_std²)."""
    if len(widths) < 2:
        raise ValueError(f"a network needs at least an input and an output width, got {widths}")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen) / a**0.5)
            lin.bias.copy_(bias_std * torch.randn(b, generator=gen))
        layers += [lin, nn.ReLU()] if i < len(widths) - 2 else [lin]
    return nn.Sequential(*layers)


def toy_2d_network(seed: int) -> nn.Sequential:
    """The 2-100-100-100-100-2 network of Appendix B.1 with PyTorch's default initialisation, seeded."""
    torch.manual_seed(seed)
    widths = [2, 100, 100, 100, 100, 2]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Linear(a, b), nn.ReLU()] if i < len(widths) - 2 else [nn.Linear(a, b)]
    return nn.Sequential(*layers)


def bn_pool_convnet(
    in_channels: int = 1,
    in_size: int = 28,
    n_classes: int = 10,
    mean: tuple[float, ...] = (0.1307,),
    std: tuple[float, ...] = (0.3081,),
    width: int = 16,
) -> nn.Sequential:
    """Normalize – Conv(w, 3×3, p1) – BN – ReLU – AvgPool(2) – Conv(2w, 3×3, p1) – BN – ReLU – global average – Linear.

    Every affine layer beyond Linear/Conv that lpverify supports, in a small
    network (MNIST statistics by default); ``in_size`` must be even.
    """
    return nn.Sequential(
        Normalize(mean, std),
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, n_classes),
    )


def paper_model(name: str) -> nn.Sequential:
    """An untrained model of the paper's architecture for ``name`` (mnist, fashion_mnist, svhn, har)."""
    if name in ("mnist", "fashion_mnist"):
        return conv_small(1, 28)
    if name == "svhn":
        return conv_small(3, 32)
    if name == "har":
        return har_mlp()
    raise ValueError(f"unknown model {name!r}; the paper's models are {sorted(INPUT_SHAPES)}")


def load_paper_model(name: str, path: str | Path) -> nn.Sequential:
    """The paper's architecture with the state_dict at ``path`` (loaded on the CPU), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    model = paper_model(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt file
        raise ValueError(f"{path}: not a loadable torch state_dict ({err})") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the paper's {name} architecture: {err}") from err
    return model.eval()


def paper_network(name: str, path: str | Path) -> Network:
    """``Network`` of the paper's model ``name`` with the weights at ``path``."""
    return Network.from_torch(load_paper_model(name, path), input_shape=INPUT_SHAPES[name])


def load_network(path: str | Path, arch: str | None = None, input_shape: tuple[int, ...] | None = None) -> Network:
    """A ``Network`` from a model file, whatever form it takes.

    * ``.onnx`` (or ``.onnx.gz``): imported with :func:`lpverify.onnx_import.load_onnx`.
    * a torch state_dict: needs ``arch``, one of the paper's architectures
      (:data:`INPUT_SHAPES`), e.g. the weights in ../shared/models.
    * an lpverify training checkpoint (``lpverify.train``): also needs ``arch``.
    * a saved ``nn.Sequential`` (``torch.save(model)``): unpickled, so only
      load files you trust; a convolutional first layer needs ``input_shape``
      or ``arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.name.lower().endswith((".onnx", ".onnx.gz")):
        from .onnx_import import load_onnx

        return load_onnx(path)
    if arch is not None and arch not in INPUT_SHAPES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(INPUT_SHAPES)}")
    shape = input_shape or (INPUT_SHAPES[arch] if arch else None)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ValueError(f"{path}: not a torch model, state_dict or ONNX file ({err})") from err
    if isinstance(obj, nn.Module):
        return Network.from_torch(obj.eval(), input_shape=shape)
    if isinstance(obj, dict):
        state = obj.get("model", obj) if isinstance(obj.get("model"), dict) else obj
        if arch is None:
            raise ValueError(f"{path} holds a state_dict: name its architecture (arch=, --arch) among {sorted(INPUT_SHAPES)}")
        model = paper_model(arch)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path}: weights do not fit the paper's {arch} architecture: {err}") from err
        return Network.from_torch(model.eval(), input_shape=INPUT_SHAPES[arch])
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a model or a state_dict")
