/* Fused CPU kernel of RoPE's rotation ([S] eq. 21–22) for the query and key sides at once.
 *
 * Layouts (float32, C-contiguous; N tokens = B·T, H heads, D = 2J dims, P position dims):
 *   pos (N, P); q, k and outputs qt, kt (N, H, D); freq (HF, P, J) with HF = 1 (one set of
 *   frequencies for every head, RoPE(A)) or HF = H (one per head, RoPE(B)/(C)).
 * For every (token n, frequency head f, pair j): θ_j = Σ_p pos_p freq[f, p, j] (float32, like the
 * PyTorch path's einsum), (c, s) = sincos(θ_j) once (sincos.h), applied to both sides' pairs:
 *   y_{2j} = x_{2j} c − x_{2j+1} s,   y_{2j+1} = x_{2j+1} c + x_{2j} s,
 * written as y_d = x_d cd_d + x_{d^1} sd_d with the interleaved tables cd = (c_j, c_j),
 * sd = (−s_j, s_j) of one token and frequency head (D floats each; no N·H·J tensor is built).
 * The rotation is bandwidth-bound (one read and one write of q and k per pass), so with AVX-512,
 * D a multiple of 16 and 64-byte aligned outputs (PyTorch's allocations are) the outputs are
 * written with non-temporal stores (no read-for-ownership of the output lines: 4.8 → 2.7 ms for
 * 2×16 MiB, 1.6 ms less even when the result is read right after). Otherwise plain C vectorised
 * by the compiler (#pragma omp simd). Single-threaded. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "sincos.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define ROTARY_AVX512 1
#else
#define ROTARY_AVX512 0
#endif

/* Tokens accumulated in float32 before the frequency-gradient sums are added into float64. */
#define FLUSH_TOKENS 64

/* cd, sd (D = 2J) of θ_j = Σ_p pn_p F[p·J + j] (P > 1: one pass per non-zero pos_p); th is J scratch. */
INLINE void tables(float *restrict cd, float *restrict sd, float *restrict th, const float *restrict pn,
                   const float *restrict F, int64_t J, int64_t P)
{
    if (P == 1) {
        const float p0 = pn[0];
        for (int64_t j = 0; j < J; ++j)
            th[j] = p0 * F[j];
    } else {
        for (int64_t j = 0; j < J; ++j)
            th[j] = 0.f;
        for (int64_t p = 0; p < P; ++p) {
            if (pn[p] == 0.f)
                continue;
            const float pp = pn[p];
            for (int64_t j = 0; j < J; ++j)
                th[j] = fmaf(pp, F[p * J + j], th[j]);
        }
    }
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const sincos_t sc = sincos_f32(th[j]);
        cd[2 * j] = sc.c;
        cd[2 * j + 1] = sc.c;
        sd[2 * j] = -sc.s;
        sd[2 * j + 1] = sc.s;
    }
}

/* y = R(θ) x pairwise (eq. 22): y_d = x_d cd_d + x_{d^1} sd_d. */
INLINE void rotate(float *restrict y, const float *restrict x, const float *restrict cd,
                   const float *restrict sd, int64_t J, const int stream)
{
#if ROTARY_AVX512
    if (stream) {
        for (int64_t d = 0; d < 2 * J; d += 16) {
            const __m512 v = _mm512_loadu_ps(x + d), w = _mm512_permute_ps(v, 0xB1);  /* pair swap */
            _mm512_stream_ps(y + d, _mm512_fmadd_ps(v, _mm512_loadu_ps(cd + d),
                                                    _mm512_mul_ps(w, _mm512_loadu_ps(sd + d))));
        }
        return;
    }
#endif
    (void)stream;
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const float x0 = x[2 * j], x1 = x[2 * j + 1];
        y[2 * j] = x0 * cd[2 * j] + x1 * sd[2 * j];
        y[2 * j + 1] = x1 * cd[2 * j + 1] + x0 * sd[2 * j + 1];
    }
}

