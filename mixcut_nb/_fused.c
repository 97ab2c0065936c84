/* mixcut_nb._fused: mixing a batch on the CPU in one pass. Explained in nbs/01b_fused.ipynb.

   Element e of a batch of B is R rows of L contiguous values. Row r shows image row h = r % H, and an image
   column is q values of a row (q = 1 for NCHW, C for channels-last). Element e follows draw d = follows[e] of the
   call's draws (-1: none; which draw is the mode's business, decided in Python), and is
   mixed with its partner B-1-e as op[d] says: 0 keeps it, 1 blends it, own*w[d] + partner*v[d], rounding after
   each operation as torch does, 2 pastes the partner's box: rows box[d][0] <= h < box[d][1], columns
   box[d][2]*q <= k < box[d][3]*q, or, given masks (FMix), every value whose column's byte in draw d's mask
   (H x L/q bytes) is 0. Both elements of a pair read the other's original values; only elements e < written
   are written. Given a partner array instead (out of place only: dst apart from src), element e is mixed with
   src's element partner[e], each element on its own. */
#define PY_SSIZE_T_CLEAN
#define Py_LIMITED_API 0x030A0000
#include <Python.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { F32, F64, U8 };                            /* element types */
static const int64_t SIZE[3] = {4, 8, 1};

typedef struct {
    int dtype; int64_t B, R, L, H, q, written;    /* elements e >= written are not written */
    const int64_t *follows;                       /* the draw element e follows, -1 for none */
    const int64_t *partner;                       /* NULL: pairs e, B-1-e; else e's partner (out of place) */
    const char *src; int64_t src_stride; const int64_t *src_at;   /* element e at src_at[e], else src + e*src_stride */
    char *dst; int64_t dst_stride; const int64_t *dst_at;          /* likewise; a 0 in dst_at: not written */
    const int8_t *op; const double *w, *v; const int64_t *box;     /* one per draw */
    const uint8_t *mask;                  /* NULL, or one H x L/q mask per draw: op 2 takes the partner where it is 0 */
    int64_t lo, hi, span; char *tmp;      /* this thread's (pair, row) items, and `span` values of scratch */
} job_t;

static int64_t draw_of(const job_t *j, int64_t e) { return j->follows[e]; }
static const char *src_of(const job_t *j, int64_t e) {
    return j->src_at ? (const char *)(intptr_t)j->src_at[e] : j->src + e * j->src_stride;
}
static char *dst_of(const job_t *j, int64_t e) {
    if (e >= j->written) return NULL;                            /* e.g. 'half' returns only the first half */
    return j->dst_at ? (char *)(intptr_t)j->dst_at[e] : j->dst + e * j->dst_stride;
}

/* One row segment of n values: blend (op 1), or copy and paste columns c0..c1 of the partner (op 2; with a mask row m,
   the partner's value wherever the mask of its column, m[k / q], is 0), or copy.
   The AVX2 clone vectorizes the uint8 blends; without FMA and with -ffp-contract=off it rounds as the baseline.
   IVDEP: value k is read before value k is written and nothing else, so in place is safe to vectorize. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif
#if defined(__clang__)
#define IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define IVDEP _Pragma("GCC ivdep")
#else
#define IVDEP
#endif
#define BLEND(a, b, w, v) ((a) * (w) + (b) * (v))
/* uint8: the blend in float32, rounded half to even as np.rint. GCC converts with the default rounding (one
   instruction that vectorizes, given -fno-math-errno); elsewhere adding and subtracting 2^23, exact for 0 <= f < 2^23 */
