"ResizeMix, FMix, SaliencyMix and MixChoice: invariants in every mode, fast paths against their references, the laws of the draws"
import numpy as np, torch, pytest
import mixcut_nb
from mixcut_nb import Mixup, ResizeMix, FMix, SaliencyMix, MixChoice
from mixcut_nb.beyond import fourier_masks, saliency_map, resizemix_reference, fmix_reference, MaskParams, _shrink
from mixcut_nb.mixing import use_kernel, mix_reference
from mixcut_nb import fused

METHODS = [ResizeMix, FMix, SaliencyMix]
MODES = ['batch', 'pair', 'elem']

def batch(B=6, H=20, W=28, dtype=torch.float32, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, H, W, generator=g).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x

def partner_source(x, p, cls):
    "What each element's pixels may be besides its own: the partner, or for ResizeMix the partner shrunk into its box"
    if cls is not ResizeMix: return x.flip(0)
    src, e = x.flip(0).clone(), p.per_element()
    for i in np.flatnonzero(e.cutmix):
        yl, yh, xl, xh = e.boxes[i].tolist()
        src[i, :, yl:yh, xl:xh] = _shrink(x.flip(0)[i:i + 1], (yh - yl, xh - xl))[0]
    return src

@pytest.mark.parametrize('cls', METHODS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('seed', range(6))
def test_every_pixel_is_own_or_partners_and_the_partner_weighs_its_share(cls, mode, seed):
    B = 6 if mode == 'pair' else 5 + seed % 2                  # odd batches too: the middle element is its own partner
    x, y = batch(B, seed=seed), torch.tensor([0, 1, 2, 3, 4, 5][:B])
    fn = cls(mode=mode, label_smoothing=0., num_classes=6, rng=np.random.default_rng(seed))
    xm, ym = fn(x.clone(), y)
    p, src = fn.last_params, None
    src = partner_source(x, p, cls)
    own, other = (xm == x).all(1), (xm == src).all(1)           # (B, H, W)
    assert (own | other).all()
    took = ~own & other                                          # pixels that are the partner's only
    e = p.per_element()
    for i in range(B):
        if B - 1 - i == i: assert torch.equal(xm[i], x[i]) or cls is ResizeMix; continue
        share = 1 - float(e.lam[i])
        if cls is FMix: assert took[i].float().mean().item() == pytest.approx(share, abs=1e-6)   # mask pixels, exactly
        else:
            yl, yh, xl, xh = e.boxes[i]
            assert share == pytest.approx((yh - yl) * (xh - xl) / (x.shape[2] * x.shape[3]), abs=1e-6)
            assert not took[i][~_inside(e.boxes[i], x.shape)].any()
        assert ym[i, y[B - 1 - i]].item() == pytest.approx(share, abs=1e-6)
        assert ym[i].sum().item() == pytest.approx(1., abs=1e-5)

def _inside(box, shape):
    m = torch.zeros(shape[-2:], dtype=torch.bool); yl, yh, xl, xh = box; m[yl:yh, xl:xh] = True
    return m

@pytest.mark.parametrize('cls', METHODS)
@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('channels_last', [False, True])
def test_fast_path_is_the_reference_bit_for_bit(cls, mode, dtype, channels_last):
    for seed in range(3):
        x = batch(8, 24, 30, dtype, seed, channels_last)
        fn = cls(mode=mode, num_classes=8, rng=np.random.default_rng(seed))
        xm, ym = fn(x.clone(), torch.arange(8))
        assert torch.equal(xm, fn.reference(x, fn.last_params))
        fn2 = cls(mode=mode, num_classes=8, rng=np.random.default_rng(seed))
        with use_kernel('reference'): xr, yr = fn2(x.clone(), torch.arange(8))
        assert torch.equal(xm, xr) and torch.equal(ym, yr)

@pytest.mark.skipif(not fused.available(), reason='the C loop was not built')
@pytest.mark.parametrize('B', [1, 2, 5, 8])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.uint8])
@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem', 'half'])
def test_the_c_loop_pastes_by_mask_as_the_reference(B, dtype, mode):
    if mode in ('pair', 'half') and B % 2: pytest.skip('pair and half need an even batch')
    rng = np.random.default_rng(B)
    n = {'batch': 1, 'elem': B}.get(mode, B // 2)
    x = (torch.rand(B, 3, 9, 13) * 255).to(dtype)
    for layout in (x, x.contiguous(memory_format=torch.channels_last)):
        p = MaskParams(np.ones(n, np.float32 if mode != 'batch' else np.float64), np.zeros(n, bool), rng.random(n) < .8,
                       np.zeros((n, 4), np.int64), mode, B, rng.random((n, 9, 13)) < .5)
        ref = fmix_reference(layout, p) if mode != 'half' else None
        y = layout.clone()
        assert fused.mix_c_(y, p)
        if mode == 'half':       # the second half is left alone, as in the C loop's 'half' mode
            e = p.per_element(); keep = torch.from_numpy(e.masks | ~e.cutmix[:, None, None])[:, None]
            ref = torch.where(keep, layout, layout.flip(0))
        assert torch.equal(y, ref)

def test_autograd_through_every_method():
    for cls in METHODS:
        w = torch.rand(4, 3, 16, 16, requires_grad=True)
        fn = cls(mode='elem', num_classes=4, rng=np.random.default_rng(0))
        xm, _ = fn(w * 2, torch.arange(4))             # a non-leaf that requires grad
        xm.sum().backward()
        assert w.grad is not None and w.grad.sum().item() == pytest.approx(2 * w.numel(), rel=1e-5) or cls is ResizeMix
        assert torch.equal(xm.detach(), fn.reference(w.detach() * 2, fn.last_params))

@pytest.mark.parametrize('cls', METHODS)
def test_prob_zero_and_switched_off_leave_the_batch_alone(cls):
    x = batch(4)
    for fn in (cls(prob=0., num_classes=4), cls(num_classes=4)):
        fn.mixup_enabled = fn.mix_prob == 0.          # prob 0 while on, then prob 1 while off
        xm, ym = fn(x.clone(), torch.arange(4))
        assert torch.equal(xm, x) and torch.equal(ym.argmax(1), torch.arange(4))

@pytest.mark.parametrize('cls', METHODS)
@pytest.mark.parametrize('mode', MODES)
def test_same_generator_seed_same_call_and_global_seed_too(cls, mode):
    x = batch(6)
    runs = []
    for _ in range(2):
        fn = cls(mode=mode, num_classes=6, rng=np.random.default_rng(7)); runs.append(fn(x.clone(), torch.arange(6)))
    np.random.seed(3); a = cls(mode=mode, num_classes=6)(x.clone(), torch.arange(6))
    np.random.seed(3); b = cls(mode=mode, num_classes=6)(x.clone(), torch.arange(6))
    for (x1, y1), (x2, y2) in (runs, (a, b)): assert torch.equal(x1, x2) and torch.equal(y1, y2)

def test_resizemix_scale_law():
    p = ResizeMix(scale=(.2, .6), mode='elem', rng=np.random.default_rng(0), num_classes=2).draw(20000, (3, 100, 150))
    h, w = p.boxes[:, 1] - p.boxes[:, 0], p.boxes[:, 3] - p.boxes[:, 2]
    tau = h / 100
    assert tau.min() >= .2 and tau.max() < .6 and tau.mean() == pytest.approx(.4 - .005, abs=.003)   # int() floors: half a pixel off
    assert np.all(np.abs(w / 150 - tau) < .02)                          # one tau for both sides
    assert p.boxes[:, 0].min() == 0 and (p.boxes[:, 1] == 100).any()     # positions reach both edges
    yl = p.boxes[:, 0] / np.maximum(100 - h, 1)
    assert yl.mean() == pytest.approx(.5, abs=.02)                        # uniform where the box fits

def test_fmix_lam_law_and_exact_mask_shares():
    p = FMix(alpha=.5, mode='elem', rng=np.random.default_rng(0), num_classes=2).draw(3000, (3, 16, 24))
    lam = p.lam.astype(np.float64)
    assert lam.mean() == pytest.approx(.5, abs=.02) and lam.var() == pytest.approx(1 / 8, abs=.01)   # Beta(.5, .5)
    assert np.array_equal(p.masks.sum((1, 2)), np.rint(lam * 384).astype(int))
    m = fourier_masks(np.array([0., 1., .5]), (5, 7), rng=np.random.default_rng(0))
    assert m[0].sum() == 0 and m[1].all() and m[2].sum() == 18

def test_fmix_masks_are_low_frequency():
    "Neighbouring pixels mostly agree: the mask is made of blobs, not salt and pepper"
    m = fourier_masks(np.full(200, .5), (32, 32), rng=np.random.default_rng(0))
    agree = (m[:, 1:] == m[:, :-1]).mean()
    assert agree > .85
    rough = fourier_masks(np.full(200, .5), (32, 32), decay_power=0., rng=np.random.default_rng(0))
    assert (rough[:, 1:] == rough[:, :-1]).mean() < .6                  # white noise: about half agree

@pytest.mark.parametrize('where', [(5, 7), (40, 50), (70, 12)])
def test_saliencymix_box_is_centred_on_a_synthetic_peak(where):
    cy, cx = where
    x = torch.rand(2, 3, 80, 64, generator=torch.Generator().manual_seed(0)) * .1
    x[0, :, cy - 3:cy + 3, cx - 3:cx + 3] = 1.                          # element 0 is element 1's partner
    p = SaliencyMix(mode='elem', num_classes=2, rng=np.random.default_rng(0)).draw(x)
    py, px = p.peaks[1]
    assert abs(py - cy) <= 3 and abs(px - cx) <= 3
    yl, yh, xl, xh = p.boxes[1]
    if p.cutmix[1]: assert yl <= py <= yh and xl <= px <= xh

def test_saliency_map_on_the_batch_device_and_shape():
    s = saliency_map(torch.rand(3, 1, 50, 40), size=32)
    assert s.shape == (3, 32, 32) and s.dtype == torch.float32 and torch.allclose(s.flatten(1).amax(1), torch.ones(3))

def test_mixchoice_draws_with_p_and_passes_rng_and_switch():
    mc = MixChoice([Mixup(num_classes=4), ResizeMix(num_classes=4), FMix(num_classes=4)], p=[.5, .3, .2], rng=np.random.default_rng(0))
    counts = {}
    for _ in range(1000):
        mc(torch.rand(4, 3, 8, 8), torch.arange(4))
        counts[type(mc.last_method).__name__] = counts.get(type(mc.last_method).__name__, 0) + 1
        assert mc.last_params is mc.last_method.last_params
    assert counts['Mixup'] / 1000 == pytest.approx(.5, abs=.05) and counts['FMix'] / 1000 == pytest.approx(.2, abs=.04)
    g = np.random.default_rng(1); mc.rng = g
    assert all(m.rng is g for m in mc.methods)
    mc.mixup_enabled = False
    assert not mc.mixup_enabled and not any(m.mixup_enabled for m in mc.methods)

def test_mixchoice_is_reproducible_from_its_rng():
    outs = []
    for _ in range(2):
        mc = MixChoice([Mixup(num_classes=4, cutmix_alpha=1.), FMix(num_classes=4), SaliencyMix(num_classes=4)], rng=np.random.default_rng(5))
        outs.append([mc(batch(4, seed=i), torch.arange(4)) for i in range(6)])
    for (a, b), (c, d) in zip(*outs): assert torch.equal(a, c) and torch.equal(b, d)

@pytest.mark.parametrize('make, msg', [
    (lambda: ResizeMix(scale=(0, .5)), '`scale`'), (lambda: ResizeMix(scale=(.5, 1.2)), '`scale`'),
    (lambda: ResizeMix(scale='big'), '`scale`'), (lambda: FMix(alpha=-1.), '`alpha`'), (lambda: FMix(decay_power=-1), '`decay_power`'),
    (lambda: SaliencyMix(alpha=0), '`alpha`'), (lambda: FMix(mode='half'), '`mode`'), (lambda: ResizeMix(prob=1.5), '`prob`'),
    (lambda: SaliencyMix(label_smoothing=2.), '`label_smoothing`'), (lambda: FMix(num_classes=1.5), '`num_classes`'),
    (lambda: FMix(rng=3), '`rng`'), (lambda: MixChoice([]), '`methods`'), (lambda: MixChoice(Mixup()), '`methods`'),
    (lambda: MixChoice([Mixup(num_classes=3), FMix(num_classes=4)]), 'num_classes'),
    (lambda: MixChoice([Mixup(), FMix()], p=[1., -0.]), None), (lambda: MixChoice([Mixup(), FMix()], p=[.7, .7]), '`p`'),
    (lambda: MixChoice([Mixup(), FMix()], p=[1.]), '`p`')])
def test_bad_arguments_are_errors_naming_them(make, msg):
    if msg is None: make(); return                # p=[1, 0] is fine
    with pytest.raises((ValueError, TypeError), match=msg): make()

@pytest.mark.parametrize('cls', METHODS)
def test_bad_batches_and_targets_leave_the_batch_alone(cls):
    fn = cls(num_classes=4)
    x = batch(4); x0 = x.clone()
    for bad_x, bad_y, msg in [(x, torch.tensor([0, 1, 2, 4]), '`target`'), (x, torch.arange(3), '`target`'),
                              (x[0], torch.arange(4), '`x`'), (x.to(torch.uint8), torch.arange(4), '`x`'),
                              (x[:3], torch.arange(3), 'even') if fn.mode == 'pair' else (x, 'cat', '`target`')]:
        with pytest.raises((ValueError, TypeError), match=msg): fn(bad_x, bad_y)
        assert torch.equal(x, x0)

def test_exported_at_the_top_level():
    for name in ('ResizeMix', 'FMix', 'SaliencyMix', 'MixChoice'): assert name in mixcut_nb.__all__
