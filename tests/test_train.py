"mixcut_train: flags wired as timm's train.py, mixing off at --mixup-off-epoch, exact resume, DDP, safe downloads, bad input"
import csv, hashlib, http.server, io, json, os, re, signal, socketserver, subprocess, sys, tarfile, threading, time, contextlib
from pathlib import Path
import numpy as np, pytest, torch
from timm.data import mixup as tm
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
import mixcut_nb as mc
from mixcut_nb import train as T, flags as F, loop as L
from mixcut_nb.data import digits_folder

pytestmark = pytest.mark.usefixtures('digits')     # the digits in a cache of the tests' own (conftest.py)

def parse(s): return T.get_parser().parse_args(s.split())

def timm_train_py_mixing(args, num_classes):
    "What timm's train.py builds from the same flags (prefetcher: collate, else batch)"
    active = args.mixup > 0 or args.cutmix > 0. or args.cutmix_minmax is not None
    if not active: return None
    kw = dict(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob,
              switch_prob=args.mixup_switch_prob, mode=args.mixup_mode, label_smoothing=args.smoothing, num_classes=num_classes)
    return tm.FastCollateMixup(**kw) if args.collate_mixup else tm.Mixup(**kw)

@pytest.mark.parametrize('flags', [
    '', '--mixup 0.8', '--cutmix 1.0', '--mixup 0.2 --cutmix 1.0 --mixup-switch-prob 0.3', '--cutmix-minmax 0.3 0.7',
    '--mixup 0.5 --mixup-prob 0.6 --mixup-mode elem --smoothing 0.2', '--mixup 1 --cutmix 1 --mixup-mode pair --smoothing 0',
    '--mixup 0.8 --collate-mixup', '--cutmix 1 --mixup-mode half --collate-mixup', '--mixup 0.3 --mixup-mode elem --collate-mixup'])
def test_flags_reach_mixing_with_timms_values(flags):
    args = parse(flags)
    mixup_fn, collate_fn = T.build_mixing(args, 7)
    ours, theirs = mixup_fn or collate_fn, timm_train_py_mixing(args, 7)
    if theirs is None: assert ours is None; return
    assert type(ours).__name__ == type(theirs).__name__
    for k in ('mixup_alpha', 'cutmix_alpha', 'cutmix_minmax', 'mix_prob', 'switch_prob', 'mode', 'correct_lam', 'label_smoothing', 'num_classes', 'mixup_enabled'):
        assert getattr(ours, k) == getattr(theirs, k), k

@pytest.mark.parametrize('flags, loss', [('--mixup 1', SoftTargetCrossEntropy), ('--cutmix 1 --bce-loss', BinaryCrossEntropy),
                                         ('', LabelSmoothingCrossEntropy), ('--bce-loss', BinaryCrossEntropy), ('--smoothing 0', torch.nn.CrossEntropyLoss)])
def test_loss_follows_timm(flags, loss):
    assert type(T.build_loss(parse(flags))) is loss

@pytest.mark.parametrize('collate', ['', ' --collate-mixup'])
def test_mixup_off_epoch_switches_mixing_off_at_that_epoch(tmp_path, collate):
    h = T.train(parse(f'--mixup 0.5 --cutmix 1 --mixup-off-epoch 2 --epochs 4 --max-steps 2 --workers 0 -b 16 --output {tmp_path}' + collate))
    assert [r['mixing'] for r in h] == [True, True, False, False]
    rows = (tmp_path / 'metrics.csv').read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith('epoch,train_loss,val_loss,top1,top5,lr,mixing')

