/* Direct sparse 2-D convolution of a batch of float32 images (see adapmtl/inference/direct.py).
 *
 * The weight's nonzeros are grouped by block b of input channels, output channel o and kernel
 * tap t = kh*KW + kw: group (b, o, t) holds entries tap_start[(b*O + o)*T + t] up to the next
 * group's start, each an absolute input channel chan[n] and a value val[n] (absolute channels
 * make grouped and depthwise convolutions the same case). Then
 *     y[o, oh, ow] = bias[o] + sum_t sum_n val[n] * x[chan[n], oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
 * over the taps that land inside the image: zero padding is never read nor multiplied, so a
 * tap that only ever sees padding (large dilation on a small map) costs nothing. With `clamp`
 * given, y is then clamped to [clamp[0], clamp[1]] as it is stored (a ReLU, ReLU6 or hardtanh
 * that followed the convolution: one pass over the output less), NaN kept as NaN.
 *
 * Why tiles: for each output tile the sums stay in registers while every nonzero of the output
 * channel adds  value x (the matching segment of its input channel); masked loads cut each segment
 * to the pixels where the tap is inside the image. Tiles are visited outermost and output channels
 * innermost, so the input segments in use stay in cache across all output channels; blocks of
 * input channels (between the two) keep that working set small enough for the L1 cache, at the
 * cost of reloading each tile's partial sums once per block.
 *   - conv_flat: stride 1 and output size = input size (the usual "same" convolution): a tile is
 *     4 or 8 vectors of consecutive pixels of the flattened map.
 *   - conv_rows: other stride-1-across convolutions: a tile is a few rows x up to 3 vectors.
 *   - conv_portable: everything else (a horizontal stride) and CPUs without AVX2.
 * Compiled with -march=native: AVX-512 or AVX2+FMA where the CPU has them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const float* x; float* y;
    const int64_t* tap_start; const int32_t* chan; const float* val; const float* bias;
    int64_t H, W, Ho, Wo, KH, KW, sh, sw, ph, pw, dh, dw;
    int64_t O, blocks;  /* output channels; input-channel blocks the nonzeros are grouped by */
    int64_t C;  /* input channels */
    const float* clamp;  /* NULL, or the [low, high] the output is clamped to */
} conv_args;

/* x clamped to [low, high], NaN kept (comparisons with NaN are false), as torch.clamp. */
static inline float clamped(float x, float low, float high) {
    x = x < low ? low : x;
    return x > high ? high : x;
}

/* Whether block `block` clamps what it stores: the last one, where the layer has a clamp. */
static inline int clamps_here(const conv_args* p, int64_t block) {
    return p->clamp && block == p->blocks - 1;
}

/* Whether the tile of block `block` must be stored even with no nonzero to add: the first writes the
 * bias, the last clamps. */
static inline int must_store(const conv_args* p, int64_t block) {
    return block == 0 || clamps_here(p, block);
}

/* Nonzeros of output channel o, input-channel block b: groups (b, o, t) for the T taps. */
static inline const int64_t* group_start(const conv_args* p, int64_t b, int64_t o) {
    return p->tap_start + (b * p->O + o) * p->KH * p->KW;
}

/* Output positions [lo, hi) of one axis whose input position pos*stride + shift is inside [0, size). */
static void inside_range(int64_t shift, int64_t stride, int64_t size, int64_t out_size, int64_t* lo, int64_t* hi) {
    int64_t a = shift >= 0 ? 0 : (-shift + stride - 1) / stride;
    int64_t b = size - 1 - shift < 0 ? 0 : (size - 1 - shift) / stride + 1;
    *lo = a;
    *hi = b < out_size ? b : out_size;
}

