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

/* The per-channel epilogue of both convolutions: out[co] = (v[co] * scale[co] + bias[co]) * post_scale[co]
 * + post_shift[co] for co < cout; NULL pointers skip their step, each step rounds as PyTorch's separate ops. */
static void epilogue(const float *v, int64_t co0, int64_t nb, const float *scale, const float *bias,
                     const float *post_scale, const float *post_shift, float *o) {
    for (int64_t i = 0; i < nb; i++) {
        float x = v[i];
        int64_t co = co0 + i;
        if (scale)
            x *= scale[co];
        if (bias)
            x += bias[co];
        if (post_scale)
            x *= post_scale[co];
        if (post_shift)
            x += post_shift[co];
        o[co] = x;
    }
}

/* Binary convolution of a packed, already padded map: out[r, ox, co] = kbits - 2 popcount(patch ^ filter),
 * then the epilogue (a BatchNorm the engine folded in is post_scale / post_shift), float32, for output rows
 * r in [r0, r1) where r = image * ho + oy; out is (N * ho, wo, cout). A dense layer is the case k = h = w = 1.
 * Filters come transposed and padded, (K, K, CW, coutp) with coutp a multiple of CB: the innermost loop runs
 * over CB output channels, which the compiler vectorizes (8 popcounts per instruction with AVX-512 VPOPCNTQ)
 * where a loop over the few words of one patch would not. The row range lets the caller split one layer
 * across threads. */
void bnn_conv(const uint64_t *restrict xp, int64_t hp, int64_t wp, int64_t cw, const uint64_t *restrict filt,
              int64_t cout, int64_t coutp, int64_t k, int64_t stride, int64_t ho, int64_t wo, int64_t kbits,
              const float *restrict scale, const float *restrict bias, const float *restrict post_scale,
              const float *restrict post_shift, int64_t r0, int64_t r1, float *restrict out) {
    int64_t tap = k * cw;
    for (int64_t r = r0; r < r1; r++) {
        int64_t img = r / ho, oy = r % ho;
        for (int64_t ox = 0; ox < wo; ox++) {
            const uint64_t *base = xp + ((img * hp + oy * stride) * wp + ox * stride) * cw;
            for (int64_t co0 = 0; co0 < cout; co0 += CB) {
                int64_t acc[CB] = {0};
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t t = 0; t < tap; t++) {
                        uint64_t a = base[ky * wp * cw + t];
                        const uint64_t *restrict f = filt + (ky * tap + t) * coutp + co0;
                        for (int64_t i = 0; i < CB; i++)
                            acc[i] += __builtin_popcountll(a ^ f[i]);
                    }
                float v[CB];
                for (int64_t i = 0; i < CB; i++)
                    v[i] = (float)(kbits - 2 * acc[i]);
                epilogue(v, co0, cout - co0 < CB ? cout - co0 : CB, scale, bias, post_scale, post_shift,
                         out + (r * wo + ox) * cout);
            }
        }
    }
}

/* Real-valued convolution of a zero-padded NHWC float map, same loop and epilogue as bnn_conv: filters
 * (K, K, Cin, coutp) float32. For the real stem, where an im2col matrix product with K = 9 wastes BLAS. */
void bnn_conv_real(const float *restrict xp, int64_t hp, int64_t wp, int64_t cin, const float *restrict filt,
                   int64_t cout, int64_t coutp, int64_t k, int64_t stride, int64_t ho, int64_t wo,
                   const float *restrict scale, const float *restrict bias, const float *restrict post_scale,
                   const float *restrict post_shift, int64_t r0, int64_t r1, float *restrict out) {
    int64_t tap = k * cin;
    for (int64_t r = r0; r < r1; r++) {
        int64_t img = r / ho, oy = r % ho;
        for (int64_t ox = 0; ox < wo; ox++) {
            const float *base = xp + ((img * hp + oy * stride) * wp + ox * stride) * cin;
            for (int64_t co0 = 0; co0 < cout; co0 += CB) {
                float acc[CB] = {0};
                for (int64_t ky = 0; ky < k; ky++)
                    for (int64_t t = 0; t < tap; t++) {
                        float a = base[ky * wp * cin + t];
                        const float *restrict f = filt + (ky * tap + t) * coutp + co0;
                        for (int64_t i = 0; i < CB; i++)
                            acc[i] += a * f[i];
                    }
                epilogue(acc, co0, cout - co0 < CB ? cout - co0 : CB, scale, bias, post_scale, post_shift,
                         out + (r * wo + ox) * cout);
            }
        }
    }
}

/* Residual end in place: x (N, H, W, repeat * C) += shortcut, the saved map (N, SH, SW, C) 2x2-average-pooled
 * when stride is 2 (floor; summed as ((a + b) + c) + d, then / 4) and repeated `repeat` times along channels. */
void bnn_residual(float *restrict x, const float *restrict saved, int64_t n, int64_t h, int64_t w, int64_t c,
                  int64_t sh, int64_t sw, int64_t stride, int64_t repeat) {
    for (int64_t img = 0; img < n; img++)
        for (int64_t y = 0; y < h; y++)
            for (int64_t xx = 0; xx < w; xx++) {
                float *o = x + ((img * h + y) * w + xx) * repeat * c;
                const float *s = saved + ((img * sh + y * stride) * sw + xx * stride) * c;
                for (int64_t i = 0; i < c; i++) {
                    float v = s[i];
                    if (stride == 2)
                        v = (((s[i] + s[c + i]) + s[sw * c + i]) + s[(sw + 1) * c + i]) / 4.0f;
                    for (int64_t rep = 0; rep < repeat; rep++)
                        o[rep * c + i] += v;
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