#if defined(__GNUC__) && !defined(__clang__) && !defined(MIXCUT_ROUND_BY_ADDING)
#define RINT_U8(f) ((uint8_t)__builtin_irintf(f))
#else
#define RINT_U8(f) ((uint8_t)(int32_t)(((f) + 8388608.0f) - 8388608.0f))
#endif
#define BLEND_U8(a, b, w, v) RINT_U8((a) * (w) + (b) * (v))
#define ROW(NAME, T, F, MIX)                                                                        \
CLONES static void NAME(char *out_, const char *a_, const char *b_, int op, double wd, double vd,   \
                        int64_t c0, int64_t c1, int64_t n, const uint8_t *m, int64_t q) {           \
    if (op == 1) {                                                                                  \
        T *out = (T *)out_; const T *a = (const T *)a_, *b = (const T *)b_;                         \
        const F w = (F)wd, v = (F)vd;                                                               \
        IVDEP for (int64_t k = 0; k < n; k++) { F fa = a[k], fb = b[k]; out[k] = MIX(fa, fb, w, v); } \
        return;                                                                                     \
    }                                                                                               \
    if (op == 2 && m) {                                                                             \
        T *out = (T *)out_; const T *a = (const T *)a_, *b = (const T *)b_;                         \
        if (q == 1) { IVDEP for (int64_t k = 0; k < n; k++) out[k] = m[k] ? a[k] : b[k]; }          \
        else for (int64_t k = 0; k < n; k++) out[k] = m[k / q] ? a[k] : b[k];                       \
        return;                                                                                     \
    }                                                                                               \
    if (out_ != a_) memcpy(out_, a_, (size_t)n * sizeof(T));                                        \
    if (op == 2) memcpy(out_ + c0 * sizeof(T), b_ + c0 * sizeof(T), (size_t)(c1 - c0) * sizeof(T)); \
}
/* Both elements of a pair blend: each value of both is read once, and both are written, no copy needed */
#define PAIR(NAME, T, F, MIX)                                                                       \
CLONES static void NAME(char *o0_, char *o1_, const char *a0_, const char *a1_, double w0d, double v0d, \
                        double w1d, double v1d, int64_t n) {                                        \
    T *o0 = (T *)o0_, *o1 = (T *)o1_; const T *a0 = (const T *)a0_, *a1 = (const T *)a1_;          \
    const F w0 = (F)w0d, v0 = (F)v0d, w1 = (F)w1d, v1 = (F)v1d;                                     \
    IVDEP for (int64_t k = 0; k < n; k++) {                                                         \
        F f0 = a0[k], f1 = a1[k];                                                                   \
        o0[k] = MIX(f0, f1, w0, v0); o1[k] = MIX(f1, f0, w1, v1);                                   \
    }                                                                                               \
}
ROW(row_f32, float, float, BLEND)
ROW(row_f64, double, double, BLEND)
ROW(row_u8, uint8_t, float, BLEND_U8)
PAIR(pair_f32, float, float, BLEND)
PAIR(pair_f64, double, double, BLEND)
PAIR(pair_u8, uint8_t, float, BLEND_U8)
typedef void (*row_fn)(char *, const char *, const char *, int, double, double, int64_t, int64_t, int64_t, const uint8_t *, int64_t);
typedef void (*pair_fn)(char *, char *, const char *, const char *, double, double, double, double, int64_t);
static const row_fn ROWS[3] = {row_f32, row_f64, row_u8};
static const pair_fn PAIRS[3] = {pair_f32, pair_f64, pair_u8};

/* Values at .. at+n of the pair (p, B-1-p), n <= the scratch's size: both read their partner's original.
   A segment is one row of image row h where an element pastes a box, else any run of whole rows (h = -1). */
