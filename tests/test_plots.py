"""jaxcls.plots: figures read back (axes, titles, cell texts, pixels), files written, heatmap
overlays rendered to pixels, and the data previews (show_batch, aug_preview)."""
import jax
import numpy as np
import pytest

from jaxcls import ImageClassifierData, tfms_from_model, transforms_side_on
from jaxcls import plots
from jaxcls.data import tfm_loader
from jaxcls.data import transforms as T
from jaxcls.interpret import ClassificationInterpretation
from jaxcls.train.callbacks import Recorder

from helpers import SZ, TINY, make_folder

plt = plots._plt()
PNG = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close('all')


def shown(ax):
    """The pixels an axis shows (its one image)."""
    assert len(ax.images) == 1
    return np.asarray(ax.images[0].get_array())


def is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG


def rgb(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


# ----------------------------------------------------------------------------- grids

def test_plot_images_grid_titles_and_file(tmp_path):
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    fig = plots.plot_images(ims, titles=list('abcde'), rows=2, fname=tmp_path / 'g.png')
    assert len(fig.axes) == 5                                 # no empty sixth axis
    assert [ax.get_title() for ax in fig.axes] == list('abcde')
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3)
    np.testing.assert_allclose(shown(fig.axes[4]), ims[4] / 255.0, atol=1e-7)
    assert is_png(tmp_path / 'g.png')
    # float 0..1 shows the same pixels as uint8; a list of different sizes works.
    fig = plots.plot_images([ims[0] / 255.0, np.zeros((4, 6, 3))])
    np.testing.assert_allclose(shown(fig.axes[0]), ims[0] / 255.0, atol=1e-6)
    assert shown(fig.axes[1]).shape == (4, 6, 3) and fig.axes[0].get_title() == ''
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (1, 2)   # rows=1 default


