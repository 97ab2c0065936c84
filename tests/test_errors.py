"Every bad argument or input raises a ValueError/TypeError naming it, before anything is modified"
import numpy as np, torch, pytest
import mixcut_nb as mc

@pytest.mark.parametrize('kwargs, error, match', [
    (dict(mode='bogus'), ValueError, 'mode'),
    (dict(mixup_alpha=-1.), ValueError, 'mixup_alpha'),
    (dict(cutmix_alpha=-0.5), ValueError, 'cutmix_alpha'),
    (dict(mixup_alpha=float('nan')), ValueError, 'mixup_alpha'),
    (dict(mixup_alpha=float('inf')), ValueError, 'mixup_alpha'),
    (dict(mixup_alpha='1'), TypeError, 'mixup_alpha'),
    (dict(cutmix_alpha=None), TypeError, 'cutmix_alpha'),
    (dict(mixup_alpha=True), TypeError, 'mixup_alpha'),
    (dict(mixup_alpha=0., cutmix_alpha=0.), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=(0.8, 0.2)), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=(0.2, 0.2)), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=(0.2, 1.5)), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=(-0.1, 0.5)), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=(0.2,)), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax=0.5), ValueError, 'cutmix_minmax'),
    (dict(cutmix_minmax='ab'), ValueError, 'cutmix_minmax'),
    (dict(prob=1.5), ValueError, 'prob'),
    (dict(prob=-0.1), ValueError, 'prob'),
    (dict(switch_prob=2.), ValueError, 'switch_prob'),
    (dict(label_smoothing=-0.1), ValueError, 'label_smoothing'),
    (dict(label_smoothing=1.1), ValueError, 'label_smoothing'),
    (dict(num_classes=0), ValueError, 'num_classes'),
    (dict(num_classes=-3), ValueError, 'num_classes'),
    (dict(num_classes=10.), TypeError, 'num_classes'),
    (dict(rng=123), TypeError, 'rng'),
])
@pytest.mark.parametrize('cls', [mc.Mixup, mc.FastCollateMixup])
def test_bad_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match): cls(**kwargs)

def test_half_mode_is_accepted_as_timm_accepts_it():
    "timm's Mixup takes mode='half' and mixes it as 'batch'; its FastCollateMixup has a 'half' mode of its own"
    assert mc.Mixup(mode='half').draw(4, (3, 8, 8)).mode == 'batch'
    assert mc.FastCollateMixup(mode='half').draw(4, (3, 8, 8)).mode == 'half'
    assert mc.Mixup(mode='half').mode == mc.FastCollateMixup(mode='half').mode == 'half'
    for cls in (mc.Mixup, mc.FastCollateMixup):
        with pytest.raises(ValueError, match="mode"): cls(mode='elem_half')

x0 = torch.randn(4, 3, 8, 8)
y0 = torch.tensor([0, 1, 2, 3])

@pytest.mark.parametrize('x, y, error, match', [
    (x0[0], y0, ValueError, r'\(B, C, H, W\)'),
    (x0[None], y0, ValueError, r'\(B, C, H, W\)'),
    (x0.numpy(), y0, TypeError, 'torch.Tensor'),
    ((x0 * 255).byte(), y0, TypeError, 'float'),
    (x0.int(), y0, TypeError, 'float'),
    (x0[:0], y0[:0], ValueError, 'empty'),
    (x0, y0[:3], ValueError, 'entries'),
    (x0, torch.tensor([0, 1, 2, 4]), ValueError, r'\[0, 4\)'),
    (x0, torch.tensor([0, 1, 2, -1]), ValueError, r'\[0, 4\)'),
    (x0, torch.tensor([0., 1.5, 2., 3.]), ValueError, 'fractional'),
    (x0, torch.tensor([0., float('nan'), 2., 3.]), ValueError, 'fractional'),
    (x0, torch.tensor([True, False, True, False]), TypeError, 'integer'),
    (x0, torch.zeros(4, 5), ValueError, 'num_classes=4'),
    (x0, torch.zeros(3, 4), ValueError, 'entries'),
    (x0, torch.zeros(4, 4, 1), ValueError, r'\(B, num_classes\)'),
    (x0, [0, 1, 2, 3], TypeError, 'torch.Tensor'),
])
@pytest.mark.parametrize('mode', ['batch', 'elem'])
def test_bad_inputs_change_nothing(x, y, error, match, mode):
    "The error names the input, and neither the batch nor the global RNG has moved"
    m = mc.Mixup(mixup_alpha=1., cutmix_alpha=1., num_classes=4, mode=mode)
    before = x.clone() if isinstance(x, torch.Tensor) else x.copy()
    np.random.seed(0)
    with pytest.raises(error, match=match): m(x, y)
    assert np.random.rand() == np.random.RandomState(0).rand()
    assert (torch.equal(x, before) if isinstance(x, torch.Tensor) else np.array_equal(x, before))
    assert m.last_params is None

def test_pair_mode_needs_an_even_batch():
    with pytest.raises(ValueError, match='even batch size, got 3'): mc.Mixup(mode='pair', num_classes=4)(x0[:3].clone(), y0[:3])