def cli(*args, **kw):
    return subprocess.Popen([sys.executable, '-m', 'mixcut_nb.train', *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)

def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    flags = '--mixup 0.5 --cutmix 1.0 --mixup-mode elem --epochs 3 --max-steps 8 --workers 1 -b 32'.split()
    assert cli(*flags, '--output', str(tmp_path / 'full')).wait() == 0
    p = cli(*flags, '--output', str(tmp_path / 'killed'))
    summary = tmp_path / 'killed' / 'summary.json'
    deadline = time.time() + 300
    while not summary.exists() or json.loads(summary.read_text())['epochs'] < 2:
        assert p.poll() is None and time.time() < deadline; time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    killed = torch.load(tmp_path / 'killed' / 'checkpoint.pt', weights_only=True)
    assert len(killed['history']) == 2, 'the kill came too late to interrupt the third epoch'
    assert cli(*flags, '--resume', str(tmp_path / 'killed' / 'checkpoint.pt')).wait() == 0
    a, b = (torch.load(tmp_path / r / 'checkpoint.pt', weights_only=True) for r in ('full', 'killed'))
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert [h['train_loss'] for h in a['history']] == [h['train_loss'] for h in b['history']]
    assert (tmp_path / 'full' / 'metrics.csv').read_text().splitlines()[1:] != [] 

def test_two_process_ddp_counts_every_sample(tmp_path, digits):
    out = tmp_path / 'ddp'
    r = subprocess.run(['torchrun', '--standalone', '--nproc_per_node', '2', '-m', 'mixcut_nb.train', '--cutmix', '1', '--mixup-mode', 'elem',
                        '--epochs', '2', '--max-steps', '3', '--workers', '0', '-b', '16', '--output', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    n_val = sum(1 for _ in (digits / 'val').rglob('*.png'))
    s = json.loads((out / 'summary.json').read_text())
    assert s['epochs'] == 2 and (s['last']['train_images'], s['last']['val_images']) == (2 * 3 * 16, n_val)
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']

def test_shards_split_validation_exactly():
    shards = [list(L._Shard(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))

def tgz(path, members):
    with tarfile.open(path, 'w:gz') as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo): tar.addfile(m)
            else:
                ti = tarfile.TarInfo(m[0]); ti.size = len(m[1]); tar.addfile(ti, io.BytesIO(m[1]))
    return hashlib.md5(Path(path).read_bytes()).hexdigest(), Path(path).stat().st_size

@contextlib.contextmanager
def serve(folder):
    class H(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a): super().__init__(*a, directory=str(folder))
        def log_message(self, *a): pass
    with socketserver.TCPServer(('127.0.0.1', 0), H) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield f'http://127.0.0.1:{srv.server_address[1]}'
        srv.shutdown()

def link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.linkname = target; return ti

@pytest.mark.parametrize('member, match', [
    (('imagenette2-320/../../escaped.txt', b'x'), 'outside'),
    (('/tmp/absolute-escape.txt', b'x'), 'outside'),
    (link('imagenette2-320/train/link', '/etc/passwd'), 'not a regular file'),
    (link('imagenette2-320/train/hard', '/etc/passwd', tarfile.LNKTYPE), 'not a regular file'),
])
def test_download_refuses_unsafe_archives(tmp_path, member, match):
    good = [('imagenette2-320/train/a/1.txt', b'x'), ('imagenette2-320/val/a/1.txt', b'y')]
    md5, size = tgz(tmp_path / 'imagenette2-320.tgz', good + [member])
    with serve(tmp_path) as url, pytest.raises(T.UsageError, match=match):
        T.download_imagenette(tmp_path / 'data', f'{url}/imagenette2-320.tgz', md5, size, progress=False)
    assert not (tmp_path / 'escaped.txt').exists() and not Path('/tmp/absolute-escape.txt').exists()
    assert [p for p in (tmp_path / 'data').rglob('*') if p.is_file()] == []

def test_download_verifies_and_extracts(tmp_path):
    md5, size = tgz(tmp_path / 'imagenette2-320.tgz', [('imagenette2-320/train/a/1.txt', b'x'), ('imagenette2-320/val/a/1.txt', b'y')])
    with serve(tmp_path) as url:
        with pytest.raises(T.UsageError, match='MD5'): T.download_imagenette(tmp_path / 'd1', f'{url}/imagenette2-320.tgz', 'f' * 32, size, progress=False)
        with pytest.raises(T.UsageError, match='bytes'): T.download_imagenette(tmp_path / 'd2', f'{url}/imagenette2-320.tgz', md5, size + 1, progress=False)
        got = T.download_imagenette(tmp_path / 'd3', f'{url}/imagenette2-320.tgz', md5, size, progress=False)
    assert (got / 'train' / 'a' / '1.txt').read_bytes() == b'x' and got.name == 'imagenette2-320'
    assert [p.name for p in (tmp_path / 'd3').iterdir()] == ['imagenette2-320']    # no leftovers

def jpeg_bytes(seed=0):
    "A 64x64 JPEG of noise"
    from PIL import Image
    buf = io.BytesIO(); Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), np.uint8)).save(buf, 'JPEG', quality=90)
    return buf.getvalue()

