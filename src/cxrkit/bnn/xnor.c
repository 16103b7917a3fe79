/* XNOR + popcount kernels for cxrkit's packed BNN engine (cxrkit/bnn/_native.py loads this with ctypes).
 *
 * Why C: at batch 1 the NumPy path spends its time in dozens of small array passes (im2col, XOR, popcount,
 * sum) per layer; one loop per layer that reads each packed word once is several times faster. Every function
 * has a NumPy twin in engine.py, which stays the reference and the fallback when no C compiler is found.
 *
 * Layout: a packed map is (N, H, W, CW) uint64, pixel-major; channel c is bit c % 64 of word c / 64 (bit 1
 * means +1), the filler bits above the last channel are 0. Filters are (Cout, K, K, CW) in the same layout,
 * filler 0 too, so filler never counts in popcount(a ^ w).
 */
#include <stdint.h>
#include <stdlib.h>

/* sign(x - threshold) of an NHWC float map as packed bits, with `pad` pixels of +1 (one padding) around it:
 * x (N, H, W, C) float32 -> out (N, H + 2 pad, W + 2 pad, CW) uint64. */
void bnn_pack(const float *x, int64_t n, int64_t h, int64_t w, int64_t c, const float *thr, int64_t pad,
              int64_t cw, uint64_t *out) {
    int64_t hp = h + 2 * pad, wp = w + 2 * pad;
    for (int64_t img = 0; img < n; img++)
        for (int64_t y = 0; y < hp; y++)
            for (int64_t xx = 0; xx < wp; xx++) {
                uint64_t *o = out + ((img * hp + y) * wp + xx) * cw;
                int border = y < pad || y >= h + pad || xx < pad || xx >= w + pad;
                const float *px = border ? 0 : x + ((img * h + y - pad) * w + xx - pad) * c;
                for (int64_t j = 0; j < cw; j++) {
                    int64_t c0 = j * 64, nb = c - c0 < 64 ? c - c0 : 64;
                    uint64_t v = 0;
                    if (border)
                        v = nb == 64 ? ~(uint64_t)0 : (((uint64_t)1 << nb) - 1);
                    else
                        for (int64_t b = 0; b < nb; b++)
                            v |= (uint64_t)(px[c0 + b] >= thr[c0 + b]) << b;
                    o[j] = v;
                }
            }
}

#define CB 32 /* output channels per block: filters are padded to a multiple of it, accumulators stay in registers */

/* The per-channel epilogue of both convolutions, in place on one block of output channels: v = (v * scale
 * + bias) * post_scale + post_shift, then max(v, 0) if relu; NULL pointers skip their step, and each step rounds
 * as PyTorch's separate ops do. One loop per step, so that each vectorizes (a loop testing the pointers per
 * value does not, and costs as much as the popcounts). */
static void epilogue(float *restrict v, int64_t co0, int64_t nb, const float *restrict scale,
                     const float *restrict bias, const float *restrict post_scale,
                     const float *restrict post_shift, int64_t relu) {
    if (scale)
        for (int64_t i = 0; i < nb; i++)
            v[i] *= scale[co0 + i];
    if (bias)
        for (int64_t i = 0; i < nb; i++)
            v[i] += bias[co0 + i];
    if (post_scale)
        for (int64_t i = 0; i < nb; i++)
            v[i] *= post_scale[co0 + i];
    if (post_shift)
        for (int64_t i = 0; i < nb; i++)
            v[i] += post_shift[co0 + i];
    if (relu)
        for (int64_t i = 0; i < nb; i++)
            v[i] = v[i] < 0 ? 0 : v[i];
}

#define P 4 /* output positions per step: they share each filter load and keep P * CB sums in registers */

/* Sums of P (or 1) adjacent positions of one block of CB output channels, for both kinds of convolution:
 * `np` positions starting at column ox, then the epilogue, into row (wo, cout). */
