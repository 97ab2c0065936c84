"`mix_` against a per-element reference loop: every layout, size, dtype, box position and block size"
import os, shutil, subprocess, sys
import numpy as np, torch, pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from mixcut_nb import MixParams, mix_

def reference(x, p):
    "timm's per-element loop: blend with `x[B-1-i]`, or paste its box"
    out, B = x.clone(), len(x)
    for i in range(B):
        j, lam = B - 1 - i, p.lam[i]
        if p.mixup[i]:
            if x.dtype == torch.uint8: out[i] = (x[i].float() * lam + x[j].float() * (1 - lam)).round().byte()
            else: out[i] = x[i] * lam + x[j] * (1 - lam)
        if p.cutmix[i]:
            yl, yh, xl, xh = p.boxes[i]
            out[i][:, yl:yh, xl:xh] = x[j][:, yl:yh, xl:xh]
    return out

@st.composite
def params(draw, B, H, W):
    kind = draw(st.lists(st.sampled_from(['mixup', 'cutmix', 'none']), min_size=B, max_size=B))
    if draw(st.booleans()): kind = [draw(st.sampled_from(['mixup', 'cutmix']))] * B       # every row alike
    lam_dtype = draw(st.sampled_from([np.float32, np.float64]))
    lam = np.array([draw(st.floats(0, 1)) for _ in range(B)], lam_dtype)
    def box():
        yl, yh = sorted(draw(st.integers(0, H)) for _ in range(2))
        xl, xh = sorted(draw(st.integers(0, W)) for _ in range(2))
        return draw(st.sampled_from([(yl, yh, xl, xh), (0, yh, 0, xh), (yl, H, xl, W), (0, H, 0, W)]))
    same = draw(st.booleans())
    b0 = box()
    boxes = np.array([(b0 if same else box()) if k == 'cutmix' else (0, 0, 0, 0) for k in kind], np.int64).reshape(B, 4)
    return MixParams(lam, np.array([k == 'mixup' for k in kind]), np.array([k == 'cutmix' for k in kind]), boxes)

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), B=st.integers(1, 9), C=st.integers(1, 4), H=st.integers(1, 19), W=st.integers(1, 23),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]),
       layout=st.sampled_from(['contiguous', 'channels_last', 'transposed', 'strided_batch']),
       budget=st.sampled_from([None, 1, 64, 1000, 1 << 30]), fused=st.booleans())
def test_mix_matches_reference(data, B, C, H, W, dtype, layout, budget, fused):
    p = data.draw(params(B, H, W))
    g = torch.Generator().manual_seed(B * H * W)
    x = torch.randint(0, 256, (B, C, H, W), generator=g).to(dtype) if dtype == torch.uint8 else (torch.randn(B, C, H, W, generator=g) * 3).to(dtype)
    if layout == 'channels_last': x = x.contiguous(memory_format=torch.channels_last)
    if layout == 'transposed': x = x.transpose(2, 3).contiguous().transpose(2, 3)        # neither NCHW nor NHWC
    if layout == 'strided_batch': x = torch.stack([x, x], 1)[:, 0]                            # batch stride 2*C*H*W
    expected = reference(x, p)
    out = mix_(x, p, budget=budget, fused=fused)
    assert out is x
    assert torch.equal(x, expected)

@pytest.mark.parametrize('fused', [True, False])
def test_special_values_are_copied_bit_for_bit(fused):
    "Boxes copy bits: NaN payloads, infinities and -0.0 arrive unchanged; untouched rows stay bit-identical"
    x = torch.tensor([float('nan'), float('inf'), -0.0, 1.0]).repeat(4, 1, 4, 1).clone()   # (4,1,4,4)
    x[3] = -x[3]
    p = MixParams(np.ones(4, np.float32), np.zeros(4, bool), np.array([True, False, True, False]),
                  np.array([[0, 4, 0, 2], [0, 0, 0, 0], [1, 3, 1, 4], [0, 0, 0, 0]]))
    bits = x.view(torch.int32).clone()
    mix_(x, p, fused=fused)
    assert torch.equal(x.view(torch.int32)[0, :, :, :2], bits[3, :, :, :2]) and torch.equal(x.view(torch.int32)[1], bits[1])
    assert torch.equal(x.view(torch.int32)[0, :, :, 2:], bits[0, :, :, 2:])

