/* Fused CPU kernel of RoPE's rotation ([S] eq. 21–22) for the query and key sides at once.
 *
 * Layouts (float32, C-contiguous; N tokens = B·T, H heads, D = 2J dims, P position dims):
 *   pos (N, P); q, k and outputs qt, kt (N, H, 2J); freq (HF, P, J) with HF = 1 (one set of
 *   frequencies for every head, RoPE(A)) or HF = H (one per head, RoPE(B)/(C)).
 * For every (token n, frequency head f, pair j): θ = Σ_p pos_p freq[f, p, j] (float32, like the
 * PyTorch path's einsum), (c, s) = sincos(θ) once (sincos.h), applied to both sides' pairs:
 *   y_{2j} = x_{2j} c − x_{2j+1} s,   y_{2j+1} = x_{2j+1} c + x_{2j} s.
 * Nothing of size N·H·J is materialised: θ, c and s live in (J)-sized scratch per token and head.
 * Vectorised over j (#pragma omp simd; the pairs' even/odd lanes by the compiler's permutes).
 * Single-threaded. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "sincos.h"

/* Tokens accumulated in float32 before the frequency-gradient sums are added into float64. */
#define FLUSH_TOKENS 64

/* c[j], s[j] = cos, sin of θ_j = Σ_p pn_p F[p·J + j] (P > 1: one pass per non-zero pos_p). */
INLINE void angles_sincos(float *restrict c, float *restrict s, const float *restrict pn,
                          const float *restrict F, int64_t J, int64_t P)
{
    if (P == 1) {
        const float p0 = pn[0];
#pragma omp simd
        for (int64_t j = 0; j < J; ++j) {
            const sincos_t sc = sincos_f32(p0 * F[j]);
            c[j] = sc.c;
            s[j] = sc.s;
        }
        return;
    }
    for (int64_t j = 0; j < J; ++j)
        c[j] = 0.f;
    for (int64_t p = 0; p < P; ++p) {
        if (pn[p] == 0.f)
            continue;
        const float pp = pn[p];
        for (int64_t j = 0; j < J; ++j)
            c[j] = fmaf(pp, F[p * J + j], c[j]);
    }
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const sincos_t sc = sincos_f32(c[j]);
        c[j] = sc.c;
        s[j] = sc.s;
    }
}

/* y = R(θ) x pairwise (eq. 22). */
INLINE void rotate(float *restrict y, const float *restrict x, const float *restrict c,
                   const float *restrict s, int64_t J)
{
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const float x0 = x[2 * j], x1 = x[2 * j + 1];
        y[2 * j] = x0 * c[j] - x1 * s[j];
        y[2 * j + 1] = x1 * c[j] + x0 * s[j];
    }
}

/* dx = R(−θ) g (the inverse rotation); with x, dθ_j += x_{2j} dx_{2j+1} − x_{2j+1} dx_{2j}, which is
 * Σ g·(dR/dθ x) = g_{2j}(−x_{2j} s − x_{2j+1} c) + g_{2j+1}(x_{2j} c − x_{2j+1} s). */
INLINE void unrotate(float *restrict dx, float *restrict dang, const float *restrict g,
                     const float *restrict x, const float *restrict c, const float *restrict s,
                     int64_t J, const int with_angle)
{
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const float g0 = g[2 * j], g1 = g[2 * j + 1];
        const float d0 = g0 * c[j] + g1 * s[j], d1 = g1 * c[j] - g0 * s[j];
        dx[2 * j] = d0;
        dx[2 * j + 1] = d1;
        if (with_angle)
            dang[j] += x[2 * j] * d1 - x[2 * j + 1] * d0;
    }
}