#define POSITIONS(NP, ACC_T, LOAD, STEP, FINISH)                                                              \
    {                                                                                                         \
        ACC_T acc[NP][CB] = {{0}};                                                                            \
        for (int64_t ky = 0; ky < k; ky++)                                                                    \
            for (int64_t t = 0; t < tap; t++) {                                                               \
                const __typeof__(*filt) *restrict f = filt + (ky * tap + t) * coutp + co0;                    \
                for (int64_t q = 0; q < NP; q++) {                                                            \
                    __typeof__(*xp) a = base[q * stride * cin + ky * wp * cin + t];                           \
                    for (int64_t i = 0; i < CB; i++)                                                          \
                        acc[q][i] += STEP;                                                                    \
                }                                                                                             \
            }                                                                                                 \
        for (int64_t q = 0; q < NP; q++) {                                                                    \
            float v[CB];                                                                                      \
            for (int64_t i = 0; i < CB; i++)                                                                  \
                v[i] = FINISH;                                                                                \
            epilogue(v, co0, nb, ep[0], ep[1], ep[2], ep[3], relu);                                           \
            for (int64_t i = 0; i < nb; i++)                                                                  \
                row[(ox + q) * cout + co0 + i] = v[i];                                                        \
        }                                                                                                     \
    }

/* One output row of either convolution: columns in steps of P positions (then single ones), each block of CB
 * output channels, sums, epilogue, into row (wo, cout). */
#define ROW_FN(NAME, IN_T, ACC_T, STEP, FINISH)                                                               \
    static void NAME(const IN_T *restrict xp, int64_t hp, int64_t wp, int64_t cin, const IN_T *restrict filt, \
                     int64_t cout, int64_t coutp, int64_t k, int64_t stride, int64_t img, int64_t oy,          \
                     int64_t wo, int64_t kbits, const float *const *ep, int64_t relu, float *restrict row) {   \
        int64_t tap = k * cin;                                                                                \
        (void)kbits;                                                                                          \
        for (int64_t ox = 0; ox < wo;) {                                                                      \
            const IN_T *base = xp + ((img * hp + oy * stride) * wp + ox * stride) * cin;                      \
            int64_t np = wo - ox >= P ? P : 1;                                                                \
            for (int64_t co0 = 0; co0 < cout; co0 += CB) {                                                    \
                int64_t nb = cout - co0 < CB ? cout - co0 : CB;                                               \
                if (np == P)                                                                                  \
                    POSITIONS(P, ACC_T, 0, STEP, FINISH)                                                      \
                else                                                                                          \
                    POSITIONS(1, ACC_T, 0, STEP, FINISH)                                                      \
            }                                                                                                 \
            ox += np;                                                                                         \
        }                                                                                                     \
    }

ROW_FN(row_real, float, float, a * f[i], acc[q][i])

#if defined(__AVX2__) && !defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
/* row_bin for x86 CPUs with AVX2 but no vector popcount (e.g. AMD Zen 3, Intel before Ice Lake), where GCC turns
 * row_bin's loop into scalar POPCNTs with the sums in memory: measured 6 cycles a popcount on a Zen 3 EPYC, 7.5x
 * slower than the AVX-512 build on Zen 4. Here the popcounts are Mula's nibble lookup (VPSHUFB) on 4 words at a
 * time, summed per byte over up to 31 taps (8 bits x 31 < 256) before VPSADBW widens them: the same integer sums,
 * so the same outputs as row_bin to the bit. One position at a time: the 8 byte-sum registers of a block of 32
 * channels and the lookup constants fill the 16 YMM registers. */
static inline __m256i popcount_bytes(__m256i v, __m256i lut, __m256i low4) {
    __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

static void row_bin_avx2(const uint64_t *restrict xp, int64_t hp, int64_t wp, int64_t cin,
                         const uint64_t *restrict filt, int64_t cout, int64_t coutp, int64_t k, int64_t stride,
                         int64_t img, int64_t oy, int64_t wo, int64_t kbits, const float *const *ep, int64_t relu,
                         float *restrict row) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    int64_t tap = k * cin;
    for (int64_t ox = 0; ox < wo; ox++) {
        const uint64_t *base = xp + ((img * hp + oy * stride) * wp + ox * stride) * cin;
        for (int64_t co0 = 0; co0 < cout; co0 += CB) {
            int64_t nb = cout - co0 < CB ? cout - co0 : CB, pending = 0;
            __m256i bytes[CB / 4], sums[CB / 4];
            for (int j = 0; j < CB / 4; j++)
                bytes[j] = sums[j] = zero;
            for (int64_t ky = 0; ky < k; ky++)
                for (int64_t t = 0; t < tap; t++) {
                    __m256i a = _mm256_set1_epi64x((long long)base[ky * wp * cin + t]);
                    const uint64_t *f = filt + (ky * tap + t) * coutp + co0;
                    for (int j = 0; j < CB / 4; j++) {
                        __m256i w = _mm256_loadu_si256((const __m256i *)(f + 4 * j));
                        bytes[j] = _mm256_add_epi8(bytes[j], popcount_bytes(_mm256_xor_si256(a, w), lut, low4));
                    }
                    if (++pending == 31) {
                        for (int j = 0; j < CB / 4; j++) {
                            sums[j] = _mm256_add_epi64(sums[j], _mm256_sad_epu8(bytes[j], zero));
                            bytes[j] = zero;
                        }
                        pending = 0;
                    }
                }
            int64_t acc[CB];
            for (int j = 0; j < CB / 4; j++)
                _mm256_storeu_si256((__m256i *)(acc + 4 * j), _mm256_add_epi64(sums[j], _mm256_sad_epu8(bytes[j], zero)));
            float v[CB];
            for (int64_t i = 0; i < CB; i++)
                v[i] = (float)(kbits - 2 * acc[i]);
            epilogue(v, co0, nb, ep[0], ep[1], ep[2], ep[3], relu);
            for (int64_t i = 0; i < nb; i++)
                row[ox * cout + co0 + i] = v[i];
        }
    }
}
#define ROW_BIN row_bin_avx2
#else
ROW_FN(row_bin, uint64_t, int64_t, __builtin_popcountll(a ^ f[i]), (float)(kbits - 2 * acc[q][i]))
#define ROW_BIN row_bin
#endif