def image_folder(root, corrupt=False, empty_class=False, only_train=False, truncated=False, per_class=1, classes=('a', 'b')):
    from PIL import Image
    for split in ('train',) if only_train else ('train', 'val'):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            if empty_class and c == 'b': continue
            for i in range(per_class): Image.new('RGB', (12, 12), (10, 200, 30 + i)).save(root / split / c / f'x{i}.png')
    if corrupt: (root / 'train' / 'a' / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    if truncated: (root / 'train' / 'a' / 'cut.jpg').write_bytes(jpeg_bytes()[:1500])     # a valid header, pixels cut off
    return root

@pytest.mark.parametrize('make, flags, match', [
    (None, '/no/such/dir', 'does not exist'),
    (lambda p: p.mkdir() or p, '{d}', 'needs a train/ folder'),
    (lambda p: image_folder(p, only_train=True), '{d}', 'needs a val/ folder'),
    (lambda p: image_folder(p, empty_class=True), '{d}', 'has no images'),
    (lambda p: image_folder(p, corrupt=True), '{d}', 'broken.jpg'),
    (lambda p: image_folder(p), '{d} --model resnet_nope', 'unknown timm model'),
    (lambda p: image_folder(p), '{d} --mixup 1 --mixup-mode pair -b 33', 'even --batch-size'),
    (lambda p: image_folder(p), '{d} --cutmix 1 --mixup-mode half', '--collate-mixup'),
    (lambda p: image_folder(p), '{d} --lr -1', '--lr'),
    (lambda p: image_folder(p), '{d} --epochs 0', '--epochs'),
    (lambda p: image_folder(p), '{d} --mixup nan', '--mixup'),
    (lambda p: image_folder(p), '{d} --cutmix-minmax 0.8 0.2', 'cutmix_minmax'),
    (lambda p: image_folder(p), '{d} --mixup-prob 1.5 --mixup 1', 'prob'),
    (lambda p: image_folder(p), '{d} --mixup-mode sideways', 'invalid choice'),
    (lambda p: image_folder(p), '{d} --epochs many', 'invalid int'),
    (lambda p: image_folder(p), '{d} --resume /no/checkpoint.pt', 'no such checkpoint'),
    (lambda p: image_folder(p, truncated=True), '{d}', 'cut.jpg: image file is truncated'),   # found before training
    (lambda p: image_folder(p), '{d} --smoothing 1', '--smoothing must be in [0, 1)'),
    (lambda p: image_folder(p), '{d} --smoothing 2', '--smoothing must be in [0, 1)'),
    (lambda p: image_folder(p), '{d} --smoothing 1 --bce-loss', '--smoothing'),
    (lambda p: image_folder(p, per_class=17), '{d} -b 100', '--batch-size 100 is more than the 34 training images'),
    (lambda p: image_folder(p), '{d} --seed -1', '--seed must be >= 0'),
    (lambda p: image_folder(p), '{d} --hflip 2', '--hflip must be in [0, 1]'),
    (lambda p: image_folder(p), '{d} --hflip -1', '--hflip must be in [0, 1]'),
    (lambda p: image_folder(p), '{d} --hflip nan', '--hflip'),
    (lambda p: image_folder(p), '{d} --bce-target-thresh 5', '--bce-target-thresh must be in [0, 1)'),
    (lambda p: image_folder(p), '{d} --mixup-switch-prob -1', '--mixup-switch-prob'),
    (lambda p: image_folder(p), '{d} --fmix 1 --collate-mixup', 'drop it for --fmix'),
    (lambda p: image_folder(p), '{d} --resizemix --mixup-mode half', "--mixup-mode half is timm's Mixup's alone"),
    (lambda p: image_folder(p), '{d} --fmix -1', '--fmix must be a finite number >= 0'),
    (lambda p: image_folder(p), '{d} --fmix 1 --fmix-decay nan', '--fmix-decay must be'),
    (lambda p: image_folder(p), '{d} --saliencymix inf', '--saliencymix must be'),
    (lambda p: image_folder(p), '{d} --resizemix --resizemix-scale 0.8 0.2', '--resizemix-scale must have 0 < LO <= HI <= 1'),
    (lambda p: image_folder(p), '{d} --resizemix --resizemix-scale 0 0.5', '--resizemix-scale'),
    (lambda p: image_folder(p), '{d} --resizemix --mix-weights fmix=1', 'fmix is not on'),
    (lambda p: image_folder(p), '{d} --resizemix --fmix 1 --mix-weights fmix=x', 'NAME=W'),
    (lambda p: image_folder(p), '{d} --resizemix --mixup-mode pair -b 3', 'even --batch-size'),
    (lambda p: image_folder(p), '{d} --scale 0 1', '--scale must have'),
    (lambda p: image_folder(p), '{d} --label-noise 1', '--label-noise must be in [0, 1), got 1.0'),
    (lambda p: image_folder(p), '{d} --label-noise -0.1', '--label-noise must be in [0, 1)'),
    (lambda p: image_folder(p), '{d} --label-noise lots', 'argument --label-noise: expected a number'),
    (lambda p: image_folder(p), '{d} --label-noise 0,0.2', '--label-noise takes one value without --compare'),
    (lambda p: image_folder(p), '{d} --seeds 3', '--seeds 3 needs --compare'),
    (lambda p: image_folder(p), '{d} --compare', '--compare needs mixing flags'),
    (lambda p: image_folder(p), '{d} --compare none,cutout', "'cutout' is not a method"),
    (lambda p: image_folder(p), '{d} --compare none,fmix,none', 'named twice'),
    (lambda p: image_folder(p), '{d} --compare none,fmix --seeds 0', '--seeds must be >= 1'),
    (lambda p: image_folder(p), '{d} --compare none,fmix --label-noise 0,1.5', '--label-noise must be in [0, 1)'),
    (lambda p: image_folder(p), '{d} --compare none,fmix --resume x.pt', '--resume continues one run'),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, flags, match):
    d = make(tmp_path / 'data') if make else None
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as e: T.main(flags.format(d=d).split() + ['--output', str(out), '--workers', '0'])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith('mixcut_train: error:') and match in err[0], err
    assert not out.exists()

def test_cli_exit_status_is_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'mixcut_nb.train', str(tmp_path / 'missing')], capture_output=True, text=True)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and r.stderr.count('\n') == 1