def test_plot_images_errors():
    with pytest.raises(ValueError, match=r'float images must be 0..1 pixels, got values from -2.*'
                                         r'data.denorm\(x\)'):
        plots.plot_images(np.full((1, 4, 4, 3), -2.0))
    with pytest.raises(ValueError, match='2 titles for 3 images'):
        plots.plot_images(np.zeros((3, 4, 4, 3)), titles=['a', 'b'])
    with pytest.raises(ValueError, match=r'each image must be \(H, W, 3\) or \(H, W\), got shape '
                                         r'\(4, 4, 5\)'):
        plots.plot_images(np.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match='1 heatmaps for 2 images'):
        plots.plot_images(np.zeros((2, 4, 4, 3)), heatmaps=[np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r'heatmaps\[0\] must hold finite values in \[0, 1\]'):
        plots.plot_images(np.zeros((1, 4, 4, 3)), heatmaps=[np.full((2, 2), 3.0)])


# ----------------------------------------------------------------------------- heatmaps

def test_resize_bilinear():
    a = np.array([[0., 1.], [2., 3.]])
    np.testing.assert_array_equal(plots._resize_bilinear(a, (2, 2)), a)
    np.testing.assert_allclose(plots._resize_bilinear(np.full((3, 5), 0.25), (7, 2)), 0.25)
    up = plots._resize_bilinear(a, (4, 4))
    # Pixel centres: output 0..3 sit at input -0.25, 0.25, 0.75, 1.25 (edges clamped).
    np.testing.assert_allclose(up[0], [0, .25, .75, 1])
    np.testing.assert_allclose(up[:, 0], [0, .5, 1.5, 2])
    np.testing.assert_allclose(up[1, 1], 0.75)    # at (0.25, 0.25): rows .25 and 2.25 -> .75
    np.testing.assert_allclose(plots._resize_bilinear(np.arange(4.)[None], (1, 2)), [[0.5, 2.5]])


def test_overlay_heatmap_blends_only_where_hot():
    import matplotlib
    img = np.full((6, 6, 3), 100, np.uint8)
    np.testing.assert_allclose(plots.overlay_heatmap(img, np.zeros((3, 3))), 100 / 255, atol=1e-6)
    out = plots.overlay_heatmap(img, np.ones((2, 2)))
    top = np.asarray(matplotlib.colormaps[plots.HEATMAP_CMAP](1.0)[:3])
    np.testing.assert_allclose(out, np.broadcast_to(0.5 * 100 / 255 + 0.5 * top, out.shape),
                               atol=1e-6)
    half = plots.overlay_heatmap(img, np.full((1, 1), 0.5))      # opacity alpha * value
    c = np.asarray(matplotlib.colormaps[plots.HEATMAP_CMAP](0.5)[:3])
    np.testing.assert_allclose(half[0, 0], 0.75 * 100 / 255 + 0.25 * c, atol=1e-6)
    assert plots.overlay_heatmap(np.zeros((4, 4)), np.ones((4, 4))).shape == (4, 4, 3)


def test_heatmap_overlay_changes_rendered_pixels_only_where_hot():
    ims = np.full((2, 16, 16, 3), 128, np.uint8)
    hm = np.zeros((4, 4))
    hm[:, :2] = 1.0                          # hot left half, cold right half
    plain = plots.plot_images(ims, titles=['x', 'y'])
    over = plots.plot_images(ims, titles=['x', 'y'], heatmaps=[hm, np.zeros((4, 4))])
    a, b = rgb(plain), rgb(over)
    assert a.shape == b.shape
    H = a.shape[0]
    for k, ax in enumerate(over.axes):
        box = ax.images[0].get_window_extent()
        r0, r1 = int(H - box.y1) + 2, int(H - box.y0) - 2
        w = box.x1 - box.x0
        left = (a[r0:r1, int(box.x0) + 2:int(box.x0 + 0.3 * w)],
                b[r0:r1, int(box.x0) + 2:int(box.x0 + 0.3 * w)])
        right = (a[r0:r1, int(box.x0 + 0.7 * w):int(box.x1) - 2],
                 b[r0:r1, int(box.x0 + 0.7 * w):int(box.x1) - 2])
        assert left[0].size > 100
        np.testing.assert_array_equal(*right)                    # heatmap 0: untouched
        if k == 0:
            assert np.all(np.abs(left[0] - left[1]).sum(-1) > 30)  # heatmap 1: every pixel moved
        else:
            np.testing.assert_array_equal(*left)                 # an all-zero heatmap


# ----------------------------------------------------------------------------- interpretation

CLASSES = ['cat', 'dog']
PROBS = np.array([[.9, .1], [.3, .7], [.6, .4], [.2, .8], [.45, .55]])
TARGS = np.array([0, 0, 1, 1, 0])


@pytest.fixture
def interp():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 11, 11, 3)).astype(np.uint8)
    _, val = T.tfms_from_stats(((0.5,) * 3, (0.25,) * 3), 8)
    return ClassificationInterpretation(PROBS, TARGS, CLASSES, images=images, val_cfg=val)


def test_plot_interpretation_shows_crops_with_titles(interp, tmp_path):
    fig = plots.plot_interpretation(interp, [1, 4], title='Picked', fname=tmp_path / 'i.png')
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ['dog 0.70 (true cat)', 'dog 0.55 (true cat)']
    assert fig._suptitle.get_text() == 'Picked'
    # 11 px cache, sz 8: the centre crop starts at ceil(3 / 2) = 2; denormalised back to /255.
    np.testing.assert_allclose(shown(fig.axes[0]), interp.images[1, 2:10, 2:10] / 255, atol=1e-6)
    assert is_png(tmp_path / 'i.png')
    # Without a transform config the images are shown as stored.
    raw = ClassificationInterpretation(PROBS, TARGS, CLASSES, images=interp.images)
    assert shown(plots.plot_interpretation(raw, [0]).axes[0]).shape == (11, 11, 3)
    with pytest.raises(ValueError, match='has no images; build it with .*from_learner'):
        plots.plot_interpretation(ClassificationInterpretation(PROBS, TARGS, CLASSES), [0])


