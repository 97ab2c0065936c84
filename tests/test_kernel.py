"Every kernel against `mix_reference`, the reference against timm's loop, and `mix_`'s safety: bad params, threads, autograd, builds"
import os, subprocess, sys, threading, textwrap
from pathlib import Path
import numpy as np, torch, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from timm.data import mixup as tm
import mixcut_nb
from mixcut_nb import MixParams, Mixup, FastCollateMixup, mix_, mix_reference
from mixcut_nb.mixing import use_kernel
from mixcut_nb import fused
from dataclasses import replace
from mixcut_nb.params import MODES, PARTNERS, _random_params

FAST = ['auto', 'c'] if fused.available() else ['auto']    # 'auto' is the C loop on the CPU where it was built
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]

def timm_loop(x, p):
    "timm's per-element loop, written out: blend with `x[B-1-i]` (uint8: in float32, then np.rint), or paste its box"
    out, B, e = x.clone(), len(x), p.per_element()
    for i in range(B):
        j, lam = B - 1 - i, e.lam[i]
        if e.mixup[i]:
            if x.dtype == torch.uint8:
                out[i] = torch.from_numpy(np.rint(x[i].numpy().astype(np.float32) * lam + x[j].numpy().astype(np.float32) * (1 - lam)).astype(np.uint8))
            elif x.dtype in (torch.float16, torch.bfloat16): out[i] = x[i].clone().mul_(lam).add_(x[j].clone().mul_(1 - lam))
            else: out[i] = x[i] * lam + x[j] * (1 - lam)
        if e.cutmix[i]:
            yl, yh, xl, xh = e.boxes[i]
            out[i][:, yl:yh, xl:xh] = x[j][:, yl:yh, xl:xh]
    return out

@st.composite
def params(draw, B, H, W):
    "A random `MixParams` for a batch of B: any mode the size allows, lams of either type, boxes anywhere"
    mode = draw(st.sampled_from(['batch', 'elem'] + (['pair', 'half'] if B % 2 == 0 else [])))
    n = {'batch': 1, 'elem': B}.get(mode, B // 2)
    kind = draw(st.lists(st.sampled_from(['mixup', 'cutmix', 'none']), min_size=n, max_size=n))
    if draw(st.booleans()): kind = [draw(st.sampled_from(['mixup', 'cutmix']))] * n          # every draw alike
    lam_dtype = np.float64 if mode == 'batch' else draw(st.sampled_from([np.float32, np.float64]))
    lam = np.array([draw(st.floats(0, 1)) for _ in range(n)], lam_dtype)
    def box():
        yl, yh = sorted(draw(st.integers(0, H)) for _ in range(2))
        xl, xh = sorted(draw(st.integers(0, W)) for _ in range(2))
        return draw(st.sampled_from([(yl, yh, xl, xh), (0, yh, 0, xh), (yl, H, xl, W), (0, H, 0, W)]))
    boxes = np.array([box() if k == 'cutmix' else (0, 0, 0, 0) for k in kind], np.int64).reshape(n, 4)
    return MixParams(lam, np.array([k == 'mixup' for k in kind]), np.array([k == 'cutmix' for k in kind]), boxes, mode, B)

def make_batch(B, C, H, W, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (B, C, H, W), generator=g).to(dtype) if dtype == torch.uint8 else (torch.randn(B, C, H, W, generator=g) * 3).to(dtype)
    if layout == 'channels_last': x = x.contiguous(memory_format=torch.channels_last)
    if layout == 'transposed': x = x.transpose(2, 3).contiguous().transpose(2, 3)        # neither NCHW nor NHWC
    if layout == 'strided_batch': x = torch.stack([x, x], 1)[:, 0]                            # batch stride 2*C*H*W
    return x

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), B=st.integers(1, 9), C=st.integers(1, 4), H=st.integers(1, 19), W=st.integers(1, 23),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(['contiguous', 'channels_last', 'transposed', 'strided_batch']),
       kernel=st.sampled_from(FAST + ['reference']))
