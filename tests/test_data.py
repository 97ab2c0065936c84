"The sample set is written once and atomically; the loader reads any ImageFolder tree"
import multiprocessing as mp
from pathlib import Path
import numpy as np, torch, pytest
from PIL import Image
from mixcut_nb import data
from mixcut_nb.data import _PHOTOS, _sample_files

def _build(path, q): q.put(str(data.sample_images(path)))

def test_concurrent_builds_give_one_complete_set(tmp_path):
    root, ctx = tmp_path / 'set', mp.get_context('spawn')
    q = ctx.Queue()
    ps = [ctx.Process(target=_build, args=(root, q)) for _ in range(2)]
    for p in ps: p.start()
    for p in ps: p.join(120)
    assert [p.exitcode for p in ps] == [0, 0]
    assert sorted(q.get(timeout=5) for _ in ps) == [str(root)] * 2
    assert all(f.is_file() for f in _sample_files(root))
    assert [p.name for p in tmp_path.iterdir()] == ['set']          # no temporary folder left behind
    assert sorted(p.name for p in root.iterdir()) == sorted(_PHOTOS)

def test_existing_set_is_reused_and_foreign_folder_refused(tmp_path):
    root = data.sample_images(tmp_path / 'set')
    f = root / 'cat' / 'chelsea.png'
    before = f.stat().st_mtime_ns
    assert data.sample_images(root) == root and f.stat().st_mtime_ns == before
    (tmp_path / 'mine').mkdir(); (tmp_path / 'mine' / 'notes.txt').write_text('x')
    with pytest.raises(FileExistsError, match='`path`'): data.sample_images(tmp_path / 'mine')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(FileExistsError, match='`path`'): data.sample_images(tmp_path / 'file')

def test_cache_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('MIXCUT_NB_CACHE', str(tmp_path / 'c'))
    assert data.sample_images() == tmp_path / 'c' / 'photos-v1'
    monkeypatch.delenv('MIXCUT_NB_CACHE'); monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'x'))
    assert data.sample_images() == tmp_path / 'x' / 'mixcut_nb' / 'photos-v1'

def _tree(root, classes=('n01440764', 'n02102040', 'n02979186'), per_class=3):
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.random.default_rng(10 * k + i).integers(0, 256, (50 + i, 70, 3), np.uint8)).save(root / c / f'{i}.JPEG')
    return root

@pytest.mark.parametrize('train', [False, True])
def test_loader_reads_an_imagenette_like_tree(tmp_path, train):
    root = _tree(tmp_path / 'imagenette2-320' / 'train')
    dl = data.image_loader(root, size=48, batch_size=4, train=train)
    assert dl.dataset.classes == ['n01440764', 'n02102040', 'n02979186']
    batches = list(dl)
    assert [len(y) for _, y in batches] == [4, 4, 1]
    x, y = batches[0]
    assert x.shape == (4, 3, 48, 48) and x.dtype == torch.float32 and y.dtype == torch.int64
    u = x * torch.tensor(data.IMAGENET_DEFAULT_STD).view(3, 1, 1) + torch.tensor(data.IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5

def test_loader_seed_fixes_the_order(tmp_path):
    root = _tree(tmp_path / 't')
    order = lambda seed: torch.cat([y for _, y in data.image_loader(root, size=8, batch_size=2, seed=seed)]).tolist()
    assert order(3) == order(3)
    assert len({tuple(order(s)) for s in range(6)}) > 1

@pytest.mark.parametrize('kwargs, match', [
    (dict(root='/nonexistent/imagenette'), '`root`'), (dict(batch_size=0), 'batch_size'), (dict(size=0), 'size'),
    (dict(num_workers=-1), 'num_workers'), (dict(seed=1.5), 'seed'), (dict(size='224'), 'size')])
def test_loader_errors_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match): data.image_loader(**kwargs)

@pytest.mark.parametrize('call, error, match', [
    (lambda: data.sample_images(5), TypeError, '`path` must be a folder path'),
    (lambda: data.digits_folder(['x']), TypeError, '`path` must be a folder path'),
    (lambda: data.digits_folder(val_fraction=0.), ValueError, '`val_fraction` must be in \\(0, 1\\)'),
    (lambda: data.digits_folder(val_fraction=1.), ValueError, '`val_fraction`'),
    (lambda: data.image_loader(3), TypeError, '`root` must be a folder path'),
])
def test_paths_and_fractions_are_checked(call, error, match):
    with pytest.raises(error, match=match): call()

def test_a_folder_without_class_folders_names_root(tmp_path):
    with pytest.raises(ValueError, match='`root`'): data.image_loader(tmp_path)