/* dx = R(−θ) g (the inverse rotation): dx_d = g_d cd_d − g_{d^1} sd_d. With x (with_angle), the
 * angle gradient dθ_j = x_{2j} dx_{2j+1} − x_{2j+1} dx_{2j}, i.e. Σ g·(dR/dθ x)
 * = g_{2j}(−x_{2j} s − x_{2j+1} c) + g_{2j+1}(x_{2j} c − x_{2j+1} s), is added as its two lanes:
 * dang_{2j} += x_{2j} dx_{2j+1}, dang_{2j+1} −= x_{2j+1} dx_{2j} (summed pairwise at the flush). */
INLINE void unrotate(float *restrict dx, float *restrict dang, const float *restrict g,
                     const float *restrict x, const float *restrict cd, const float *restrict sd,
                     int64_t J, const int with_angle, const int stream)
{
#if ROTARY_AVX512
    if (stream) {
        const __m512 sign = _mm512_set_ps(-1.f, 1.f, -1.f, 1.f, -1.f, 1.f, -1.f, 1.f,
                                          -1.f, 1.f, -1.f, 1.f, -1.f, 1.f, -1.f, 1.f);  /* lane 0 first: +1 */
        for (int64_t d = 0; d < 2 * J; d += 16) {
            const __m512 v = _mm512_loadu_ps(g + d), w = _mm512_permute_ps(v, 0xB1);
            const __m512 r = _mm512_fnmadd_ps(w, _mm512_loadu_ps(sd + d),
                                              _mm512_mul_ps(v, _mm512_loadu_ps(cd + d)));
            _mm512_stream_ps(dx + d, r);
            if (with_angle) {
                const __m512 xs = _mm512_mul_ps(_mm512_loadu_ps(x + d), sign);
                _mm512_storeu_ps(dang + d, _mm512_fmadd_ps(xs, _mm512_permute_ps(r, 0xB1),
                                                           _mm512_loadu_ps(dang + d)));
            }
        }
        return;
    }
#endif
    (void)stream;
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
        const float g0 = g[2 * j], g1 = g[2 * j + 1];
        const float d0 = g0 * cd[2 * j] - g1 * sd[2 * j], d1 = g1 * cd[2 * j + 1] - g0 * sd[2 * j + 1];
        dx[2 * j] = d0;
        dx[2 * j + 1] = d1;
        if (with_angle) {
            dang[2 * j] += x[2 * j] * d1;
            dang[2 * j + 1] -= x[2 * j + 1] * d0;
        }
    }
}

/* Whether non-temporal 512-bit stores may write rows of D floats starting at these pointers. */
static int can_stream(int64_t D, const float *a, const float *b)
{
    return ROTARY_AVX512 && D % 16 == 0 && (uintptr_t)a % 64 == 0 && (uintptr_t)b % 64 == 0;
}

static void fence(void)
{
#if ROTARY_AVX512
    _mm_sfence();  /* the streamed lines are globally visible before the caller reads them */
#endif
}

/* Scratch: cd, sd (D each), th (J), dang (D), then the gradient accumulator; 64-byte aligned rows. */
static size_t row_bytes(int64_t count)
{
    return ((sizeof(float) * (size_t)count + 63) / 64) * 64;
}

/* Forward: k may be NULL (that side is skipped). Returns 0, or 1 if scratch allocation failed. */
int rotary_forward(int64_t N, int64_t H, int64_t HF, int64_t J, int64_t P,
                   const float *pos, const float *freq, const float *q, const float *k,
                   float *qt, float *kt)
{
    const int64_t D = 2 * J, per = H / HF;  /* heads per frequency set */
    const size_t row = row_bytes(D);
    char *scratch = (char *)aligned_alloc(64, 3 * row);
    if (!scratch)
        return 1;
    float *cd = (float *)scratch, *sd = (float *)(scratch + row), *th = (float *)(scratch + 2 * row);
    const int stream = can_stream(D, qt, k ? kt : qt);
#define FWD(ST)                                                                       \
    for (int64_t n = 0; n < N; ++n)                                                   \
        for (int64_t f = 0; f < HF; ++f) {                                            \
            tables(cd, sd, th, pos + n * P, freq + f * P * J, J, P);                  \
            for (int64_t h = f * per; h < (f + 1) * per; ++h) {                       \
                const int64_t at = (n * H + h) * D;                                   \
                rotate(qt + at, q + at, cd, sd, J, ST);                               \
                if (k) rotate(kt + at, k + at, cd, sd, J, ST);                        \
            }                                                                         \
        }
    if (stream) { FWD(1) } else { FWD(0) }
#undef FWD
    fence();
    free(scratch);
    return 0;
}