static void pair_seg(const job_t *j, int64_t p, int64_t at, int64_t n, int64_t h) {
    const int64_t e[2] = {p, j->B - 1 - p}, es = SIZE[j->dtype];
    int op[2]; int64_t c0[2] = {0, 0}, c1[2] = {0, 0}; double w[2] = {1, 1}, v[2] = {0, 0};
    const char *a[2]; char *out[2]; const uint8_t *m[2] = {NULL, NULL};
    for (int s = 0; s < 2; s++) {
        const int64_t d = draw_of(j, e[s]);
        op[s] = d < 0 ? 0 : j->op[d];
        if (op[s]) {
            const int64_t *bx = j->box + 4 * d;
            if (op[s] == 2 && j->mask) m[s] = j->mask + (d * j->H + h) * (j->L / j->q);   /* this row of its mask */
            else if (op[s] == 2 && (h < bx[0] || h >= bx[1])) op[s] = 0;   /* this row misses the box */
            c0[s] = bx[2] * j->q; c1[s] = bx[3] * j->q; w[s] = j->w[d]; v[s] = j->v[d];
        }
        a[s] = src_of(j, e[s]) + at * es;
        out[s] = dst_of(j, e[s]);
        if (out[s]) out[s] += at * es;
    }
    const row_fn row = ROWS[j->dtype];
    if (e[0] == e[1]) {                                             /* the middle of an odd batch */
        if (out[0] && (op[0] || out[0] != a[0])) row(out[0], a[0], a[0], op[0], w[0], v[0], c0[0], c1[0], n, m[0], j->q);
        return;
    }
    if (op[0] == 1 && op[1] == 1 && out[0] && out[1]) {             /* both blend: one loop, no copy */
        PAIRS[j->dtype](out[0], out[1], a[0], a[1], w[0], v[0], w[1], v[1], n);
        return;
    }
    const char *b0 = a[1];      /* element 0 is written last: keep what it needs of its partner's original */
    if (op[0] && op[1] && out[1] == a[1]) {
        const int box = op[0] == 2 && !m[0];                       /* only the box's columns, else the whole row */
        int64_t k0 = box ? c0[0] : 0, k1 = box ? c1[0] : n;
        memcpy(j->tmp + k0 * es, a[1] + k0 * es, (size_t)((k1 - k0) * es));
        b0 = j->tmp;
    }
    for (int s = 1; s >= 0; s--)
        if (out[s] && (op[s] || out[s] != a[s]))
            row(out[s], a[s], s ? a[0] : b0, op[s], w[s], v[s], c0[s], c1[s], n, m[s], j->q);
}

static int pastes(const job_t *j, int64_t e) { int64_t d = draw_of(j, e); return d >= 0 && j->op[d] == 2; }

/* Values at .. at+n of element e alone, out of place: its own values and its partner's, from src, into dst */
static void elem_seg(const job_t *j, int64_t e, int64_t at, int64_t n, int64_t h) {
    char *out = dst_of(j, e);
    if (!out) return;
    const int64_t d = draw_of(j, e), es = SIZE[j->dtype];
    int op = d < 0 ? 0 : j->op[d]; int64_t c0 = 0, c1 = 0; double w = 1, v = 0; const uint8_t *m = NULL;
    if (op) {
        const int64_t *bx = j->box + 4 * d;
        if (op == 2 && j->mask) m = j->mask + (d * j->H + h) * (j->L / j->q);   /* this row of its mask */
        else if (op == 2 && (h < bx[0] || h >= bx[1])) op = 0;   /* this row misses the box */
        c0 = bx[2] * j->q; c1 = bx[3] * j->q; w = j->w[d]; v = j->v[d];
    }
    ROWS[j->dtype](out + at * es, src_of(j, e) + at * es, src_of(j, j->partner[e]) + at * es, op, w, v, c0, c1, n, m,
                   j->q);
}

/* Rows r0 .. r1 of element e, which pastes its partner's box, out of place: copied as one run, then the box's
   columns pasted into the rows that cross it, one copy per such row */
static void box_rows(const job_t *j, int64_t e, int64_t r0, int64_t r1) {
    char *out = dst_of(j, e);
    if (!out) return;
    const int64_t es = SIZE[j->dtype], row = j->L * es, *bx = j->box + 4 * draw_of(j, e);
    const int64_t c0 = bx[2] * j->q * es, n = (bx[3] - bx[2]) * j->q * es;
    const char *own = src_of(j, e), *other = src_of(j, j->partner[e]);
    memcpy(out + r0 * row, own + r0 * row, (size_t)((r1 - r0) * row));
    for (int64_t r = r0, h = r0 % j->H; n && r < r1; r++, h = h + 1 == j->H ? 0 : h + 1)
        if (bx[0] <= h && h < bx[1]) memcpy(out + r * row + c0, other + r * row + c0, (size_t)n);
}