def test_plot_interpretation_heatmaps_callable_gets_indices(interp):
    seen = []

    def cams(idxs):
        seen.append(list(idxs))
        return [np.ones((2, 2))] * len(idxs)
    fig = plots.plot_interpretation(interp, [3, 0], heatmaps=cams)
    assert seen == [[3, 0]]
    assert not np.allclose(shown(fig.axes[0]), interp.images[3, 2:10, 2:10] / 255)
    fig = plots.plot_most_incorrect(interp, 'cat', heatmaps=cams)
    assert seen[-1] == interp.most_incorrect('cat').tolist() == [1, 4]


def test_most_correct_incorrect_uncertain_plots(interp):
    fig = plots.plot_most_correct(interp, 'cat')
    assert fig._suptitle.get_text() == 'Most correct cat'
    assert [ax.get_title() for ax in fig.axes] == ['cat 0.90 (true cat)']
    fig = plots.plot_most_incorrect(interp, 1, n=1)
    assert fig._suptitle.get_text() == 'Most incorrect dog'
    assert [ax.get_title() for ax in fig.axes] == ['cat 0.60 (true dog)']
    fig = plots.plot_most_uncertain(interp, n=2)
    assert fig._suptitle.get_text() == 'Most uncertain predictions'
    assert [ax.get_title() for ax in fig.axes] == ['dog 0.55 (true cat)', 'cat 0.60 (true dog)']
    assert plots.plot_most_uncertain(interp, 'dog', n=1).axes[0].get_title() == \
        'cat 0.60 (true dog)'
    # Nothing to show is a figure saying so, not an error.
    perfect = ClassificationInterpretation(np.eye(2), [0, 1], CLASSES, images=interp.images[:2])
    fig = plots.plot_most_incorrect(perfect, 'cat')
    assert fig.axes == [] and fig.texts[0].get_text() == 'nothing to show'
    with pytest.raises(ValueError, match='unknown class'):
        plots.plot_most_correct(interp, 'cow')


def test_plot_top_losses(interp, tmp_path):
    fig = plots.plot_top_losses(interp, k=4, fname=tmp_path / 't.png')
    _, idxs = interp.top_losses(4)
    assert idxs.tolist() == [1, 2, 4, 3]            # P(true class) .3, .4, .45, .8 (and .9)
    assert len(fig.axes) == 4 and fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 2)
    assert [ax.get_title() for ax in fig.axes] == [
        'dog 0.70 (true cat)\nloss 1.20', 'cat 0.60 (true dog)\nloss 0.92',
        'dog 0.55 (true cat)\nloss 0.80', 'dog 0.80 (true dog)\nloss 0.22']
    assert is_png(tmp_path / 't.png')
    assert len(plots.plot_top_losses(interp).axes) == 5         # k=9 but only 5 images


def test_plot_confusion_matrix_counts_in_cells(interp, tmp_path):
    cm = np.array([[5, 1], [2, 7]])
    fig = plots.plot_confusion_matrix(cm, ['cats', 'dogs'], fname=tmp_path / 'cm.png')
    ax = fig.axes[0]
    assert len(fig.axes) == 2                                  # the matrix and its colour bar
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert cells == {(0, 0): '5', (0, 1): '1', (1, 0): '2', (1, 1): '7'}
    assert [t.get_text() for t in ax.get_xticklabels()] == ['cats', 'dogs']
    assert [t.get_text() for t in ax.get_yticklabels()] == ['cats', 'dogs']
    assert ax.get_ylabel() == 'Actual' and ax.get_xlabel() == 'Predicted'
    assert ax.get_title() == 'Confusion matrix'
    assert is_png(tmp_path / 'cm.png')
    fig = plots.plot_confusion_matrix(cm, normalize=True)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ['0.17', '0.22', '0.78', '0.83']
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ['0', '1']
    # From an interpretation: its matrix and classes.
    fig = plots.plot_confusion_matrix(interp, cmap='Greens')
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in fig.axes[0].texts}
    assert texts == {(i, j): str(v) for (i, j), v in np.ndenumerate(interp.confusion_matrix())}
    assert fig.axes[0].images[0].get_cmap().name == 'Greens'
    with pytest.raises(ValueError, match=r'square \(c, c\) matrix .* got shape \(2, 3\)'):
        plots.plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match='1 class names for a matrix of 2 classes'):
        plots.plot_confusion_matrix(cm, ['cats'])


