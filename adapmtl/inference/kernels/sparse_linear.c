/* Sparse Linear layer on a matrix of tokens, float32 (see adapmtl/inference/csr_linear.py).
 *
 *     y[t, o] = bias[o] + sum_n val[n] * x[t, col[n]]    over the nonzeros n of output row o,
 *
 * x [tokens, in] and y [tokens, out] row-major, the weight [out, in] in CSR form by output row
 * (row_start[o] .. row_start[o+1]). Why this shape of kernel: a nonzero weight multiplies one
 * input feature of every token, so the tokens are the vector dimension. x is first transposed
 * into xt [in, stride] (stride = tokens rounded up to whole vectors, zero-padded), and a tile of
 * NV vectors of tokens of one output row stays in registers while each nonzero of the row adds
 * value x (the matching NV vectors of its input row of xt). Tiles of tokens are visited outermost
 * and output rows innermost, so the tile's slice of xt (in x NV vectors) stays in the L2 cache
 * while the weights stream past. Each group of LANES output rows is written back through a
 * LANES x LANES transpose in registers, so y comes out row-major.
 * Compiled with -march=native: AVX-512 or AVX2+FMA where the CPU has them, a portable loop
 * otherwise.
 */
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const float* x;   /* [tokens, in] */
    const float* xt;  /* [in, stride]: x transposed (SIMD builds) */
    float* y;         /* [tokens, out] */
    const int64_t* row_start; const int32_t* col; const float* val; const float* bias;
    int64_t tokens, in, out, stride;
} linear_args;

#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
typedef __m512 vec;
typedef __mmask16 lanes_mask;
static inline lanes_mask first_lanes(int64_t n) { return (lanes_mask)((1u << n) - 1u); }  /* n <= LANES */
#define VSET1(s) _mm512_set1_ps(s)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VLOADA(ptr) _mm512_load_ps(ptr)
#define VLOADU(ptr) _mm512_loadu_ps(ptr)
#define VLOADM(m, ptr) _mm512_maskz_loadu_ps(m, ptr)
#define VSTOREA(ptr, v) _mm512_store_ps(ptr, v)
#define VSTOREM(ptr, m, v) _mm512_mask_storeu_ps(ptr, m, v)

/* r[i] (row i of a 16 x 16 block) becomes column i. */
static inline void transpose_block(vec r[16]) {
    vec t[16];
    for (int i = 0; i < 8; ++i) {  /* pairs of rows, interleaved per 128-bit lane */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  /* u[4i+k], 128-bit lane L: column 4L+k of rows 4i..4i+3 */
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int k = 0; k < 4; ++k) {  /* gather lane L of u[k], u[4+k], u[8+k], u[12+k]: column 4L+k */
        const vec v0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88), v1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
        const vec w0 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        const vec w1 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
        t[k] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        t[8 + k] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        t[4 + k] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        t[12 + k] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
typedef __m256 vec;
typedef __m256i lanes_mask;
static inline lanes_mask first_lanes(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#define VSET1(s) _mm256_set1_ps(s)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VLOADA(ptr) _mm256_load_ps(ptr)
#define VLOADU(ptr) _mm256_loadu_ps(ptr)
#define VLOADM(m, ptr) _mm256_maskload_ps(ptr, m)
#define VSTOREA(ptr, v) _mm256_store_ps(ptr, v)
#define VSTOREM(ptr, m, v) _mm256_maskstore_ps(ptr, m, v)

/* r[i] (row i of an 8 x 8 block) becomes column i. */
static inline void transpose_block(vec r[8]) {
    vec t[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {  /* u[4i+k], 128-bit lane L: column 4L+k of rows 4i..4i+3 */
        const __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 2]);
        const __m256d c = _mm256_castps_pd(t[4 * i + 1]), d = _mm256_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(c, d));
    }
    for (int k = 0; k < 4; ++k) {
        t[k] = _mm256_permute2f128_ps(r[k], r[4 + k], 0x20);
        t[4 + k] = _mm256_permute2f128_ps(r[k], r[4 + k], 0x31);
    }
    for (int i = 0; i < 8; ++i) r[i] = t[i];
}
#endif

#ifdef LANES
/* xt[c, t] = x[t, c] for input features [c0, c1) (whole blocks of LANES but the last), every
 * token, and zero for the padding tokens up to stride. */