/* Items (element, row), each element on its own: in element order, so a partner next to its element (e-1) was
   just read, and is read again from the cache */
static void *run_each(void *arg) {
    const job_t *j = (const job_t *)arg;
    for (int64_t it = j->lo; it < j->hi;) {               /* item `it` is row it % R of element it / R */
        const int64_t e = it / j->R, r0 = it % j->R;
        const int64_t r1 = j->hi - e * j->R < j->R ? j->hi - e * j->R : j->R;   /* this thread's rows of e */
        if (pastes(j, e) && !j->mask) box_rows(j, e, r0, r1);   /* a box: a run, then the box's rows */
        else if (pastes(j, e))                            /* a mask: row by row */
            for (int64_t r = r0, h = r0 % j->H; r < r1; r++, h = h + 1 == j->H ? 0 : h + 1)
                elem_seg(j, e, r * j->L, j->L, h);
        else                                              /* the rows are one run of values */
            for (int64_t k = r0 * j->L, end = r1 * j->L; k < end; k += j->span)
                elem_seg(j, e, k, end - k < j->span ? end - k : j->span, -1);
        it = e * j->R + r1;
    }
    return NULL;
}

static void *run(void *arg) {
    const job_t *j = (const job_t *)arg;
    for (int64_t it = j->lo; it < j->hi;) {               /* item `it` is row it % R of pair it / R */
        const int64_t p = it / j->R, r0 = it % j->R;
        const int64_t r1 = j->hi - p * j->R < j->R ? j->hi - p * j->R : j->R;   /* this thread's rows of pair p */
        if (pastes(j, p) || pastes(j, j->B - 1 - p))      /* a box: row by row */
            for (int64_t r = r0, h = r0 % j->H; r < r1; r++, h = h + 1 == j->H ? 0 : h + 1)
                pair_seg(j, p, r * j->L, j->L, h);
        else                                              /* no box: the rows are one run of values */
            for (int64_t k = r0 * j->L, end = r1 * j->L; k < end; k += j->span)
                pair_seg(j, p, k, end - k < j->span ? end - k : j->span, -1);
        it = p * j->R + r1;
    }
    return NULL;
}

/* Run fn on `threads` jobs, job t at jobs + t*size: on torch's own OpenMP threads where it uses libgomp, else pthreads */
static void parallel(void *(*fn)(void *), char *jobs, size_t size, int threads) {
    if (threads == 1) { fn(jobs); return; }
#ifdef _OPENMP
    #pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int t = 0; t < threads; t++) fn(jobs + t * size);
#else
    pthread_t th[64]; int started[64] = {0};
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&th[t], NULL, fn, jobs + t * size) == 0;
    fn(jobs);
    for (int t = 1; t < threads; t++) { if (started[t]) pthread_join(th[t], NULL); else fn(jobs + t * size); }
#endif
}

/* Run `job` on up to `threads` threads: 0 when done, -1 when out of memory (then nothing is written) */
static int mix_all(job_t job, int threads) {
    const int64_t items = (job.partner ? job.B : (job.B + 1) / 2) * job.R;
    if (items == 0 || job.L == 0) return 0;
    if (threads > 64) threads = 64;
    if (threads > items) threads = (int)items;
    if (threads < 1) threads = 1;
    const int64_t span = job.L > 16384 ? job.L : 16384;  /* values per segment of rows without a box */
    char *tmp = malloc((size_t)(threads * span * SIZE[job.dtype]));
    if (!tmp) return -1;
    job_t jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t] = job;
        jobs[t].lo = items * t / threads; jobs[t].hi = items * (t + 1) / threads;
        jobs[t].span = span; jobs[t].tmp = tmp + t * span * SIZE[job.dtype];
    }
    parallel(job.partner ? run_each : run, (char *)jobs, sizeof(job_t), threads);
    free(tmp);
    return 0;
}