/* The loop both convolutions share, over output rows r in [r0, r1) (r = image * ho + oy; out is
 * (N * ho, wo, cout); the range lets the caller split a layer across threads). With pool = 2, ho and wo are the
 * pooled sizes: two conv rows go to a scratch buffer and their 2x2 maxima (floor) to out, a max-pool fused
 * after the epilogue as in the layer order, without the full-size conv output. Returns -1 if out of memory. */
#define CONV_ROWS(ROW, XP, FILT)                                                                              \
    const float *ep[4] = {scale, bias, post_scale, post_shift};                                               \
    if (pool == 1) {                                                                                          \
        for (int64_t r = r0; r < r1; r++)                                                                     \
            ROW(XP, hp, wp, cin, FILT, cout, coutp, k, stride, r / ho, r % ho, wo, kbits, ep, relu,          \
                out + r * wo * cout);                                                                         \
        return 0;                                                                                             \
    }                                                                                                         \
    int64_t cwo = wo * 2 + 1; /* conv columns: 2 wo, and one more the floor drops when the conv width is odd */ \
    float *buf = malloc(2 * cwo * cout * sizeof(float));                                                      \
    if (!buf)                                                                                                 \
        return -1;                                                                                            \
    int64_t cw_used = ((wp - k) / stride + 1) < cwo ? ((wp - k) / stride + 1) : cwo;                          \
    for (int64_t r = r0; r < r1; r++) {                                                                       \
        int64_t img = r / ho, py = r % ho;                                                                    \
        ROW(XP, hp, wp, cin, FILT, cout, coutp, k, stride, img, 2 * py, cw_used, kbits, ep, relu, buf);       \
        ROW(XP, hp, wp, cin, FILT, cout, coutp, k, stride, img, 2 * py + 1, cw_used, kbits, ep, relu,         \
            buf + cwo * cout);                                                                                \
        float *o = out + r * wo * cout;                                                                       \
        for (int64_t px = 0; px < wo; px++)                                                                   \
            for (int64_t c = 0; c < cout; c++) {                                                              \
                const float *a = buf + 2 * px * cout + c, *b = a + cwo * cout;                                \
                float m = a[0];                                                                               \
                m = a[cout] > m ? a[cout] : m;                                                                \
                m = b[0] > m ? b[0] : m;                                                                      \
                m = b[cout] > m ? b[cout] : m;                                                                \
                o[px * cout + c] = m;                                                                         \
            }                                                                                                 \
    }                                                                                                         \
    free(buf);                                                                                                \
    return 0;

/* Binary convolution of a packed, already padded map: kbits - 2 popcount(patch ^ filter) per position, then
 * the epilogue (a BatchNorm the engine folded in is post_scale / post_shift) and the optional pool, float32.
 * A dense layer is the case k = h = w = 1. Filters come transposed and padded, (K, K, CW, coutp) with coutp a
 * multiple of CB: the innermost loop runs over CB output channels, which the compiler vectorizes (8 popcounts
 * per instruction with AVX-512 VPOPCNTQ) where a loop over the few words of one patch would not; AVX2-only CPUs
 * get row_bin_avx2 instead. */