/* Forward: q or k may be NULL (that side is skipped). Returns 0, or 1 if scratch allocation failed. */
int rotary_forward(int64_t N, int64_t H, int64_t HF, int64_t J, int64_t P,
                   const float *pos, const float *freq, const float *q, const float *k,
                   float *qt, float *kt)
{
    float *cs = (float *)aligned_alloc(64, ((sizeof(float) * 2 * J + 63) / 64) * 64);
    if (!cs)
        return 1;
    float *c = cs, *s = cs + J;
    const int64_t D = 2 * J, per = H / HF;  /* heads per frequency set */
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t f = 0; f < HF; ++f) {
            angles_sincos(c, s, pos + n * P, freq + f * P * J, J, P);
            for (int64_t h = f * per; h < (f + 1) * per; ++h) {
                const int64_t at = (n * H + h) * D;
                if (q) rotate(qt + at, q + at, c, s, J);
                if (k) rotate(kt + at, k + at, c, s, J);
            }
        }
    }
    free(cs);
    return 0;
}

/* Backward, given the upstream gradients gq, gk (N, H, 2J) of qt, kt (NULL where that side is
 * absent): dq, dk = the inverse rotations. If dfreq is not NULL, also
 *   dfreq[f, p, j] = Σ_n pos_p Σ_{h of f} Σ_sides dθ_j      (dθ of unrotate's comment)
 * (float64 (HF, P, J), overwritten; q and k are then needed), summed over tokens in float32 blocks
 * of FLUSH_TOKENS. Returns 0, or 1 if the scratch allocation failed. */
int rotary_backward(int64_t N, int64_t H, int64_t HF, int64_t J, int64_t P,
                    const float *pos, const float *freq, const float *q, const float *k,
                    const float *gq, const float *gk, float *dq, float *dk, double *dfreq)
{
    const size_t row = ((sizeof(float) * J + 63) / 64) * 64;  /* bytes, 64-aligned */
    float *scratch = (float *)aligned_alloc(64, row * (3 + (size_t)(HF * P)));
    if (!scratch)
        return 1;
    float *c = scratch, *s = (float *)((char *)scratch + row), *dang = (float *)((char *)scratch + 2 * row);
    float *acc = (float *)((char *)scratch + 3 * row);  /* (HF·P) rows of J floats, row-padded */
    const int64_t D = 2 * J, per = H / HF;
    const int want = dfreq != 0;
    const int64_t rowf = (int64_t)(row / sizeof(float));
    if (want) {
        memset(dfreq, 0, sizeof(double) * HF * P * J);
        memset(acc, 0, row * HF * P);
    }
    for (int64_t n = 0; n < N; ++n) {
        const float *pn = pos + n * P;
        for (int64_t f = 0; f < HF; ++f) {
            angles_sincos(c, s, pn, freq + f * P * J, J, P);
            if (want)
                memset(dang, 0, sizeof(float) * J);
            for (int64_t h = f * per; h < (f + 1) * per; ++h) {
                const int64_t at = (n * H + h) * D;
                /* literal with_angle: the inlined loops carry no branch (and never read x unasked) */
                if (want) {
                    if (gq) unrotate(dq + at, dang, gq + at, q + at, c, s, J, 1);
                    if (gk) unrotate(dk + at, dang, gk + at, k + at, c, s, J, 1);
                } else {
                    if (gq) unrotate(dq + at, dang, gq + at, 0, c, s, J, 0);
                    if (gk) unrotate(dk + at, dang, gk + at, 0, c, s, J, 0);
                }
            }
            if (want)
                for (int64_t p = 0; p < P; ++p) {
                    if (pn[p] == 0.f)
                        continue;
                    float *a = acc + (f * P + p) * rowf;
                    const float pp = pn[p];
#pragma omp simd
                    for (int64_t j = 0; j < J; ++j)
                        a[j] = fmaf(pp, dang[j], a[j]);
                }
        }
        if (want && ((n + 1) % FLUSH_TOKENS == 0 || n + 1 == N)) {
            for (int64_t r = 0; r < HF * P; ++r)
                for (int64_t j = 0; j < J; ++j)
                    dfreq[r * J + j] += acc[r * rowf + j];
            memset(acc, 0, row * HF * P);
        }
    }
    free(scratch);
    return 0;
}