/* An address argument: an int (element e at base + e*stride) or bytes of B int64 addresses */
static int address(PyObject *o, int64_t B, const char *name, char **base, const int64_t **at) {
    *base = NULL; *at = NULL;
    if (PyLong_Check(o)) { *base = (char *)PyLong_AsVoidPtr(o); return PyErr_Occurred() ? -1 : 0; }
    if (PyBytes_Check(o) && PyBytes_Size(o) == 8 * B) { *at = (const int64_t *)PyBytes_AsString(o); return 0; }
    PyErr_Format(PyExc_ValueError, "mix: `%s` must be an address or bytes of %lld addresses", name, (long long)B);
    return -1;
}

static int check(int ok, const char *msg) {
    if (!ok) PyErr_SetString(PyExc_ValueError, msg);
    return ok;
}

/* What draw d does, from the draws as Python holds them: op[d] 0 keep, 1 blend, 2 paste; the weights lam and 1-lam,
   1-lam computed in lam's own type (float32 or float64, 4 or 8 bytes per draw) as numpy does for timm */
static int draws(int64_t n, const char *lam, Py_ssize_t nlam, const char *mixup, const char *cutmix, int8_t *op, double *w, double *v) {
    if (!check(nlam == 4 * n || nlam == 8 * n, "mix: lam needs one float32 or float64 per draw")) return -1;
    for (int64_t d = 0; d < n; d++) {
        if (!check(!(mixup[d] && cutmix[d]), "mix: a draw can't both blend and paste")) return -1;
        op[d] = cutmix[d] ? 2 : mixup[d] ? 1 : 0;
        if (nlam == 4 * n) { float l; memcpy(&l, lam + 4 * d, 4); w[d] = l; v[d] = 1.0f - l; }
        else { double l; memcpy(&l, lam + 8 * d, 8); w[d] = l; v[d] = 1.0 - l; }
    }
    return 0;
}

