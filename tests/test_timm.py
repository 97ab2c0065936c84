"Inside timm's own stack: every mode timm takes, timm's loader with our collate, and the train.py runner"
import json, os, pickle, random, subprocess, sys, textwrap
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
import timm.data, timm.data.loader, timm.data.mixup as tm
import mixcut_nb as mc
from mixcut_nb.mixing import Mixer, _RandomStream

def same_rng_state(a, b): return a[0] == b[0] and all(np.array_equal(u, v) for u, v in zip(a[1:], b[1:]))

def run_py(*args, **kw):
    "A fresh interpreter: timm's modules are never swapped in this one"
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, **kw)

# --- modes ------------------------------------------------------------------------------------------------------

CONFIGS = [dict(), dict(mixup_alpha=0., cutmix_alpha=1.), dict(mixup_alpha=.4, cutmix_alpha=1., prob=.7, switch_prob=.3),
           dict(mixup_alpha=0., cutmix_minmax=(.2, .8), label_smoothing=0.), dict(mixup_alpha=1., cutmix_alpha=.5, correct_lam=False, prob=.5),
           dict(mixup_alpha=.1, cutmix_alpha=.1)]   # small alphas: Beta returns exactly 1 now and then

@pytest.mark.parametrize('kw', CONFIGS)
@pytest.mark.parametrize('B', [2, 4, 6, 16])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_mixup_half_mode_is_timms_bit_for_bit(kw, B, dtype):
    theirs, ours = tm.Mixup(num_classes=5, mode='half', **kw), mc.Mixup(num_classes=5, mode='half', **kw)
    for call in range(6):
        torch.manual_seed(call)
        x, y = torch.randn(B, 3, 13, 9).to(dtype), torch.randint(0, 5, (B,))
        if call == 4: theirs.mixup_enabled = ours.mixup_enabled = False
        np.random.seed(call); xt, yt = theirs(x.clone(), y); st = np.random.get_state()
        np.random.seed(call); xo, yo = ours(x.clone(), y); so = np.random.get_state()
        assert torch.equal(xo, xt) and torch.equal(yo, yt) and yo.dtype == yt.dtype and same_rng_state(so, st), (kw, B, dtype, call)
        assert ours.last_params.mode == 'batch'

def test_mixup_half_mode_on_an_odd_batch_is_batch_mode():
    "timm asserts an even batch in every mode; ours mixes an odd one, in 'half' as in 'batch'"
    x, y = torch.randn(5, 3, 8, 8), torch.arange(5)
    with pytest.raises(AssertionError): tm.Mixup(num_classes=5, mode='half')(x.clone(), y)
    for seed in range(8):
        np.random.seed(seed); xh, yh = mc.Mixup(num_classes=5, mode='half', cutmix_alpha=1.)(x.clone(), y)
        np.random.seed(seed); xb, yb = mc.Mixup(num_classes=5, mode='batch', cutmix_alpha=1.)(x.clone(), y)
        assert torch.equal(xh, xb) and torch.equal(yh, yb)

@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem', 'half'])
@pytest.mark.parametrize('kw', CONFIGS[:3])
def test_every_mode_timm_gives_a_meaning_to_is_timms_in_both_classes(mode, kw):
    rs = np.random.RandomState(0)
    samples = [(rs.randint(0, 256, (3, 11, 7)).astype(np.uint8), int(rs.randint(0, 5))) for _ in range(8)]
    for seed in range(3):
        np.random.seed(seed); xt, yt = tm.FastCollateMixup(num_classes=5, mode=mode, **kw)([(s.copy(), t) for s, t in samples])
        st = np.random.get_state()
        np.random.seed(seed); xo, yo = mc.FastCollateMixup(num_classes=5, mode=mode, **kw)(samples)
        assert torch.equal(xo, xt) and torch.equal(yo, yt) and same_rng_state(np.random.get_state(), st)
        x = torch.from_numpy(np.stack([s for s, _ in samples])).float()
        y = torch.tensor([t for _, t in samples])
        np.random.seed(seed); xt, yt = tm.Mixup(num_classes=5, mode=mode, **kw)(x.clone(), y); st = np.random.get_state()
        np.random.seed(seed); xo, yo = mc.Mixup(num_classes=5, mode=mode, **kw)(x.clone(), y)
        assert torch.equal(xo, xt) and torch.equal(yo, yt) and same_rng_state(np.random.get_state(), st)