def test_plot_confusion_matrix_multi_label():
    probs = np.array([[.9, .2, .6], [.2, .8, .3], [.7, .7, .1]])
    targs = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    interp = ClassificationInterpretation(probs, targs, ['a', 'b', 'c'], is_multi=True)
    fig = plots.plot_confusion_matrix(interp)
    assert [ax.get_title() for ax in fig.axes] == ['a', 'b', 'c']
    b = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
         for t in fig.axes[1].texts}
    assert b == {(0, 0): '1', (0, 1): '1', (1, 0): '0', (1, 1): '1'}   # [[TN, FP], [FN, TP]]


def test_lr_plots_still_work(tmp_path):
    rec = Recorder('lr_find')
    lrs = np.geomspace(1e-5, 1, 40)
    rec.record(lrs, (lrs - 0.01) ** 2 + 1, [0.9] * 40)
    rec.suggestions = {'valley': float(lrs[20])}
    fig = rec.plot(n_skip=2, n_skip_end=2, fname=tmp_path / 'lr.png')
    assert fig.axes[0].get_xscale() == 'log' and len(fig.axes[0].lines) == 2
    assert is_png(tmp_path / 'lr.png')
    assert len(rec.plot_lr(show_moms=True).axes) == 2


# ----------------------------------------------------------------------------- data previews

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    path = make_folder(tmp_path_factory.mktemp('plots'), n_train=4, n_valid=3)
    tfms = tfms_from_model(TINY, SZ, aug_tfms=transforms_side_on, max_zoom=1.1)
    return ImageClassifierData.from_paths(path, bs=4, tfms=tfms, quiet=True)


def test_show_batch(data, tmp_path):
    fig = plots.show_batch(data, 6, rows=2, fname=tmp_path / 'b.png')
    assert len(fig.axes) == 6 and fig.axes[0].get_subplotspec().get_geometry()[:2] == (2, 3)
    imgs = [shown(ax) for ax in fig.axes]
    assert all(im.shape == (SZ, SZ, 3) and im.min() >= 0 and im.max() <= 1 for im in imgs)
    assert {ax.get_title() for ax in fig.axes} <= set(data.classes)
    assert is_png(tmp_path / 'b.png')
    # The pixels are augment(key) of the picked images, denormalised, titled with their class.
    x01, titles, idxs = plots.batch_images(data, 6)
    np.testing.assert_allclose(np.stack(imgs), x01, atol=1e-6)
    assert titles == [data.classes[data.trn_y[i]] for i in idxs] == [ax.get_title()
                                                                       for ax in fig.axes]
    _, k_aug = jax.random.split(jax.random.PRNGKey(0))
    augment = tfm_loader.jitted('augment')  # T.augment under jit: the same pixels, compiled once
    ref = T.denorm(np.asarray(augment(k_aug, np.asarray(data.trn_ds.x[idxs]), data.tfms[0])),
                   data.tfms[0])
    np.testing.assert_allclose(x01, ref, atol=1e-6)
    other = np.stack([shown(ax) for ax in plots.show_batch(data, 6, rows=2, key=1).axes])
    assert not np.allclose(other, x01)
    # Validation: the centre crop of the cache, no randomness.
    fig = plots.show_batch(data, 100, is_train=False, key=3)
    assert len(fig.axes) == 6                                  # only 6 validation images
    v01, _, vidx = plots.batch_images(data, 100, is_train=False, key=3)
    assert vidx.tolist() == list(range(6))
    crop = T.center_crop(np.asarray(data.val_ds.x), SZ) / 255.0
    np.testing.assert_allclose(v01, crop, atol=1e-6)
    with pytest.raises(ValueError, match='n=0'):
        plots.show_batch(data, 0)


