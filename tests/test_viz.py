"Figures show what the batch holds: labels are the target rows, boxes outline the partner's pixels"
import re
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np, torch, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
import mixcut_nb as mc
from mixcut_nb import data, viz
from mixcut_nb.viz import _PAD, _tile_x0

@settings(max_examples=300, deadline=None)
@given(w=st.lists(st.floats(0, 1), min_size=1, max_size=12), k=st.integers(1, 4), min_weight=st.floats(0, 1))
def test_soft_label_shows_the_top_weights_of_the_row(w, k, min_weight):
    row = torch.tensor(w, dtype=torch.float32)
    names = [f'class {i}' for i in range(len(w))]
    label = viz.soft_label(row, names, k=k, min_weight=min_weight)
    parts = label.split(' / ')
    assert 1 <= len(parts) <= k
    shown = [re.fullmatch(r'class (\d+) (1\.00|\.\d\d)', p) for p in parts]
    assert all(shown), label
    ids, ws = [int(m.group(1)) for m in shown], [float(m.group(2)) for m in shown]
    assert len(set(ids)) == len(ids)
    for i, v in zip(ids, ws): assert abs(v - row[i].item()) <= 0.005 + 1e-6
    assert row[ids[0]] == row.max()                                   # the largest always comes first
    assert all(row[i] >= min_weight for i in ids[1:])
    assert all(a >= b for a, b in zip(row[ids].tolist(), row[ids].tolist()[1:]))

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(['batch', 'pair', 'elem']), half=st.integers(1, 3), H=st.integers(4, 24), W=st.integers(4, 24),
       smoothing=st.sampled_from([0., 0.1]), minmax=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_show_mix_matches_the_mixed_batch(mode, half, H, W, smoothing, minmax, seed):
    B, nc = 2 * half, 5
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(B, 3, H, W, generator=g), torch.randint(0, nc, (B,), generator=g)
    kw = dict(mixup_alpha=0., cutmix_minmax=(.3, .8)) if minmax else dict(mixup_alpha=1., cutmix_alpha=1.)
    mf = mc.Mixup(**kw, mode=mode, label_smoothing=smoothing, num_classes=nc, rng=np.random.default_rng(seed))
    xm, ym = mf(x.clone(), y)
    fig, (ax0, ax1) = viz.show_mix(x, y, xm, ym, None, mf.last_params)
    p = mf.last_params.per_element()
    try:
        assert viz._read_labels(ax0) == [(None, {str(int(c)): 1.}) for c in y]
        for i, (op, shown) in enumerate(viz._read_labels(ax1)):
            assert op == ('cutmix' if p.cutmix[i] else 'mixup' if p.mixup[i] else 'unmixed')
            for c, w in shown.items(): assert abs(w - ym[i, int(c)].item()) <= 0.005 + 1e-6
        img = np.asarray(ax1.images[0].get_array())
        assert img.shape == (H + 2 * _PAD, B * (W + _PAD) + _PAD, 3)
        drawn = {}
        for patch in ax1.patches:
            (px, py), w, h = patch.get_xy(), patch.get_width(), patch.get_height()
            i = int((px + .5 - _PAD) // (W + _PAD))
            drawn[i] = (int(py + .5) - _PAD, int(py + .5) - _PAD + h, int(px + .5) - _tile_x0(i, W), int(px + .5) - _tile_x0(i, W) + w)
        want = {i: tuple(int(v) for v in p.boxes[i]) for i in np.flatnonzero(p.cutmix)
                if p.boxes[i, 1] > p.boxes[i, 0] and p.boxes[i, 3] > p.boxes[i, 2]}
        assert drawn == want
        for i, (yl, yh, xl, xh) in drawn.items():                     # inside each box: the partner, as displayed
            x0 = _tile_x0(i, W)
            np.testing.assert_allclose(img[_PAD + yl:_PAD + yh, x0 + xl:x0 + xh],
                                       viz.denormalize(x[B - 1 - i]).permute(1, 2, 0)[yl:yh, xl:xh].numpy(), atol=1e-6)
    finally: plt.close(fig)

def test_imshow_undoes_the_normalization():
    img = torch.rand(3, 5, 7)
    m, s = torch.tensor(data.IMAGENET_DEFAULT_MEAN).view(3, 1, 1), torch.tensor(data.IMAGENET_DEFAULT_STD).view(3, 1, 1)
    ax = viz.imshow((img - m) / s, title=['a', 1])
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), img.permute(1, 2, 0).numpy(), atol=1e-6)
    assert ax.get_title() == 'a, 1'
    plt.close(ax.figure)

@pytest.mark.parametrize('call, match', [
    (lambda: viz.imshow(torch.zeros(2, 3, 4, 4)), r'\(C, H, W\)'),
    (lambda: viz.denormalize([1, 2]), 'torch.Tensor'),
    (lambda: viz.denormalize(torch.zeros(4, 4)), '`x`'),
    (lambda: viz.soft_label(torch.zeros(3), classes=['a', 'b']), '`classes`'),
    (lambda: viz.soft_label(torch.zeros(3), k=0), '`k`'),
    (lambda: viz.show_batch(torch.zeros(3, 4, 4)), '`x`'),
    (lambda: viz.show_batch(torch.zeros(2, 3, 4, 4), torch.zeros(3)), '`target`'),
    (lambda: viz.show_batch(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 3)), '`target`'),
    (lambda: viz.show_batch(torch.zeros(2, 3, 4, 4), params='p'), '`params`'),
    (lambda: viz.show_mix(torch.zeros(2, 3, 4, 4), torch.zeros(2), torch.zeros(2, 3, 4, 5), torch.zeros(2, 5)), '`xm`'),
])
def test_errors_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match): call()
    plt.close('all')
