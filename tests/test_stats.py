"Statistical properties that bit-for-bit comparisons on a few seeds cannot show"
import numpy as np, torch, pytest
from scipy import stats
import mixcut_nb as mc

N = 4000   # draws per test: tests fail by chance with probability < 1e-4 (fixed seeds make them deterministic)

@pytest.mark.parametrize('mode', ['elem', 'pair', 'batch'])
@pytest.mark.parametrize('prob', [0.3, 0.7])
def test_prob_is_the_mixing_rate(mode, prob):
    "With `prob` < 1, a batch, pair or element is mixed with probability `prob` (not prob**2)"
    m = mc.Mixup(mixup_alpha=1., cutmix_alpha=1., prob=prob, mode=mode, rng=np.random.default_rng(0))
    n = {'batch': 1, 'pair': 4, 'elem': 8}[mode]
    mixed = sum(int((lambda p: (p.mixup | p.cutmix)[:n].sum())(m.draw(8, (3, 32, 32)))) for _ in range(N // n))
    trials = (N // n) * n
    assert stats.binomtest(mixed, trials, prob).pvalue > 1e-4, mixed / trials

@pytest.mark.parametrize('alpha', [0.2, 1., 3.])
def test_mixup_lam_follows_beta(alpha):
    "Mixup's lam is Beta(alpha, alpha): a Kolmogorov-Smirnov goodness-of-fit test"
    m = mc.Mixup(mixup_alpha=alpha, mode='elem', rng=np.random.default_rng(1))
    lam = np.concatenate([m.draw(64, (3, 8, 8)).lam for _ in range(N // 64)])
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).pvalue > 1e-4

def test_switch_prob_is_the_cutmix_rate():
    m = mc.Mixup(mixup_alpha=1., cutmix_alpha=1., switch_prob=0.3, mode='elem', rng=np.random.default_rng(2))
    cut = sum(int(m.draw(64, (3, 8, 8)).cutmix.sum()) for _ in range(N // 64))
    assert stats.binomtest(cut, (N // 64) * 64, 0.3).pvalue > 1e-4

def test_every_minmax_box_origin_is_reachable():
    "Darknet-style boxes: every origin a drawn size allows, the last row and column included, is drawn"
    H, W = 7, 9
    m = mc.Mixup(mixup_alpha=0., cutmix_minmax=(0.2, 0.6), mode='elem', rng=np.random.default_rng(3))
    seen = set()
    for _ in range(600):
        p = m.draw(16, (3, H, W))
        seen |= {(yh - yl, xh - xl, yl, xl) for yl, yh, xl, xh in p.boxes[p.cutmix].tolist()}
    valid = {(h, w, y, x) for h, w, _, _ in seen for y in range(H - h + 1) for x in range(W - w + 1)}
    assert valid == seen, sorted(valid - seen)[:5]
    assert {h for h, *_ in seen} == {1, 2, 3} and {w for _, w, *_ in seen} == {1, 2, 3, 4}

def test_rand_bbox_centres_cover_the_image():
    "Centred boxes: every pixel is a centre, uniformly, the last row and column included"
    H, W = 5, 6
    yl, yh, xl, xh = mc.rand_bbox((H, W), 1., count=N, rng=np.random.default_rng(4))   # lam=1: an empty box at its centre
    assert set(yl.tolist()) == set(range(H)) and set(xl.tolist()) == set(range(W))
    assert stats.chisquare(np.bincount(yl, minlength=H)).pvalue > 1e-4
    assert stats.chisquare(np.bincount(xl, minlength=W)).pvalue > 1e-4
    m = mc.Mixup(mixup_alpha=0., cutmix_alpha=1., mode='elem', rng=np.random.default_rng(5))
    boxes = np.concatenate([(lambda p: p.boxes[p.cutmix])(m.draw(16, (3, H, W))) for _ in range(200)])
    assert (boxes[:, 1] == H).any() and (boxes[:, 3] == W).any() and (boxes[:, 0] == 0).any() and (boxes[:, 2] == 0).any()

def test_elem_mode_gives_each_element_its_own_box():
    "In 'elem' mode every element gets its own box, and its pasted pixels are exactly that box"
    m = mc.Mixup(mixup_alpha=0., cutmix_alpha=1., mode='elem', label_smoothing=0., num_classes=8, rng=np.random.default_rng(5))
    x = torch.arange(8 * 3 * 20 * 24, dtype=torch.float32).view(8, 3, 20, 24)   # every pixel distinct
    xm, _ = m(x.clone(), torch.arange(8))
    p = m.last_params
    assert len({tuple(b) for b in p.boxes}) > 4
    for i in range(8):
        yl, yh, xl, xh = p.boxes[i]
        box = torch.zeros(20, 24, dtype=torch.bool); box[yl:yh, xl:xh] = True
        assert torch.equal(xm[i][:, box], x[7 - i][:, box]) and torch.equal(xm[i][:, ~box], x[i][:, ~box])

@pytest.mark.parametrize('mode', ['batch', 'pair', 'elem'])
@pytest.mark.parametrize('minmax', [None, (0.3, 0.9)])
def test_pasted_area_matches_lam(mode, minmax):
    "After correction, the share of pixels taken from the partner is exactly 1 - lam, and the targets say so"
    m = mc.Mixup(mixup_alpha=0., cutmix_alpha=2., cutmix_minmax=minmax, mode=mode, label_smoothing=0., num_classes=8,
                 rng=np.random.default_rng(6))
    for _ in range(20):
        x = torch.arange(8 * 2 * 13 * 17, dtype=torch.float64).view(8, 2, 13, 17)
        xm, t = m(x.clone(), torch.arange(8))
        lam = m.last_params.per_element().lam
        for i in range(8):
            if i == 7 - i: continue
            taken = (xm[i] == x[7 - i]).all(0).double().mean().item()
            assert taken == pytest.approx(1 - lam[i], abs=1e-6)
            assert t[i, i].item() == pytest.approx(lam[i], abs=1e-3)
