"""Certificates (Corollary 1), on random networks and on the paper's MNIST model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import lpverify as lv
from conftest import shared_path
from strategies import any_case, sampled_pre_activations


@given(case=any_case(batch=3))
def test_a_certified_example_keeps_its_class_on_every_sampled_point(case):
    with torch.no_grad():
        y = case.net(case.ball.center).argmax(1)
        bound = lv.margin_bounds(case.net, case.ball, y)
        certified = (bound >= 0).all(1)
        logits = sampled_pre_activations(case)[-1].flatten(2)  # (B, n, n_out)
    margins = logits.gather(2, y.view(-1, 1, 1).expand(-1, logits.shape[1], 1)) - logits
    assert (bound.unsqueeze(1) <= margins + 1e-9).all()  # J bounds every sampled margin
    # A certified example: no sampled point gives another class a larger logit.
    assert (margins[certified] >= -1e-9).all()


@given(case=any_case(batch=4))
def test_at_eps_zero_certified_means_correctly_classified(case):
    with torch.no_grad():
        logits = case.net(case.ball.center)
    y = torch.arange(4) % case.net.n_outputs
    top2 = logits.topk(min(2, logits.shape[1]), dim=1).values
    if logits.shape[1] > 1 and (top2[:, 0] - top2[:, 1]).min() < 1e-9:
        return  # a tie: the argmax is ambiguous
    expected = logits.argmax(1) == y
    assert lv.certify(case.net, case.ball.center, y, 0.0).tolist() == expected.tolist()


def test_certify_chunks_give_the_same_answer():
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    torch.manual_seed(0)
    net = lv.Network.from_torch(model)
    x, y = torch.rand(10, 4), torch.randint(0, 3, (10,))
    eps = torch.linspace(0.0, 0.2, 10)
    whole = lv.certify(net, x, y, eps, batch_size=10)
    chunked = lv.certify(net, x, y, eps, batch_size=3)
    assert whole.tolist() == chunked.tolist()
    assert whole[0] == (net(x[:1]).argmax(1) == y[:1]).item()
    with pytest.raises(ValueError, match="labels"):
        lv.certify(net, x, y[:5], 0.1)


@pytest.fixture(scope="module")
def mnist_first_1000():
    from lpverify.data import load_mnist
    from lpverify.zoo import paper_network

    net = paper_network("mnist", shared_path("models", "wong_kolter_2018", "mnist.pth"))
    x, y = load_mnist(shared_path("data", "mnist"), "test")
    return net, x[:1000], y[:1000]


@pytest.mark.shared
def test_paper_mnist_robust_error_bound_on_first_1000(mnist_first_1000):
    """Table 1, MNIST robust row, ε = 0.1, no [0,1] clamp: 67 of the first 1000 test images are not certified."""
    net, x, y = mnist_first_1000
    with torch.no_grad():
        bounds = torch.cat([lv.margin_bounds(net, lv.LinfBall(x[i : i + 100], 0.1), y[i : i + 100]) for i in range(0, 1000, 100)])
    certified = (bounds >= 0).all(1)
    assert int((~certified).sum()) == 67
    assert lv.certify(net, x, y, 0.1).tolist() == certified.tolist()
    # No image sits close enough to the threshold to flip between float32 and float64:
    # recompute the ten closest in float64 and check every verdict and value.
    bounds[torch.arange(1000), y] = float("inf")
    worst = bounds.min(1).values
    closest = worst.abs().argsort()[:10]
    with torch.no_grad():
        b64 = lv.margin_bounds(net, lv.LinfBall(x[closest].double(), 0.1), y[closest])
    b64[torch.arange(10), y[closest]] = float("inf")
    torch.testing.assert_close(b64.min(1).values.float(), worst[closest], rtol=1e-4, atol=1e-4)
    assert ((b64.min(1).values >= 0) == certified[closest]).all()
    assert worst[closest].abs().min() > 1e-3  # the nearest image (index 444) is 0.0101 below zero
