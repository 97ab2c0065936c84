"mixcut_train used as a hostile user would: each bad input one line on stderr and exit 2 (Ctrl-C: 130), nothing of the user's changed"
import contextlib, http.server, json, os, re, resource, signal, socketserver, subprocess, sys, threading, time
from pathlib import Path
import pytest, torch
from mixcut_nb import train as T, download as D

pytestmark = pytest.mark.usefixtures('digits')     # the digits in a cache of the tests' own (conftest.py)

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

# ---- 4: --resume continues the run it resumes ----

def test_resume_keeps_the_runs_flags(tmp_path):
    out = tmp_path / 'o'
    code, err = cli('--fmix', '1.0', '--epochs', '1', *QUICK[2:], '--output', out)
    assert code == 0, err
    code, err = cli('--epochs', '2', '--resume', out / 'checkpoint.pt')               # the issue's command, no other flag
    assert code == 0, err
    c = ckpt(out)
    assert [h['mixing'] for h in c['history']] == [True, True] and c['args']['fmix'] == 1.0, c['args']
    assert (c['args']['max_steps'], c['args']['img_size'], c['args']['epochs']) == (1, 16, 2)
    assert 'mixing on the batch (FMix)' in err[0], err
    assert json.loads((out / 'summary.json').read_text())['args']['fmix'] == 1.0

@pytest.fixture(scope='module')
def fmix_run(tmp_path_factory):
    "A finished one-epoch FMix run on a folder of classes cat and dog"
    root = tmp_path_factory.mktemp('fmix')
    data = folder(root / 'data', ('cat', 'dog'))
    code, err = cli(data, '--fmix', '1', *QUICK, '--output', root / 'run')
    assert code == 0, err
    return data, root / 'run' / 'checkpoint.pt'

@pytest.mark.parametrize('flags, match', [
    ('--epochs 2 --fmix 0', 'a checkpoint of --fmix 1.0, not 0.0 (a resumed run keeps its flags'),
    ('--epochs 2 --mixup 0.5', 'a checkpoint of --mixup 0.0, not 0.5'),
    ('--epochs 2 --img-size 32', 'a checkpoint of --img-size 16, not 32'),
    ('--epochs 2 --model resnet18', 'a checkpoint of --model resnet10t, not resnet18'),
    ('--epochs 1', 'the run is already finished: it has trained 1 epochs, and --epochs is 1'),
    ('', 'the run is already finished'),
])
def test_resume_refuses_flags_against_the_checkpoint(tmp_path, fmix_run, flags, match):
    data, ck = fmix_run
    before = listing(ck.parent)
    code, err = cli(data, *flags.split(), '--resume', ck)
    one_line(code, err, f'--resume {ck}: {match}')
    assert listing(ck.parent) == before

def test_resume_checks_the_class_names(tmp_path, fmix_run):
    _, ck = fmix_run
    other = folder(tmp_path / 'ab', ('a', 'b'))
    code, err = cli(other, '--epochs', '2', '--resume', ck, '--output', tmp_path / 'out')
    one_line(code, err, f"--resume {ck}: a checkpoint of other classes: its class 0 is 'cat', the data's is 'a'")
    assert not (tmp_path / 'out').exists()

def test_resume_may_change_epochs_workers_and_where_it_writes(tmp_path, fmix_run):
    data, ck = fmix_run
    code, err = cli(data, '--epochs', '3', '--workers', '1', '--resume', ck, '--output', tmp_path / 'more')
    assert code == 0, err
    c = ckpt(tmp_path / 'more')
    assert [h['epoch'] for h in c['history']] == [0, 1, 2] and c['args']['fmix'] == 1.0 and c['args']['workers'] == 1

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

# ---- 6: tracebacks that are one line now ----

def test_a_bad_kernel_name_is_found_first(tmp_path):
    code, err = cli(tmp_path / 'no-such-dir', '--mixup', '0.2', env=dict(MIXCUT_NB_KERNEL='bogus'))
    one_line(code, err, "MIXCUT_NB_KERNEL must be one of ('auto', 'c', 'triton', 'reference'), got 'bogus'")

def test_the_issues_bad_kernel_command(tmp_path):
    code, err = cli('--mixup', '0.2', *QUICK, '--output', tmp_path / 'out', env=dict(MIXCUT_NB_KERNEL='bogus'))
    one_line(code, err, 'MIXCUT_NB_KERNEL must be one of')

def test_the_triton_kernel_on_the_cpu_is_one_line(tmp_path):
    code, err = cli('--mixup', '0.2', *QUICK, '--device', 'cpu', '--output', tmp_path / 'out',
                    env=dict(MIXCUT_NB_KERNEL='triton', TRITON_INTERPRET='0'))
    one_line(code, err, 'MIXCUT_NB_KERNEL=triton, but')
    assert not (tmp_path / 'out').exists()

