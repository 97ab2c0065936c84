"mixcut_train used as a hostile user would: each bad input one line on stderr and exit 2 (Ctrl-C: 130), nothing of the user's changed"
import contextlib, http.server, json, os, re, resource, signal, socketserver, subprocess, sys, threading, time
from pathlib import Path
import pytest, torch
from mixcut_nb import train as T, download as D, files as F
from mixcut_nb.data import digits_folder

@pytest.fixture(scope='session', autouse=True)
def cache(tmp_path_factory):
    old = os.environ.get('MIXCUT_NB_CACHE')
    os.environ['MIXCUT_NB_CACHE'] = str(tmp_path_factory.mktemp('cache'))   # training subprocesses inherit it
    yield digits_folder()
    if old is None: del os.environ['MIXCUT_NB_CACHE']
    else: os.environ['MIXCUT_NB_CACHE'] = old

QUICK = '--epochs 1 --max-steps 1 -b 2 --img-size 16 --workers 0 --no-progress'.split()

def cli(*args, env=None, **kw):
    "`mixcut_train ARGS` as a command: (exit status, stderr lines)"
    r = subprocess.run([sys.executable, '-m', 'mixcut_nb.train', *map(str, args)], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})), timeout=600, **kw)
    return r.returncode, r.stderr.splitlines()

def one_line(code, err, match):
    "Exit status 2 and one line on stderr, containing `match`, and nothing trained"
    assert code == 2 and len(err) == 1 and err[0].startswith('mixcut_train: error: ') and match in err[0], (code, err)

def image(path, color=(10, 200, 30)):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True); Image.new('RGB', (12, 12), color).save(path)

def folder(root, classes=('a', 'b'), per_class=2):
    "An ImageFolder root with `per_class` small PNGs per class in train/ and val/"
    for split in ('train', 'val'):
        for i, c in enumerate(classes):
            for k in range(per_class): image(root / split / c / f'x{k}.png', (10 + 100 * i, 20 * k, 30))
    return root

def listing(root):
    "Every path under `root` with its size and mtime: what a refused run must leave as it was"
    return {str(p): (p.is_file() and p.stat().st_size, p.lstat().st_mtime_ns) for p in Path(root).rglob('*')}

def ckpt(out): return torch.load(Path(out) / 'checkpoint.pt', weights_only=True)

# ---- 13: files follow the umask ----

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    data = folder(tmp_path / 'data')
    old = os.umask(umask)
    try: T.train(T.get_parser().parse_args([str(data), *QUICK, '--output', str(tmp_path / 'out')]))
    finally: os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / 'out').iterdir()}
    assert modes == dict.fromkeys(['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json'], mode), modes