def test_digits_folder_is_written_once(digits):
    assert sorted(p.name for p in (digits / 'train').iterdir()) == [str(i) for i in range(10)]
    assert sum(1 for _ in digits.rglob('*.png')) == 1797
    mtime = (digits / 'train').stat().st_mtime
    assert digits_folder() == digits and (digits / 'train').stat().st_mtime == mtime

@pytest.mark.slow
def test_default_run_reaches_90_percent(tmp_path):
    h = T.train(parse(f'--output {tmp_path}'))
    assert h[-1]['top1'] > 90

# ---- every bad flag, path or file: one line naming it, exit status 2, found before the first step ----

TINY = '--epochs 1 --max-steps 1 -b 2 --img-size 16 --workers 0 --no-progress'

def run_main(argv, capsys):
    "`main(argv)` in this process: (exit status, stderr lines)"
    try: T.main([str(a) for a in argv]); code = 0
    except SystemExit as e: code = e.code
    return code, capsys.readouterr().err.strip().splitlines()

def one_line_error(code, err, match):
    assert code == 2 and len(err) == 1 and err[0].startswith('mixcut_train: error:') and match in err[0], (code, err)
    assert not any('epoch 1/' in l for l in err)       # stopped before training

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A two-class image folder and the checkpoint of one short epoch on it"
    root = tmp_path_factory.mktemp('tiny')
    data = image_folder(root / 'data', per_class=2)
    T.train(parse(f'{data} {TINY} --output {root / "run"}'))
    return data, root / 'run' / 'checkpoint.pt'

def test_checkpoints_hold_only_tensors_and_plain_data(tiny):
    ckpt = torch.load(tiny[1], weights_only=True)
    assert ckpt['format'] == T.CHECKPOINT_FORMAT and ckpt['model_name'] == 'resnet10t' and ckpt['classes'] == ['a', 'b']
    assert ckpt['epoch'] == 0 and len(ckpt['history']) == 1

class Exploit:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def resume_file(kind, tmp_path, ckpt):
    "A file to --resume from, of `kind`"
    f = tmp_path / f'{kind}.pt'
    if kind == 'garbage': f.write_bytes(os.urandom(4096))
    elif kind == 'empty': f.write_bytes(b'')
    elif kind == 'exploit': torch.save({'model': Exploit(tmp_path / 'pwned')}, f)
    elif kind == 'numpy': torch.save({'rng': np.random.get_state()}, f)     # what checkpoints held before: numpy arrays
    elif kind == 'other-format': torch.save({'model': {}, 'epoch': 0}, f)
    elif kind == 'folder': f.mkdir()
    else:
        state = torch.load(ckpt, weights_only=True)
        if kind == 'misfit':                                             # right tags, wrong weights
            state['model'] = {k: v[..., :1] if v.ndim else v for k, v in state['model'].items()}
        torch.save(state, f)
    return f

