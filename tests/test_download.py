"Downloads: limits on the archive and the body, a checksum required, one-line errors, nothing left behind (served on 127.0.0.1)"
import contextlib, gzip, hashlib, http.server, io, os, socket, socketserver, tarfile, threading
from pathlib import Path
import numpy as np, pytest
from mixcut_nb import train as T, download as D, loop as L

NAME = 'imagenette2-320'

def tgz(members, compresslevel=9):
    "Gzipped tar bytes of `members`: (name, bytes) files, (name, None) folders"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz', compresslevel=compresslevel) as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data is None: ti.type = tarfile.DIRTYPE; tar.addfile(ti)
            else: ti.size = len(data); tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

def many_members(n, prefix=f'{NAME}/train/a/'):
    "A gzipped tar of `n` empty files, its 512-byte headers built at once"
    ti = tarfile.TarInfo(prefix + '0' * 7); ti.mtime = 0
    h = np.tile(np.frombuffer(ti.tobuf(tarfile.USTAR_FORMAT), np.uint8), (n, 1))
    h[:, len(prefix):len(prefix) + 7] = np.frombuffer(''.join(f'{i:07d}' for i in range(n)).encode(), np.uint8).reshape(n, 7)
    h[:, 148:156] = ord(' ')                                   # the checksum counts its own field as spaces
    h[:, 148:155] = np.frombuffer(''.join(f'{c:06o}\0' for c in h.astype(np.int64).sum(1)).encode(), np.uint8).reshape(n, 7)
    return gzip.compress(h.tobytes() + bytes(1024), compresslevel=1)

GOOD = [(f'{NAME}/train/a/1.txt', b'x'), (f'{NAME}/val/a/1.txt', b'y')]