/* Any stride: one output channel's whole plane, one tap-row segment at a time. */
static void conv_portable(const conv_args* p, int64_t o) {
    const int64_t T = p->KH * p->KW, plane = p->H * p->W;
    float* out = p->y + o * p->Ho * p->Wo;
    const float b = p->bias ? p->bias[o] : 0.0f;
    for (int64_t i = 0; i < p->Ho * p->Wo; ++i) out[i] = b;
    for (int64_t block = 0; block < p->blocks; ++block) {
        const int64_t* start = group_start(p, block, o);
        for (int64_t t = 0; t < T; ++t) {
            const int64_t kh = t / p->KW, kw = t % p->KW;
            const int64_t shift_h = kh * p->dh - p->ph, shift_w = kw * p->dw - p->pw;
            int64_t r0, r1, c0, c1;
            inside_range(shift_h, p->sh, p->H, p->Ho, &r0, &r1);
            inside_range(shift_w, p->sw, p->W, p->Wo, &c0, &c1);
            if (r0 >= r1 || c0 >= c1) continue;
            for (int64_t n = start[t]; n < start[t + 1]; ++n) {
                const float w = p->val[n];
                const float* in = p->x + (int64_t)p->chan[n] * plane;
                for (int64_t oh = r0; oh < r1; ++oh) {
                    float* dst = out + oh * p->Wo;
                    const float* src = in + (oh * p->sh + shift_h) * p->W + shift_w;
                    for (int64_t ow = c0; ow < c1; ++ow) dst[ow] += w * src[ow * p->sw];
                }
            }
        }
    }
    if (p->clamp)
        for (int64_t i = 0; i < p->Ho * p->Wo; ++i) out[i] = clamped(out[i], p->clamp[0], p->clamp[1]);
}

#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
typedef __m512 vec;
typedef __mmask16 lanes_mask;
static inline lanes_mask lane_mask(int64_t a, int64_t b) { return (lanes_mask)(((1u << (b - a)) - 1u) << a); }
static inline lanes_mask lane_bits(uint32_t bits) { return (lanes_mask)bits; }
#define VSET1(s) _mm512_set1_ps(s)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VLOAD(m, ptr) _mm512_maskz_loadu_ps(m, ptr)
#define VLOADU(ptr) _mm512_loadu_ps(ptr)
#define VSTORE(ptr, m, v) _mm512_mask_storeu_ps(ptr, m, v)
#define VMAX(a, b) _mm512_max_ps(a, b)
#define VMIN(a, b) _mm512_min_ps(a, b)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
typedef __m256 vec;
typedef __m256i lanes_mask;
static inline lanes_mask lane_mask(int64_t a, int64_t b) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)a), iota),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32((int)b), iota));
}
static inline lanes_mask lane_bits(uint32_t bits) {  /* lane j on where bit j is set */
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)bits), bit), bit);
}
#define VSET1(s) _mm256_set1_ps(s)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VLOAD(m, ptr) _mm256_maskload_ps(ptr, m)
#define VLOADU(ptr) _mm256_loadu_ps(ptr)
#define VSTORE(ptr, m, v) _mm256_maskstore_ps(ptr, m, v)
#define VMAX(a, b) _mm256_max_ps(a, b)
#define VMIN(a, b) _mm256_min_ps(a, b)
#endif

#ifdef LANES
/* The sums as stored: clamped on the last block where the layer has a clamp. max/min return their
 * second operand when either is NaN, so a NaN sum stays NaN (as torch.clamp). */
static inline vec stored(const conv_args* p, int64_t block, vec sum) {
    if (!clamps_here(p, block)) return sum;
    return VMIN(VSET1(p->clamp[1]), VMAX(VSET1(p->clamp[0]), sum));
}

/* Lanes j of the vector starting at column `start` with lo <= start + j < hi (maybe none). */
static inline lanes_mask columns_mask(int64_t lo, int64_t hi, int64_t start) {
    int64_t a = lo - start, b = hi - start;
    if (a < 0) a = 0;
    if (b > LANES) b = LANES;
    if (a >= b) a = b = 0;
    return lane_mask(a, b);
}

/* Output rows oh0 .. oh0+R-1 (those < Ho), columns cs .. cs + NV*LANES - 1 (those < Wo), channel o.
 * Masked-off lanes are never read, so their addresses may lie outside the input. */