def test_every_kernel_gives_the_reference_bits(data, B, C, H, W, dtype, layout, kernel):
    "`mix_` with each kernel equals `mix_reference` bit for bit (the C loop where it takes the batch)"
    p = data.draw(params(B, H, W))
    x = make_batch(B, C, H, W, dtype, layout, B * H * W)
    expected = mix_reference(x, p)
    takes_c = dtype in fused.C_DTYPES and layout != 'transposed'
    with use_kernel(kernel if kernel != 'c' or takes_c else 'auto'):
        out = mix_(x, p)
    assert out is x and torch.equal(x, expected)

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), B=st.integers(1, 8), C=st.integers(1, 3), H=st.integers(1, 12), W=st.integers(1, 12),
       dtype=st.sampled_from(DTYPES))
def test_the_reference_is_timms_loop(data, B, C, H, W, dtype):
    "`mix_reference` is timm's per-element arithmetic: same products, same rounding, same boxes"
    p = data.draw(params(B, H, W))
    x = make_batch(B, C, H, W, dtype, 'contiguous', B + H)
    assert torch.equal(mix_reference(x, p), timm_loop(x, p))

@pytest.mark.parametrize('kernel', FAST + ['reference'])
def test_special_values_are_copied_bit_for_bit(kernel):
    "Boxes copy bits: NaN payloads, infinities and -0.0 arrive unchanged; untouched elements stay bit-identical"
    x = torch.tensor([float('nan'), float('inf'), -0.0, 1.0]).repeat(4, 1, 4, 1).clone()   # (4,1,4,4)
    x[3] = -x[3]
    p = MixParams(np.ones(4, np.float32), np.zeros(4, bool), np.array([True, False, True, False]),
                  np.array([[0, 4, 0, 2], [0, 0, 0, 0], [1, 3, 1, 4], [0, 0, 0, 0]]))
    bits = x.view(torch.int32).clone()
    with use_kernel(kernel): mix_(x, p)
    assert torch.equal(x.view(torch.int32)[0, :, :, :2], bits[3, :, :, :2]) and torch.equal(x.view(torch.int32)[1], bits[1])
    assert torch.equal(x.view(torch.int32)[0, :, :, 2:], bits[0, :, :, 2:])

def test_nothing_to_do_leaves_the_batch_alone():
    x = torch.randn(3, 2, 5, 5); x0 = x.clone()
    mix_(x, MixParams(np.ones(3), np.zeros(3, bool), np.zeros(3, bool), np.zeros((3, 4), np.int64)))
    assert torch.equal(x, x0)

def test_the_c_loop_was_built_at_install():
    "An install from this repository builds the C loop, so the fast half of these tests never silently tests the reference twice"
    assert fused.available(), fused._missing
    assert Path(fused._fused.__file__).parent == Path(mixcut_nb.__file__).parent