/* Backward, given the upstream gradients gq, gk (N, H, D) of qt, kt (gk NULL where k was): dq, dk =
 * the inverse rotations. If dfreq is not NULL, also (q and k are then needed)
 *   dfreq[f, p, j] = Σ_n pos_p Σ_{h of f} Σ_sides dθ_j      (dθ of unrotate's comment),
 * float64 (HF, P, J), overwritten; summed over tokens in float32 blocks of FLUSH_TOKENS.
 * Returns 0, or 1 if the scratch allocation failed. */
int rotary_backward(int64_t N, int64_t H, int64_t HF, int64_t J, int64_t P,
                    const float *pos, const float *freq, const float *q, const float *k,
                    const float *gq, const float *gk, float *dq, float *dk, double *dfreq)
{
    const int64_t D = 2 * J, per = H / HF;
    const size_t row = row_bytes(D);
    const int64_t rowf = (int64_t)(row / sizeof(float));
    char *scratch = (char *)aligned_alloc(64, row * (4 + (size_t)(HF * P)));
    if (!scratch)
        return 1;
    float *cd = (float *)scratch, *sd = (float *)(scratch + row), *th = (float *)(scratch + 2 * row);
    float *dang = (float *)(scratch + 3 * row), *acc = (float *)(scratch + 4 * row);  /* acc: (HF·P) rows */
    const int want = dfreq != 0;
    const int stream = can_stream(D, dq, gk ? dk : dq);
    if (want) {
        memset(dfreq, 0, sizeof(double) * HF * P * J);
        memset(acc, 0, row * HF * P);
    }
    /* literal with_angle / stream: the inlined loops carry no branch (and never read x unasked) */
#define BWD(WANT, ST)                                                                             \
    for (int64_t n = 0; n < N; ++n) {                                                             \
        const float *pn = pos + n * P;                                                            \
        for (int64_t f = 0; f < HF; ++f) {                                                        \
            tables(cd, sd, th, pn, freq + f * P * J, J, P);                                       \
            if (WANT)                                                                             \
                memset(dang, 0, sizeof(float) * D);                                               \
            for (int64_t h = f * per; h < (f + 1) * per; ++h) {                                   \
                const int64_t at = (n * H + h) * D;                                               \
                unrotate(dq + at, dang, gq + at, WANT ? q + at : 0, cd, sd, J, WANT, ST);         \
                if (gk) unrotate(dk + at, dang, gk + at, WANT ? k + at : 0, cd, sd, J, WANT, ST); \
            }                                                                                     \
            for (int64_t p = 0; WANT && p < P; ++p) {                                             \
                if (pn[p] == 0.f)                                                                 \
                    continue;                                                                     \
                float *a = acc + (f * P + p) * rowf;                                              \
                const float pp = pn[p];                                                           \
                _Pragma("omp simd")                                                               \
                for (int64_t d = 0; d < D; ++d)                                                   \
                    a[d] = fmaf(pp, dang[d], a[d]);                                               \
            }                                                                                     \
        }                                                                                         \
        if (WANT && ((n + 1) % FLUSH_TOKENS == 0 || n + 1 == N)) {                                \
            for (int64_t r = 0; r < HF * P; ++r)                                                  \
                for (int64_t j = 0; j < J; ++j)                                                   \
                    dfreq[r * J + j] += (double)acc[r * rowf + 2 * j] + acc[r * rowf + 2 * j + 1]; \
            memset(acc, 0, row * HF * P);                                                         \
        }                                                                                         \
    }
    if (want) { if (stream) { BWD(1, 1) } else { BWD(1, 0) } }
    else { if (stream) { BWD(0, 1) } else { BWD(0, 0) } }
#undef BWD
    fence();
    free(scratch);
    return 0;
}