#define DEFINE_TILE(R, NV)                                                                            \
static void tile_##R##_##NV(const conv_args* p, int64_t block, int64_t o, int64_t oh0, int64_t cs) {  \
    const int64_t T = p->KH * p->KW, plane = p->H * p->W;                                            \
    const int64_t* start = group_start(p, block, o);                                                 \
    if (!must_store(p, block) && start[0] == start[T]) return;  /* nothing to add */                 \
    vec acc[R][NV];                                                                                  \
    const vec b = VSET1(p->bias ? p->bias[o] : 0.0f);                                                \
    for (int r = 0; r < R; ++r) for (int v = 0; v < NV; ++v) {                                       \
        const float* sum = p->y + (o * p->Ho + oh0 + r) * p->Wo + cs + LANES * v;                   \
        acc[r][v] = block == 0 ? b : VLOAD(columns_mask(0, oh0 + r < p->Ho ? p->Wo : 0, cs + LANES * v), sum); \
    }                                                                                                \
    for (int64_t t = 0; t < T; ++t) {                                                                \
        const int64_t n0 = start[t], n1 = start[t + 1];                                              \
        if (n0 == n1) continue;                                                                      \
        const int64_t kh = t / p->KW, kw = t % p->KW, shift_w = kw * p->dw - p->pw;                  \
        int64_t lo, hi;                                                                              \
        inside_range(shift_w, 1, p->W, p->Wo, &lo, &hi);                                             \
        if (lo >= hi || hi <= cs || lo >= cs + NV * LANES) continue;                                 \
        lanes_mask m[NV];                                                                            \
        for (int v = 0; v < NV; ++v) m[v] = columns_mask(lo, hi, cs + LANES * v);                    \
        int64_t offset[R]; int inside[R], rows_inside = 0;                                           \
        for (int r = 0; r < R; ++r) {                                                                \
            const int64_t oh = oh0 + r, ih = oh * p->sh - p->ph + kh * p->dh;                        \
            inside[r] = oh < p->Ho && ih >= 0 && ih < p->H;                                          \
            rows_inside += inside[r];                                                                \
            offset[r] = (inside[r] ? ih * p->W : 0) + cs + shift_w;                                  \
        }                                                                                            \
        if (!rows_inside) continue;                                                                  \
        if (rows_inside == R) {                                                                      \
            for (int64_t n = n0; n < n1; ++n) {                                                      \
                const vec w = VSET1(p->val[n]);                                                      \
                const float* in = p->x + (int64_t)p->chan[n] * plane;                                \
                for (int r = 0; r < R; ++r) for (int v = 0; v < NV; ++v)                             \
                    acc[r][v] = VFMA(w, VLOAD(m[v], in + offset[r] + LANES * v), acc[r][v]);         \
            }                                                                                        \
        } else { /* some rows of the tile see only padding for this tap: they add zero */           \
            for (int64_t n = n0; n < n1; ++n) {                                                      \
                const float* in = p->x + (int64_t)p->chan[n] * plane;                                \
                for (int r = 0; r < R; ++r) {                                                        \
                    const vec w = VSET1(inside[r] ? p->val[n] : 0.0f);                               \
                    for (int v = 0; v < NV; ++v)                                                     \
                        acc[r][v] = VFMA(w, VLOAD(m[v], in + offset[r] + LANES * v), acc[r][v]);     \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }                                                                                                \
    for (int r = 0; r < R && oh0 + r < p->Ho; ++r) {                                                 \
        float* dst = p->y + (o * p->Ho + oh0 + r) * p->Wo;                                           \
        for (int v = 0; v < NV; ++v)                                                                 \
            VSTORE(dst + cs + LANES * v, columns_mask(0, p->Wo, cs + LANES * v), stored(p, block, acc[r][v])); \
    }                                                                                                \
}
DEFINE_TILE(8, 1)
DEFINE_TILE(4, 2)
DEFINE_TILE(2, 3)

/* "Same"-size, stride-1 convolutions: flattened, output pixel p reads input pixel p + shift[t] for
 * tap t, so a tile is NV whole vectors of consecutive pixels (rows wrap), with a precomputed mask
 * per (tap, vector) for the lanes whose tap lands inside the image. No lane is wasted on the ends of
 * short rows, which matters most for the small maps of the heads (11 x 11 = 121 pixels, 8 vectors).
 * Each half of a tile knows how much of it a tap sees, so a dilated tap that lands inside the image
 * for only the top or the bottom rows (dilation 6 on 11 x 11) runs on that half alone. */
enum { TOUCH_NONE, TOUCH_SOME, TOUCH_ALL };  /* how much of a half-tile a tap sees inside the image */
typedef struct {
    const lanes_mask* masks; const uint8_t* touches; const int64_t* shift; int64_t vectors;
    int64_t in_plane;  /* floats from one input channel to the next: H*W, or more in an aligned copy */
} flat_table;

/* acc[0 .. NV-1] += val[n] * (NV vectors at base + chan[n] * plane) for n in [n0, n1); masked loads where
 * `masks` is given. Always inlined with a constant NV, and on a local copy of the sums, so that sums and
 * masks stay in registers: looping on the caller's array, GCC kept one sum on the stack in the masked
 * loop, a store-to-load chain on every nonzero. */
static inline __attribute__((always_inline)) void add_nonzeros(vec* acc, const int NV, const lanes_mask* masks,
                                                              const float* base, const int32_t* chan,
                                                              const float* val, int64_t n0, int64_t n1, int64_t plane) {
    vec sum[8];
    for (int v = 0; v < NV; ++v) sum[v] = acc[v];
    if (masks) {
        lanes_mask m[8];
        for (int v = 0; v < NV; ++v) m[v] = masks[v];
        for (int64_t n = n0; n < n1; ++n) {
            const vec w = VSET1(val[n]);
            const float* in = base + (int64_t)chan[n] * plane;
            for (int v = 0; v < NV; ++v) sum[v] = VFMA(w, VLOAD(m[v], in + LANES * v), sum[v]);
        }
    } else { /* every lane inside the image: plain loads, which fuse with the FMA */
        for (int64_t n = n0; n < n1; ++n) {
            const vec w = VSET1(val[n]);
            const float* in = base + (int64_t)chan[n] * plane;
            for (int v = 0; v < NV; ++v) sum[v] = VFMA(w, VLOADU(in + LANES * v), sum[v]);
        }
    }
    for (int v = 0; v < NV; ++v) acc[v] = sum[v];
}

#define DEFINE_FLAT_TILE(NV)                                                                          \
__attribute__((noinline)) static void flat_tile_##NV(const conv_args* p, const flat_table* f, int64_t block, int64_t o, int64_t v0) { \
    enum { HALF = NV / 2 };                                                                          \
    const int64_t T = p->KH * p->KW, plane = p->H * p->W;                                            \
    const int64_t* start = group_start(p, block, o);                                                 \
    if (!must_store(p, block) && start[0] == start[T]) return;  /* nothing to add */                 \
    float* dst = p->y + o * plane + LANES * v0;                                                      \
    vec acc[NV];                                                                                     \
    const vec b = VSET1(p->bias ? p->bias[o] : 0.0f);                                                \
    for (int v = 0; v < NV; ++v)                                                                     \
        acc[v] = block == 0 ? b : VLOAD(columns_mask(0, plane, LANES * (v0 + v)), dst + LANES * v);  \
    const int64_t halves = 2 * f->vectors / NV;                                                      \
    for (int64_t t = 0; t < T; ++t) {                                                                \
        const int64_t n0 = start[t], n1 = start[t + 1];                                              \
        if (n0 == n1) continue;                                                                      \
        const uint8_t low = f->touches[t * halves + 2 * v0 / NV], high = f->touches[t * halves + 2 * v0 / NV + 1]; \
        const lanes_mask* m = f->masks + t * f->vectors + v0;                                        \
        const float* base = p->x + LANES * v0 + f->shift[t];                                         \
        if (low == high) {                                                                           \
            if (low != TOUCH_NONE)                                                                   \
                add_nonzeros(acc, NV, low == TOUCH_ALL ? 0 : m, base, p->chan, p->val, n0, n1, f->in_plane); \
        } else if (low == TOUCH_NONE) {                                                              \
            add_nonzeros(acc + HALF, HALF, high == TOUCH_ALL ? 0 : m + HALF, base + LANES * HALF,    \
                         p->chan, p->val, n0, n1, f->in_plane);                                      \
        } else if (high == TOUCH_NONE) {                                                             \
            add_nonzeros(acc, HALF, low == TOUCH_ALL ? 0 : m, base, p->chan, p->val, n0, n1, f->in_plane); \
        } else {                                                                                     \
            add_nonzeros(acc, NV, m, base, p->chan, p->val, n0, n1, f->in_plane);                    \
        }                                                                                            \
    }                                                                                                \
    for (int v = 0; v < NV; ++v)                                                                     \
        VSTORE(dst + LANES * v, columns_mask(0, plane, LANES * (v0 + v)), stored(p, block, acc[v]));  \
}
DEFINE_FLAT_TILE(4)
DEFINE_FLAT_TILE(8)

/* Whether to run on an aligned copy of the input whose channel planes are padded to whole vectors:
 * a plane of H*W floats that is not a whole number of vectors starts most channels off a cache-line
 * boundary, and every load then spans two lines (1x1 layers on 11 x 11 maps: 1.4x slower). The copy
 * pays where each input value is read by many nonzeros, not in depthwise layers. */
static int worth_aligning(const conv_args* p, int64_t plane) {
    const int64_t nonzeros = p->tap_start[p->blocks * p->O * p->KH * p->KW];
    return plane % LANES != 0 && nonzeros >= 16 * p->C;
}

/* A buffer of at least `bytes`, 64-byte aligned, kept by the calling thread between calls (and until it
 * exits): allocated afresh per call, the copy's hundreds of KB were an mmap and its page faults
 * whenever glibc's thresholds sent it there, which made whole models slower in a process that had
 * run larger ones before. NULL if it cannot be had. */
static float* thread_scratch(size_t bytes) {
    static _Thread_local float* buffer = 0;
    static _Thread_local size_t capacity = 0;
    if (bytes > capacity) {
        free(buffer);
        capacity = (bytes + 63) / 64 * 64;
        buffer = aligned_alloc(64, capacity);
        if (!buffer) capacity = 0;
    }
    return buffer;
}

static void conv_flat(const conv_args* p, int64_t o_begin, int64_t o_end) {
    const int64_t T = p->KH * p->KW, plane = p->H * p->W, vectors = (plane + LANES - 1) / LANES;
    const int64_t NV = vectors >= 8 ? 8 : 4, tiles = (vectors + NV - 1) / NV;
    const int64_t padded = tiles * NV, halves = 2 * tiles;  /* vectors, rounded up to whole tiles */
    const int64_t in_plane = worth_aligning(p, plane) ? vectors * LANES : plane;
    /* aligned: an AVX2 mask is a 32-byte vector, read with aligned loads */
    lanes_mask* masks = aligned_alloc(64, (sizeof(lanes_mask) * T * padded + 63) / 64 * 64);
    uint8_t* touches = malloc(T * halves);
    int64_t* shift = malloc(sizeof(int64_t) * T);
    float* copy = in_plane != plane ? thread_scratch(sizeof(float) * p->C * in_plane) : 0;
    if (!masks || !touches || !shift || (in_plane != plane && !copy)) {
        free(masks); free(touches); free(shift);
        for (int64_t o = o_begin; o < o_end; ++o) conv_portable(p, o);
        return;
    }
    conv_args q = *p;
    if (copy) {  /* the padding lanes are zero: they are read (plain loads) but never stored */
        for (int64_t c = 0; c < p->C; ++c) {
            memcpy(copy + c * in_plane, p->x + c * plane, sizeof(float) * plane);
            memset(copy + c * in_plane + plane, 0, sizeof(float) * (in_plane - plane));
        }
        q.x = copy;
    }
    for (int64_t t = 0; t < T; ++t) {
        const int64_t shift_h = (t / p->KW) * p->dh - p->ph, shift_w = (t % p->KW) * p->dw - p->pw;
        shift[t] = shift_h * p->W + shift_w;
        for (int64_t half = 0; half < halves; ++half) {
            int any = 0, all = 1;
            for (int64_t v = half * NV / 2; v < (half + 1) * NV / 2; ++v) {
                uint32_t bits = 0, loadable = 0;
                for (int64_t j = 0; j < LANES; ++j) {
                    const int64_t pixel = v * LANES + j, ih = pixel / p->W + shift_h, iw = pixel % p->W + shift_w;
                    if (pixel < plane && ih >= 0 && ih < p->H && iw >= 0 && iw < p->W) bits |= 1u << j;
                    /* a lane past the plane is never stored: a plain load may fill it if it stays in its plane */
                    else if (pixel >= plane && pixel + shift[t] >= 0 && pixel + shift[t] < in_plane) loadable |= 1u << j;
                }
                masks[t * padded + v] = lane_bits(bits);
                any |= bits != 0;
                all &= (bits | loadable) == (1u << LANES) - 1u;
            }
            touches[t * halves + half] = all && any ? TOUCH_ALL : any ? TOUCH_SOME : TOUCH_NONE;
        }
    }
    const flat_table f = {masks, touches, shift, padded, in_plane};
    for (int64_t v0 = 0; v0 < padded; v0 += NV)
        for (int64_t block = 0; block < p->blocks; ++block)
            for (int64_t o = o_begin; o < o_end; ++o) {
                if (NV == 8) flat_tile_8(&q, &f, block, o, v0); else flat_tile_4(&q, &f, block, o, v0);
            }
    free(masks); free(touches); free(shift);
}

#define ROW_TILES(tile) \
    for (int64_t block = 0; block < p->blocks; ++block) for (int64_t o = o_begin; o < o_end; ++o) tile(p, block, o, oh, cs)
static void conv_rows(const conv_args* p, int64_t o_begin, int64_t o_end) {
    for (int64_t cs = 0; cs < p->Wo; cs += 3 * LANES) {
        const int64_t width = p->Wo - cs;
        if (width <= LANES) {
            for (int64_t oh = 0; oh < p->Ho; oh += 8) ROW_TILES(tile_8_1);
        } else if (width <= 2 * LANES) {
            for (int64_t oh = 0; oh < p->Ho; oh += 4) ROW_TILES(tile_4_2);
        } else {
            for (int64_t oh = 0; oh < p->Ho; oh += 2) ROW_TILES(tile_2_3);
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

/* The multiply-add peak of this build on one core: `iterations` rounds of 8 independent vector (or, in
 * the portable build, scalar) multiply-adds in registers, for the caller to time (adapmtl.inference.work).
 * Eight chains cover the FMA latency of current cores; the sum returned keeps the loop from being dropped. */
float adapmtl_multiply_add_rounds(int64_t iterations) {
#ifdef LANES
    vec chain[8];
    const vec factor = VSET1(0.999f), term = VSET1(1e-3f);
    for (int i = 0; i < 8; ++i) chain[i] = VSET1((float)i);
    for (int64_t r = 0; r < iterations; ++r)
        for (int i = 0; i < 8; ++i) chain[i] = VFMA(factor, chain[i], term);
    float lanes[LANES], sum = 0.0f;
    for (int i = 0; i < 8; ++i) {
        VSTORE(lanes, lane_mask(0, LANES), chain[i]);
        sum += lanes[0];
    }
    return sum;
#else
    float chain[8], sum = 0.0f;
    for (int i = 0; i < 8; ++i) chain[i] = (float)i;
    for (int64_t r = 0; r < iterations; ++r)
        for (int i = 0; i < 8; ++i) chain[i] = 0.999f * chain[i] + 1e-3f;
    for (int i = 0; i < 8; ++i) sum += chain[i];
    return sum;
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

static void conv_range(const conv_args* p, int64_t o_begin, int64_t o_end) {
#ifdef LANES
    if (p->sh == 1 && p->sw == 1 && p->Ho == p->H && p->Wo == p->W) {
        conv_flat(p, o_begin, o_end);
        return;
    }
    if (p->sw == 1) {
        conv_rows(p, o_begin, o_end);
        return;
    }
#endif
    for (int64_t o = o_begin; o < o_end; ++o) conv_portable(p, o);
}

/* A batch of images x [batch, C, H, W] into y [batch, O, Ho, Wo].
 * geometry: C, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw, dh, dw, O, blocks. clamp: NULL or [low, high].
 * The work is split into jobs by image and, when there are fewer images than threads, by ranges of
 * output channels; each output value is computed by one job in a fixed order, so the result does not
 * depend on the number of threads. Built with -fopenmp, the jobs run on the OpenMP pool that PyTorch
 * itself uses (same libgomp), rather than on threads competing with it. Jobs are handed out one at a
 * time (dynamic): with more images than threads, a thread slowed by the rest of a shared machine then
 * takes fewer images instead of holding the others at the end of the layer. */
void adapmtl_sparse_conv2d_f32(const float* x, float* y, const int64_t* tap_start, const int32_t* chan,
                               const float* val, const float* bias, const int64_t* geometry, const float* clamp,
                               int64_t batch, int64_t threads) {
    const int64_t* g = geometry;
    const int64_t C = g[0];
    const conv_args p = {x, y, tap_start, chan, val, bias,
                         g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12],
                         g[13], g[14], C, clamp};
    if (threads < 1) threads = 1;
    const int64_t splits = p.O >= 2 * threads ? (threads + batch - 1) / batch : 1, jobs = batch * splits;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) if (threads > 1 && jobs > 1)
    for (int64_t job = 0; job < jobs; ++job) {
        const int64_t image = job / splits, part = job % splits;
        conv_args q = p;
        q.x = p.x + image * C * p.H * p.W;
        q.y = p.y + image * p.O * p.Ho * p.Wo;
        conv_range(&q, p.O * part / splits, p.O * (part + 1) / splits);
    }
}
