"mixcut_nb.v2 against torchvision's own v2 MixUp and CutMix, seeded alike: same bits, same errors, inputs untouched"
import os, subprocess, sys, textwrap
import numpy as np, torch, pytest
import PIL.Image
from hypothesis import given, settings, strategies as st, HealthCheck
from torch.utils.data import DataLoader, TensorDataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2 as tv2
from mixcut_nb import v2
from mixcut_nb.mixing import use_kernel

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OTHERS = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool, torch.complex64]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

def leaves(out):
    "The tensors and other leaves of an output, in order, with their types"
    if isinstance(out, dict): return [v for k in sorted(out) for v in leaves(out[k])]
    if isinstance(out, (tuple, list)): return [v for o in out for v in leaves(o)]
    return [out]

def same(a, b):
    "Bit-identical leaves of the same types, dtypes and shapes"
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for u, w in zip(la, lb):
        assert type(u) is type(w), (type(u), type(w))
        if isinstance(u, torch.Tensor):
            assert u.dtype == w.dtype and u.shape == w.shape and u.device == w.device, (u.dtype, w.dtype, u.shape)
            assert torch.equal(u, w)
        else: assert u is w or u == w

def outcome(f):
    "`('ok', result)` or `('error', exception type)`, and the global generator's state after"
    try: r = ('ok', f())
    except Exception as e: r = ('error', type(e))
    return r, torch.get_rng_state()

def compare(name, inputs, seed=0, **kw):
    "torchvision's and mixcut_nb's `name` on `inputs`, same seed: same outcome and bits; inputs untouched"
    before = [t.clone() if isinstance(t, torch.Tensor) else t for t in leaves(inputs)]
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    torch.manual_seed(seed); (theirs, st_t) = outcome(lambda: getattr(tv2, name)(**kw)(*args))
    torch.manual_seed(seed); (ours, st_o) = outcome(lambda: getattr(v2, name)(**kw)(*args))
    assert theirs[0] == ours[0], (theirs, ours)
    if theirs[0] == 'ok': same(theirs[1], ours[1])
    else: assert theirs[1] is ours[1], (theirs[1], ours[1])
    assert torch.equal(st_t, st_o)                          # the same draws taken from the global generator
    for t, b in zip(leaves(inputs), before):
        if isinstance(t, torch.Tensor): assert torch.equal(t, b) and type(t) is type(b)
    return theirs, ours

@st.composite
def cases(draw):
    "A random input torchvision's MixUp or CutMix takes: form, shape (B=1, odd B, H or W = 1), dtype, labels"
    B, C, H, W = draw(st.integers(1, 7)), draw(st.integers(1, 4)), draw(st.integers(1, 11)), draw(st.integers(1, 11))
    name = draw(st.sampled_from(['MixUp', 'CutMix']))
    dtype = draw(st.sampled_from(FLOATS + ([torch.uint8] * 2 + OTHERS if name == 'CutMix' else [torch.complex64])))
    form = draw(st.sampled_from(['tensor', 'image', 'video', 'dict', 'channels_last']))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    shape = (B, draw(st.integers(1, 3)), C, H, W) if form == 'video' else (B, C, H, W)
    x = (torch.rand(shape, generator=g) * 300 - 20)
    x = x.to(dtype) if dtype.is_floating_point or dtype.is_complex else x.clamp(0, 100).to(dtype)
    if form == 'channels_last': x = x.contiguous(memory_format=torch.channels_last)
    if form in ('image', 'dict'): x = tv_tensors.Image(x)
    if form == 'video': x = tv_tensors.Video(x)
    n = draw(st.integers(1, 6))
    soft = draw(st.booleans())
    labels = torch.softmax(torch.randn(B, n, generator=g), 1) if soft else torch.randint(0, n, (B,), generator=g)
    if soft: labels = labels.to(draw(st.sampled_from([torch.float32, torch.float64, torch.float16])))
    num_classes = draw(st.sampled_from([None, n])) if soft else n
    kw = dict(alpha=draw(st.sampled_from([1.0, 0.2, 0.5, 2.0, 7.5])), num_classes=num_classes)
    inputs = dict(pic=x, labels=labels, other='kept', n=3) if form == 'dict' else (x, labels)
    return name, inputs, kw, draw(st.integers(0, 2**31)), dtype