def test_nothing_to_do_leaves_the_batch_alone():
    x = torch.randn(3, 2, 5, 5); x0 = x.clone()
    mix_(x, MixParams(np.ones(3), np.zeros(3, bool), np.zeros(3, bool), np.zeros((3, 4), np.int64)))
    assert torch.equal(x, x0)

def test_fused_loop_is_built_where_there_is_a_compiler():
    "Where `cc` exists the fused loop must build, so the fused half of these tests never silently tests torch twice"
    from mixcut_nb.fused import fused_lib
    if shutil.which(os.environ.get('CC') or 'cc') is None: pytest.skip('no C compiler here')
    assert fused_lib() is not None

FALLBACK = """
import warnings, numpy as np, torch
from timm.data.mixup import Mixup as TM
from mixcut_nb import Mixup
x = torch.randn(6, 3, 9, 11); y = torch.arange(6)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter('always')
    np.random.seed(0); xb, yb = Mixup(mode='elem', cutmix_alpha=1., num_classes=6)(x.clone(), y)
    Mixup(num_classes=6)(x.clone(), y)
np.random.seed(0); xa, ya = TM(mode='elem', cutmix_alpha=1., num_classes=6)(x.clone(), y)
assert torch.equal(xa, xb) and torch.equal(ya, yb)
msgs = [str(m.message) for m in w if 'fused CPU loop is not available' in str(m.message)]
assert len(msgs) == 1 and 'no C compiler' in msgs[0], msgs
print('ok')
"""

def test_without_a_compiler_mixing_falls_back_to_torch_and_warns_once(tmp_path):
    env = dict(os.environ, CC=str(tmp_path / 'no-such-cc'), MIXCUT_NB_CACHE=str(tmp_path / 'cache'))
    r = subprocess.run([sys.executable, '-c', FALLBACK], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]
    assert not (tmp_path / 'cache').exists() or not any((tmp_path / 'cache').glob('*.so'))

def test_a_broken_compiler_falls_back_too(tmp_path):
    cc = tmp_path / 'cc'; cc.write_text('#!/bin/sh\necho "cc: error: broken" >&2\nexit 1\n'); cc.chmod(0o755)
    code = FALLBACK.replace("'no C compiler' in msgs[0]", "'cc: error: broken' in msgs[0]")
    env = dict(os.environ, CC=str(cc), MIXCUT_NB_CACHE=str(tmp_path / 'cache'))
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]

PTHREADS = """
import warnings, numpy as np, torch
warnings.simplefilter('error')
from timm.data.mixup import Mixup as TM
from mixcut_nb import Mixup
from mixcut_nb.fused import fused_lib
torch.set_num_threads(3)
for mode in ('batch', 'pair', 'elem'):
    x = torch.randn(10, 3, 19, 23); y = torch.arange(10)
    np.random.seed(1); xb, yb = Mixup(mode=mode, cutmix_alpha=1., num_classes=10)(x.clone(), y)
    np.random.seed(1); xa, ya = TM(mode=mode, cutmix_alpha=1., num_classes=10)(x.clone(), y)
    assert torch.equal(xa, xb) and torch.equal(ya, yb), mode
assert fused_lib() is not None
print('ok')
"""

def test_a_compiler_without_openmp_builds_the_threaded_loop(tmp_path):
    "The loop's own threads (no OpenMP) give the same bits"
    if shutil.which('cc') is None: pytest.skip('no C compiler here')
    cc = tmp_path / 'cc'
    cc.write_text('#!/bin/sh\ncase "$*" in *-fopenmp*) echo "no OpenMP here" >&2; exit 1;; esac\nexec cc "$@"\n'); cc.chmod(0o755)
    env = dict(os.environ, CC=str(cc), MIXCUT_NB_CACHE=str(tmp_path / 'cache'))
    r = subprocess.run([sys.executable, '-c', PTHREADS], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]
    assert len(list((tmp_path / 'cache').glob('fused-*.so'))) == 1