static PyObject *mix(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"dtype", "follows", "partner", "written", "B", "R", "L", "H", "q", "src", "src_stride", "dst",
                         "dst_stride", "lam", "mixup", "cutmix", "boxes", "masks", "threads", NULL};
    int dtype, threads; long long written, B, R, L, H, q, ss, ds; PyObject *src, *dst;
    const char *fl, *pa, *lam, *mixup, *cutmix, *bx, *masks; Py_ssize_t nfl, npa, nlam, nmix, ncut, nbx, nmasks;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$iy#y#LLLLLLOLOLy#y#y#y#y#i", kw, &dtype, &fl, &nfl, &pa, &npa,
                                     &written, &B, &R, &L, &H, &q, &src, &ss, &dst, &ds, &lam, &nlam, &mixup, &nmix,
                                     &cutmix, &ncut, &bx, &nbx, &masks, &nmasks, &threads))
        return NULL;
    if (!check(dtype >= F32 && dtype <= U8, "mix: unknown dtype")
        || !check(B >= 0 && R >= 0 && L >= 0 && H >= 1 && q >= 1 && R % H == 0 && L % q == 0, "mix: bad layout")
        || !check(0 <= written && written <= B, "mix: written must be in [0, B]"))
        return NULL;
    const int64_t n = nmix, *follows = (const int64_t *)fl;
    if (!check(nfl == 8 * B, "mix: follows needs one int64 per element")) return NULL;
    for (int64_t e = 0; e < B; e++)
        if (!check(-1 <= follows[e] && follows[e] < n, "mix: follows names a draw that does not exist")) return NULL;
    const int64_t *partner = npa ? (const int64_t *)pa : NULL;
    if (partner && !check(npa == 8 * B, "mix: partner needs one int64 per element, or none")) return NULL;
    for (int64_t e = 0; partner && e < B; e++)
        if (!check(0 <= partner[e] && partner[e] < B, "mix: a partner is outside the batch")) return NULL;
    if (!check(ncut == n && nbx == 32 * n, "mix: lam, mixup, cutmix and boxes need one entry per draw")
        || !check(nmasks == 0 || nmasks == n * H * (L / q), "mix: masks need H x W bytes per draw, or none")) return NULL;
    const int64_t *box = (const int64_t *)bx;
    for (int64_t d = 0; d < n; d++) {
        const int64_t *b = box + 4 * d;
        if (cutmix[d] && !check(0 <= b[0] && b[0] <= b[1] && b[1] <= H && 0 <= b[2] && b[2] <= b[3] && b[3] * q <= L,
                                "mix: a box is outside the image")) return NULL;
    }
    char *mem = malloc((size_t)(n * (1 + 2 * sizeof(double))) + 1);
    if (!mem) return PyErr_NoMemory();
    double *w = (double *)mem, *v = w + n; int8_t *op = (int8_t *)(v + n);
    job_t job = {.dtype = dtype, .follows = follows, .partner = partner, .written = written, .B = B, .R = R, .L = L, .H = H, .q = q, .src_stride = ss, .dst_stride = ds,
                 .op = op, .w = w, .v = v, .box = box, .mask = nmasks ? (const uint8_t *)masks : NULL};
    char *s;
    if (draws(n, lam, nlam, mixup, cutmix, op, w, v) || address(src, B, "src", &s, &job.src_at)
        || address(dst, B, "dst", &job.dst, &job.dst_at)) { free(mem); return NULL; }
    job.src = s;
    if (partner && !check(!job.src_at && !job.dst_at ? s + B * ss <= job.dst || job.dst + B * ds <= s : 1,
                          "mix: with a partner array, dst must lie apart from src")) { free(mem); return NULL; }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mix_all(job, threads);
    Py_END_ALLOW_THREADS
    free(mem);
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* ResizeMix: element e takes its partner B-1-e, shrunk by nearest neighbour into e's box (yl, yh, xl, xh): row r
   of the box shows the partner's row r*H/h, column k its column k*W/w (h, w the box's size). Values are copied by
   their size (1, 2, 4 or 8 bytes), anywhere in memory: element, channel, row and column strides sB, sC, sH, sW. Both
   elements of a pair are gathered into scratch before either is written, so each takes its partner's original. */
typedef struct {
    int64_t B, C, H, W, sB, sC, sH, sW, es; char *data; const int64_t *box;
    int64_t lo, hi; char *tmp; int64_t *col;    /* this thread's pairs, its scratch (2*C*H*W values) and W column offsets */
} shrink_t;

#define SHRINK(T) do {                                                                              \
    T *d = (T *)data; const T *s = (const T *)src; T *t = (T *)tmp;                                 \
    for (int64_t c = 0; c < j->C; c++)                                                              \
        for (int64_t r = 0; r < h; r++) {                                                           \
            const T *in = s + c * j->sC + r * j->H / h * j->sH;                                     \
            T *out = d + c * j->sC + (b[0] + r) * j->sH + b[2] * j->sW;                             \
            if (put) for (int64_t k = 0; k < w; k++) out[k * j->sW] = *t++;                         \
            else for (int64_t k = 0; k < w; k++) *t++ = in[j->col[k]];                              \
        }                                                                                           \
} while (0)

/* put = 0: element e's shrunk partner into tmp; put = 1: tmp into e's box. Returns the number of values */
static int64_t shrink_one(const shrink_t *j, int64_t e, char *tmp, int put) {
    const int64_t *b = j->box + 4 * e, h = b[1] - b[0], w = b[3] - b[2];
    if (h <= 0 || w <= 0) return 0;
    char *data = j->data + e * j->sB * j->es; const char *src = j->data + (j->B - 1 - e) * j->sB * j->es;
    if (!put) for (int64_t k = 0; k < w; k++) j->col[k] = k * j->W / w * j->sW;
    switch (j->es) {
    case 4: SHRINK(uint32_t); break;
    case 8: SHRINK(uint64_t); break;
    case 2: SHRINK(uint16_t); break;
    default: SHRINK(uint8_t);
    }
    return j->C * h * w;
}

