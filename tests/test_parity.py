"Bit-for-bit parity with timm.data.mixup 1.0.31 over randomly drawn configurations"
import numpy as np, torch, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from timm.data import mixup as tm
import mixcut_nb as mc
from mixcut_nb.mixing import use_kernel

def kernel(fast:bool):
    "Mix with the fast path of the device (`fast`) or with `mix_reference`"
    return use_kernel('auto' if fast else 'reference')

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
alphas = st.sampled_from([0., 0.1, 0.4, 1., 2.5])

@st.composite
def mixup_configs(draw, modes=('batch', 'pair', 'elem')):
    mixup_alpha, cutmix_alpha = draw(alphas), draw(alphas)
    minmax = draw(st.sampled_from([None, None, (0.2, 0.8), (0.05, 0.5)]))
    if mixup_alpha == 0 and cutmix_alpha == 0 and minmax is None: mixup_alpha = 1.
    return dict(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, cutmix_minmax=minmax,
                prob=draw(st.sampled_from([1., 1., 0.5, 0.9, 0.])), switch_prob=draw(st.sampled_from([0.5, 0., 1., 0.3])),
                mode=draw(st.sampled_from(modes)), correct_lam=draw(st.booleans()),
                label_smoothing=draw(st.sampled_from([0.1, 0., 0.3])), num_classes=draw(st.sampled_from([1, 3, 10])))

def batch(seed, B, C, H, W, dtype, layout):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, C, H, W, generator=g) * 2).to(dtype)
    if layout == 'channels_last': x = x.contiguous(memory_format=torch.channels_last)
    if layout == 'strided': x = torch.randn(B, C, H, 2 * W, generator=g).to(dtype)[..., ::2]
    return x

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=mixup_configs(), dtype=st.sampled_from(DTYPES), half_batch=st.integers(1, 6), C=st.integers(1, 3),
       H=st.integers(2, 40), W=st.integers(2, 40), layout=st.sampled_from(['contiguous', 'channels_last', 'strided']),
       seed=st.integers(0, 2**31), calls=st.integers(1, 3), off_at=st.integers(0, 3), soft=st.booleans(), fused=st.booleans())
def test_mixup_parity(cfg, dtype, half_batch, C, H, W, layout, seed, calls, off_at, soft, fused):
    "Same seed, same input: the same images, targets, dtypes and RNG state after several calls"
    if cfg['cutmix_minmax'] is not None and min(H, W) * (cfg['cutmix_minmax'][1] - cfg['cutmix_minmax'][0]) < 1.5: H, W = H + 10, W + 10
    a, b = tm.Mixup(**cfg), mc.Mixup(**cfg)
    B = 2 * half_batch
    for call in range(calls):
        if call == off_at: a.mixup_enabled = b.mixup_enabled = False    # switched off mid-way
        x = batch(seed + call, B, C, H, W, dtype, layout)
        y = torch.randint(0, cfg['num_classes'], (B,), generator=torch.Generator().manual_seed(seed))
        yb = torch.nn.functional.one_hot(y, cfg['num_classes']).float() if soft else y
        np.random.seed((seed + call) % 2**32); xa, ya = a(x.clone(), y); ra = np.random.rand()
        with kernel(fused): np.random.seed((seed + call) % 2**32); xb, tb = b(x.clone(), yb); rb = np.random.rand()
        assert xa.dtype == xb.dtype and xa.shape == xb.shape and ya.dtype == tb.dtype
        assert torch.equal(xa, xb), (cfg, call)
        assert torch.equal(ya, tb), (cfg, call)
        assert ra == rb, "the global RNG advanced differently"

@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=mixup_configs(('batch', 'pair', 'elem', 'half')), half_batch=st.integers(1, 6), C=st.integers(1, 3),
       H=st.integers(6, 30), W=st.integers(6, 30), as_numpy=st.booleans(), seed=st.integers(0, 2**31), fused=st.booleans(),
       contiguous=st.booleans())