@pytest.mark.parametrize('mode', ['elem_half', 'halfway', 'Batch', 'elements', '', None])
@pytest.mark.parametrize('cls', [mc.Mixup, mc.FastCollateMixup])
def test_other_mode_strings_are_an_error_naming_the_modes(cls, mode):
    "timm falls back to batch mode (or fails mid-collate for strings containing 'half'); ours says what it takes"
    with pytest.raises(ValueError, match="mode.*'batch', 'pair', 'elem', 'half'"): cls(mode=mode)

# --- timm's isinstance checks ---------------------------------------------------------------------------------

def test_our_collate_is_a_subclass_of_timms_with_our_methods_first():
    assert issubclass(mc.FastCollateMixup, tm.FastCollateMixup) and issubclass(mc.FastCollateMixup, mc.Mixup)
    mro = mc.FastCollateMixup.__mro__
    ours_first = (mc.FastCollateMixup, mc.Mixup, Mixer, _RandomStream)     # ours, with the base every method shares
    assert mro[:6] == ours_first + (tm.FastCollateMixup, tm.Mixup)
    ours = {n for c in (mc.FastCollateMixup, mc.Mixup) for n in vars(c)}
    for name in set(vars(tm.FastCollateMixup)) | set(vars(tm.Mixup)):
        if name in ours and not name.startswith('__dict') and name not in ('__module__', '__doc__', '__weakref__'):
            owner = next(c for c in mro if name in vars(c))
            assert owner in (mc.FastCollateMixup, mc.Mixup), name
    fc = mc.FastCollateMixup(num_classes=4)
    assert isinstance(fc, tm.FastCollateMixup) and isinstance(fc, mc.FastCollateMixup)
    assert not isinstance(mc.Mixup(), tm.Mixup)        # only the collate is joined: nothing in timm tests Mixup
    back = pickle.loads(pickle.dumps(fc))
    assert type(back) is mc.FastCollateMixup and back.num_classes == 4

def test_collate_pickles_to_spawned_dataloader_workers():
    rs = np.random.RandomState(0)
    ds = [(rs.randint(0, 256, (3, 8, 8)).astype(np.uint8), i % 3) for i in range(8)]
    dl = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=mc.FastCollateMixup(num_classes=3, cutmix_alpha=1.),
                                     num_workers=1, multiprocessing_context='spawn')
    got = list(dl)
    assert len(got) == 2 and all(x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8 for x, _ in got)
    assert all(torch.allclose(y.sum(1), torch.ones(4)) for _, y in got)

JOIN_CHECK = '''
import sys, importlib
{first}
import mixcut_nb
if 'timm' not in sys.modules:
    assert mixcut_nb.FastCollateMixup.__bases__ == (mixcut_nb.Mixup,), mixcut_nb.FastCollateMixup.__bases__
early = mixcut_nb.FastCollateMixup(num_classes=3)
from timm.data import create_loader
import timm.data.mixup as tm, timm.data.loader as tl
assert isinstance(early, tm.FastCollateMixup) and isinstance(early, tl.FastCollateMixup)
assert type(tm.__loader__).__name__ == 'SourceFileLoader' and tm.__spec__.loader is tm.__loader__
importlib.reload(tm)                                  # a reloaded timm: the new class replaces the old as a base
assert isinstance(early, tm.FastCollateMixup)
assert [c.__module__ for c in type(early).__mro__] == ['mixcut_nb.collate'] + ['mixcut_nb.mixing'] * 3 + ['timm.data.mixup', 'timm.data.mixup', 'builtins']   # Mixup, Mixer, _RandomStream
print('ok')
'''

@pytest.mark.parametrize('first', ['', 'import timm.data', 'import timm.data.mixup', 'import timm'])
def test_collate_joins_timms_whichever_is_imported_first(first):
    r = run_py('-W', 'error', '-c', JOIN_CHECK.format(first=first))
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr

def test_import_mixcut_nb_does_not_import_timm():
    r = run_py('-c', "import sys, mixcut_nb; print(sorted(m for m in sys.modules if m == 'timm' or m.startswith('timm.')))")
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stderr