@pytest.mark.parametrize('flags, match', [
    ('-b 1', '--batch-size must be >= 2, got 1'),
    ('--device meta', '--device meta: '),
    ('--model vit_tiny_patch16_224 --img-size 8', '--model vit_tiny_patch16_224 cannot take --img-size 8: '),
])
def test_the_issues_tracebacks_are_one_line(tmp_path, flags, match):
    data = folder(tmp_path / 'data')
    args = [*QUICK, *flags.split()]
    code, err = cli(data, *args, '--output', tmp_path / 'out')
    one_line(code, err, match)
    assert not (tmp_path / 'out').exists()

def test_label_noise_on_one_class_is_one_line(tmp_path):
    data = folder(tmp_path / 'data', ('a',))
    code, err = cli(data, '--label-noise', '0.2', *QUICK, '--output', tmp_path / 'out')
    one_line(code, err, f'{data}/train has one class folder, a/: a classifier needs at least two')

def test_a_vit_trains_at_32_pixels(tmp_path):
    code, err = cli('--model', 'vit_tiny_patch16_224', '--img-size', '32', *QUICK[:4], '-b', '4', '--workers', '0',
                    '--output', tmp_path / 'out')
    assert code == 0, err
    assert ckpt(tmp_path / 'out')['model']['pos_embed'].shape[1] == 1 + (32 // 16) ** 2

# ---- 7: Ctrl-C ----

def as_from_a_terminal():
    "In the child: its own process group (to be sent Ctrl-C's SIGINT as a terminal does), SIGINT not ignored"
    os.setpgrp(); signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_ctrl_c_says_how_to_continue_and_exits_130(tmp_path):
    out = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'mixcut_nb.train', '--epochs', '3', '--max-steps', '10', '-b', '16',
                          '--workers', '1', '--no-progress', '--output', str(out)], stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_from_a_terminal)
    err = [p.stderr.readline(), p.stderr.readline()]                                 # the start line, epoch 1's
    assert err[1].startswith('epoch 1/3'), err
    os.killpg(p.pid, signal.SIGINT)                     # in epoch 2, to the command and its DataLoader worker
    err = ''.join(err + [p.communicate(timeout=120)[1]]).splitlines()
    assert p.returncode == 130 and 'Traceback' not in '\n'.join(err), err
    assert err[2:] == [f'mixcut_train: interrupted in epoch 2 of 3; the checkpoint of epoch 1 is intact: '
                       f'continue with mixcut_train --resume {out}/checkpoint.pt'], err
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']
    code, err = cli('--resume', out / 'checkpoint.pt')                               # the command it gave
    assert code == 0 and err[-1].startswith('epoch 3/3'), err

def test_ctrl_c_as_a_dataloader_forks_is_not_lost(tmp_path):
    "Python prints and ignores a KeyboardInterrupt raised in its at-fork functions; a DataLoader forks every epoch"
    out = tmp_path / 'run'
    script = ('import os, signal\nfrom pathlib import Path\nfrom mixcut_nb.train import main\ndone = []\n'
              'def ctrl_c():                 # Ctrl-C just as epoch 2 forks its DataLoader worker\n'
              f'    if Path({str(out)!r}, "metrics.csv").exists() and not done:\n'
              '        done.append(1); os.kill(os.getpid(), signal.SIGINT)\n'
              'os.register_at_fork(after_in_parent=ctrl_c)\n'
              f'main("--epochs 3 --max-steps 3 -b 16 --workers 1 --no-progress --output {out}".split())\n')
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=600,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130 and r.stderr.splitlines()[2:] == [
        f'mixcut_train: interrupted in epoch 2 of 3; the checkpoint of epoch 1 is intact: '
        f'continue with mixcut_train --resume {out}/checkpoint.pt'], (r.returncode, r.stderr)

def test_sigterm_stops_a_run_as_ctrl_c_does_and_exits_143(tmp_path):
    "`kill` (SIGTERM) in epoch 2: one line with the command that continues, no lock left, and the run resumes"
    out = tmp_path / 'run'
    p = subprocess.Popen([sys.executable, '-m', 'mixcut_nb.train', '--epochs', '3', '--max-steps', '10', '-b', '16',
                          '--workers', '1', '--no-progress', '--output', str(out)], stderr=subprocess.PIPE, text=True)
    err = [p.stderr.readline(), p.stderr.readline()]                                 # the start line, epoch 1's
    assert err[1].startswith('epoch 1/3'), err
    p.terminate()                                       # SIGTERM, to the command alone
    err = ''.join(err + [p.communicate(timeout=120)[1]]).splitlines()
    assert p.returncode == 143 and err[2:] == [f'mixcut_train: terminated in epoch 2 of 3; the checkpoint of epoch 1 '
                                               f'is intact: continue with mixcut_train --resume {out}/checkpoint.pt'], err
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json']
    code, err = cli('--resume', out / 'checkpoint.pt')
    assert code == 0 and err[-1].startswith('epoch 3/3'), err

