"""Figure helpers."""

from __future__ import annotations

import matplotlib.pyplot as plt

from lpverify.plots import save_figure


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "line.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