@pytest.mark.parametrize('kind, extra, match', [
    ('garbage', '', 'not a checkpoint'),
    ('empty', '', 'empty file'),
    ('exploit', '', 'refused, it holds posix.system'),
    ('numpy', '', 'refused, it holds numpy'),
    ('other-format', '', "not a mixcut_train checkpoint of format 'mixcut_nb.train/1'"),
    ('folder', '', 'no such checkpoint'),
    ('good', '--model resnet18', 'a checkpoint of --model resnet10t, not resnet18'),
    ('good', 'classes=3', 'a checkpoint for 2 classes, but the data has 3'),
    ('misfit', '', 'does not fit this run'),
])
def test_bad_checkpoints_are_one_line_and_run_nothing(tmp_path, capsys, tiny, kind, extra, match):
    data, ckpt = tiny
    if extra == 'classes=3': data, extra = image_folder(tmp_path / 'three', classes=('a', 'b', 'c')), ''
    f = resume_file(kind, tmp_path, ckpt)
    more = ['--epochs', '2']                            # the checkpoint's run trained its one epoch: one more
    code, err = run_main([data, *TINY.split(), *more, *extra.split(), '--resume', f, '--output', tmp_path / 'out'], capsys)
    one_line_error(code, err, f'--resume {f}: {match}')
    assert not (tmp_path / 'pwned').exists()             # the exploit's code never ran
    assert not (tmp_path / 'out').exists()

def test_an_exploit_checkpoint_runs_nothing_from_the_command_line(tmp_path, tiny):
    f = resume_file('exploit', tmp_path, tiny[1])
    r = subprocess.run([sys.executable, '-m', 'mixcut_nb.train', str(tiny[0]), *TINY.split(), '--resume', str(f)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr and 'refused' in r.stderr, r.stderr
    assert not (tmp_path / 'pwned').exists()

@pytest.mark.parametrize('where', ['proc', 'under-a-file', 'a-file'])
def test_unwritable_output_is_found_at_start(tmp_path, capsys, tiny, where):
    (tmp_path / 'f').write_text('x')
    out = {'proc': Path('/proc/mixcut_nb_out/run'), 'under-a-file': tmp_path / 'f' / 'run', 'a-file': tmp_path / 'f'}[where]
    code, err = run_main([tiny[0], *TINY.split(), '--output', out], capsys)
    one_line_error(code, err, f'--output {out}: cannot write there')

def test_the_output_check_leaves_nothing_behind(tmp_path, capsys):
    code, err = run_main([tmp_path / 'no-data', '--output', tmp_path / 'new' / 'run'], capsys)
    one_line_error(code, err, 'does not exist')
    assert list(tmp_path.iterdir()) == []

def can_unshare():
    return sys.platform == 'linux' and subprocess.run(['unshare', '-m', 'true'], capture_output=True).returncode == 0

needs_mounts = pytest.mark.skipif(not can_unshare(), reason='mounting a small filesystem needs root (unshare -m)')

def in_mount_namespace(script, **kw):
    "Run the shell `script` in a mount namespace of its own, where `$M` is a fresh folder to mount on"
    return subprocess.run(['unshare', '-m', 'sh', '-ec', script], capture_output=True, text=True, **kw)

@needs_mounts
def test_a_read_only_mount_is_found_at_start(tmp_path, tiny):
    m = tmp_path / 'm'; m.mkdir()
    r = in_mount_namespace(f'mount -t tmpfs -o size=1m tmpfs {m} && mkdir {m}/run && mount -o remount,ro {m}\n'
                           f'exec {sys.executable} -m mixcut_nb.train {tiny[0]} {TINY} --output {m}/run')
    assert r.returncode == 2 and r.stderr == f'mixcut_train: error: --output {m}/run: cannot write there (Read-only file system)\n', r.stderr

@needs_mounts
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, tiny):
    "Epoch 1's checkpoint (about 60 MB) fits on a 100 MB disk; epoch 2's, written beside it, does not"
    m = tmp_path / 'm'; m.mkdir()
    r = in_mount_namespace(
        f'mount -t tmpfs -o size=100m tmpfs {m}\n'
        f'{sys.executable} -m mixcut_nb.train {tiny[0]} {TINY.replace("--epochs 1", "--epochs 2")} --output {m}/run && exit 1 || echo "status $?"\n'
        f'{sys.executable} -c "import torch; print(\'epoch\', torch.load(\'{m}/run/checkpoint.pt\', weights_only=True)[\'epoch\'])"\n'
        f'ls -A {m}/run')
    assert r.returncode == 0, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith('mixcut_train: error')]
    assert err == [f'mixcut_train: error: cannot write {m}/run/checkpoint.pt: No space left on device; the previous checkpoint.pt is intact']
    assert r.stdout.split('\n')[:2] == ['status 2', 'epoch 0'], r.stdout           # epoch 1's checkpoint still loads
    assert sorted(r.stdout.split()[4:]) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']   # no temporary file

