"""VNNLIB reader: the real MNIST benchmark properties, the semantics of the result, and rejected syntax."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
import torch

import lpverify as lv
from conftest import shared_path
from lpverify.vnnlib import VnnlibError, parse_vnnlib, read_vnnlib

# prop k -> MNIST test index (label), from shared/data/README.md (checked there against the images).
PROPS_2022 = "0:762(4) 1:9534(7) 2:49(4) 3:8595(0) 4:8674(3) 5:9334(6) 6:1948(5) 7:6146(5) 8:9192(3) 9:6851(8) 10:7759(4) 11:5685(0) 12:6112(9) 13:8919(8) 14:6354(6)"
PROPS_2021 = "0:8661(8) 1:2315(1) 2:5737(0) 3:1206(7) 4:905(2) 5:6565(9) 6:8411(3) 7:7384(9) 8:6258(6) 9:9326(8) 10:7261(0) 11:9236(0) 12:7827(9) 13:1869(9) 14:7790(1)"


def mapping(text: str) -> dict[int, tuple[int, int]]:
    return {int(k): (int(i), int(c)) for k, i, c in re.findall(r"(\d+):(\d+)\((\d)\)", text)}


def read_text(path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


@pytest.fixture(scope="module")
def mnist_test():
    x, y = lv.data.load_dataset("mnist", "test", shared_path("data"))
    return x.numpy().reshape(len(x), -1), y.numpy()


def assert_robustness_structure(prop, label: int) -> None:
    """Nine disjuncts ``Y_j ≥ Y_label`` (j ≠ label, in order), i.e. ``(e_label − e_j)·y ≤ 0``."""
    others = [j for j in range(10) if j != label]
    assert len(prop.disjuncts) == 9
    eye = np.eye(10)
    for (a, b), j in zip(prop.disjuncts, others):
        np.testing.assert_array_equal(a, (eye[label] - eye[j])[None])
        np.testing.assert_array_equal(b, [0.0])


def assert_box(prop, image: np.ndarray, eps: float) -> None:
    """The box is clip(x ± ε, 0, 1), ε rounded to float32 as the benchmark generators did."""
    e = np.float32(eps)
    np.testing.assert_allclose(prop.input_lower, np.clip(image - e, 0, 1), rtol=0, atol=1e-7)
    np.testing.assert_allclose(prop.input_upper, np.clip(image + e, 0, 1), rtol=0, atol=1e-7)
    assert np.all(prop.input_upper - prop.input_lower <= 2 * eps + 1e-7)
    assert prop.input_contains(image) and not prop.input_contains(np.clip(image + 2 * eps, 0, 1) + 1e-3)


@pytest.mark.shared
@pytest.mark.parametrize(
    "folder, pattern, props",
    [("mnist_fc/vnnlib", "prop_*.vnnlib.gz", PROPS_2022), ("mnistfc_2021/vnnlib", "prop_*.vnnlib", PROPS_2021)],
    ids=["mnist_fc-2022", "mnistfc-2021"],
)
def test_mnist_fc_properties(folder, pattern, props, mnist_test):
    x, y = mnist_test
    index = mapping(props)
    paths = sorted(shared_path("data", "vnncomp", *folder.split("/")).glob(pattern))
    assert len(paths) == 30
    for path in paths:
        k, eps = re.fullmatch(r"prop_(\d+)_([\d.]+)\.vnnlib(\.gz)?", path.name).groups()[:2]
        prop = read_vnnlib(path, n_inputs=784, n_outputs=10)
        i, label = index[int(k)]
        comment = int(re.search(r"label: (\d)", read_text(path)).group(1))
        assert comment == label == y[i]
        assert prop.n_inputs == 784 and prop.n_outputs == 10
        assert_robustness_structure(prop, label)
        assert_box(prop, x[i], float(eps))


@pytest.mark.shared
def test_eran_specs(mnist_test):
    x, y = mnist_test
    paths = sorted(shared_path("data", "vnncomp", "eran_2021", "specs", "mnist").glob("*.vnnlib"))
    assert len(paths) == 72
    for path in paths:
        i, eps = re.fullmatch(r"mnist_spec_idx_(\d+)_eps_([\d.]+)\.vnnlib", path.name).groups()
        prop = read_vnnlib(path, 784, 10)
        assert_robustness_structure(prop, int(y[int(i)]))
        assert_box(prop, x[int(i)], float(eps))


@pytest.mark.shared
def test_gzipped_and_plain_copies_parse_identically(tmp_path):
    plain = shared_path("data", "vnncomp", "mnistfc_2021", "vnnlib", "prop_3_0.05.vnnlib")
    gz = shared_path("data", "vnncomp", "mnist_fc", "vnnlib", "prop_3_0.05.vnnlib.gz")
    (tmp_path / "a.vnnlib.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "b.vnnlib").write_bytes(gzip.decompress(gz.read_bytes()))
    for original, copy in ((plain, tmp_path / "a.vnnlib.gz"), (gz, tmp_path / "b.vnnlib")):
        p, q = read_vnnlib(original), read_vnnlib(copy)
        np.testing.assert_array_equal(p.input_lower, q.input_lower)
        np.testing.assert_array_equal(p.input_upper, q.input_upper)
        assert len(p.disjuncts) == len(q.disjuncts)
        for (a, b), (c, d) in zip(p.disjuncts, q.disjuncts):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


@pytest.mark.shared
def test_mnist_fc_images_violate_exactly_when_misclassified(mnist_test):
    """The benchmark image lies in its box; violated_by(f(x)) is misclassification of f(x)."""
    pytest.importorskip("onnx")
    x, _ = mnist_test
    index = mapping(PROPS_2022)
    net = lv.load_onnx(shared_path("data", "vnncomp", "mnist_fc", "onnx", "mnist-net_256x2.onnx.gz"), input_shape=(784,))
    outcomes = []
    for path in sorted(shared_path("data", "vnncomp", "mnist_fc", "vnnlib").glob("prop_*_0.03.vnnlib.gz")):
        prop = read_vnnlib(path, 784, 10)
        i, label = index[int(path.name.split("_")[1])]
        assert prop.input_contains(x[i])
        with torch.no_grad():
            out = net(torch.from_numpy(x[i]).view(1, 784))[0].numpy()
        assert prop.violated_by(out) == (out.argmax() != label)
        outcomes.append(prop.violated_by(out))
        # Point values are trivially "bounds" for the single point x: they prove the property iff x is classified right.
        c, d, _ = prop.objectives()
        assert prop.verified_by(c @ out) == (not prop.violated_by(out))
    assert not all(outcomes)  # the net classifies most benchmark images correctly


SYNTHETIC = """; a synthetic property (with a comment holding parentheses: label (4))
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (>= 0.5 X_0))
(assert (and (>= X_0 -0.25) (= X_1 1e-1)))
(assert (<= (+ Y_0 (* -2.0 Y_2)) 0.2))
(assert (or
    (and (>= Y_1 Y_0) (<= Y_1 3))
    (and (<= (- Y_2) (- 1.5)))
))
"""


def test_synthetic_property_semantics():
    prop = parse_vnnlib(SYNTHETIC, "synthetic.vnnlib", n_inputs=2, n_outputs=3)
    np.testing.assert_array_equal(prop.input_lower, [-0.25, 0.1])
    np.testing.assert_array_equal(prop.input_upper, [0.5, 0.1])
    # The top-level Y constraint is conjoined into both disjuncts of the (or ...).
    (a0, b0), (a1, b1) = prop.disjuncts
    np.testing.assert_array_equal(a0, [[1, 0, -2], [1, -1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(b0, [0.2, 0, 3])
    np.testing.assert_array_equal(a1, [[1, 0, -2], [0, 0, -1]])
    np.testing.assert_array_equal(b1, [0.2, -1.5])
    assert prop.violated_by(np.array([0.0, 1.0, 0.0]))  # disjunct 0
    assert prop.violated_by(np.array([0.0, -1.0, 2.0]))  # disjunct 1 only
    assert not prop.violated_by(np.array([0.0, -1.0, 1.0]))
    assert not prop.violated_by(np.array([1.0, 0.0, 0.0]))
    assert prop.violated_by(np.array([0.0, -1.0, 1.5]))  # on the boundary of disjunct 1: ≤ is not strict
    c, d, owner = prop.objectives()
    np.testing.assert_array_equal(c, np.vstack([a0, a1]))
    np.testing.assert_array_equal(d, -np.concatenate([b0, b1]))
    np.testing.assert_array_equal(owner, [0, 0, 0, 1, 1])
    assert prop.verified_by(np.array([1.0, -1, -1, -1, -1]))  # row 0 excludes disjunct 0, row 4 disjunct 1
    assert not prop.verified_by(np.array([1.0, -1, -1, -1, -2]))  # disjunct 1 survives
    assert not prop.verified_by(np.array([0.2, -1, -1, -1, -1]))  # lower + d == 0 excludes nothing
    assert prop.input_contains([0.5, 0.1]) and not prop.input_contains([0.6, 0.1])


HEADER = """; header
(declare-const X_0 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (<= X_0 1.0))
(assert (>= X_0 0.0))
"""


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("(assert (< Y_0 Y_1))", 7, "strict inequality '<'"),
        ("(assert (foo Y_0 Y_1))", 7, "unsupported function symbol 'foo'"),
        ("(assert (<= (exp Y_0) 1))", 7, "unsupported function symbol 'exp'"),
        ("(assert (<= Y_7 Y_1))", 7, "Y_7 is used but never declared"),
        ("(assert (<= (* Y_0 Y_1) 1))", 7, "nonlinear term"),
        ("(assert (<= Y_0 Y_1)))", 7, "unbalanced ')'"),
        ("(assert (<= Y_0 Y_1)\n\n(assert (>= Y_0 0))\n", 7, "unbalanced '('"),
        ("(assert (or (and (<= X_0 0.5)) (and (>= X_0 0.6))))", 7, "input constraints inside (or"),
        ("(assert (<= X_0 Y_0))", 7, "mixing inputs and outputs"),
        ("(assert (or\n    (and (>= Y_0 Y_1))\n    (and (> Y_1 Y_0))\n))", 9, "strict inequality '>'"),
        ("(declare-const X_1 Int)", 7, "only Real"),
        ("(declare-const X_2 Real)\n(assert (<= X_2 1))\n(assert (>= X_2 0))", 7, "X_2 is declared but X_1 is not"),
        ("(push 1)", 7, "unsupported command 'push'"),
    ],
)
def test_malformed_properties_name_file_and_line(tmp_path, body, line, fragment):
    path = tmp_path / "bad_prop.vnnlib"
    path.write_text(HEADER + body + "\n")
    with pytest.raises(VnnlibError) as info:
        read_vnnlib(path)
    message = str(info.value)
    assert f"bad_prop.vnnlib:{line}:" in message
    assert fragment in message


def test_unbounded_input_and_count_mismatch_are_rejected(tmp_path):
    path = tmp_path / "open.vnnlib"
    path.write_text(HEADER.replace("(assert (>= X_0 0.0))\n", "") + "(assert (>= Y_0 Y_1))\n")
    with pytest.raises(VnnlibError, match=r"open\.vnnlib: input X_0 \(declared on line 2\) has no lower bound"):
        read_vnnlib(path)
    ok = tmp_path / "ok.vnnlib"
    ok.write_text(HEADER + "(assert (>= Y_0 Y_1))\n")
    assert read_vnnlib(ok, 1, 2).disjuncts[0][0].tolist() == [[-1.0, 1.0]]
    with pytest.raises(VnnlibError, match="declares 2 outputs but 10 were expected"):
        read_vnnlib(ok, n_inputs=1, n_outputs=10)
    with pytest.raises(FileNotFoundError, match="missing.vnnlib"):
        read_vnnlib(tmp_path / "missing.vnnlib")