# --- timm's loader ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    root, rs = tmp_path_factory.mktemp('images'), np.random.RandomState(0)
    for c in range(3):
        (root / str(c)).mkdir()
        for i in range(12): Image.fromarray(rs.randint(0, 256, (20, 24, 3)).astype(np.uint8)).save(root / str(c) / f'{i}.png')
    return root

def loader_phases(root, collate_fn, num_workers, n_batches=2):
    "timm's create_loader with `collate_fn`, its batches with mixing on, off, then on again"
    dl = timm.data.create_loader(timm.data.ImageDataset(str(root)), input_size=(3, 16, 16), batch_size=8, is_training=True,
                                 use_prefetcher=True, device=torch.device('cpu'), collate_fn=collate_fn,
                                 num_workers=num_workers, persistent_workers=False)
    phases = []
    for enabled in (True, False, True):
        dl.mixup_enabled = enabled
        assert dl.mixup_enabled is enabled and collate_fn.mixup_enabled is enabled
        random.seed(0); torch.manual_seed(0); np.random.seed(0)
        phases.append([b for b, _ in zip(dl, range(n_batches))])
    return phases

@pytest.mark.parametrize('num_workers', [0, 2])
@pytest.mark.parametrize('mode', ['batch', 'elem', 'half'])
def test_timm_create_loader_switches_our_collate_off_and_on(image_folder, num_workers, mode):
    kw = dict(mixup_alpha=.8, cutmix_alpha=1., label_smoothing=.1, num_classes=3, mode=mode)
    ours = loader_phases(image_folder, mc.FastCollateMixup(**kw), num_workers)
    theirs = loader_phases(image_folder, tm.FastCollateMixup(**kw), num_workers)
    on, off = 1 - .1 + .1 / 3, .1 / 3
    for phase, (o, t) in enumerate(zip(ours, theirs)):
        for (xo, yo), (xt, yt) in zip(o, t):
            assert xo.dtype == torch.float32 and torch.equal(xo, xt) and torch.equal(yo, yt)
        rows = torch.cat([y for _, y in o])
        one_hot = torch.isclose(rows, torch.tensor(on)) | torch.isclose(rows, torch.tensor(off))
        assert bool(one_hot.all()) == (phase == 1), (mode, num_workers, phase)
    for (x0, _), (x2, _) in zip(ours[0], ours[2]): assert torch.equal(x0, x2)   # on again: the same mixing, same seeds

# --- the runner -------------------------------------------------------------------------------------------------

STAND_IN = '''
import json, os, sys
from timm.data import create_dataset, create_loader, Mixup, FastCollateMixup   # as train.py imports them
import timm.data, timm.data.loader, timm.data.mixup, timm.data.naflex_mixup
import mixcut_nb, torch
fc = FastCollateMixup(num_classes=10)
dl = create_loader(torch.utils.data.TensorDataset(torch.zeros(4)), (3, 8, 8), 2, collate_fn=fc, device=torch.device('cpu'), num_workers=0)
dl.mixup_enabled = False
got = dict(name=__name__, argv=sys.argv, path0=sys.path[0], file=__file__,
           Mixup=Mixup is mixcut_nb.Mixup, FastCollateMixup=FastCollateMixup is mixcut_nb.FastCollateMixup,
           mixup_module={n: getattr(timm.data.mixup, n) is getattr(mixcut_nb, n) for n in
                         ('one_hot', 'mixup_target', 'rand_bbox', 'rand_bbox_minmax', 'cutmix_bbox_and_lam', 'Mixup', 'FastCollateMixup')},
           data=timm.data.Mixup is mixcut_nb.Mixup and timm.data.FastCollateMixup is mixcut_nb.FastCollateMixup,
           loader=timm.data.loader.FastCollateMixup is mixcut_nb.FastCollateMixup,
           naflex_untouched=timm.data.naflex_mixup.mixup_target is not mixcut_nb.mixup_target,
           switched_off=fc.mixup_enabled is False, rank=os.environ.get('RANK'), world=os.environ.get('WORLD_SIZE'))
if 'WORLD_SIZE' in os.environ:
    import torch.distributed as dist
    dist.init_process_group('gloo')
    t = torch.tensor([dist.get_rank() + 1.]); dist.all_reduce(t); got['all_reduce'] = t.item()
    dist.destroy_process_group()
out = sys.argv[sys.argv.index('--out') + 1]
with open(os.path.join(out, f"rank{os.environ.get('RANK', 0)}.json"), 'w') as f: json.dump(got, f)
'''