static void transpose_input(const float* x, float* xt, int64_t tokens, int64_t in, int64_t stride,
                            int64_t c0, int64_t c1) {
    vec r[LANES];
    for (int64_t c = c0; c < c1; c += LANES) {
        const int64_t width = c1 - c < LANES ? c1 - c : LANES;
        const lanes_mask m = first_lanes(width);
        for (int64_t t0 = 0; t0 < stride; t0 += LANES) {
            for (int64_t i = 0; i < LANES; ++i)
                r[i] = t0 + i < tokens ? VLOADM(m, x + (t0 + i) * in + c) : VZERO();
            transpose_block(r);
            for (int64_t i = 0; i < width; ++i) VSTOREA(xt + (c + i) * stride + t0, r[i]);
        }
    }
}

/* Output rows [o0, o0 + g) (g <= LANES) of tokens [v0*LANES, (v0+NV)*LANES): each row's sums in
 * NV vectors while its nonzeros add up, kept in `buf` [LANES rows][NV*LANES], then written to y
 * as rows of tokens, LANES x LANES at a time (lanes past g and tokens past the end are not stored). */
#define DEFINE_GROUP(NV)                                                                              \
static void group_##NV(const linear_args* p, int64_t o0, int64_t g, int64_t v0, float* buf) {       \
    const float* xt = p->xt + v0 * LANES;                                                            \
    for (int64_t j = 0; j < g; ++j) {                                                                \
        const int64_t o = o0 + j;                                                                    \
        const vec b = VSET1(p->bias ? p->bias[o] : 0.0f);                                            \
        vec acc[NV];                                                                                 \
        for (int v = 0; v < NV; ++v) acc[v] = b;                                                     \
        for (int64_t n = p->row_start[o]; n < p->row_start[o + 1]; ++n) {                            \
            const vec w = VSET1(p->val[n]);                                                          \
            const float* in = xt + (int64_t)p->col[n] * p->stride;                                   \
            for (int v = 0; v < NV; ++v) acc[v] = VFMA(w, VLOADA(in + LANES * v), acc[v]);           \
        }                                                                                            \
        for (int v = 0; v < NV; ++v) VSTOREA(buf + (j * NV + v) * LANES, acc[v]);                    \
    }                                                                                                \
    const lanes_mask columns = first_lanes(g);                                                       \
    vec r[LANES];                                                                                    \
    for (int v = 0; v < NV; ++v) {                                                                   \
        const int64_t t0 = (v0 + v) * LANES;                                                         \
        if (t0 >= p->tokens) break;                                                                  \
        for (int64_t j = 0; j < LANES; ++j) r[j] = j < g ? VLOADA(buf + (j * NV + v) * LANES) : VZERO(); \
        transpose_block(r);                                                                          \
        const int64_t count = p->tokens - t0 < LANES ? p->tokens - t0 : LANES;                       \
        for (int64_t i = 0; i < count; ++i) VSTOREM(p->y + (t0 + i) * p->out + o0, columns, r[i]);  \
    }                                                                                                \
}
DEFINE_GROUP(1)
DEFINE_GROUP(2)
DEFINE_GROUP(3)
DEFINE_GROUP(4)
DEFINE_GROUP(5)
DEFINE_GROUP(6)
DEFINE_GROUP(7)
DEFINE_GROUP(8)
#define MAX_NV 8

static void group(const linear_args* p, int64_t o0, int64_t g, int64_t v0, int64_t nv, float* buf) {
    switch (nv) {
        case 1: group_1(p, o0, g, v0, buf); break;
        case 2: group_2(p, o0, g, v0, buf); break;
        case 3: group_3(p, o0, g, v0, buf); break;
        case 4: group_4(p, o0, g, v0, buf); break;
        case 5: group_5(p, o0, g, v0, buf); break;
        case 6: group_6(p, o0, g, v0, buf); break;
        case 7: group_7(p, o0, g, v0, buf); break;
        default: group_8(p, o0, g, v0, buf); break;
    }
}

/* Token tiles of balanced sizes, at most tile_vectors vectors each (13 vectors in tiles of 4: 4+3+3+3). */
static int64_t tile_count(const linear_args* p, int64_t tile_vectors) {
    return (p->stride / LANES + tile_vectors - 1) / tile_vectors;
}