BAD_PARAMS = """
import numpy as np, torch
from mixcut_nb import MixParams, mix_
from mixcut_nb.mixing import use_kernel
def mp(B=4, **kw):
    d = dict(lam=np.ones(B), mixup=np.zeros(B, bool), cutmix=np.ones(B, bool), boxes=np.zeros((B, 4), np.int64)); d.update(kw)
    return MixParams(**d)
cases = [('box left of the image', lambda: torch.randn(4, 3, 8, 8), mp(boxes=np.tile([0, 8, -1, 8], (4, 1))), 'p.boxes'),
         ('box past the right edge', lambda: torch.randn(4, 3, 8, 8), mp(boxes=np.tile([0, 8, 0, 100], (4, 1))), 'p.boxes'),
         ('box below the image', lambda: torch.randn(4, 3, 8, 8), mp(boxes=np.tile([0, 9, 0, 8], (4, 1))), 'p.boxes'),
         ('inverted box', lambda: torch.randn(4, 3, 8, 8), mp(boxes=np.tile([6, 2, 0, 8], (4, 1))), 'p.boxes'),
         ('fewer draws than elements', lambda: torch.randn(4, 3, 8, 8), mp(B=3), 'batch_size'),
         ('short lam for its batch size', lambda: torch.randn(4, 3, 8, 8), MixParams(np.ones(3), np.zeros(3, bool), np.ones(3, bool), np.zeros((3, 4), np.int64), 'elem', 4), 'p.lam'),
         ('lam above 1', lambda: torch.randn(4, 3, 8, 8), mp(lam=np.full(4, 2.), cutmix=np.zeros(4, bool), mixup=np.ones(4, bool)), 'p.lam'),
         ('pair on an odd batch', lambda: torch.randn(5, 3, 8, 8), MixParams(np.ones(2), np.zeros(2, bool), np.ones(2, bool), np.zeros((2, 4), np.int64), 'pair', 5), 'even'),
         ('unknown mode', lambda: torch.randn(4, 3, 8, 8), MixParams(np.ones(4), np.zeros(4, bool), np.ones(4, bool), np.zeros((4, 4), np.int64), 'rows', 4), 'p.mode'),
         ('float boxes', lambda: torch.randn(4, 3, 8, 8), mp(boxes=np.zeros((4, 4))), 'p.boxes'),
         ('expanded batch', lambda: torch.randn(1, 3, 8, 8).expand(4, -1, -1, -1), mp(), 'share memory')]
for kernel in %r:
    for name, make, p, msg in cases:
        big = torch.randn(12, 3, 8, 8); base = big.clone()
        x = make() if 'expanded' in name else big[4:4 + len(make())]          # a view into a larger tensor
        x0 = x.clone()
        with use_kernel(kernel):
            try: mix_(x, p)
            except (ValueError, TypeError) as e: assert msg in str(e), (name, str(e))
            else: raise AssertionError(f'{name}: no error')
        assert torch.equal(x, x0) and torch.equal(big, base), name
print('ok')
"""

