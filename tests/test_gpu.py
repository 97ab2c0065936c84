"The Triton kernel: through Triton's interpreter on the CPU in every run, on a real GPU where there is one (`-k cuda`)"
import os, subprocess, sys, textwrap
import numpy as np, torch, pytest
from timm.data import mixup as tm
import mixcut_nb as mc
from mixcut_nb import gpu
from mixcut_nb.mixing import use_kernel

needs_triton = pytest.mark.skipif(not gpu.available(), reason='Triton is not installed (it ships with CUDA builds of PyTorch)')
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

def run(code, **env):
    "`code` in a fresh Python whose Triton runs kernels in its interpreter, on CPU tensors"
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TRITON_INTERPRET='1', MIXCUT_NB_KERNEL='triton', **env))
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), (r.stdout[-1000:], r.stderr[-3000:])
    return r.stdout

INTERPRETED_PARITY = """
import numpy as np, torch
from timm.data import mixup as tm
import mixcut_nb as mc
from mixcut_nb import gpu
assert gpu._interpreting()
rs = np.random.RandomState(%d)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KINDS = [dict(mixup_alpha=1.), dict(mixup_alpha=0., cutmix_alpha=1.), dict(mixup_alpha=.4, cutmix_alpha=1., switch_prob=.6),
         dict(mixup_alpha=0., cutmix_minmax=(.2, .8), prob=.7), dict(mixup_alpha=1., cutmix_alpha=.5, prob=.5, correct_lam=False)]
n = 0
for mode in ('batch', 'pair', 'elem', 'half'):
    for dtype in DTYPES:
        kw = KINDS[rs.randint(len(KINDS))]
        B, C, H, W = 2 * rs.randint(1, 5), rs.randint(1, 4), rs.randint(6, 30), rs.randint(6, 30)
        x = (torch.from_numpy(rs.randn(B, C, H, W)) * 2).to(dtype)
        if rs.rand() < .5: x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(rs.randint(0, 10, B))
        seed = rs.randint(2**31)
        a, b = tm.Mixup(num_classes=10, mode=mode, **kw), mc.Mixup(num_classes=10, mode=mode, **kw)
        np.random.seed(seed); xa, ya = a(x.clone(), y); ra = np.random.rand()
        np.random.seed(seed); xb, yb = b(x.clone(), y); rb = np.random.rand()
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ya.dtype == yb.dtype and ra == rb, (mode, dtype, kw)
        n += 1
    kw = KINDS[rs.randint(len(KINDS))]                    # uint8 through the collate, which stacks and calls the kernel
    B, H, W = 2 * rs.randint(1, 5), rs.randint(6, 30), rs.randint(6, 30)
    samples = [(rs.randint(0, 256, (3, H, W)).astype(np.uint8), int(rs.randint(0, 10))) for _ in range(B)]
    seed = rs.randint(2**31)
    np.random.seed(seed); xa, ya = tm.FastCollateMixup(num_classes=10, mode=mode, **kw)([(s.copy(), t) for s, t in samples]); ra = np.random.rand()
    np.random.seed(seed); xb, yb = mc.FastCollateMixup(num_classes=10, mode=mode, **kw)(samples); rb = np.random.rand()
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb, ('collate', mode, kw)
    n += 1
print(n, 'ok')
"""

@needs_triton
@pytest.mark.parametrize('seed', [0, 1])
def test_interpreted_kernel_matches_timm(seed):
    "Mixup and FastCollateMixup through the kernel: timm's images, targets and random state, every mode and dtype"
    run(INTERPRETED_PARITY % seed)