def test_sigterm_during_a_download_leaves_nothing_behind(tmp_path):
    "`kill` while `--download` trickles: one line, exit 143, no partial file and no folder of its making"
    data = tmp_path / 'data' / 'sets'
    with server(Trickle) as url:
        code = ('import sys; from mixcut_nb import download as D; from mixcut_nb.train import main\n'
                f'D.IMAGENETTE_URL, D.IMAGENETTE_SIZE = "{url}/imagenette2-320.tgz", 100_000\n'
                'main(["--download", sys.argv[1], "--no-progress"])')
        p = subprocess.Popen([sys.executable, '-c', code, str(data)], stderr=subprocess.PIPE, text=True)
        while not list(data.glob('.download-*')): assert p.poll() is None; time.sleep(0.05)
        p.terminate()
        err = p.communicate(timeout=60)[1].splitlines()
    assert p.returncode == 143 and err == ['mixcut_train: terminated'], (p.returncode, err)
    assert list(tmp_path.iterdir()) == []                # data/sets/ and data/ were made by it: removed too

# ---- 8: a batch that cannot fit in memory ----

def at_most_12_gb():
    "A ceiling on the child's address space, so that a run which does allocate fails instead of taking the machine"
    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))

def test_an_image_size_whose_batch_cannot_fit_is_refused(tmp_path):
    code, err = cli('--img-size', '100000', '--output', tmp_path / 'out', preexec_fn=at_most_12_gb)
    one_line(code, err, '--img-size 100000: a batch of 64 images needs 8,940.7 GiB, more than the ')
    assert not (tmp_path / 'out').exists()

# ---- 9: messages of several lines are one line, not their last ----

def test_a_redirect_loop_is_one_whole_line(tmp_path, capsys, monkeypatch):
    with server(Redirect) as url:
        monkeypatch.setattr(D, 'IMAGENETTE_URL', f'{url}/imagenette2-320.tgz')
        monkeypatch.setattr(sys.modules['mixcut_nb.loop'], 'IMAGENETTE_URL', f'{url}/imagenette2-320.tgz', raising=False)
        with pytest.raises(SystemExit) as e: T.main([str(tmp_path / 'data'), '--download', '--output', str(tmp_path / 'out')])
    err = capsys.readouterr().err.splitlines()
    one_line(e.value.code, err, f'{url}/imagenette2-320.tgz: HTTP error 302 (The HTTP server returned a redirect error that '
                                'would lead to an infinite loop. The last 30x error message was: Found)')
    assert not (tmp_path / 'data').exists()

def test_a_file_name_with_a_newline_is_named_whole(tmp_path):
    data = folder(tmp_path / 'data')
    (data / 'train' / 'a' / 'bad\nname.png').write_bytes(b'junk')
    code, err = cli(data, *QUICK, '--output', tmp_path / 'out')
    one_line(code, err, f'cannot read image {data}/train/a/bad\\nname.png: cannot identify image file')

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

# ---- 12: one run per output folder ----

def test_a_second_run_into_one_output_is_refused(tmp_path):
    out = tmp_path / 'run'
    first = subprocess.Popen([sys.executable, '-m', 'mixcut_nb.train', '--epochs', '5', '--max-steps', '40', '-b', '16',
                              '--workers', '1', '--no-progress', '--output', str(out)], stderr=subprocess.DEVNULL)
    lock, deadline = out / '.mixcut_train.lock', time.time() + 300
    while not (out / 'checkpoint.pt').exists(): assert first.poll() is None and time.time() < deadline; time.sleep(0.05)
    try:
        before = ckpt(out)['epoch']
        code, err = cli('--epochs', '1', '--max-steps', '1', '--workers', '0', '--output', out)
        one_line(code, err, f'--output {out}: another run (pid {first.pid}) is writing there')
        assert first.poll() is None and lock.read_text() == f'{first.pid}\n'
        assert ckpt(out)['args']['max_steps'] == 40 and ckpt(out)['epoch'] >= before      # still the first run's
    finally: first.kill(); first.wait()
    assert lock.exists()                                  # killed: its lock file stays, held by no one (not its worker)
    code, err = cli('--epochs', '1', '--max-steps', '1', '--workers', '0', '--no-progress', '--output', out)
    assert code == 0, err                                 # a dead run's lock is taken over, and removed at the end
    assert ckpt(out)['args']['max_steps'] == 1 and not lock.exists()

# ---- 13: files follow the umask ----

@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    data = folder(tmp_path / 'data')
    old = os.umask(umask)
    try: T.train(T.get_parser().parse_args([str(data), *QUICK, '--output', str(tmp_path / 'out')]))
    finally: os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / 'out').iterdir()}
    assert modes == dict.fromkeys(['checkpoint.pt', 'curves.png', 'metrics.csv', 'summary.json'], mode), modes