def check_stand_in(got, script, args):
    assert got['name'] == '__main__' and got['argv'] == [str(script), *args] and got['file'] == str(script.resolve())
    assert got['path0'] == str(script.parent.resolve())
    assert got['Mixup'] and got['FastCollateMixup'] and all(got['mixup_module'].values()) and got['data'] and got['loader']
    assert got['naflex_untouched'] and got['switched_off']

@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / 'scripts' / 'train.py'
    script.parent.mkdir(); script.write_text(STAND_IN)
    return script

def test_runner_runs_a_script_with_mixcut_nb_in_place_of_timm_data_mixup(stand_in, tmp_path):
    args = ['--mixup', '0.2', '--out', str(tmp_path)]
    r = run_py('-m', 'mixcut_nb.timm_train', stand_in, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / 'rank0.json').read_text())
    check_stand_in(got, stand_in, args)
    assert got['rank'] is None

def test_runner_under_torch_distributed_run(stand_in, tmp_path):
    args = ['--out', str(tmp_path)]
    r = run_py('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'mixcut_nb.timm_train', stand_in, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        got = json.loads((tmp_path / f'rank{rank}.json').read_text())
        check_stand_in(got, stand_in, args)
        assert (got['rank'], got['world'], got['all_reduce']) == (str(rank), '2', 3.)

def test_runner_changes_nothing_else_in_timm():
    code = textwrap.dedent('''
        import sys, timm, timm.data, timm.data.loader, timm.data.naflex_mixup, timm.models, timm.loss
        def snapshot(): return {(m, n): id(v) for m, mod in list(sys.modules.items()) if m.split('.')[0] == 'timm' and mod
                                for n, v in list(vars(mod).items())}
        before = snapshot()
        from mixcut_nb.timm_train import swap_into_timm
        swapped = swap_into_timm()
        after = snapshot()
        changed = sorted(f'{m}.{n}' for m, n in before if after.get((m, n)) != before[(m, n)])
        assert changed == sorted(swapped), (changed, swapped)
        print(len(changed))''')
    r = run_py('-c', code)
    assert r.returncode == 0 and r.stdout.strip() == '10', r.stderr     # 7 names in timm.data.mixup, 2 in timm.data, 1 in the loader

def test_runner_exit_status_and_errors_are_the_scripts(tmp_path):
    (tmp_path / 'exits.py').write_text('import sys; sys.exit(3)')
    (tmp_path / 'fails.py').write_text('raise RuntimeError("broken script")')
    assert run_py('-m', 'mixcut_nb.timm_train', tmp_path / 'exits.py').returncode == 3
    r = run_py('-m', 'mixcut_nb.timm_train', tmp_path / 'fails.py')
    assert r.returncode == 1 and 'RuntimeError: broken script' in r.stderr and 'fails.py' in r.stderr

@pytest.mark.parametrize('args, msg', [([], 'no SCRIPT given'), (['no/such/train.py', '--mixup', '1'], "'no/such/train.py': no such file"),
                                       (['.'], "'.': is a directory"), (['/dev/null'], "'/dev/null': is not a regular file")])
def test_runner_bad_usage_is_one_line_and_exit_2(args, msg):
    r = run_py('-m', 'mixcut_nb.timm_train', *args)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and msg in r.stderr and 'usage:' in r.stderr and r.stdout == ''

def test_runner_help():
    r = run_py('-m', 'mixcut_nb.timm_train', '--help')
    assert r.returncode == 0 and r.stdout.startswith('usage: python -m mixcut_nb.timm_train SCRIPT') and 'torchrun' in r.stdout

TV_SCRIPT = '''
import hashlib, json, sys, torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import CutMix
torch.manual_seed(0)
x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
mix = v2.RandomChoice([CutMix(num_classes=10), v2.MixUp(num_classes=10)])
digest = hashlib.sha256(b''.join(t.numpy().tobytes() for _ in range(6) for t in mix(x, y))).hexdigest()
print(json.dumps(dict(modules=sorted({type(t).__module__ for t in mix.transforms}), digest=digest, argv=sys.argv[1:])))
'''

def test_runner_runs_a_torchvision_script_with_mixcut_nbs_v2_and_the_same_bits(tmp_path):
    script = tmp_path / 'tv_train.py'
    script.write_text(TV_SCRIPT)
    stock, ours = (run_py(*runner, script, '--epochs', '1', cwd=tmp_path) for runner in ([], ['-m', 'mixcut_nb.timm_train']))
    assert stock.returncode == 0 and ours.returncode == 0, (stock.stderr[-2000:], ours.stderr[-2000:])
    stock, ours = json.loads(stock.stdout), json.loads(ours.stdout)
    assert stock['modules'] == ['torchvision.transforms.v2._augment'] and ours['modules'] == ['mixcut_nb.v2']
    assert ours['digest'] == stock['digest'] and ours['argv'] == ['--epochs', '1']

# --- timm's own train.py, when a copy is at hand ------------------------------------------------------------------

TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')
TRAIN_CONFIGS = [('--mixup 0.8 --cutmix 1.0 --mixup-mode elem --workers 2', 1),
                 ('--mixup 0.5 --cutmix 1.0 --mixup-off-epoch 1 --workers 0', 1),
                 ('--mixup 0.8 --cutmix 1.0 --mixup-mode half --no-prefetcher --workers 0', 1),
                 ('--mixup 0.8 --cutmix 1.0 --mixup-mode half --workers 0', 1),
                 ('--mixup 0.8 --cutmix 1.0 --mixup-mode elem --workers 0', 2)]

@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    from sklearn.datasets import load_digits
    root, d = tmp_path_factory.mktemp('tiny'), load_digits()
    for split, part in (('train', slice(0, 24)), ('validation', slice(24, 32))):
        for c in range(3):
            (root / split / str(c)).mkdir(parents=True)
            for i in np.flatnonzero(d.target == c)[part]:
                im = (d.images[i] * 255 / 16).round().astype(np.uint8)
                Image.fromarray(np.stack([im, 255 - im, im // 2], -1)).resize((24, 24), Image.NEAREST).save(root / split / str(c) / f'{i:04d}.png')
    return root

@pytest.mark.slow
@pytest.mark.skipif(not TRAIN_PY, reason="set TIMM_TRAIN_PY to the path of timm's train.py")
@pytest.mark.parametrize('flags, nproc', TRAIN_CONFIGS)
def test_timms_train_py_through_the_runner_is_stock_timm_bit_for_bit(tiny_folder, tmp_path, flags, nproc):
    base = (f'--data-dir {tiny_folder} --model resnet10t --num-classes 3 --img-size 32 --epochs 2 -b 16 --device cpu '
            f'--warmup-epochs 0 --checkpoint-hist 1 --log-interval 100 --seed 42 --experiment run {flags}').split()
    launch, train_py = [], Path(TRAIN_PY)
    if nproc > 1:   # train.py gives DDP device_ids=[device], which DDP refuses for a CPU model: a copy that gives None
        src, old = train_py.read_text(), 'prepare_distributed(device_ids=[device],'
        if old not in src: pytest.skip(f'{train_py} has no {old!r} to adapt for DDP on the CPU')
        train_py = tmp_path / 'train_cpu_ddp.py'
        train_py.write_text(src.replace(old, "prepare_distributed(device_ids=None if device.type == 'cpu' else [device],"))
        launch = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc)]
    runs = {}
    for name, runner in (('stock', []), ('mixcut', ['-m', 'mixcut_nb.timm_train'])):
        r = run_py(*launch, *runner, train_py, *base, '--output', tmp_path / name)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = tmp_path / name / 'run'
    summaries = [(runs[n] / 'summary.csv').read_text() for n in runs]
    assert summaries[0] == summaries[1] and len(summaries[0].splitlines()) == 3
    sd = [torch.load(runs[n] / 'last.pth.tar', map_location='cpu', weights_only=False)['state_dict'] for n in runs]
    assert sd[0].keys() == sd[1].keys() and all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