@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_random_inputs_are_torchvisions_bit_for_bit(case):
    name, inputs, kw, seed, dtype = case
    theirs, ours = compare(name, inputs, seed, **kw)
    assert theirs[0] == 'ok' or dtype not in FLOATS + [torch.uint8], theirs

@pytest.mark.parametrize('name', ['MixUp', 'CutMix'])
@pytest.mark.parametrize('dtype', FLOATS + OTHERS)
def test_every_dtype(name, dtype):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 3, 9, 7, generator=g) * 200).to(dtype)
    theirs, _ = compare(name, (x, torch.randint(0, 4, (5,), generator=g)), seed=3, num_classes=4)
    assert (theirs[0] == 'ok') == (name == 'CutMix' or dtype in FLOATS + [torch.complex64])

@pytest.mark.parametrize('kernel', ['auto', 'c', 'reference'])
@pytest.mark.parametrize('name', ['MixUp', 'CutMix'])
def test_every_cpu_kernel(kernel, name):
    g = torch.Generator().manual_seed(2)
    for dtype in ([torch.float32, torch.float64, torch.uint8] if kernel == 'c' else FLOATS + [torch.uint8]):
        if name == 'MixUp' and dtype == torch.uint8: continue
        x = (torch.rand(6, 3, 13, 11, generator=g) * 255).to(dtype)
        with use_kernel(kernel): compare(name, (x, torch.randint(0, 10, (6,), generator=g)), seed=4, num_classes=10)

def test_random_choice_dict_and_label_key():
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([1, 0, 3, 3])
    for seed in range(6):
        torch.manual_seed(seed); a = tv2.RandomChoice([tv2.CutMix(num_classes=4), tv2.MixUp(num_classes=4)])(x, y)
        torch.manual_seed(seed); b = tv2.RandomChoice([v2.CutMix(num_classes=4), v2.MixUp(num_classes=4)])(x, y)
        same(a, b)
    compare('CutMix', dict(img=x, target_label=y, meta=[1, 'a']), num_classes=4)      # a 'label'-like key
    compare('MixUp', ((x, y),), num_classes=4, labels_getter=lambda inp: inp[0][1])   # a labels_getter

def test_the_usual_call_skips_torchvisions_forward_and_nothing_else_does(monkeypatch):
    "Plain `(images, labels)` take the shortcut; every other form still goes through torchvision's `forward`"
    from collections import namedtuple
    from torchvision.transforms.v2 import _augment
    calls, long_way = [], _augment._BaseMixUpCutMix.forward
    monkeypatch.setattr(_augment._BaseMixUpCutMix, 'forward', lambda self, *a: calls.append(1) or long_way(self, *a))
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([1, 0, 3, 3])
    Pair = namedtuple('Pair', 'images labels')
    for inputs, shortcut in [((x, y), True), (((x, y),), True), (([x, y],), False), ((Pair(x, y),), False),
                             ((tv_tensors.Image(x), y), False), ((x, torch.rand(4, 4)), True),
                             ((x, torch.rand(4, 5)), False), ((x[0], y), False), ((x, y, y), False)]:
        for name in ('MixUp', 'CutMix'):
            calls.clear()
            for seed in range(3): compare(name, inputs, seed, num_classes=4)
            assert len(calls) == 3 * (1 + (not shortcut)), (inputs, name, len(calls))   # torchvision's always once

