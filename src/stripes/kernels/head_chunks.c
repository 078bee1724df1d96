/* Elementwise passes of the chunked causal linear attention (stripes/nn/attention.py,
 * _CausalLinearAttention) between the (B, Tp, H, X) layout of the projections and the contiguous
 * per-head-group chunk batches that its matmuls use.
 *
 * Layouts (float32, C-contiguous): a "full" tensor is (B, Tp, H, X), Tp = N·C padded steps; a
 * "group" tensor holds heads h0 … h0+G−1 of it as (G, B, Tp, X), i.e. (G·B·N, C, X) chunks; a
 * group "row" r = (g·B + b)·Tp + t is one (head, batch, step). Per-row scalars (den, g_den, w) are
 * (G·B·Tp); per-chunk vectors (the normaliser states z, r) are (G·B·N, X), chunk = r / C.
 *
 *   gather_heads:   group[r] = φ(full[b, t, h0+g]) (φ = elu + 1 when phi, else the identity)
 *   scatter_heads:  full[b, t, h0+g] = (group[r] + w[r]·vec[r / C]) ⊙ slope
 *                   (w NULL: weight 1; vec NULL: nothing added; slope = min(feat[r], 1) when feat
 *                   is given (the derivative of φ = elu + 1, from φ's saved output), else 1)
 *   divide_heads:   full[b, t, h0+g] = num[r] / den[r]
 *   output_grads:   g_num[r] = grad[b, t, h0+g] / den[r],  g_den[r] = −Σ_x g_num[r]·out[b, t, h0+g]
 *   exclusive_scan_inplace: exclusive prefix / suffix sums over the chunks of the chunk states
 *
 * φ(x) = max(x, 0) + exp(min(x, 0)) with a branch-free float32 exp (exp_nonpositive below), so the
 * row loops vectorise. max, min are written as comparisons (GCC does not vectorise fmaxf/fminf
 * without -ffinite-math-only), ordered so that a NaN input gives a NaN φ and a NaN slope, as
 * torch.clamp does. Each pass reads and writes every element once, where the PyTorch path made
 * two to four passes with temporaries. Single-threaded. Every function returns 0. */

#include <stdint.h>
#include <string.h>
#include <math.h>

#define INLINE static inline __attribute__((always_inline))

/* exp(x) for x ≤ 0 in float32: x = n·ln2 + r with n = rint(x/ln2) (Cody–Waite, two FMA terms),
 * |r| ≤ ln2/2, exp(r) = 1 + r + r²·p(r) with Cephes' expf minimax coefficients (≤ 2 ulp relative
 * against the float64 exp, tests/test_head_chunks_kernel.py), times 2^n built in the exponent
 * bits. x is clamped at −87.3 (2^n stays normal): below that exp(x) < 1.22e-38 and the result is
 * exp(−87.3) ≈ 1.22e-38, an absolute error under 1.3e-38. */
INLINE float exp_nonpositive(float x)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    x = x < -87.3f ? -87.3f : x;
    float n = rintf(x * log2e);
    float r = fmaf(-n, ln2_hi, x);
    r = fmaf(-n, ln2_lo, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    float e = fmaf(p * r, r, r) + 1.0f;
    union { int32_t i; float f; } scale = { .i = ((int32_t)n + 127) << 23 };
    return e * scale.f;
}

/* Row r of a group tensor lives at full row (b·Tp + t)·H + h0 + g. */
#define FOR_ROWS                                                                       \
    for (int64_t g = 0; g < G; ++g)                                                    \
        for (int64_t b = 0; b < B; ++b)                                                \
            for (int64_t t = 0; t < Tp; ++t) {                                         \
                const int64_t r = (g * B + b) * Tp + t;                                \
                const int64_t f = (b * Tp + t) * H + h0 + g;

int gather_heads(int64_t B, int64_t Tp, int64_t H, int64_t X, int64_t h0, int64_t G, int64_t phi,
                 const float *restrict full, float *restrict group)
{
    FOR_ROWS
        const float *restrict src = full + f * X;
        float *restrict dst = group + r * X;
        if (phi) {
#pragma omp simd
            for (int64_t x = 0; x < X; ++x)
                dst[x] = (src[x] < 0.0f ? 0.0f : src[x]) + exp_nonpositive(src[x] < 0.0f ? src[x] : 0.0f);
        } else {
            memcpy(dst, src, (size_t)X * sizeof *dst);
        }
    }
    return 0;
}