def test_bad_params_raise_and_touch_nothing():
    "Each bad MixParams is a ValueError naming the field, with the batch and the tensor it views unchanged (in a subprocess: a crash fails the test)"
    r = subprocess.run([sys.executable, '-c', BAD_PARAMS % (FAST + ['reference'],)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', (r.returncode, r.stderr[-2000:])

def test_the_c_loop_checks_what_it_is_given():
    "Called without `mix_`'s check, the loop itself refuses a box outside the image or a short list of draws"
    if not fused.available(): pytest.skip('the C loop was not built')
    big = torch.randn(12, 3, 8, 8); base = big.clone(); x = big[4:8]
    for p in [MixParams(np.ones(4), np.zeros(4, bool), np.ones(4, bool), np.tile([0, 8, 0, 100], (4, 1))),
              MixParams(np.ones(4), np.zeros(4, bool), np.ones(4, bool), np.tile([0, 8, -1, 8], (4, 1))),
              MixParams(np.ones(3), np.zeros(3, bool), np.ones(3, bool), np.zeros((3, 4), np.int64), 'elem', 4)]:
        with pytest.raises(ValueError): fused.mix_c_(x, p)
    assert torch.equal(big, base)

@pytest.mark.parametrize('kernel', FAST + ['reference'])
@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
def test_two_threads_share_one_mixup(kernel, mode):
    "Two threads x 40 calls on one Mixup: every image is what its own targets say (image value = class weights . class values)"
    mx = Mixup(mixup_alpha=1., cutmix_alpha=1., mode=mode, label_smoothing=0., num_classes=8)
    errors = []
    def work(seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(40):
            y = torch.randint(0, 8, (16,), generator=g)
            x = y.float().view(-1, 1, 1, 1).expand(16, 3, 24, 24).contiguous()      # image i is its class id everywhere
            xm, t = mx(x, y)
            errors.append((xm.mean((1, 2, 3)) - t @ torch.arange(8.)).abs().max().item())
    with use_kernel(kernel):
        ts = [threading.Thread(target=work, args=(s,)) for s in (1, 2)]
        for t in ts: t.start()
        for t in ts: t.join()
    assert len(errors) == 80 and max(errors) < 1e-4, max(errors)

@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_a_batch_that_needs_a_gradient_mixes_as_timm(mode, dtype):
    "A non-leaf batch that requires grad: same output and same gradient as timm's (mixing features inside a model)"
    def mixed_and_grad(cls, seed):
        f = torch.randn(6, 3, 9, 11, generator=torch.Generator().manual_seed(seed), dtype=dtype).requires_grad_()
        np.random.seed(seed)
        out, t = cls(mixup_alpha=1., cutmix_alpha=1., mode=mode, num_classes=6)(f * 2, torch.arange(6))
        (out * torch.linspace(0, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        return out.detach(), t, f.grad
    for seed in range(6):
        (xo, to, go), (xt, tt, gt) = mixed_and_grad(Mixup, seed), mixed_and_grad(tm.Mixup, seed)
        assert torch.equal(xo, xt) and torch.equal(to, tt) and torch.equal(go, gt), seed

NO_FILES = """
import os, sys, shutil
writes = []
def audit(event, args):
    if event == 'open' and isinstance(args[0], (str, bytes)):
        mode, flags = args[1] or '', args[2] or 0
        if any(c in mode for c in 'wax+') or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT): writes.append(('open', args[0]))
    elif event in ('os.mkdir', 'os.rename', 'os.replace', 'subprocess.Popen', 'os.system', 'os.posix_spawn', 'os.exec', 'ctypes.dlopen'):
        writes.append((event, args[0] if args else None))
import numpy as np, torch
import mixcut_nb
from mixcut_nb import Mixup, FastCollateMixup, fused
assert shutil.which('cc') is None and shutil.which('gcc') is None, 'a compiler is on PATH'
sys.addaudithook(audit)
for mode in ('batch', 'pair', 'elem'):
    x = torch.randn(8, 3, 32, 32); y = torch.arange(8)
    Mixup(mixup_alpha=1., cutmix_alpha=1., mode=mode, num_classes=8)(x, y)
    FastCollateMixup(mixup_alpha=1., cutmix_alpha=1., mode=mode, num_classes=8)([(np.zeros((3, 8, 8), np.uint8), i) for i in range(8)])
assert fused.available() and mixcut_nb.mixing._kernel() == 'auto'
print(writes)
"""

def test_no_compiler_no_cache_no_files(tmp_path):
    "With no C compiler on PATH and an empty cache folder, mixing uses the installed C loop and writes, builds and loads nothing"
    (tmp_path / 'cache').mkdir(); (tmp_path / 'home').mkdir()
    env = dict(os.environ, PATH=str(tmp_path / 'empty-bin'), MIXCUT_NB_CACHE=str(tmp_path / 'cache'), HOME=str(tmp_path / 'home'))
    env.pop('CC', None); env.pop('MIXCUT_NB_KERNEL', None)
    r = subprocess.run([sys.executable, '-c', NO_FILES], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]', r.stdout
    assert not any((tmp_path / 'cache').iterdir()) and not any((tmp_path / 'home').iterdir())

WITHOUT_THE_LOOP = """
import sys, warnings
sys.modules['mixcut_nb._fused'] = None          # as installed where the build failed: importing it raises ImportError
import numpy as np, torch
from timm.data.mixup import Mixup as TM
from mixcut_nb import Mixup, fused
from mixcut_nb.mixing import use_kernel
assert not fused.available()
x = torch.randn(6, 3, 9, 11); y = torch.arange(6)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    np.random.seed(0); xb, yb = Mixup(mode='elem', cutmix_alpha=1., num_classes=6)(x.clone(), y)
    Mixup(num_classes=6)(x.clone(), y)
    with use_kernel('reference'): Mixup(num_classes=6)(x.clone(), y)
np.random.seed(0); xa, ya = TM(mode='elem', cutmix_alpha=1., num_classes=6)(x.clone(), y)
assert torch.equal(xa, xb) and torch.equal(ya, yb)
msgs = [str(m.message) for m in w if 'not built' in str(m.message)]
assert len(msgs) == 1 and 'MIXCUT_NB_KERNEL=reference' in msgs[0], msgs
with use_kernel('c'):
    try: Mixup(num_classes=6)(x.clone(), y)
    except RuntimeError as e: assert 'MIXCUT_NB_KERNEL=c' in str(e)
    else: raise AssertionError('forcing the missing C loop did not raise')
print('ok')
"""

def test_without_the_c_loop_mixing_falls_back_and_warns_once():
    r = subprocess.run([sys.executable, '-c', WITHOUT_THE_LOOP], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]

ROOT = Path(__file__).resolve().parents[1]

def _wheel(tmp_path, env):
    "Build a wheel of a copy of this repository's sources (no dependencies, no isolation) and return its name and members"
    import shutil, zipfile
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns('.git', '.venv', '*.so', 'build', '*.egg-info', 'docs', '_proc',
                                                             '__pycache__', '.hypothesis', '.pytest_cache', 'runs'))
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(tmp_path / 'w'), str(src)],
                       env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    whl, = (tmp_path / 'w').glob('mixcut_nb-*.whl')
    return whl.name, zipfile.ZipFile(whl).namelist()

def test_a_wheel_carries_the_compiled_loop(tmp_path):
    "`pip wheel .` builds the loop once for every CPython >= 3.10 (stable ABI), and the wheel carries it"
    name, files = _wheel(tmp_path, dict(os.environ))
    assert '-cp310-abi3-' in name, name
    assert 'mixcut_nb/_fused.abi3.so' in files and 'mixcut_nb/_fused.c' in files, files

def test_without_a_compiler_installation_still_succeeds(tmp_path):
    "A failing compiler at install time: the wheel builds, without the loop"
    cc = tmp_path / 'cc'; cc.write_text('#!/bin/sh\necho "cc: not here" >&2\nexit 1\n'); cc.chmod(0o755)
    name, files = _wheel(tmp_path, dict(os.environ, CC=str(cc), LDSHARED=f'{cc} -shared'))
    assert not any(f.endswith('.so') for f in files), files
    assert 'mixcut_nb/mixing.py' in files

PTHREADS = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location('mixcut_nb._fused', sys.argv[1])
import torch
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
assert mod.openmp == 0
import numpy as np
from timm.data.mixup import Mixup as TM
from mixcut_nb import Mixup, fused
fused._fused = mod
torch.set_num_threads(3)
from timm.data.mixup import FastCollateMixup as TC
from mixcut_nb import FastCollateMixup
for mode in ('batch', 'pair', 'elem'):
    x = torch.randn(10, 3, 64, 64); y = torch.arange(10)
    np.random.seed(1); xb, yb = Mixup(mode=mode, cutmix_alpha=1., num_classes=10)(x.clone(), y)
    np.random.seed(1); xa, ya = TM(mode=mode, cutmix_alpha=1., num_classes=10)(x.clone(), y)
    assert torch.equal(xa, xb) and torch.equal(ya, yb), mode
    s = [(np.random.RandomState(i).randint(0, 256, (3, 64, 64)).astype(np.uint8), i) for i in range(10)]
    np.random.seed(2); xb, yb = FastCollateMixup(mode=mode, num_classes=10)(s)
    np.random.seed(2); xa, ya = TC(mode=mode, num_classes=10)([(a.copy(), t) for a, t in s])
    assert torch.equal(xa, xb) and torch.equal(ya, yb), ('collate', mode)
print('ok')
"""

def test_the_loop_without_openmp_runs_its_own_threads(tmp_path):
    "Where the compiler lacks OpenMP the loop starts its own threads, and other compilers round uint8 by adding 2^23: same bits"
    import shutil, sysconfig
    if shutil.which('cc') is None: pytest.skip('no C compiler here')
    so = tmp_path / '_fused.abi3.so'
    r = subprocess.run(['cc', '-O3', '-ffp-contract=off', '-fno-fast-math', '-fno-math-errno', '-pthread', '-fPIC', '-shared',
                        '-DMIXCUT_ROUND_BY_ADDING', f"-I{sysconfig.get_paths()['include']}",
                        str(ROOT / 'mixcut_nb' / '_fused.c'), '-o', str(so)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, '-c', PTHREADS, str(so)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]

@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem', 'half'])
@pytest.mark.parametrize('soft', [False, True])
def test_a_call_reads_no_values_back_from_the_device(mode, soft):
    "A proxy for 'no host-device synchronisation': on the meta device there are no values to read, so any read back fails"
    x, y = torch.randn(6, 3, 8, 8, device='meta'), torch.randint(0, 10, (6,)).to('meta')
    if soft: y = torch.nn.functional.one_hot(torch.arange(6), 10).float().to('meta')
    for kw in [dict(mixup_alpha=1.), dict(mixup_alpha=0., cutmix_alpha=1.), dict(mixup_alpha=1., cutmix_alpha=1., prob=.5)]:
        xo, t = Mixup(num_classes=10, mode=mode, **kw)(x, y)
        assert xo is x and t.device.type == 'meta' and t.shape == (6, 10)

def by_the_table(x, p):
    "`p`'s per-element draws read straight from `MODES` (element i follows draw `follows[i]`), applied by timm's loop"
    follows = MODES[p.mode].follows(len(x))
    on, d = follows >= 0, np.maximum(follows, 0)
    e = MixParams(np.where(on, p.lam[d], 1).astype(p.lam.dtype), p.mixup[d] & on, p.cutmix[d] & on,
                  p.boxes[d] * on[:, None], 'elem', len(x))
    return timm_loop(x, e)

def by_the_tables(x, p):
    "Element i follows draw `MODES[p.mode].follows(B)[i]` and mixes with `PARTNERS[p.pairing](B)[i]`, written out"
    B, out = len(x), x.clone()
    for i, (d, j) in enumerate(zip(MODES[p.mode].follows(B), PARTNERS[p.pairing](B))):
        if d < 0: continue
        lam = p.lam[d]
        if p.mixup[d]:
            if x.dtype == torch.uint8:
                f = x[i].numpy().astype(np.float32) * lam + x[j].numpy().astype(np.float32) * (1 - lam)
                out[i] = torch.from_numpy(np.rint(f).astype(np.uint8))
            else: out[i] = x[i] * lam + x[j] * (1 - lam)
        if p.cutmix[d]:
            yl, yh, xl, xh = p.boxes[d]
            out[i][:, yl:yh, xl:xh] = x[j][:, yl:yh, xl:xh]
    return out

@pytest.mark.skipif(not fused.available(), reason='the C loop was not built')
@pytest.mark.parametrize('pairing', list(PARTNERS))
@pytest.mark.parametrize('mode', list(MODES))
def test_the_c_loop_out_of_place_follows_the_tables(mode, pairing):
    "Out of place, in every mode and pairing: each element follows its draw and mixes with its partner; x untouched"
    for B in ((2, 6, 8) if MODES[mode].even else (1, 5, 6)):
        for dtype in (torch.float32, torch.float64, torch.uint8):
            x = torch.randint(0, 256, (B, 3, 7, 9)).to(dtype) if dtype == torch.uint8 else torch.randn(B, 3, 7, 9, dtype=dtype)
            x0 = x.clone()
            for seed in range(4):
                p = replace(_random_params(mode, B, 7, 9, seed), pairing=pairing)
                out = fused.mix_c(x, p, forced=True)
                assert torch.equal(out, by_the_tables(x, p)) and torch.equal(x, x0), (mode, pairing, B, dtype, seed)
                assert torch.equal(out, mix_reference(x, p))
    with pytest.raises(ValueError, match="pairs B-1-i, not 'roll'"): fused.mix_c_(x, replace(p, pairing='roll'), forced=True)

@pytest.mark.skipif(not fused.available(), reason='the C loop was not built')
@pytest.mark.parametrize('mode', list(MODES))
def test_the_c_loop_follows_the_mode_table(mode):
    "Each element follows the draw the mode table names and mixes with B-1-i; odd batches where the mode allows them"
    for B in ((2, 6, 8) if MODES[mode].even else (1, 5, 6)):
        for dtype in (torch.float32, torch.float64, torch.uint8):
            x = torch.randint(0, 256, (B, 3, 7, 9)).to(dtype) if dtype == torch.uint8 else torch.randn(B, 3, 7, 9, dtype=dtype)
            for seed in range(4):
                p = _random_params(mode, B, 7, 9, seed)
                y = x.clone()
                assert fused.mix_c_(y, p, forced=True) and torch.equal(y, by_the_table(x, p)), (mode, B, dtype, seed)

# --- in-place writes autograd sees; draws a kernel would misread ---------------------------------------------------

from mixcut_nb import ResizeMix, FMix, SaliencyMix
from mixcut_nb.beyond import MaskParams

METHODS = {'Mixup': lambda: Mixup(num_classes=10, rng=np.random.default_rng(0)),
           'ResizeMix': lambda: ResizeMix(num_classes=10, rng=np.random.default_rng(0)),
           'FMix': lambda: FMix(num_classes=10, rng=np.random.default_rng(0)),
           'SaliencyMix': lambda: SaliencyMix(num_classes=10, rng=np.random.default_rng(0))}

@pytest.mark.parametrize('kernel', FAST + ['reference'])
@pytest.mark.parametrize('method', list(METHODS))
def test_mixing_a_tensor_saved_for_backward_makes_backward_fail(kernel, method):
    "As after any in-place change (timm's too): the kernels tell autograd they wrote `x`"
    x = torch.randn(4, 3, 8, 8); w = torch.randn(4, 3, 8, 8, requires_grad=True)
    h = (w * x).sum()
    with use_kernel(kernel): METHODS[method]()(x, torch.arange(4))
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): h.backward()

@pytest.mark.parametrize('kernel', FAST + ['reference'])
def test_a_leaf_mixed_under_no_grad_makes_backward_fail(kernel):
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    h = (x * x).sum()
    with use_kernel(kernel), torch.no_grad(): Mixup(num_classes=10)(x, torch.arange(4))
    with pytest.raises(RuntimeError, match='modified by an inplace operation'): h.backward()

@pytest.mark.skipif(not fused.available(), reason='the C loop was not built')
def test_every_c_write_raises_the_version():
    x = torch.rand(4, 3, 8, 8)
    for write in (lambda: fused.mix_c_(x, _random_params('elem', 4, 8, 8)),
                  lambda: fused.paste_shrunk_c_(x, np.tile([0, 4, 0, 4], (4, 1)))):
        v = x._version
        assert write() and x._version > v

@pytest.mark.parametrize('field', ['lam', 'boxes'])
def test_draws_in_a_foreign_byte_order_are_refused_naming_them(field):
    "A big-endian `lam` has dtype name 'float32': the C loop would read garbage; it is refused, nothing changes"
    lam = np.full(4, .25, '>f4') if field == 'lam' else np.full(4, .25, np.float32)
    boxes = np.tile([0, 4, 0, 4], (4, 1)).astype('>i8' if field == 'boxes' else np.int64)
    p = MixParams(lam, np.array([True, False, True, False]), np.array([False, True, False, True]), boxes)
    x = torch.rand(4, 3, 8, 8); x0 = x.clone()
    for apply in (mix_, mix_reference):
        with pytest.raises(ValueError, match=f'`p.{field}` must be in this machine.s byte order'): apply(x, p)
        assert torch.equal(x, x0)
    native = MixParams(p.lam.astype(np.float32), p.mixup, p.cutmix, p.boxes.astype(np.int64))
    assert torch.equal(mix_(x.clone(), native), mix_reference(x, native))     # the same draws, native: mixed

@pytest.mark.parametrize('masks, error', [(np.ones((4, 4, 16), bool), ValueError), (np.ones((4, 8, 8), np.uint8), TypeError),
                                          (np.ones((2, 8, 8), bool), ValueError), ([[True] * 8] * 8, TypeError)])
def test_masks_of_the_wrong_shape_or_type_are_refused(masks, error):
    "(B, 4, 16) masks for 8x8 images have the right byte count: the C loop would take them; `mix_` names `p.masks`"
    p = MaskParams(np.full(4, .5, np.float32), np.zeros(4, bool), np.ones(4, bool), np.zeros((4, 4), np.int64),
                   'elem', 4, masks)
    x = torch.rand(4, 3, 8, 8); x0 = x.clone()
    for kernel in FAST + ['reference']:
        with use_kernel(kernel), pytest.raises(error, match='`p.masks`'): mix_(x, p)
        assert torch.equal(x, x0)
