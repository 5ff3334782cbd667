"""Certificates (Corollary 1), on random networks and on the paper's MNIST model."""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given

import lpverify as lv
from conftest import random_convnet, shared_path
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


def test_automatic_batch_size_never_changes_a_certificate():
    """The default (automatic) chunking, one example per chunk and an odd size: the same verdicts,
    on a convolutional net where columns stay on their receptive fields and some examples need float64."""
    from lpverify.certify import auto_batch_size

    model, shape = random_convnet(1, 9, seed=11, n_out=3)
    net = lv.Network.from_torch(model, input_shape=shape)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(20, *shape, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = torch.linspace(0.0, 0.25, 20)
    assert 1 <= auto_batch_size(net) <= 1024
    default = lv.certify(net, x, y, eps)
    assert 0 < int(default.sum()) < 20  # both verdicts occur
    assert lv.certify(net, x, y, eps, batch_size=1).tolist() == default.tolist()
    assert lv.certify(net, x, y, eps, batch_size=7).tolist() == default.tolist()
    with pytest.raises(ValueError, match="batch_size"):
        lv.certify(net, x, y, eps, batch_size=0)


def test_chunks_on_threads_give_the_serial_answer(monkeypatch):
    """Chunks spread over two threads: the same verdicts as one after another, in the caller's
    order, and torch's thread count is restored afterwards."""
    certify_module = importlib.import_module("lpverify.certify")  # lv.certify is the function

    model, shape = random_convnet(1, 9, seed=11, n_out=3)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(40, *shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = torch.linspace(0.0, 0.25, 40)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calls = []
        real = certify_module.map_chunks
        monkeypatch.setattr(certify_module, "map_chunks", lambda fn, chunks, w: calls.append(w) or real(fn, chunks, w))
        threaded = lv.certify(net, x, y, eps, batch_size=3)
        assert calls[0] == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(certify_module, "chunk_workers", lambda x: 1)
        serial = lv.certify(net, x, y, eps, batch_size=3)
    finally:
        torch.set_num_threads(threads)
    assert 0 < int(serial.sum()) < 40
    assert threaded.tolist() == serial.tolist()
    assert certify_module.map_chunks(lambda c: c * c, list(range(9)), 3) == [c * c for c in range(9)]


def test_chunks_follow_the_first_layer_crossing_counts(monkeypatch):
    """Chunks cover the batch once, in an order along which the first layer's crossing counts (from
    Algorithm 1's own bounds) never decrease; by default each fits the memory budget at its largest count."""
    certify_module = importlib.import_module("lpverify.certify")

    model, shape = random_convnet(1, 9, seed=5, n_out=3)
    net = lv.Network.from_torch(model, input_shape=shape)
    x = torch.rand(30, *shape, generator=torch.Generator().manual_seed(1))
    eps = torch.linspace(0.0, 0.3, 30, dtype=torch.float64).flip(0)
    bounds = lv.dual_bounds(net, lv.LinfBall(x, eps, 0.0, 1.0))
    counts = ((bounds.lower[0] < 0) & (bounds.upper[0] > 0)).flatten(1).sum(1)
    assert counts.min() < counts.max()  # the order has something to sort
    assert certify_module.first_crossing_counts(net, x, eps, 0.0, 1.0).tolist() == counts.tolist()
    fixed = certify_module.plan_chunks(net, x, eps, 0.0, 1.0, batch_size=4)
    assert [len(c) for c in fixed] == [4] * 7 + [2]
    monkeypatch.setattr(certify_module, "BATCH_MEMORY_BYTES", 3 * 4 * 6 * float(certify_module.example_elements(net, 0)))
    auto = certify_module.plan_chunks(net, x, eps, 0.0, 1.0)
    for chunks in (fixed, auto):
        order = torch.cat(chunks)
        assert sorted(order.tolist()) == list(range(30))
        assert (counts[order].diff() >= 0).all()
    budget = certify_module._elements_budget(torch.float32)
    assert 1 < len(auto) < 30 and min(len(c) for c in auto) < max(len(c) for c in auto)
    assert all(len(c) == 1 or len(c) * float(certify_module.example_elements(net, counts[c].max())) <= budget for c in auto)


@pytest.fixture(scope="module")
def mnist_first_1000():
    from lpverify.data import load_mnist
    from lpverify.zoo import paper_network

    net = paper_network("mnist", shared_path("models", "wong_kolter_2018", "mnist.pth"))
    x, y = load_mnist(shared_path("data", "mnist"), "test")
    return net, x[:1000], y[:1000]


@pytest.mark.shared
def test_paper_mnist_robust_error_bound_on_first_1000(mnist_first_1000):
    """Table 1, MNIST robust row, ε = 0.1, no [0,1] clamp: 67 of the first 1000 test images are not certified.

    The rigorous default, the plain float32 bounds and float64 all agree: no
    image sits close enough to zero for rounding to decide it.
    """
    net, x, y = mnist_first_1000
    with torch.no_grad():
        plain = torch.cat([lv.margin_bounds(net, lv.LinfBall(x[i : i + 100], 0.1), y[i : i + 100], rigorous=False)
                           for i in range(0, 1000, 100)])
    plain[torch.arange(1000), y] = float("inf")
    worst = plain.min(1).values
    certified = worst > 0
    assert int((~certified).sum()) == 67
    assert lv.certify(net, x, y, 0.1).tolist() == certified.tolist()
    # Recompute the ten closest to the threshold in float64, rigorously: same verdicts, same values.
    closest = worst.abs().argsort()[:10]
    with torch.no_grad():
        b64 = lv.margin_bounds(net, lv.LinfBall(x[closest].double(), 0.1), y[closest])
    b64[torch.arange(10), y[closest]] = float("inf")
    torch.testing.assert_close(b64.min(1).values.float(), worst[closest], rtol=1e-4, atol=1e-4)
    assert ((b64.min(1).values > 0) == certified[closest]).all()
    assert worst[closest].abs().min() > 1e-3  # the nearest image (index 444) is 0.0101 below zero


@given(case=any_case(batch=3))
def test_robust_loss_is_at_least_the_standard_loss(case):
    """CE(−J, y) ≥ CE(f(x), y) because −J_j ≥ f_j(x) − f_y(x) and CE is monotone in those differences."""
    x = case.ball.center
    y = torch.arange(3) % case.net.n_outputs
    for eps in (0.0, float(case.ball.eps[0])):
        with torch.no_grad():
            robust, err = lv.robust_loss(case.net, x, y, eps)
            standard = torch.nn.functional.cross_entropy(case.net(x), y)
        assert float(robust) >= float(standard) - 1e-9
        assert 0.0 <= float(err) <= 1.0


def test_robust_loss_is_differentiable_and_matches_certify():
    model, shape = random_convnet(1, 8, seed=3)
    x, y = torch.rand(6, *shape), torch.randint(0, 4, (6,))
    loss, err = lv.robust_loss(model, x, y, 0.05)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert float(err) == pytest.approx(float((~lv.certify(model, x, y, 0.05)).float().mean()))


@pytest.mark.shared
def test_paper_model_chain_robust_error_pgd_clean(mnist_first_1000):
    """On a real batch: certified error ≥ PGD error ≥ clean error, and no certified image falls to PGD or FGSM."""
    net, x, y = mnist_first_1000
    x, y = x[:200], y[:200]
    model = lv.zoo.load_paper_model("mnist", shared_path("models", "wong_kolter_2018", "mnist.pth"))
    certified = lv.certify(net, x, y, 0.1)
    pgd_wrong = lv.attack_error(model, lv.pgd(model, x, y, 0.1), y)
    fgsm_wrong = lv.attack_error(model, lv.fgsm(model, x, y, 0.1), y)
    clean_wrong = lv.attack_error(model, x, y)
    assert not (certified & (pgd_wrong | fgsm_wrong)).any()
    assert (~certified).sum() >= pgd_wrong.sum() >= clean_wrong.sum()
    assert pgd_wrong.sum() > clean_wrong.sum()  # the attack does something on this model


@pytest.mark.shared
def test_max_certified_eps_brackets_the_certificate(mnist_first_1000):
    net, x, y = mnist_first_1000
    x = x[:6]
    tol = 1e-2
    radius = lv.certified_radius(net, x, tol=tol, eps_start=0.01, eps_max=0.5)
    assert radius.iterations <= 1 + 6 + 7  # ε = 0, the doubling bracket, log2(1/tol) bisection steps
    pred = radius.labels
    assert (radius.upper - radius.lower <= tol * radius.upper + 1e-12).all()
    assert lv.certify(net, x, pred, radius.lower).all()
    assert lv.certify(net, x, pred, radius.lower * (1 - tol)).all()
    assert not lv.certify(net, x, pred, radius.upper).any()
    torch.testing.assert_close(lv.max_certified_eps(net, x, tol=tol, eps_start=0.01, eps_max=0.5), radius.lower)


def test_detection_uses_the_predicted_class():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.manual_seed(1)
    x = torch.rand(5, 3)
    pred, certified = lv.detect(model, x, 0.0)
    assert pred.tolist() == model(x).argmax(1).tolist()
    assert certified.all()  # at ε = 0 the prediction is its own certificate
    radius = lv.certified_radius(model, x, tol=1e-2)
    assert (radius.lower > 0).all() and radius.labels.tolist() == pred.tolist()


def test_misclassified_examples_have_zero_radius():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    radius = lv.certified_radius(model, x, torch.tensor([1, 1]), tol=1e-3)
    assert radius.lower[0] == 0 and radius.upper[0] == 0  # wrong at ε = 0
    assert radius.lower[1] == pytest.approx(0.5, rel=1e-3)  # margin 1 shrinks by 2ε: exact radius 1/2
    with pytest.raises(ValueError, match="tol"):
        lv.certified_radius(model, x, tol=0.0)
    far = lv.certified_radius(model, x, torch.tensor([0, 1]), eps_max=0.3)
    assert far.lower[1] == pytest.approx(0.3) and far.upper[1] == float("inf")  # still certified at eps_max


def test_a_nan_bound_is_never_a_certificate():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.copy_(torch.tensor([1.0, 0.0]))  # class 0 wins by 1 everywhere: certifiable
    x, y = torch.rand(3, 3), torch.zeros(3, dtype=torch.long)
    assert lv.certify(model, x, y, 0.1).all()
    with torch.no_grad():
        model[0].weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match="parameter 0 of affine block 0 .* contains NaN"):
        lv.certify(model, x, y, 0.1)
    with pytest.raises(ValueError, match="contains NaN"):
        lv.robust_loss(model, x, y, 0.1)
    with torch.no_grad():
        model[0].weight[1, 2] = 1.0
        model[2].bias.copy_(torch.tensor([3e38, -3e38]))  # margins overflow to inf inside the bounds
        model[2].weight.fill_(3e38)
    assert not lv.certify(model, x, y, 0.1).any()