def test_aug_preview(data, tmp_path):
    fig = plots.aug_preview(data, 2, n=4, rows=2, key=5, fname=tmp_path / 'a.png')
    assert len(fig.axes) == 4
    imgs = np.stack([shown(ax) for ax in fig.axes])
    assert imgs.shape == (4, SZ, SZ, 3)
    samples = tfm_loader.jitted('aug_samples')(jax.random.PRNGKey(5), np.asarray(data.trn_ds.x[2]),
                                                data.tfms[0], 4)
    ref = T.denorm(np.asarray(samples), data.tfms[0])
    np.testing.assert_allclose(imgs, ref, atol=1e-6)
    assert len({im.tobytes() for im in imgs}) > 1               # they are different augmentations
    assert fig._suptitle.get_text() == f'{data.trn_ds.fnames[2]} ({data.classes[data.trn_y[2]]})'
    assert is_png(tmp_path / 'a.png')
    with pytest.raises(ValueError, match='idx=99 is out of range for 8 training images'):
        plots.aug_preview(data, 99)


# ---------------------------------------------------------------- fastai 0.7's plots
def test_fastai_plots_takes_either_layout_and_returns_none(tmp_path):
    ims = np.zeros((4, 6, 6, 3), np.float32)
    ims[:, :, :, 0] = np.linspace(0, 1, 4)[:, None, None]
    assert plots.plots(ims, rows=2, titles=list('abcd'), maintitle='four') is None
    fig = plt.gcf()
    assert len(fig.axes) == 4 and fig.axes[3].get_title() == 'd'
    assert fig._suptitle.get_text() == 'four'
    np.testing.assert_allclose(shown(fig.axes[2])[..., 0], ims[2, ..., 0])
    plt.close('all')
    plots.plots(np.moveaxis(ims, 3, 1), interp=True)       # fastai's NCHW
    fig = plt.gcf()
    np.testing.assert_allclose(shown(fig.axes[2]), ims[2])
    assert fig.axes[0].images[0].get_interpolation() == 'bilinear'


def test_plots_from_files_and_load_img_id(tmp_path):
    from PIL import Image
    Image.new('RGB', (12, 8), (255, 0, 0)).save(tmp_path / 'a.png')
    Image.new('RGB', (5, 5), (0, 0, 255)).save(tmp_path / 'b.jpg')
    plots.plots_from_files([tmp_path / 'a.png', str(tmp_path / 'b.jpg')], titles=['cat', 'dog'],
                           maintitle='Single-label classification')
    fig = plt.gcf()
    assert [ax.get_title() for ax in fig.axes] == ['cat', 'dog']
    assert shown(fig.axes[0]).shape[:2] == (8, 12)          # each image at its own size
    assert fig._suptitle.get_text() == 'Single-label classification'

    class DS:
        fnames = ['a.png', 'b.jpg']
    img = plots.load_img_id(DS, 1, tmp_path)
    assert img.shape == (5, 5, 3) and img.dtype == np.uint8 and img[2, 2, 2] > 200


def test_plot_confusion_matrix_takes_fastais_arguments_in_fastais_order():
    cm = np.array([[3, 1], [0, 4]])
    fig = plots.plot_confusion_matrix(cm, ['cats', 'dogs'], True, 'Normalised', plt.cm.Greens)
    ax = fig.axes[0]
    assert ax.get_title() == 'Normalised' and ax.images[0].get_cmap().name == 'Greens'
    assert sorted(t.get_text() for t in ax.texts) == ['0.00', '0.25', '0.75', '1.00']


def test_star_import_gives_pyplot():
    ns = {}
    exec('from jaxcls.plots import *', ns)
    assert ns['plt'] is plt and callable(ns['plots']) and 'np' not in ns
