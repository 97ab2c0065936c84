"mixcut_train: flags wired as timm's train.py, mixing off at --mixup-off-epoch, exact resume, DDP, safe downloads, bad input"
import hashlib, http.server, io, json, os, signal, socketserver, subprocess, sys, tarfile, threading, time, contextlib
from pathlib import Path
import numpy as np, pytest, torch
from timm.data import mixup as tm
from timm.loss import BinaryCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
import mixcut_nb as mc
from mixcut_nb import train as T
from mixcut_nb.data import digits_folder

@pytest.fixture(scope='session', autouse=True)
def cache(tmp_path_factory):
    old = os.environ.get('MIXCUT_NB_CACHE')
    os.environ['MIXCUT_NB_CACHE'] = str(tmp_path_factory.mktemp('cache'))   # training subprocesses inherit it
    yield digits_folder()
    if old is None: del os.environ['MIXCUT_NB_CACHE']
    else: os.environ['MIXCUT_NB_CACHE'] = old

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
    killed = torch.load(tmp_path / 'killed' / 'checkpoint.pt', weights_only=False)
    assert len(killed['history']) == 2, 'the kill came too late to interrupt the third epoch'
    assert cli(*flags, '--resume', str(tmp_path / 'killed' / 'checkpoint.pt')).wait() == 0
    a, b = (torch.load(tmp_path / r / 'checkpoint.pt', weights_only=False) for r in ('full', 'killed'))
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert [h['train_loss'] for h in a['history']] == [h['train_loss'] for h in b['history']]
    assert (tmp_path / 'full' / 'metrics.csv').read_text().splitlines()[1:] != [] 

def test_two_process_ddp_counts_every_sample(tmp_path, cache):
    out = tmp_path / 'ddp'
    r = subprocess.run(['torchrun', '--standalone', '--nproc_per_node', '2', '-m', 'mixcut_nb.train', '--cutmix', '1', '--mixup-mode', 'elem',
                        '--epochs', '2', '--max-steps', '3', '--workers', '0', '-b', '16', '--output', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    n_val = sum(1 for _ in (cache / 'val').rglob('*.png'))
    s = json.loads((out / 'summary.json').read_text())
    assert s['epochs'] == 2 and (s['last']['train_images'], s['last']['val_images']) == (2 * 3 * 16, n_val)
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']

def test_shards_split_validation_exactly():
    shards = [list(T._Shard(11, r, 3)) for r in range(3)]
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

def image_folder(root, corrupt=False, empty_class=False, only_train=False):
    from PIL import Image
    for split in ('train',) if only_train else ('train', 'val'):
        for c in ('a', 'b'):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            if empty_class and c == 'b': continue
            Image.new('RGB', (12, 12), (10, 200, 30)).save(root / split / c / 'x.png')
    if corrupt: (root / 'train' / 'a' / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
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

def test_digits_folder_is_written_once(cache):
    assert sorted(p.name for p in (cache / 'train').iterdir()) == [str(i) for i in range(10)]
    assert sum(1 for _ in cache.rglob('*.png')) == 1797
    mtime = (cache / 'train').stat().st_mtime
    assert digits_folder() == cache and (cache / 'train').stat().st_mtime == mtime

@pytest.mark.slow
def test_default_run_reaches_90_percent(tmp_path):
    h = T.train(parse(f'--output {tmp_path}'))
    assert h[-1]['top1'] > 90