static void *shrink_run(void *arg) {
    const shrink_t *j = (const shrink_t *)arg;
    for (int64_t p = j->lo; p < j->hi; p++) {
        const int64_t e1 = j->B - 1 - p;
        const int64_t n0 = shrink_one(j, p, j->tmp, 0);
        if (e1 != p) shrink_one(j, e1, j->tmp + n0 * j->es, 0);
        shrink_one(j, p, j->tmp, 1);
        if (e1 != p) shrink_one(j, e1, j->tmp + n0 * j->es, 1);
    }
    return NULL;
}

static PyObject *paste_shrunk(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"itemsize", "B", "C", "H", "W", "strides", "data", "boxes", "threads", NULL};
    long long es, B, C, H, W; PyObject *data_o; const char *st, *bx; Py_ssize_t nst, nbx; int threads;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$LLLLLy#Oy#i", kw, &es, &B, &C, &H, &W, &st, &nst, &data_o, &bx, &nbx, &threads))
        return NULL;
    if (!check((es == 1 || es == 2 || es == 4 || es == 8) && B >= 0 && C >= 1 && H >= 1 && W >= 1 && nst == 32, "paste_shrunk: bad layout")
        || !check(nbx == 32 * B, "paste_shrunk: boxes need one (yl, yh, xl, xh) per element")) return NULL;
    const int64_t *box = (const int64_t *)bx;
    for (int64_t e = 0; e < B; e++) {
        const int64_t *b = box + 4 * e;
        if (!check(0 <= b[0] && b[0] <= b[1] && b[1] <= H && 0 <= b[2] && b[2] <= b[3] && b[3] <= W,
                   "paste_shrunk: a box is outside the image")) return NULL;
    }
    char *data = (char *)PyLong_AsVoidPtr(data_o);
    if (PyErr_Occurred()) return NULL;
    const int64_t pairs = (B + 1) / 2;
    if (pairs == 0) Py_RETURN_NONE;
    if (threads > 64) threads = 64;
    if (threads > pairs) threads = (int)pairs;
    if (threads < 1) threads = 1;
    const size_t per = (size_t)(2 * C * H * W * es + W * 8);
    char *mem = malloc(per * threads);
    if (!mem) return PyErr_NoMemory();
    shrink_t jobs[64]; int64_t s[4]; memcpy(s, st, 32);
    for (int t = 0; t < threads; t++)
        jobs[t] = (shrink_t){.B = B, .C = C, .H = H, .W = W, .sB = s[0], .sC = s[1], .sH = s[2], .sW = s[3], .es = es,
                             .data = data, .box = box, .lo = pairs * t / threads, .hi = pairs * (t + 1) / threads,
                             .col = (int64_t *)(mem + per * t), .tmp = mem + per * t + W * 8};
    Py_BEGIN_ALLOW_THREADS
    parallel(shrink_run, (char *)jobs, sizeof(shrink_t), threads);
    Py_END_ALLOW_THREADS
    free(mem);
    Py_RETURN_NONE;
}

/* Targets: timm's mixup_target of class ids, one pass over float32 rows. Row i holds off*w + off*v everywhere,
   on*w + off*v at its class c, off*w + on*v at its partner's class (row B-1-i's, or row partner[i]'s; on*w + on*v
   when both are c): the values
   y1*lam + y2*(1-lam) takes, each product and the sum rounded to float32 as torch does. */