/* Job `job` of tiles * chunks: token tile job / chunks, output rows of chunk job % chunks (CHUNK_GROUPS
 * groups of LANES rows). Jobs in order visit the tiles outermost. */
#define CHUNK_GROUPS 4
static void run_job(const linear_args* p, int64_t job, int64_t tiles, int64_t chunks, float* buf) {
    const int64_t vectors = p->stride / LANES, tile = job / chunks, chunk = job % chunks;
    const int64_t v0 = vectors * tile / tiles, v1 = vectors * (tile + 1) / tiles;
    const int64_t o0 = chunk * CHUNK_GROUPS * LANES, end = o0 + CHUNK_GROUPS * LANES, o1 = end < p->out ? end : p->out;
    for (int64_t o = o0; o < o1; o += LANES) group(p, o, o1 - o < LANES ? o1 - o : LANES, v0, v1 - v0, buf);
}
#endif

#ifndef LANES
/* Output rows [o0, o1), straight from x: one dot product per value (builds without SIMD). */
static void rows_portable(const linear_args* p, int64_t o0, int64_t o1) {
    for (int64_t t = 0; t < p->tokens; ++t) {
        const float* in = p->x + t * p->in;
        for (int64_t o = o0; o < o1; ++o) {
            float sum = p->bias ? p->bias[o] : 0.0f;
            for (int64_t n = p->row_start[o]; n < p->row_start[o + 1]; ++n) sum += p->val[n] * in[p->col[n]];
            p->y[t * p->out + o] = sum;
        }
    }
}
#endif

/* Vector width in floats this build uses (0: the portable loop only). */
int adapmtl_simd_lanes(void) {
#ifdef LANES
    return LANES;
#else
    return 0;
#endif
}

/* Whether this build runs its jobs on OpenMP threads (PyTorch's own libgomp pool, shared). */
int adapmtl_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Tokens rounded up to whole vectors: the row length of the scratch xt. */
int64_t adapmtl_linear_stride(int64_t tokens) {
#ifdef LANES
    return (tokens + LANES - 1) / LANES * LANES;
#else
    return tokens;
#endif
}

/* y [tokens, out] = x [tokens, in] times the CSR weight, plus bias (may be NULL).
 * scratch: in * adapmtl_linear_stride(tokens) floats, 64-byte aligned (unused without SIMD).
 * tile_vectors: most vectors of tokens per register tile (1..8). The work is cut into jobs of
 * (token tile, CHUNK_GROUPS groups of output rows) that `threads` OpenMP threads take in turn; each
 * value is computed by one job in a fixed order, so the result does not depend on the number of
 * threads. */
void adapmtl_sparse_linear_f32(const float* x, float* y, const int64_t* row_start, const int32_t* col,
                               const float* val, const float* bias, float* scratch,
                               int64_t tokens, int64_t in, int64_t out, int64_t tile_vectors, int64_t threads) {
    const int64_t stride = adapmtl_linear_stride(tokens);
    const linear_args p = {x, scratch, y, row_start, col, val, bias, tokens, in, out, stride};
    if (threads < 1) threads = 1;
#ifdef LANES
    if (tile_vectors < 1) tile_vectors = 1;
    if (tile_vectors > MAX_NV) tile_vectors = MAX_NV;
    const int64_t in_blocks = (in + LANES - 1) / LANES, groups = (out + LANES - 1) / LANES;
    const int64_t chunks = (groups + CHUNK_GROUPS - 1) / CHUNK_GROUPS, tiles = tile_count(&p, tile_vectors);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        _Alignas(64) float buf[LANES * MAX_NV * LANES];
#pragma omp for schedule(static)
        for (int64_t b = 0; b < in_blocks; ++b) {
            const int64_t c0 = b * LANES, c1 = c0 + LANES < in ? c0 + LANES : in;
            transpose_input(x, scratch, tokens, in, stride, c0, c1);
        }
        /* dynamic: a thread slowed down (a shared core) leaves its jobs to the other */
#pragma omp for schedule(dynamic, 1)
        for (int64_t job = 0; job < tiles * chunks; ++job) run_job(&p, job, tiles, chunks, buf);
    }
#else
    (void)tile_vectors;
    const int64_t jobs = out < threads ? out : threads;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && jobs > 1)
    for (int64_t job = 0; job < jobs; ++job) rows_portable(&p, out * job / jobs, out * (job + 1) / jobs);
#endif
}
