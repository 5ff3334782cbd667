"""The paper's architectures and weights (MATH.md §10)."""

from __future__ import annotations

import pytest
import torch

import lpverify as lv
from lpverify.zoo import load_paper_model, paper_network
from conftest import shared_path


@pytest.mark.shared
def test_paper_mnist_weights_give_1_80_percent_clean_error():
    """Table 1, MNIST robust model: test error 1.80% (180 of 10,000)."""
    from lpverify.data import load_mnist

    net = paper_network("mnist", shared_path("models", "wong_kolter_2018", "mnist.pth"))
    x, y = load_mnist(shared_path("data", "mnist"), "test")
    with torch.no_grad():
        wrong = int((net(x).argmax(1) != y).sum())
    assert wrong == 180


@pytest.mark.shared
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "svhn", "har"])
def test_every_paper_model_loads_into_its_architecture(name):
    model = load_paper_model(name, shared_path("models", "wong_kolter_2018", f"{name}.pth"))
    net = lv.Network.from_torch(model, input_shape=lv.zoo.INPUT_SHAPES[name])
    x = torch.rand(2, *lv.zoo.INPUT_SHAPES[name])
    torch.testing.assert_close(net(x), model(x))


@pytest.mark.shared
def test_weights_of_another_architecture_are_rejected():
    with pytest.raises(ValueError, match="do not fit the paper's mnist architecture"):
        load_paper_model("mnist", shared_path("models", "wong_kolter_2018", "har.pth"))


def test_missing_and_corrupt_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load_paper_model("mnist", tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: not a loadable"):
        load_paper_model("mnist", bad)
    with pytest.raises(ValueError, match="unknown model"):
        lv.zoo.paper_model("cifar")


def test_random_mlp_follows_appendix_b_initialisation():
    model = lv.zoo.random_mlp([400, 300, 2], seed=7)
    w, b = model[0].weight.detach(), model[0].bias.detach()
    assert w.shape == (300, 400) and isinstance(model[1], torch.nn.ReLU) and len(model) == 3
    assert abs(float(w.std()) - 400**-0.5) < 0.05 * 400**-0.5  # N(0, 1/n_in)
    assert abs(float(b.std()) - 1.0) < 0.15  # N(0, 1)
    torch.testing.assert_close(lv.zoo.random_mlp([400, 300, 2], seed=7)[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="at least"):
        lv.zoo.random_mlp([3], seed=0)