def test_multi_label_needs_dense_rows():
    with pytest.raises(ValueError, match='dense'): mc.Mixup(num_classes=4, multi_label=True)(x0.clone(), y0)

img = np.zeros((3, 8, 8), np.uint8)

@pytest.mark.parametrize('batch, error, match', [
    ('abc', TypeError, 'list'),
    ([], ValueError, 'empty'),
    ([img, img], TypeError, r'\(sample, target\)'),
    ([(img.tolist(), 0)] * 2, TypeError, 'numpy array'),
    ([(img.astype(np.float32), 0)] * 2, TypeError, 'uint8'),
    ([(torch.zeros(3, 8, 8), 0)] * 2, TypeError, 'uint8'),
    ([(img[0], 0)] * 2, ValueError, r'\(C, H, W\)'),
    ([(img, 0), (np.zeros((3, 8, 9), np.uint8), 1)], ValueError, 'shape'),
    ([(img, 0), (img, 7)], ValueError, r'\[0, 5\)'),
    ([(img, 0), (img, 1.5)], ValueError, 'fractional'),
    ([(img, np.zeros(4, np.float32)), (img, np.zeros(4, np.float32))], ValueError, 'num_classes=5'),
])
@pytest.mark.parametrize('mode', ['batch', 'elem'])
def test_bad_collate_inputs(batch, error, match, mode):
    fc = mc.FastCollateMixup(num_classes=5, mode=mode)
    copies = [(b[0].copy(), b[1]) if isinstance(b, tuple) and isinstance(b[0], np.ndarray) else b for b in batch] if isinstance(batch, list) else batch
    np.random.seed(0)
    with pytest.raises(error, match=match): fc(batch)
    assert np.random.rand() == np.random.RandomState(0).rand()

@pytest.mark.parametrize('mode', ['pair', 'half'])
def test_collate_pair_and_half_need_an_even_batch(mode):
    with pytest.raises(ValueError, match='even batch size, got 3'): mc.FastCollateMixup(mode=mode, num_classes=5)([(img, 0)] * 3)

@pytest.mark.parametrize('call, error, match', [
    (lambda: mc.one_hot(torch.tensor([3]), 3), ValueError, r'\[0, 3\)'),
    (lambda: mc.one_hot([1], 3), TypeError, 'torch.Tensor'),
    (lambda: mc.mixup_target(torch.tensor([0]), 0), ValueError, 'num_classes'),
    (lambda: mc.mixup_target(torch.tensor([0]), 3, smoothing=2.), ValueError, 'smoothing'),
    (lambda: mc.mixup(x0, 1.5), ValueError, 'lam'),
    (lambda: mc.rand_bbox((8, 8), -0.5), ValueError, 'lam'),
    (lambda: mc.rand_bbox((8,), 0.5), ValueError, 'img_shape'),
    (lambda: mc.rand_bbox((0, 8), 0.5), ValueError, 'img_shape'),
    (lambda: mc.rand_bbox((2, 2), 0., margin=0.5), ValueError, 'margin'),
    (lambda: mc.rand_bbox((8, 8), 0.5, rng='seed'), TypeError, 'rng'),
    (lambda: mc.rand_bbox_minmax((8, 8), (0.6, 0.3)), ValueError, 'minmax'),
    (lambda: mc.rand_bbox_minmax((3, 3), (0.2, 0.3)), ValueError, 'no box size'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 0.5, ratio_minmax=(1, 2)), ValueError, 'minmax'),
])
def test_bad_function_arguments(call, error, match):
    with pytest.raises(error, match=match): call()

# The caller's argument is the one named: `target` (not a helper's `x`), `ratio_minmax` (not `minmax`), and no raw
# numpy/torch error escapes a public function.
@pytest.mark.parametrize('target, error', [
    (torch.tensor([0, 1, 2, 10]), ValueError), (torch.tensor([0, 1, 2, -1]), ValueError),
    (torch.tensor([True, False, True, False]), TypeError), (torch.tensor([0, 1, 2, 3], dtype=torch.complex64), TypeError),
    (torch.tensor([0., 1.5, 2., 3.]), ValueError), (torch.tensor([0., float('nan'), 2., 3.]), ValueError),
    (torch.zeros(4, 10, dtype=torch.complex64), TypeError),
])
@pytest.mark.parametrize('make', ['mixup', 'collate'])
def test_bad_targets_are_named_target(target, error, make):
    if make == 'mixup':
        x = torch.rand(4, 3, 8, 8); before = x.clone()
        with pytest.raises(error, match='^`target`'): mc.Mixup(num_classes=10)(x, target)
        assert torch.equal(x, before)
    else:
        batch = [(np.zeros((3, 8, 8), np.uint8), t) for t in target]
        with pytest.raises(error, match='`target`'): mc.FastCollateMixup(num_classes=10)(batch)