ERRORS = [  # (name, inputs, kwargs): torchvision raises; ours must raise the same type
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])), {}),                  # no num_classes
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), torch.rand(4, 5)), dict(num_classes=4)),          # 5 != 4
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.zeros(4, 2, 2)), dict(num_classes=4)),       # 3-d labels
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), [0, 1, 2, 3]), dict(num_classes=4)),               # not a tensor
    ('CutMix', lambda: (torch.rand(3, 8, 8), torch.tensor([0, 1, 2])), dict(num_classes=4)),      # not a batch
    ('MixUp', lambda: (tv_tensors.Video(torch.rand(4, 3, 8, 8)), torch.arange(4)), dict(num_classes=4)),
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.arange(3)), dict(num_classes=4)),            # batch sizes
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 4])), dict(num_classes=4)), # id too large
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), torch.tensor([0, -1, 2, 3])), dict(num_classes=4)),
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3], dtype=torch.int32)), dict(num_classes=4)),
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.tensor([0., 1., 2., 3.])), dict(num_classes=4)),
    ('MixUp', lambda: (torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), torch.arange(4)), dict(num_classes=4)),
    ('MixUp', lambda: (torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.int32), torch.arange(4)), dict(num_classes=4)),
    ('CutMix', lambda: (PIL.Image.new('RGB', (8, 8)), torch.arange(4)), dict(num_classes=4)),
    ('CutMix', lambda: (tv_tensors.Image(torch.rand(4, 3, 8, 8)), tv_tensors.Mask(torch.zeros(4, 8, 8)),
                        torch.arange(4)), dict(num_classes=4)),
    ('MixUp', lambda: dict(image=torch.rand(4, 3, 8, 8), boxes=tv_tensors.BoundingBoxes(
        torch.zeros(4, 4), format='XYXY', canvas_size=(8, 8)), labels=torch.arange(4)), dict(num_classes=4)),
    ('CutMix', lambda: (tv_tensors.Image(torch.rand(4, 3, 8, 8)), tv_tensors.Image(torch.rand(4, 3, 9, 8)),
                        torch.arange(4)), dict(num_classes=4)),                                  # two sizes
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), dict(x=torch.arange(4))), dict(num_classes=4)),    # no labels key
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=4, labels_getter=None)),
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=4, labels_getter='x')),
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=4, alpha=0.)),
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=4, alpha=-1.)),
    ('CutMix', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=4, alpha='one')),
    ('MixUp', lambda: (torch.rand(4, 3, 8, 8), torch.arange(4)), dict(num_classes=0)),
]

@pytest.mark.parametrize('i', range(len(ERRORS)))
def test_torchvisions_errors_are_ours(i):
    name, inputs, kw = ERRORS[i]
    theirs, _ = compare(name, inputs(), seed=i, **kw)
    assert theirs[0] == 'error'

def test_arguments_beyond_torchvision_are_checked():
    for cls in (v2.MixUp, v2.CutMix):
        with pytest.raises(TypeError, match='`generator`'): cls(num_classes=3, generator=3)
        with pytest.raises(TypeError, match='`generator`'): cls(num_classes=3, generator=np.random.default_rng(0))
    with pytest.raises(TypeError, match='`uint8`'): v2.MixUp(uint8='yes')
    with pytest.raises(TypeError): v2.CutMix(uint8=True)      # CutMix takes uint8 as torchvision does

@pytest.mark.parametrize('kernel', ['auto', 'reference'])
def test_uint8_mixup_rounds_half_to_even(kernel):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (5, 3, 10, 12), dtype=torch.uint8, generator=g), torch.arange(5)
    x0, m = x.clone(), v2.MixUp(num_classes=5, uint8=True)
    for seed in range(5):
        torch.manual_seed(seed)
        with use_kernel(kernel): out, rows = m(x, y)
        lam = m.last_params.lam[0]
        f = x.float() * np.float32(lam) + x.roll(1, 0).float() * np.float32(1 - lam)
        assert out.dtype == torch.uint8 and torch.equal(out, f.round().byte()) and torch.equal(x, x0)
        torch.manual_seed(seed); _, yt = tv2.MixUp(num_classes=5)(x.float(), y)
        assert torch.equal(rows, yt)