AGAINST_THE_REFERENCE = """
import numpy as np, torch
from mixcut_nb import MixParams, mix_, mix_reference
from mixcut_nb.gpu import mix_gpu_
rs = np.random.RandomState(7)
for case in range(40):
    mode = ['batch', 'pair', 'elem', 'half'][case % 4]
    B, C, H, W = 2 * rs.randint(1, 5) + (mode in ('batch', 'elem') and case % 3 == 0), rs.randint(1, 4), rs.randint(1, 20), rs.randint(1, 20)
    n = {'batch': 1, 'elem': B}.get(mode, B // 2)
    kind = rs.randint(0, 3, n)
    yl, yh = np.sort(rs.randint(0, H + 1, (2, n)), 0); xl, xh = np.sort(rs.randint(0, W + 1, (2, n)), 0)
    boxes = np.stack([yl, yh, xl, xh], 1)
    edge = rs.randint(0, 4)                             # boxes on the borders
    if edge == 1: boxes[:, 0], boxes[:, 2] = 0, 0
    if edge == 2: boxes[:, 1], boxes[:, 3] = H, W
    if edge == 3: boxes[:] = (0, H, 0, W)
    p = MixParams(rs.rand(n).astype(np.float64 if mode == 'batch' else np.float32), kind == 1, kind == 2, boxes, mode, B)
    dtype = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8][case % 5]
    x = torch.from_numpy(rs.randint(0, 256, (B, C, H, W))).to(dtype) if dtype == torch.uint8 else (torch.from_numpy(rs.randn(B, C, H, W)) * 3).to(dtype)
    if dtype.is_floating_point and case % 2: x.view(-1)[::7] = torch.tensor([float('nan'), float('inf'), -0.0, -float('inf')], dtype=dtype).repeat(1000)[:len(x.view(-1)[::7])]
    if case % 4 == 1: x = x.contiguous(memory_format=torch.channels_last)
    expected = mix_reference(x, p)
    y = x.clone(); mix_(y, p)                            # MIXCUT_NB_KERNEL=triton: the kernel, forced
    def as_bytes(t): return t.contiguous().view(torch.uint8).view(*t.shape, -1)
    nan = expected.isnan() if dtype.is_floating_point else torch.zeros_like(expected, dtype=torch.bool)
    assert torch.equal(y.isnan() if dtype.is_floating_point else nan, nan), (case, mode, dtype)
    assert torch.equal(as_bytes(y)[~nan], as_bytes(expected)[~nan]), (case, mode, dtype, B, C, H, W)   # bytes: -0.0 and infinities too
    if not p.mixup.any(): assert torch.equal(as_bytes(y), as_bytes(expected)), (case, 'paste')         # pasted NaN payloads as well
print('ok')
"""

@needs_triton
def test_interpreted_kernel_gives_the_reference_bits():
    "Random MixParams in every mode and dtype, odd batches, border boxes, NaN/inf/-0.0: the reference's bytes"
    run(AGAINST_THE_REFERENCE)

@needs_triton
def test_layouts_the_kernel_leaves_to_the_reference():
    run("""
    import numpy as np, torch, pytest
    from mixcut_nb import Mixup, MixParams, mix_reference
    from mixcut_nb.gpu import mix_gpu_
    p = Mixup(mixup_alpha=1., cutmix_alpha=1., mode='elem').draw(4, (3, 8, 8))
    x = torch.randn(4, 3, 8, 8).transpose(2, 3); x0 = x.clone()
    assert mix_gpu_(x, p) is False and torch.equal(x, x0)                  # transposed: left to mix_reference
    with pytest.raises(ValueError, match='MIXCUT_NB_KERNEL=triton'): mix_gpu_(x, p, forced=True)
    i = torch.randint(0, 9, (4, 3, 8, 8), dtype=torch.int32)
    assert mix_gpu_(i, p) is False
    print('ok')
    """)

@needs_triton
def test_no_fused_multiply_adds_in_the_ptx():
    "Compiled for an sm_90 GPU (none needed): fused multiply-adds appear with Triton's default, none as the kernel is launched"
    try: on = gpu._ptx(torch.float32, True)
    except Exception as e: pytest.skip(f'Triton cannot compile for CUDA here: {e}')
    assert 'fma.' in on
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8):
        assert 'fma.' not in gpu._ptx(dtype, False), dtype        # one kernel for every mode

def test_without_the_interpreter_cpu_batches_are_not_the_kernels():
    "Outside the interpreter the kernel takes only CUDA tensors: a CPU batch is left alone, or an error where it was forced"
    if gpu._interpreting(): pytest.skip('TRITON_INTERPRET=1 in this process')
    p = mc.Mixup().draw(4, (3, 8, 8))
    x = torch.randn(4, 3, 8, 8); x0 = x.clone()
    assert gpu.mix_gpu_(x, p) is False and torch.equal(x, x0)
    with pytest.raises(RuntimeError, match='MIXCUT_NB_KERNEL=triton'): gpu.mix_gpu_(x, p, forced=True)