def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, capsys, tiny, monkeypatch):
    "ENOSPC simulated: the second checkpoint's write fails half-way"
    import errno
    save, calls = torch.save, []
    def full_disk(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) == 2: f.write(b'x' * 1000); raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, 'save', full_disk)
    out = tmp_path / 'run'
    code, err = run_main([tiny[0], *TINY.replace('--epochs 1', '--epochs 2').split(), '--output', out], capsys)
    assert code == 2 and err[-1] == f'mixcut_train: error: cannot write {out}/checkpoint.pt: No space left on device; the previous checkpoint.pt is intact'
    assert torch.load(out / 'checkpoint.pt', weights_only=True)['epoch'] == 0
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']

def test_stale_temporary_files_are_removed_by_the_next_run(tmp_path, tiny):
    "A process killed while writing its checkpoint leaves a temporary file; the next run in that folder removes it"
    out = tmp_path / 'run'
    killer = ('import os, signal, sys, torch\n'
              'save, calls = torch.save, []\n'
              'def save_and_die(obj, f, *a, **kw):\n'
              '    calls.append(1)\n'
              '    if len(calls) == 2: f.write(b"half a checkpoint"); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n'
              '    return save(obj, f, *a, **kw)\n'
              'torch.save = save_and_die\n'
              'from mixcut_nb.train import main\n'
              'main(sys.argv[1:])\n')
    r = subprocess.run([sys.executable, '-c', killer, str(tiny[0]), *TINY.replace('--epochs 1', '--epochs 2').split(), '--output', str(out)])
    assert r.returncode == -9
    left = [p.name for p in out.iterdir() if p.name.startswith('.checkpoint.pt-')]
    assert len(left) == 1
    (out / '.metrics.csv-k2j4h5g1').write_text('from an older version, without a pid')
    (out / '.summary.json-1-abc').write_text('pid 1 is alive: kept')
    T.train(parse(f'{tiny[0]} {TINY.replace("--epochs 1", "--epochs 2")} --resume {out / "checkpoint.pt"}'))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('.')) == ['.summary.json-1-abc']
    assert torch.load(out / 'checkpoint.pt', weights_only=True)['epoch'] == 1

@pytest.mark.parametrize('workers', [0, 1])
def test_an_image_unreadable_during_training_stops_the_run_naming_it(tmp_path, capsys, monkeypatch, workers):
    "Decision: stop with exit 2 (skipping would change the batches); the last checkpoint stays and is named"
    data = image_folder(tmp_path / 'data', per_class=2)
    good = jpeg_bytes(); (data / 'train' / 'a' / 'late.jpg').write_bytes(good)
    write = T.write_metrics
    def write_then_break_the_image(out, history, args):        # after epoch 1 the file is cut off, as by a failing disk
        write(out, history, args); (data / 'train' / 'a' / 'late.jpg').write_bytes(good[:1500])
    monkeypatch.setattr(L, 'write_metrics', write_then_break_the_image)
    out = tmp_path / 'run'
    code, err = run_main([data, *TINY.replace('--epochs 1 --max-steps 1', '--epochs 2').replace('--workers 0', f'--workers {workers}').split(),
                          '--output', out], capsys)
    assert code == 2 and 'Traceback' not in '\n'.join(err), err
    assert re.fullmatch(re.escape(f"mixcut_train: error: cannot read image {data}/train/a/late.jpg: image file is truncated (") + r"\d+" +
                        re.escape(f" bytes not processed) (stopped in epoch 2 of 2; the checkpoint of epoch 1 is intact: "
                                  f"continue with --resume {out}/checkpoint.pt)"), err[-1]), err[-1]
    assert torch.load(out / 'checkpoint.pt', weights_only=True)['epoch'] == 0