int bnn_conv(const uint64_t *restrict xp, int64_t hp, int64_t wp, int64_t cin, const uint64_t *restrict filt,
             int64_t cout, int64_t coutp, int64_t k, int64_t stride, int64_t ho, int64_t wo, int64_t kbits,
             const float *scale, const float *bias, const float *post_scale, const float *post_shift, int64_t relu,
             int64_t pool, int64_t r0, int64_t r1, float *restrict out) {
    CONV_ROWS(ROW_BIN, xp, filt)
}

/* Real-valued convolution of a zero-padded NHWC float map (cin channels), same loop, epilogue and pool as
 * bnn_conv: filters (K, K, Cin, coutp) float32, each output summed tap by tap in (kh, kw, cin) order (the NumPy
 * path sums in the same order, so both agree to the bit). For the real stems, where an im2col matrix product
 * with rows of 9 or 27 wastes BLAS. */
int bnn_conv_real(const float *restrict xp, int64_t hp, int64_t wp, int64_t cin, const float *restrict filt,
                  int64_t cout, int64_t coutp, int64_t k, int64_t stride, int64_t ho, int64_t wo,
                  const float *scale, const float *bias, const float *post_scale, const float *post_shift,
                  int64_t relu, int64_t pool, int64_t r0, int64_t r1, float *restrict out) {
    int64_t kbits = 0;
    CONV_ROWS(row_real, xp, filt)
}

/* Residual end in place: x (N, H, W, repeat * C) += shortcut, the saved map (N, SH, SW, C) 2x2-average-pooled
 * when stride is 2 (floor; summed as ((a + b) + c) + d, then / 4) and repeated `repeat` times along channels.
 * The pooled shortcut goes through a small stack buffer, RES_CHUNK channels at a time, so that every inner loop is
 * a plain run over channels that the compiler vectorizes (one loop doing both did not). */
#define RES_CHUNK 256
void bnn_residual(float *restrict x, const float *restrict saved, int64_t n, int64_t h, int64_t w, int64_t c,
                  int64_t sh, int64_t sw, int64_t stride, int64_t repeat) {
    float pooled[RES_CHUNK];
    for (int64_t img = 0; img < n; img++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t xx = 0; xx < w; xx++) {
                float *o = x + ((img * h + y) * w + xx) * repeat * c;
                const float *s = saved + ((img * sh + y * stride) * sw + xx * stride) * c;
                for (int64_t c0 = 0; c0 < c; c0 += RES_CHUNK) {
                    int64_t nc = c - c0 < RES_CHUNK ? c - c0 : RES_CHUNK;
                    const float *v = s + c0;
                    if (stride == 2) {
                        for (int64_t i = 0; i < nc; i++)
                            pooled[i] = (((v[i] + v[c + i]) + v[sw * c + i]) + v[(sw + 1) * c + i]) / 4.0f;
                        v = pooled;
                    }
                    for (int64_t rep = 0; rep < repeat; rep++) {
                        float *restrict d = o + rep * c + c0;
                        for (int64_t i = 0; i < nc; i++)
                            d[i] += v[i];
                    }
                }
            }
}

/* Per-channel ops in place on rows of C values: x * scale + shift (BatchNorm), then RPReLU
 * (x - shift_in, times slope where negative, + shift_out); NULL pointers skip their step. One pass over memory
 * where NumPy needs a temporary and a pass per step. */
void bnn_channel(float *restrict x, int64_t rows, int64_t c, const float *restrict scale,
                 const float *restrict shift, const float *restrict shift_in, const float *restrict slope,
                 const float *restrict shift_out) {
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * c;
        if (scale)
            for (int64_t i = 0; i < c; i++)
                v[i] = v[i] * scale[i] + shift[i];
        if (slope)
            for (int64_t i = 0; i < c; i++) {
                float y = v[i] - shift_in[i];
                v[i] = (y >= 0 ? y : y * slope[i]) + shift_out[i];
            }
    }
}

/* Which binary-convolution loop this build runs, for benchmark tables: the speed of a packed model depends on it. */
const char *bnn_kernel(void) {
#if defined(__AVX512VPOPCNTDQ__)
    return "AVX-512 VPOPCNTQ";
#elif defined(__AVX2__)
    return "AVX2 nibble lookup";
#else
    return "scalar popcount";
#endif
}