def test_uint8_rounding_is_half_to_even_at_the_halves():
    x = torch.tensor([1, 2, 3, 4], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 1, 8).contiguous()
    m = v2.MixUp(num_classes=4, uint8=True)
    m.make_params = lambda flat: dict(lam=0.5)
    out, _ = m(x, torch.arange(4))
    assert out[:, 0, 0, 0].tolist() == [2, 2, 2, 4]        # (1+4)/2=2.5->2, 1.5->2, 2.5->2, 3.5->4

def test_generator_draws_what_torchvision_draws_after_manual_seed_and_leaves_the_global_alone():
    x, y = torch.rand(6, 3, 10, 10), torch.randint(0, 5, (6,))
    for name in ('MixUp', 'CutMix'):
        g, theirs = torch.Generator().manual_seed(11), getattr(tv2, name)(num_classes=5)
        ours = getattr(v2, name)(num_classes=5, generator=g)
        torch.manual_seed(11)
        expected = [theirs(x, y) for _ in range(3)]
        torch.manual_seed(99); state = torch.get_rng_state()
        for e in expected: same(ours(x, y), e)
        assert torch.equal(torch.get_rng_state(), state)
        assert not torch.equal(g.get_state(), torch.Generator().manual_seed(11).get_state())   # it drew

class Draws(torch.utils.data.Dataset):
    "Each item: the `lam` a transform draws in the worker that loads it"
    def __init__(self, tfm): self.tfm = tfm
    def __len__(self): return 8
    def __getitem__(self, i):
        self.tfm(torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))
        return float(self.tfm.last_params.lam[0])

def test_generator_in_workers_gives_each_worker_its_own_draws_reproducibly():
    def lams(seed):
        tfm = v2.MixUp(num_classes=2, generator=torch.Generator().manual_seed(seed))
        dl = DataLoader(Draws(tfm), batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
        return [float(v) for v in dl]
    a = lams(1)
    assert a == lams(1) and a != lams(2)
    assert len(set(a[0::2]) & set(a[1::2])) == 0            # worker 0's draws are not worker 1's

class Collate:
    "torchvision's recipe: `RandomChoice([CutMix, MixUp])` on `default_collate`, from library `lib`"
    def __init__(self, lib, n): self.choice = lib.RandomChoice([lib.CutMix(num_classes=n), lib.MixUp(num_classes=n)])
    def __call__(self, batch): return self.choice(*default_collate(batch))

def loader(lib, ds, context=None, seed=0):
    return DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, collate_fn=Collate(lib, 10),
                      multiprocessing_context=context, generator=torch.Generator().manual_seed(seed))

class Ours:
    "mixcut_nb's MixUp and CutMix under torchvision's RandomChoice, as a module a spawned worker imports"
    RandomChoice, MixUp, CutMix = tv2.RandomChoice, v2.MixUp, v2.CutMix

def test_collate_fn_in_spawned_workers_is_torchvisions():
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.rand(32, 3, 12, 12, generator=g), torch.randint(0, 10, (32,), generator=g))
    for (xt, yt), (xo, yo) in zip(loader(tv2, ds, 'spawn'), loader(Ours, ds, 'spawn')):
        assert torch.equal(xt, xo) and torch.equal(yt, yo)

def train(lib, steps=12):
    "A few steps of a tiny convnet on three-channel digits, mixed by torchvision's collate recipe; the losses"
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images[:160]).float().div(16).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    ds = TensorDataset(x, torch.from_numpy(d.target[:160]).long())
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 10))
    opt, losses = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), []
    for epoch in range(2):
        for xb, yb in loader(lib, ds, seed=epoch):
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(); loss.backward(); opt.step()
            losses.append(loss.item())
    return losses, model.state_dict()

def test_training_with_the_collate_recipe_is_torchvisions_bit_for_bit():
    (lt, wt), (lo, wo) = train(tv2), train(Ours)
    assert len(lt) == 40 and lt == lo and all(torch.equal(wt[k], wo[k]) for k in wt)