static PyObject *one_hot(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"out", "ids", "B", "num_classes", "on", "off", "lam", "partner", NULL};
    PyObject *out_o, *ids_o, *lam_o; long long B, n; double on_d, off_d; const char *pa; Py_ssize_t npa;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOLLddOy#", kw, &out_o, &ids_o, &B, &n, &on_d, &off_d, &lam_o,
                                     &pa, &npa)) return NULL;
    const int64_t *partner = npa ? (const int64_t *)pa : NULL;
    if (partner && !check(npa == 8 * B, "one_hot: partner needs one int64 per row, or none")) return NULL;
    for (int64_t i = 0; partner && i < B; i++)
        if (!check(0 <= partner[i] && partner[i] < B, "one_hot: a partner is outside the batch")) return NULL;
    float *out = (float *)PyLong_AsVoidPtr(out_o); const int64_t *ids = (const int64_t *)PyLong_AsVoidPtr(ids_o);
    if (PyErr_Occurred()) return NULL;
    const float on = (float)on_d, off = (float)off_d;
    double lam1 = 0; const char *lams = NULL;
    if (PyFloat_Check(lam_o)) lam1 = PyFloat_AsDouble(lam_o);
    else if (PyBytes_Check(lam_o) && PyBytes_Size(lam_o) == 4 * B) lams = PyBytes_AsString(lam_o);
    else { PyErr_SetString(PyExc_ValueError, "one_hot: lam must be a float or bytes of one float32 per row"); return NULL; }
    for (int64_t i = 0; i < B; i++)
        if (!check(ids[i] >= 0 && ids[i] < n, "one_hot: a class id is out of range")) return NULL;
    for (int64_t i = 0; i < B; i++) {
        float w, v;
        if (lams) { memcpy(&w, lams + 4 * i, 4); v = 1.0f - w; }
        else { w = (float)lam1; v = (float)(1.0 - lam1); }     /* a Python float: 1-lam in double, as Python does */
        const int64_t c = ids[i], pc = ids[partner ? partner[i] : B - 1 - i];
        float *row = out + i * n;
        const float both_off = off * w + off * v;
        for (int64_t k = 0; k < n; k++) row[k] = both_off;
        row[c] = on * w + off * v;
        row[pc] = pc == c ? on * w + on * v : off * w + on * v;
    }
    Py_RETURN_NONE;
}

/* The smallest and largest of B int64 class ids */
static PyObject *id_range(PyObject *self, PyObject *args) {
    PyObject *ids_o; long long B;
    (void)self;
    if (!PyArg_ParseTuple(args, "OL", &ids_o, &B)) return NULL;
    const int64_t *ids = (const int64_t *)PyLong_AsVoidPtr(ids_o);
    if (PyErr_Occurred()) return NULL;
    int64_t lo = B ? ids[0] : 0, hi = lo;
    for (int64_t i = 1; i < B; i++) { if (ids[i] < lo) lo = ids[i]; if (ids[i] > hi) hi = ids[i]; }
    return Py_BuildValue("(LL)", (long long)lo, (long long)hi);
}

static PyMethodDef methods[] = {
    {"mix", (PyCFunction)(void (*)(void))mix, METH_VARARGS | METH_KEYWORDS,
     "mix(*, dtype, follows, partner, written, B, R, L, H, q, src, src_stride, dst, dst_stride, lam, mixup, cutmix, "
     "boxes, masks, "
     "threads): "
     "mix a batch in one pass (see mixcut_nb.fused)"},
    {"paste_shrunk", (PyCFunction)(void (*)(void))paste_shrunk, METH_VARARGS | METH_KEYWORDS,
     "paste_shrunk(*, itemsize, B, C, H, W, strides, data, boxes, threads): ResizeMix's paste of each shrunk partner"},
    {"one_hot", (PyCFunction)(void (*)(void))one_hot, METH_VARARGS | METH_KEYWORDS,
     "one_hot(*, out, ids, B, num_classes, on, off, lam, partner): timm's mixup_target of class ids into float32 "
     "rows at `out`"},
    {"id_range", id_range, METH_VARARGS, "id_range(ids, B): (smallest, largest) of B int64 class ids at address `ids`"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused", "The CPU loop of mixcut_nb.fused", -1, methods,
                                    NULL, NULL, NULL, NULL};

#ifdef _OPENMP
#define OPENMP 1
#else
#define OPENMP 0
#endif

PyMODINIT_FUNC PyInit__fused(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "openmp", OPENMP)) { Py_DECREF(m); return NULL; }
    return m;
}