# ---- the methods beyond timm, label noise, and comparisons of methods and seeds ----

from mixcut_nb.beyond import ResizeMix, FMix, SaliencyMix, MixChoice
FAST = '--epochs 2 --max-steps 2 -b 16 --img-size 16 --model test_resnet --workers 0 --no-progress'

@pytest.mark.parametrize('flags, kinds, p', [
    ('--resizemix', ['ResizeMix'], None),
    ('--resizemix --resizemix-scale 0.3 0.6', ['ResizeMix'], None),
    ('--fmix 0.5 --fmix-decay 2', ['FMix'], None),
    ('--saliencymix 2', ['SaliencyMix'], None),
    ('--mixup 0.2 --cutmix 1 --fmix 1', ['Mixup', 'FMix'], [0.5, 0.5]),
    ('--cutmix 1 --resizemix --fmix 1 --saliencymix 1', ['Mixup', 'ResizeMix', 'FMix', 'SaliencyMix'], [0.25] * 4),
    ('--resizemix --saliencymix 1 --mix-weights saliencymix=3', ['ResizeMix', 'SaliencyMix'], [0.25, 0.75]),
    ('--mixup 1 --fmix 1 --mix-weights mixup=0 fmix=2', ['Mixup', 'FMix'], [0., 1.]),
])
def test_method_flags_build_their_methods(flags, kinds, p):
    args = parse(flags + ' --mixup-prob 0.7 --mixup-mode elem --smoothing 0.2')
    fn, collate_fn = T.build_mixing(args, 7)
    methods = fn.methods if isinstance(fn, MixChoice) else [fn]
    assert collate_fn is None and [type(m).__name__ for m in methods] == kinds
    if p is not None: assert isinstance(fn, MixChoice) and np.allclose(fn.p, p)
    for m in methods: assert (m.mix_prob, m.mode, m.label_smoothing, m.num_classes, m.mixup_enabled) == (0.7, 'elem', 0.2, 7, True)
    for m in methods:
        if isinstance(m, ResizeMix): assert m.scale == tuple(args.resizemix_scale)
        if isinstance(m, FMix): assert (m.alpha, m.decay_power) == (args.fmix, args.fmix_decay)
        if isinstance(m, SaliencyMix): assert m.alpha == args.saliencymix
    assert T.mixing_active(args) and type(T.build_loss(args)) is SoftTargetCrossEntropy

def test_mixup_off_epoch_switches_every_method_off(tmp_path):
    h = T.train(parse(f'--resizemix --fmix 1 --saliencymix 1 --cutmix 1 --mixup-off-epoch 1 {FAST} --output {tmp_path}'))
    assert [r['mixing'] for r in h] == [True, False]

def test_the_start_line_names_the_methods(tmp_path, capsys):
    T.train(parse(f'--cutmix 1 --fmix 1 --mix-weights fmix=3 --label-noise 0.25 {FAST} --epochs 1 --output {tmp_path}'))
    first = capsys.readouterr().err.splitlines()[0]
    assert 'mixing on the batch (one per batch of Mixup 25%, FMix 75%), label noise 25% (360 of 1438 training labels)' in first, first

@pytest.mark.parametrize('p', [0.2, 0.5])
def test_label_noise_moves_a_share_of_training_labels_only(digits, p):
    clean_tr, clean_val = T.make_loaders(F._resolve(parse('--workers 0')), digits)
    tr, val = T.make_loaders(F._resolve(parse(f'--label-noise {p} --seed 3 --workers 0')), digits)
    y0, y = np.array(clean_tr.dataset.targets), np.array(tr.dataset.targets)
    assert (y != y0).sum() == round(p * len(y)) == tr.dataset.noisy_labels          # the share asked for, each one moved
    assert [t for _, t in tr.dataset.samples] == y.tolist() and [tr.dataset[i][1] for i in range(0, len(y), 97)] == y[::97].tolist()
    assert [path for path, _ in tr.dataset.samples] == [path for path, _ in clean_tr.dataset.samples]
    assert val.dataset.samples == clean_val.dataset.samples and val.dataset.targets == clean_val.dataset.targets   # validation untouched
    again, _ = T.make_loaders(F._resolve(parse(f'--label-noise {p} --seed 3 --workers 2')), digits, rank=1, world=2)
    assert again.dataset.targets == y.tolist()                                       # the same seed: the same labels, in any process
    other, _ = T.make_loaders(F._resolve(parse(f'--label-noise {p} --seed 4 --workers 0')), digits)
    assert other.dataset.targets != y.tolist()

