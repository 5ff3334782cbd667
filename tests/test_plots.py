"""Figure helpers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from lpverify.plots import save_figure


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "line.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


@pytest.mark.parametrize("suffix, magic", [("pdf", b"%PDF-"), ("svg", b"<?xml")])
def test_the_figure_format_follows_the_suffix(tmp_path, suffix, magic):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    assert save_figure(fig, tmp_path / f"line.{suffix}").read_bytes()[: len(magic)] == magic


def test_an_unknown_figure_suffix_is_refused_before_writing(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match=r"\.png, \.pdf, \.svg"):
        save_figure(fig, tmp_path / "line.gif")
    assert not (tmp_path / "line.gif").exists() and not plt.fignum_exists(fig.number)