int scatter_heads(int64_t B, int64_t Tp, int64_t H, int64_t X, int64_t h0, int64_t G, int64_t C,
                  const float *restrict group, const float *restrict w, const float *restrict vec,
                  const float *restrict feat, float *restrict full)
{
    FOR_ROWS
        const float *restrict src = group + r * X;
        float *restrict dst = full + f * X;
        const float *restrict add = vec ? vec + (r / C) * X : NULL;
        const float weight = w ? w[r] : 1.0f;
        if (add && feat) {
            const float *restrict y = feat + r * X;
#pragma omp simd
            for (int64_t x = 0; x < X; ++x)
                dst[x] = fmaf(weight, add[x], src[x]) * (y[x] > 1.0f ? 1.0f : y[x]);
        } else if (add) {
#pragma omp simd
            for (int64_t x = 0; x < X; ++x)
                dst[x] = fmaf(weight, add[x], src[x]);
        } else if (feat) {
            const float *restrict y = feat + r * X;
#pragma omp simd
            for (int64_t x = 0; x < X; ++x)
                dst[x] = src[x] * (y[x] > 1.0f ? 1.0f : y[x]);
        } else {
            memcpy(dst, src, (size_t)X * sizeof *dst);
        }
    }
    return 0;
}

int divide_heads(int64_t B, int64_t Tp, int64_t H, int64_t X, int64_t h0, int64_t G,
                 const float *restrict num, const float *restrict den, float *restrict full)
{
    FOR_ROWS
        const float *restrict src = num + r * X;
        float *restrict dst = full + f * X;
        const float d = den[r];
#pragma omp simd
        for (int64_t x = 0; x < X; ++x)
            dst[x] = src[x] / d;
    }
    return 0;
}

int output_grads(int64_t B, int64_t Tp, int64_t H, int64_t X, int64_t h0, int64_t G,
                 const float *restrict grad, const float *restrict out, const float *restrict den,
                 float *restrict g_num, float *restrict g_den)
{
    FOR_ROWS
        const float *restrict dy = grad + f * X;
        const float *restrict y = out + f * X;
        float *restrict gn = g_num + r * X;
        const float d = den[r];
        float dot = 0.0f;
#pragma omp simd reduction(+:dot)
        for (int64_t x = 0; x < X; ++x) {
            gn[x] = dy[x] / d;
            dot += gn[x] * y[x];
        }
        g_den[r] = -dot;
    }
    return 0;
}

/* In place, per row of a (R, N, M) tensor: x[r, i] = Σ_{j < i} x[r, j] (exclusive prefix sums
 * over i; suffix sums Σ_{j > i} when reverse). The running sum (M floats) stays in cache; every
 * element is read and written once. */
int exclusive_scan_inplace(int64_t R, int64_t N, int64_t M, int64_t reverse, float *restrict x,
                           float *restrict running)
{
    for (int64_t r = 0; r < R; ++r) {
        memset(running, 0, (size_t)M * sizeof *running);
        for (int64_t s = 0; s < N; ++s) {
            const int64_t i = reverse ? N - 1 - s : s;
            float *restrict row = x + (r * N + i) * M;
#pragma omp simd
            for (int64_t m = 0; m < M; ++m) {
                const float value = row[m];
                row[m] = running[m];
                running[m] += value;
            }
        }
    }
    return 0;
}