def test_noisy_labels_go_to_every_other_class_alike():
    from scipy.stats import chisquare
    y = np.repeat(np.arange(10), 1000)
    noisy = T.noisy_labels(y, 10, 0.3, seed=0)
    moved = noisy != y
    assert moved.sum() == 3000 and moved.mean() == 0.3
    shift = (noisy[moved] - y[moved]) % 10
    assert shift.min() >= 1                                                           # never its own class
    assert chisquare(np.bincount(shift, minlength=10)[1:]).pvalue > 1e-3              # 1..9 steps away alike
    assert chisquare(np.bincount(y[moved], minlength=10)).pvalue > 1e-3              # every class loses labels alike
    assert (T.noisy_labels(y, 10, 0., seed=0) == y).all()
    with pytest.raises(ValueError, match='`p`'): T.noisy_labels(y, 10, 1.)

def test_label_noise_is_recorded(tmp_path):
    T.train(parse(f'--label-noise 0.3 {FAST} --epochs 1 --output {tmp_path}'))
    s = json.loads((tmp_path / 'summary.json').read_text())
    assert (s['label_noise'], s['noisy_labels']) == (0.3, round(0.3 * 1438))

def test_compare_of_methods_seeds_and_noise_levels_writes_its_table(tmp_path, capsys):
    out = tmp_path / 'cmp'
    T.main(f'--compare none,fmix,mixup+resizemix --seeds 2 --label-noise 0,0.4 {FAST} --output {out}'.split())
    outs = capsys.readouterr()
    runs = list(csv.DictReader((out / 'compare.csv').open()))
    assert [(r['label_noise'], r['method'], r['seed']) for r in runs] == [
        (p, m, s) for p in ('0.0', '0.4') for m in ('none', 'fmix', 'mixup+resizemix') for s in ('42', '43')]
    for r in runs:
        d = Path(r['output'])
        assert d == out / f"noise{float(r['label_noise']):g}" / r['method'] / f"seed{r['seed']}"
        s = json.loads((d / 'summary.json').read_text())
        assert (s['args']['seed'], s['label_noise'], s['epochs']) == (int(r['seed']), float(r['label_noise']), 2)
        assert float(r['best_top1']) == s['best_top1'] and float(r['last_top1']) == s['last']['top1']
    on = {r['method']: json.loads((Path(r['output']) / 'summary.json').read_text())['args'] for r in runs}
    assert (on['none']['fmix'], on['fmix']['fmix'], on['fmix']['mixup'], on['mixup+resizemix']['mixup'], on['mixup+resizemix']['resizemix']) == (0., 1., 0., 1., True)
    summary = json.loads((out / 'compare.json').read_text())['summary']
    assert len(summary) == 6 and all(r['seeds'] == 2 for r in summary)
    fmix = [float(r['best_top1']) for r in runs if (r['method'], r['label_noise']) == ('fmix', '0.4')]
    row = next(r for r in summary if (r['method'], r['label_noise']) == ('fmix', 0.4))
    assert np.isclose(row['best_mean'], np.mean(fmix)) and np.isclose(row['best_std'], np.std(fmix, ddof=1))
    table = outs.out.strip().splitlines()
    assert table[0].split() == ['label', 'noise', 'method', 'best', 'top-1', '(%)', 'last', 'top-1', '(%)', 'seeds'] and len(table) == 7
    assert table[-1].split()[:2] == ['40%', 'mixup+resizemix'] and table[-1].split()[-1] == '2'
    assert sum(l.startswith('[') for l in outs.err.splitlines()) == 12                # one line per run
    assert (out / 'compare.png').stat().st_size > 0

def test_plain_compare_still_trains_off_then_on(tmp_path):
    runs = T.compare(parse(f'--compare --mixup 0.5 --fmix 1 {FAST} --output {tmp_path}'))
    assert [r['method'] for r in runs] == ['off', 'on'] and [r['output'] for r in runs] == [str(tmp_path / 'off'), str(tmp_path / 'on')]
    assert [h['mixing'] for h in runs[0]['history']] == [False, False] and [h['mixing'] for h in runs[1]['history']] == [True, True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['compare.csv', 'compare.json', 'compare.png', 'off', 'on']
