import numpy as np

from genjax import images


def test_grid_places_images_row_major():
    tiles = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(6)])
    out = images.grid(tiles, rows=2, cols=3, pad=1)
    assert out.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
    assert out[1, 1, 0] == 0 and out[1, 5, 0] == 1 and out[4, 1, 0] == 3 and out[4, 9, 0] == 5


def test_reconstruction_grid_alternates_inputs_and_outputs():
    originals = np.zeros((4, 2, 2, 1), np.uint8)
    recon = np.full((4, 2, 2, 1), 200, np.uint8)
    out = images.reconstruction_grid(originals, recon, cols=2)
    rows = [out[2 + r * 4, 2, 0] for r in range(4)]  # One pixel in each grid row.
    assert rows == [0, 200, 0, 200]


def test_to_uint8_from_both_pixel_ranges():
    np.testing.assert_array_equal(images.to_uint8(np.array([0.0, 1.0])), [0, 255])
    np.testing.assert_array_equal(images.to_uint8(np.array([-1.0, 1.0]), (-1.0, 1.0)), [0, 255])


def test_pca_keeps_the_two_main_directions():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    codes = rng.normal(size=(500, 10)) * np.array([10, 5] + [0.01] * 8)
    xy, explained = images.pca_2d(codes @ basis.T)
    assert xy.shape == (500, 2) and explained > 0.99
    np.testing.assert_allclose(np.abs(np.corrcoef(xy[:, 0], codes[:, 0])[0, 1]), 1, atol=1e-3)


def test_latent_plots_colour_by_class():
    z = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.arange(50) % 3
    deferred, scatter = images.latent_plots(z, labels, ("a", "b", "c"), table_points=100)
    png = images.resolve(deferred)
    assert png.ndim == 3 and png.shape[2] == 3 and png.dtype == np.uint8
    assert scatter.labels[:4] == ["a", "b", "c", "a"]
    np.testing.assert_array_equal(scatter.xy, z.astype(np.float32))


def test_the_native_scatter_takes_the_first_table_points_and_the_png_all():
    z = np.random.default_rng(0).normal(size=(50, 2))
    labels = np.arange(50) % 3
    deferred, scatter = images.latent_plots(z, labels, ("a", "b", "c"), table_points=20)
    assert len(scatter.xy) == len(scatter.labels) == 20
    np.testing.assert_array_equal(scatter.xy, z[:20].astype(np.float32))
    xy, png_labels = deferred.render.args[:2]  # scatter_png(xy, labels, ...) draws all 50.
    assert len(xy) == len(png_labels) == 50


def test_a_redrawn_scatter_is_the_picture_a_fresh_figure_draws():
    """The scatter's figure is kept and redrawn: no earlier points or limits may remain."""
    rng = np.random.default_rng(0)
    names = ("a", "b", "c")
    small = (rng.normal(size=(300, 2)), rng.integers(0, 3, 300))
    wide = (rng.normal(size=(900, 2)) * 5 + 3, rng.integers(0, 3, 900))
    images._scatter_figure.cache_clear()
    fresh = images.scatter_png(*small, names, "latent space")
    other = images.scatter_png(*wide, names, "PCA of 3-D codes (80% of variance)")
    assert images._scatter_figure.cache_info().hits == 1  # The same figure, redrawn.
    assert not np.array_equal(fresh, other)
    np.testing.assert_array_equal(images.scatter_png(*small, names, "latent space"), fresh)
    images._scatter_figure.cache_clear()  # The other title, drawn on a fresh figure.
    np.testing.assert_array_equal(
        images.scatter_png(*wide, names, "PCA of 3-D codes (80% of variance)"), other
    )
    # Points of one class only: the other classes' earlier points are gone too.
    images._scatter_figure.cache_clear()
    only_a = (small[0][:50], np.zeros(50, int))
    fresh_a = images.scatter_png(*only_a, names, "latent space")
    images.scatter_png(*wide, names, "latent space")
    np.testing.assert_array_equal(images.scatter_png(*only_a, names, "latent space"), fresh_a)


def test_the_pasted_legend_is_the_legend_matplotlib_draws():
    """The legend is drawn once and its pixels pasted after each redraw: the picture must be
    the one a figure drawing its legend every time makes, wherever the points lie (points
    reaching the axes' right edge, next to the legend, included)."""
    rng = np.random.default_rng(1)
    names = tuple(f"class {k}" for k in range(10))  # Fashion-MNIST's count: a tall legend.
    xy = rng.normal(size=(2000, 2)) * [1, 3]
    xy[:20, 0] = xy[:, 0].max()  # Markers on the right spine.
    labels = rng.integers(0, 10, 2000)
    images._scatter_figure.cache_clear()
    images.scatter_png(xy[::2] + 7, labels[::2], names, "first")  # Earlier pixels to paste over.
    pasted = images.scatter_png(xy, labels, names, "latent space")
    fig, ax, _, _ = images._scatter_figure(names)
    legend = ax.get_legend()
    legend.set_visible(True)  # The same figure, its legend drawn by matplotlib.
    try:
        fig.canvas.draw()
        drawn = np.array(fig.canvas.buffer_rgba())[..., :3]
    finally:
        legend.set_visible(False)
    assert (drawn < 250).any(axis=-1)[:, int(0.8 * drawn.shape[1]) :].sum() > 500  # A legend.
    np.testing.assert_array_equal(pasted, drawn)