@pytest.mark.parametrize('call, error, match', [
    (lambda: mc.one_hot(torch.tensor([0]), 0), ValueError, '`num_classes` must be >= 1'),
    (lambda: mc.one_hot(torch.tensor([0]), 3, on_value='a'), TypeError, '`on_value`'),
    (lambda: mc.one_hot(torch.tensor([0]), 3, off_value=float('nan')), ValueError, '`off_value`'),
    (lambda: mc.one_hot(torch.tensor([0, 5]), 3), ValueError, r'^`x` must hold class ids in \[0, 3\)'),
    (lambda: mc.mixup_target(torch.tensor([0, 5]), 3), ValueError, r'^`target` must hold class ids in \[0, 3\)'),
    (lambda: mc.mixup_target(torch.tensor([0, 1]), 3, lam='a'), TypeError, '`lam`'),
    (lambda: mc.mixup_target(torch.tensor([0, 1]), 3, lam=1.5), ValueError, '`lam`'),
    (lambda: mc.mixup_target(torch.tensor([0, 1]), 3, lam=torch.tensor([[0.5], [2.]])), ValueError, '`lam`'),
    (lambda: mc.mixup_target(torch.tensor([0, 1]), 3, lam=torch.rand(2, 3)), ValueError, '`lam`'),
    (lambda: mc.mixup_target(torch.tensor([0, 1]), 3, lam=torch.ones(2, 1, dtype=torch.long)), TypeError, '`lam`'),
    (lambda: mc.rand_bbox((8, 8), 0.5, count=-1), ValueError, '`count`'),
    (lambda: mc.rand_bbox((8, 8), 0.5, count='3'), TypeError, '`count`'),
    (lambda: mc.rand_bbox((8, 8), 0.5, count=2.), TypeError, '`count`'),
    (lambda: mc.rand_bbox_minmax((8, 8), (0.2, 0.8), count=-1), ValueError, '`count`'),
    (lambda: mc.rand_bbox(None, 0.5), TypeError, '`img_shape`'),
    (lambda: mc.rand_bbox(8, 0.5), TypeError, '`img_shape`'),
    (lambda: mc.rand_bbox('88', 0.5), TypeError, '`img_shape`'),
    (lambda: mc.rand_bbox((8., 8.), 0.5), TypeError, '`img_shape`'),
    (lambda: mc.rand_bbox_minmax(None, (0.2, 0.8)), TypeError, '`img_shape`'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 0.5, ratio_minmax=(1, 2)), ValueError, '`ratio_minmax`'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 0.5, ratio_minmax=(0.8, 0.2)), ValueError, '`ratio_minmax`'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 0.5, ratio_minmax=('a', 0.2)), TypeError, '`ratio_minmax`'),
    (lambda: mc.cutmix_bbox_and_lam((3, 3), 0.5, ratio_minmax=(0.2, 0.3)), ValueError, '`ratio_minmax`'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 'a'), TypeError, '`lam`'),
    (lambda: mc.cutmix_bbox_and_lam(None, 0.5), TypeError, '`img_shape`'),
    (lambda: mc.cutmix_bbox_and_lam((8, 8), 0.5, count=-2), ValueError, '`count`'),
    (lambda: mc.cutmix(x0, (1, 2)), ValueError, '`bbox`'),
    (lambda: mc.cutmix(x0, None), TypeError, '`bbox`'),
    (lambda: mc.cutmix(x0, (0, 9, 0, 8)), ValueError, '`bbox`'),
    (lambda: mc.cutmix(x0, (4, 2, 0, 8)), ValueError, '`bbox`'),
    (lambda: mc.cutmix(x0, (0.5, 2, 0, 8)), TypeError, '`bbox`'),
    (lambda: mc.cutmix(x0[0], (0, 2, 0, 2)), ValueError, '`x`'),
    (lambda: mc.cutmix([1, 2], (0, 2, 0, 2)), TypeError, '`x`'),
    (lambda: mc.mixup(x0, 'a'), TypeError, '`lam`'),
    (lambda: mc.mixup(x0.int(), 0.5), TypeError, '`x`'),
    (lambda: mc.mixup(x0.numpy(), 0.5), TypeError, '`x`'),
])
def test_public_functions_name_the_callers_argument(call, error, match):
    before = x0.clone()
    with pytest.raises(error, match=match): call()
    assert torch.equal(x0, before)

def test_valid_calls_still_work():
    "The new checks accept what timm accepts: numpy sizes and boxes, torch.Size, strided ids"
    assert mc.cutmix(x0, np.array([1, 3, 2, 5])).shape == x0.shape
    assert torch.equal(mc.cutmix(x0, (0, 0, 0, 0)), x0)
    assert len(mc.rand_bbox(x0.shape, 0.5, count=0)[0]) == 0
    mc.rand_bbox(np.array([3, 8, 8]), 0.5); mc.rand_bbox([8, 8], np.float32(0.5))
    assert torch.equal(mc.one_hot(torch.arange(6)[::2], 6), torch.eye(6)[::2])
    assert torch.equal(mc.mixup_target(torch.tensor([0, 1]), 3, torch.tensor(0.3)), mc.mixup_target(torch.tensor([0, 1]), 3, 0.3))