def test_without_triton():
    "Where Triton is missing: the switch says so, CPU mixing is unaffected"
    r = subprocess.run([sys.executable, '-c', textwrap.dedent("""
        import sys; sys.modules['triton'] = None
        import numpy as np, torch
        from mixcut_nb import Mixup, gpu
        from mixcut_nb.mixing import use_kernel
        assert not gpu.available()
        x = torch.randn(4, 3, 8, 8); y = torch.arange(4)
        Mixup(num_classes=4)(x, y)
        with use_kernel('triton'):
            try: Mixup(num_classes=4)(x, y)
            except RuntimeError as e: assert 'Triton is not installed' in str(e), e
            else: raise AssertionError('no error')
        print('ok')""")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]

@needs_cuda
@needs_triton
@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
def test_cuda_parity(mode):
    "On a GPU, the kernel: timm's bits in every mode, kind and dtype, NCHW and channels-last, large and small batches"
    kinds = [dict(mixup_alpha=1.), dict(mixup_alpha=0., cutmix_alpha=1.), dict(mixup_alpha=1., cutmix_alpha=1.),
             dict(mixup_alpha=0., cutmix_minmax=(.2, .8), prob=.7)]
    for kw in kinds:
        for dtype in DTYPES:
            for call, (B, H, W) in enumerate([(8, 17, 23), (6, 32, 32), (128, 224, 224)]):
                g = torch.Generator().manual_seed(call)
                x = torch.randn(B, 3, H, W, generator=g).to('cuda', dtype); y = torch.randint(0, 10, (B,), generator=g).cuda()
                if call == 1: x = x.contiguous(memory_format=torch.channels_last)
                np.random.seed(call); xa, ya = tm.Mixup(num_classes=10, mode=mode, **kw)(x.clone(), y)
                np.random.seed(call); xb, yb = mc.Mixup(num_classes=10, mode=mode, **kw)(x.clone(), y)
                assert torch.equal(xa, xb) and torch.equal(ya, yb), (kw, dtype, call)

@needs_cuda
@needs_triton
@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
def test_cuda_training_loop_never_waits_for_the_gpu(mode):
    "`set_sync_debug_mode('error')` raises on any call that makes the host wait: 100 steps of mixing, forward and backward"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mixup_fn = mc.Mixup(mixup_alpha=.8, cutmix_alpha=1., mode=mode, num_classes=10)
    xs = torch.randn(4, 32, 3, 32, 32, device='cuda'); ys = torch.randint(0, 10, (4, 32), device='cuda')
    mixup_fn(xs[0].clone(), ys[0]); torch.cuda.synchronize()          # compile the kernels first
    torch.cuda.set_sync_debug_mode('error')
    try:
        for step in range(100):
            x, t = mixup_fn(xs[step % 4].clone(), ys[step % 4])
            loss = torch.sum(-t * torch.log_softmax(model(x), 1), 1).mean()
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    finally: torch.cuda.set_sync_debug_mode('default')
    torch.cuda.synchronize()

MODE_TABLE = """
import numpy as np, torch
from mixcut_nb import MixParams
from dataclasses import replace
from mixcut_nb.params import MODES, PARTNERS, _random_params
from mixcut_nb.params import mix_reference
from mixcut_nb.gpu import mix_gpu_, mix_gpu
def by_the_table(x, p):
    "element i follows draw MODES[p.mode].follows(B)[i] and mixes with B-1-i, written out element by element"
    B, out = len(x), x.clone()
    for i, d in enumerate(MODES[p.mode].follows(B)):
        if d < 0: continue
        j, lam = B - 1 - i, p.lam[d]
        if p.mixup[d]: out[i] = x[i] * lam + x[j] * (1 - lam)
        if p.cutmix[d]:
            yl, yh, xl, xh = p.boxes[d]
            out[i][:, yl:yh, xl:xh] = x[j][:, yl:yh, xl:xh]
    return out
for mode in MODES:
    for B in ((2, 6) if MODES[mode].even else (1, 5, 6)):
        for dtype in (torch.float32, torch.float64):
            x = torch.randn(B, 3, 7, 9, dtype=dtype)
            for seed in range(3):
                p = _random_params(mode, B, 7, 9, seed)
                y = x.clone(); v = y._version
                assert mix_gpu_(y, p, forced=True) and torch.equal(y, by_the_table(x, p)), (mode, B, dtype, seed)
                assert y._version > v                       # autograd is told that the kernel wrote y
for mode in MODES:                              # out of place, every pairing: each element with its partner
    for pairing, partner in PARTNERS.items():
        x = torch.randn(5 if not MODES[mode].even else 6, 3, 7, 9); x0 = x.clone()
        p = replace(_random_params(mode, len(x), 7, 9, seed=1), pairing=pairing)
        out = mix_gpu(x, p, forced=True)
        assert torch.equal(out, mix_reference(x, p)) and torch.equal(x, x0), (mode, pairing)
        follows = MODES[mode].follows(len(x))
        for i, j in enumerate(partner(len(x))):          # the draws applied to the pair (i, its partner j)
            if follows[i] >= 0 and p.mixup[follows[i]]:
                lam = p.lam[follows[i]]
                assert torch.equal(out[i], x[i] * lam + x[j] * (1 - lam)), (mode, pairing, i)
print('ok')
"""

@needs_triton
def test_interpreted_kernel_follows_the_mode_table():
    "In every mode of `MODES`, each element follows the draw the table names and mixes with B-1-i; the version goes up"
    run(MODE_TABLE)