class Handler(http.server.BaseHTTPRequestHandler):
    "Serves `self.server.files` {path: bytes}; `/endless` streams without a length, `/short` sends half of what it announces"
    def log_message(self, *a): pass
    def do_GET(self):
        files = self.server.files
        if self.path == '/endless':
            self.send_response(200); self.end_headers()
            try:
                for _ in range(10_000): self.wfile.write(bytes(1 << 16))     # 640 MB if nobody stops reading
            except OSError: pass
            return
        if self.path.lstrip('/') not in files: self.send_error(404); return
        body = files[self.path.lstrip('/')]
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body[:len(body) // 2] if self.path == '/short' else body)

@contextlib.contextmanager
def serve(files):
    class Srv(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
    with Srv(('127.0.0.1', 0), Handler) as srv:
        srv.files = files
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        yield f'http://127.0.0.1:{srv.server_address[1]}'
        srv.shutdown()

def md5(b): return hashlib.md5(b).hexdigest()

def closed_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def fetch(tmp_path, files, path, **kw):
    "download_imagenette of `path` from a local server into `tmp_path/data`, checked against `files[path]` unless told"
    body = files.get(path, b'')
    kw = dict(md5=md5(body), size=len(body), progress=False) | kw
    with serve(files) as url: return T.download_imagenette(tmp_path / 'data', f'{url}/{path}', **kw)

def nothing_left(tmp_path):
    "Nothing of a failed download remains: not even the folder it created"
    return not (tmp_path / 'data').exists()

ratio_bomb = tgz(GOOD + [(f'{NAME}/train/a/zeros', bytes(20_000_000))])
cases = {   # name: (archive bytes, message)
    'more than 100,000 members': (many_members(100_001), 'more than 100,000 members'),
    'members add up to more than 10x': (ratio_bomb, f'more than 10x its {len(ratio_bomb):,} bytes'),
    'a file, then a member under it': (tgz(GOOD + [(f'{NAME}/train/x', b'1'), (f'{NAME}/train/x/y', b'2')]), "lies under 'imagenette2-320/train/x', a file"),
    'a member under a file listed later': (tgz(GOOD + [(f'{NAME}/train/x/y', b'2'), (f'{NAME}/train/x', b'1')]), 'a file'),
    'a folder and a file of the same name': (tgz(GOOD + [(f'{NAME}/train/d', None), (f'{NAME}/train/d', b'1')]), 'twice'),
    'a file and a folder of the same name': (tgz(GOOD + [(f'{NAME}/train/d', b'1'), (f'{NAME}/train/d/', None)]), 'twice'),
    'a file listed twice': (tgz(GOOD + [(f'{NAME}/train/a/1.txt', b'z')]), 'twice'),
    'not a tar archive': (os.urandom(5000), 'not a readable tar archive'),
    'a gzip stream cut short': (tgz(GOOD + [(f'{NAME}/train/a/r', os.urandom(100_000))])[:60_000], 'not a readable tar archive'),
    'no train/ folder': (tgz([(f'{NAME}/other/1.txt', b'x')]), f'no {NAME}/train/ folder'),
}

@pytest.mark.parametrize('case', cases)
def test_bad_archives_are_refused_before_extracting(tmp_path, case):
    body, match = cases[case]
    with pytest.raises(T.UsageError, match=match) as e: fetch(tmp_path, {f'{NAME}.tgz': body}, f'{NAME}.tgz')
    assert '\n' not in str(e.value) and nothing_left(tmp_path)

def test_the_member_limit_is_checked_while_reading(tmp_path, monkeypatch):
    "Just at the limit is fine; one more is refused"
    monkeypatch.setattr(D, 'MAX_MEMBERS', 50)
    ok = many_members(50, f'{NAME}/train/a/'); got = fetch(tmp_path, {f'{NAME}.tgz': ok}, f'{NAME}.tgz')
    assert len(list((got / 'train' / 'a').iterdir())) == 50

@pytest.mark.parametrize('path, kw, match', [
    ('missing.tgz', dict(md5='0' * 32, size=10), 'HTTP error 404'),
    (f'{NAME}.tgz', dict(size=len(tgz(GOOD)) - 1), 'the server offers'),             # announces more than expected: not read
    ('endless', dict(md5='0' * 32, size=100_000), 'longer than the expected 100,000 bytes'),    # no length: reading stops at the size
    ('short', dict(), 'failed|got'),                                                    # the body ends before its length
    (f'{NAME}.tgz', dict(md5='f' * 32), 'MD5'),
])
def test_network_failures_are_one_line_and_leave_nothing(tmp_path, path, kw, match):
    files = {f'{NAME}.tgz': tgz(GOOD), 'short': tgz(GOOD)}
    with pytest.raises(T.UsageError, match=match) as e: fetch(tmp_path, files, path, **kw)
    assert '\n' not in str(e.value) and nothing_left(tmp_path)

def test_no_network_is_one_line(tmp_path):
    with pytest.raises(T.UsageError, match='cannot download .*refused') as e:
        T.download_imagenette(tmp_path / 'data', f'http://127.0.0.1:{closed_port()}/{NAME}.tgz', '0' * 32, 10, progress=False)
    assert '\n' not in str(e.value) and nothing_left(tmp_path)

@pytest.mark.parametrize('kw, error, match', [
    (dict(md5=None), ValueError, '`md5`'), (dict(size=None), ValueError, '`size`'), (dict(md5=None, size=None), ValueError, '`md5`'),
    (dict(md5='abc'), ValueError, '`md5`'), (dict(size=0), ValueError, '`size`'), (dict(size='10'), ValueError, '`size`')])
def test_a_checksum_and_size_are_required(tmp_path, kw, error, match):
    files = {f'{NAME}.tgz': tgz(GOOD)}
    with pytest.raises(error, match=match): fetch(tmp_path, files, f'{NAME}.tgz', **kw)
    assert nothing_left(tmp_path)

def test_a_failure_leaves_an_existing_folder_as_it_was(tmp_path):
    (tmp_path / 'data').mkdir(); (tmp_path / 'data' / 'mine.txt').write_text('keep')
    with pytest.raises(T.UsageError): fetch(tmp_path, {f'{NAME}.tgz': cases['not a tar archive'][0]}, f'{NAME}.tgz')
    assert [p.name for p in (tmp_path / 'data').iterdir()] == ['mine.txt']

def test_stale_temporary_files_of_a_killed_download_are_removed(tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / '.download-999999999-abc').write_bytes(b'partial')    # no such process
    (tmp_path / 'data' / '.extract-999999999-def').mkdir()
    got = fetch(tmp_path, {f'{NAME}.tgz': tgz(GOOD)}, f'{NAME}.tgz')
    assert sorted(p.name for p in (tmp_path / 'data').iterdir()) == [NAME] and got.name == NAME

@pytest.mark.parametrize('where, match', [('missing', 'HTTP error 404'), ('closed', 'cannot download')])
def test_cli_download_failures_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, where, match):
    with serve({}) as url:
        monkeypatch.setattr(D, 'IMAGENETTE_URL', f'{url}/{NAME}.tgz' if where == 'missing' else f'http://127.0.0.1:{closed_port()}/{NAME}.tgz')
        with pytest.raises(SystemExit) as e: T.main([str(tmp_path / 'data'), '--download', '--output', str(tmp_path / 'out'), '--workers', '0'])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and match in err[0], err
    assert not (tmp_path / 'data').exists() and not (tmp_path / 'out').exists()