def test_collate_parity(cfg, half_batch, C, H, W, as_numpy, seed, fused, contiguous):
    "Same seed, same samples: the same uint8 batch and targets; our samples are never written to"
    rs = np.random.RandomState(seed % 2**32)
    samples = [(rs.randint(0, 256, (C, H, W)).astype(np.uint8), int(rs.randint(0, cfg['num_classes']))) for _ in range(2 * half_batch)]
    if not as_numpy: samples = [(torch.from_numpy(s), t) for s, t in samples]
    if not contiguous: samples = [(s.swapaxes(1, 2).copy().swapaxes(1, 2) if as_numpy else s.transpose(1, 2).contiguous().transpose(1, 2), t)
                                  for s, t in samples]
    before = [s.clone() if isinstance(s, torch.Tensor) else s.copy() for s, _ in samples]
    copies = [(s.clone() if isinstance(s, torch.Tensor) else s.copy(), t) for s, t in samples]
    np.random.seed(seed % 2**32); xa, ya = tm.FastCollateMixup(**cfg)(copies); ra = np.random.rand()
    with kernel(fused): np.random.seed(seed % 2**32); xb, yb = mc.FastCollateMixup(**cfg)(samples); rb = np.random.rand()
    assert xb.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb
    assert all((np.array_equal(s, b) if isinstance(s, np.ndarray) else torch.equal(s, b)) for (s, _), b in zip(samples, before))

@settings(max_examples=200, deadline=None)
@given(H=st.integers(1, 300), W=st.integers(1, 300), lam=st.floats(0, 1), count=st.sampled_from([None, 1, 7]),
       minmax=st.sampled_from([None, (0.2, 0.8), (0.0, 1.0)]), correct=st.booleans(), seed=st.integers(0, 2**31))
def test_box_helpers_parity(H, W, lam, count, minmax, correct, seed):
    "`rand_bbox`, `rand_bbox_minmax` and `cutmix_bbox_and_lam` draw the same boxes as timm's"
    if minmax is not None and (int(H * minmax[0]) >= int(H * minmax[1]) or int(W * minmax[0]) >= int(W * minmax[1])): return
    shape = (3, H, W)
    np.random.seed(seed % 2**32); a = tm.cutmix_bbox_and_lam(shape, lam, minmax, correct, count); ra = np.random.rand()
    np.random.seed(seed % 2**32); b = mc.cutmix_bbox_and_lam(shape, lam, minmax, correct, count); rb = np.random.rand()
    for u, v in zip(a[0], b[0]): np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a[1], b[1])
    assert ra == rb

@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('lam', [0., 0.3, 0.5, 0.999, 1.])
def test_mixup_function_matches_batch_mode(dtype, lam):
    "The tutorial's `mixup(x, lam)` is timm's batch-mode arithmetic"
    x = torch.randn(5, 3, 8, 9).to(dtype)
    xf = x.clone(); ref = xf.mul_(lam).add_(x.flip(0).mul_(1. - lam))   # timm's in-place formula
    assert torch.equal(mc.mixup(x, lam), ref)

@pytest.mark.parametrize('lam', [1., 0.3, torch.rand(6, 1)])
@pytest.mark.parametrize('smoothing', [0., 0.1])
@pytest.mark.parametrize('multi_label', [False, True])
def test_mixup_target_parity(lam, smoothing, multi_label):
    y = torch.randint(0, 7, (6,))
    t = torch.nn.functional.one_hot(y, 7).float() if multi_label else y
    assert torch.equal(mc.mixup_target(t, 7, lam, smoothing, multi_label), tm.mixup_target(t, 7, lam, smoothing, multi_label))
    assert torch.equal(mc.one_hot(y, 7, 0.9, 0.01), tm.one_hot(y, 7, 0.9, 0.01))

@pytest.mark.parametrize('fused', [True, False])
def test_collate_batch_cutmix_draws_a_box_even_at_lam_1(fused):
    "timm's batch-mode collate draws a box when Beta returns exactly 1 (seed 1 here): the RNG must advance alike"
    cfg = dict(mixup_alpha=0., cutmix_alpha=0.1, mode='batch', num_classes=3)
    rs = np.random.RandomState(1)
    samples = [(rs.randint(0, 256, (2, 16, 16)).astype(np.uint8), i % 3) for i in range(4)]
    hits = 0
    for seed in range(100):
        np.random.seed(seed); np.random.rand(); hits += np.random.beta(0.1, 0.1) == 1.
        np.random.seed(seed); xa, ya = tm.FastCollateMixup(**cfg)([(s.copy(), t) for s, t in samples]); ra = np.random.rand()
        with kernel(fused): np.random.seed(seed); xb, yb = mc.FastCollateMixup(**cfg)(samples); rb = np.random.rand()
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb, seed
    assert hits > 0