def test_gradients_flow_as_torchvisions():
    for name in ('MixUp', 'CutMix'):
        grads = []
        for lib in (tv2, v2):
            f = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0)).requires_grad_()
            torch.manual_seed(1); out, _ = getattr(lib, name)(num_classes=3)(f * 2, torch.tensor([0, 1, 2, 0]))
            (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
            grads.append((out.detach(), f.grad))
        assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])

def test_last_params_is_the_call():
    x, y = torch.rand(5, 3, 16, 20), torch.randint(0, 3, (5,))
    m = v2.CutMix(num_classes=3)
    torch.manual_seed(0); out, rows = m(x, y)
    p = m.last_params
    assert (p.mode, p.pairing, p.batch_size) == ('batch', 'roll', 5) and p.cutmix.tolist() == [True]
    yl, yh, xl, xh = p.boxes[0]
    assert torch.equal(out[:, :, yl:yh, xl:xh], x.roll(1, 0)[:, :, yl:yh, xl:xh])
    assert p.lam[0] == 1 - (yh - yl) * (xh - xl) / (16 * 20)

SWAP = '''
import sys, torchvision.transforms.v2 as tv2, torchvision.transforms.v2._augment as aug
def snapshot(): return {(m, n): id(v) for m, mod in list(sys.modules.items()) if m.split('.')[0] == 'torchvision' and mod
                        for n, v in list(vars(mod).items())}
before = snapshot()
from mixcut_nb import v2
swapped = v2.swap_into_torchvision()
after = snapshot()
changed = sorted(f'{m}.{n}' for m, n in before if after.get((m, n)) != before[(m, n)])
assert changed == sorted(swapped) and len(swapped) == 4, (changed, swapped)
from torchvision.transforms.v2 import MixUp, CutMix
assert MixUp is v2.MixUp and CutMix is v2.CutMix and aug.MixUp is v2.MixUp and v2.swap_into_torchvision() == []
print('ok')
'''

def test_swap_into_torchvision_replaces_the_two_names_and_nothing_else():
    r = subprocess.run([sys.executable, '-c', SWAP], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]

INTERPRETED = '''
import torch
from torchvision.transforms import v2 as tv2
from mixcut_nb import v2, gpu
from mixcut_nb.mixing import use_kernel
assert gpu._interpreting()
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8):
    for name in ('MixUp', 'CutMix'):
        for seed, (B, H, W) in enumerate([(5, 9, 11), (1, 4, 1), (4, 1, 6)]):
            x = (torch.rand(B, 3, H, W, generator=g) * 255).to(dtype)
            if seed == 2: x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 7, (B,), generator=g)
            ours = getattr(v2, name)(num_classes=7, **({'uint8': True} if name == 'MixUp' else {}))
            torch.manual_seed(seed); xo, yo = ours(x, y)
            if dtype == torch.uint8 and name == 'MixUp':          # torchvision refuses it: against the reference
                with use_kernel('reference'): torch.manual_seed(seed); xt, yt = ours(x, y)
            else: torch.manual_seed(seed); xt, yt = getattr(tv2, name)(num_classes=7)(x, y)
            assert torch.equal(xo, xt) and torch.equal(yo, yt), (dtype, name, seed)
print('ok')
'''

def test_triton_kernel_through_its_interpreter_is_torchvisions():
    pytest.importorskip('triton')
    r = subprocess.run([sys.executable, '-c', INTERPRETED], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TRITON_INTERPRET='1', MIXCUT_NB_KERNEL='triton'))
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), (r.stdout[-1000:], r.stderr[-3000:])

@needs_cuda
@pytest.mark.parametrize('dtype', FLOATS)
def test_cuda_is_torchvisions(dtype):
    g = torch.Generator().manual_seed(0)
    for name in ('MixUp', 'CutMix'):
        for B in (1, 5, 128):
            x = torch.rand(B, 3, 32, 32, generator=g).to('cuda', dtype)
            compare(name, (x, torch.randint(0, 100, (B,), generator=g).cuda()), seed=B, num_classes=100)
