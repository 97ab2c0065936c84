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

# servers on 127.0.0.1: nothing is downloaded from the internet

class Redirect(http.server.BaseHTTPRequestHandler):
    "Redirects every request to itself"
    def log_message(self, *a): pass
    def do_GET(self): self.send_response(302); self.send_header('Location', self.path); self.end_headers()

@contextlib.contextmanager
def server(handler):
    class Srv(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
    with Srv(('127.0.0.1', 0), handler) as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield f'http://127.0.0.1:{srv.server_address[1]}'
        srv.shutdown()

# ---- 5: every file ImageFolder loads is checked; symlink loops are refused ----

def test_a_corrupt_image_in_a_subfolder_is_found_before_training(tmp_path):
    data = folder(tmp_path / 'data')
    (data / 'train' / 'a' / 'sub').mkdir(); (data / 'train' / 'a' / 'sub' / 'bad.png').write_bytes(b'garbage')
    code, err = cli(data, *QUICK, '--output', tmp_path / 'out')
    one_line(code, err, f'cannot read image {data}/train/a/sub/bad.png: cannot identify image file')
    assert 'stopped in epoch' not in err[0] and not (tmp_path / 'out').exists()

def test_a_symlink_loop_is_refused_naming_the_link(tmp_path):
    data = folder(tmp_path / 'data')
    (data / 'train' / 'a' / 'loop').symlink_to('..')
    code, err = cli(data, *QUICK, '--output', tmp_path / 'out')
    one_line(code, err, f'{data}/train/a/loop is a symlink loop: it leads back to {data.resolve()}/train')
    assert not (tmp_path / 'out').exists()

def test_symlinked_class_folders_and_images_in_subfolders_train(tmp_path):
    data = folder(tmp_path / 'data', ('a',))
    folder(tmp_path / 'elsewhere', ('b',))
    for split in ('train', 'val'): (data / split / 'b').symlink_to(tmp_path / 'elsewhere' / split / 'b')
    image(data / 'val' / 'a' / 'sub' / 'deep.png')                                  # val: labelled by its class folder
    code, err = cli(data, *QUICK, '--output', tmp_path / 'out')
    assert code == 0, err
    assert json.loads((tmp_path / 'out' / 'summary.json').read_text())['last']['val_images'] == 5

# ---- 10: messages that said the wrong thing ----

def test_a_file_given_as_the_data_folder_is_not_a_directory(tmp_path):
    (tmp_path / 'afile').write_text('x')
    one_line(*cli(tmp_path / 'afile', '--output', tmp_path / 'out'), f'data directory {tmp_path}/afile is not a directory')

def test_huge_mix_weights_are_weights(tmp_path):
    code, err = cli('--fmix', '1', '--resizemix', '--mix-weights', 'fmix=1e308', 'resizemix=1e308', *QUICK[:4], '-b', '4',
                    '--workers', '0', '--output', tmp_path / 'out')
    assert code == 0, err
    assert 'one per batch of ResizeMix 50%, FMix 50%' in err[0], err

def test_one_class_is_refused(tmp_path):
    data = folder(tmp_path / 'data', ('a',))
    code, err = cli(data, *QUICK, '--output', tmp_path / 'out')
    one_line(code, err, 'has one class folder, a/: a classifier needs at least two')
    assert not (tmp_path / 'out').exists()

# ---- 11: a download that trickles ----

class Trickle(http.server.BaseHTTPRequestHandler):
    "Announces 100,000 bytes and sends one every 20 ms"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '100000'); self.end_headers()
        try:
            for _ in range(100_000): self.wfile.write(b'x'); self.wfile.flush(); time.sleep(0.02)
        except OSError: pass

class Hung(Exception): pass

@contextlib.contextmanager
def deadline(seconds):
    "Fail the test, rather than hang, if the block takes longer than `seconds`"
    def stop(*a): raise Hung(f'still running after {seconds} s')
    old = signal.signal(signal.SIGALRM, stop); signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def test_a_trickling_download_is_stopped_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(D, 'RATE_WINDOW', 1, raising=False)              # a second, not a minute
    t0 = time.time()
    with server(Trickle) as url, deadline(60), pytest.raises(T.UsageError) as e:
        T.download_imagenette(tmp_path / 'data', f'{url}/imagenette2-320.tgz', '0' * 32, 100_000, progress=False)
    assert re.fullmatch(rf'download of {url}/imagenette2-320.tgz stopped: \d+ bytes in the last 1 seconds, under 1,000 '
                        r'bytes a second; try again later', str(e.value)), str(e.value)
    assert time.time() - t0 < 10 and not (tmp_path / 'data').exists()

def test_a_killed_download_is_cleaned_up_by_the_next(tmp_path):
    "kill -9 leaves the partial file; the next download into that folder removes it"
    with server(Trickle) as url:
        code = (f'import sys; from mixcut_nb.download import download_imagenette as d\n'
                f'd(sys.argv[1], "{url}/imagenette2-320.tgz", "0" * 32, 100_000, progress=False)')
        p = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'data')])
        while not list((tmp_path / 'data').glob('.download-*')): assert p.poll() is None; time.sleep(0.05)
        p.kill(); p.wait()
    assert [f.name.startswith(f'.download-{p.pid}-') for f in (tmp_path / 'data').iterdir()] == [True]
    with server(Redirect) as url, pytest.raises(T.UsageError, match='HTTP error 302'):
        T.download_imagenette(tmp_path / 'data', f'{url}/imagenette2-320.tgz', '0' * 32, 10, progress=False)
    assert list((tmp_path / 'data').iterdir()) == []

# ---- 13: files follow the umask ----

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    data = folder(tmp_path / 'data')
    old = os.umask(umask)
    try: T.train(T.get_parser().parse_args([str(data), *QUICK, '--output', str(tmp_path / 'out')]))
    finally: os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / 'out').iterdir()}
    assert modes == dict.fromkeys(['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json'], mode), modes
