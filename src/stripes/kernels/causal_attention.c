/* Normalised causal linear attention, chunked, forward and backward, for one head at a time
 * (stripes/nn/attention.py: the same algorithm as _CausalLinearAttention, whose docstring gives the
 * formulas; [S] eq. 3, 5, 7).
 *
 * Per sequence b, chunks of C steps in order (the last may be shorter), with q, k the features
 * (φ = elu + 1 applied on the fly when phi) and S, z the sums over earlier chunks:
 *   forward:  A = tril(Q Kᵀ),  num = A V + Q S,  den = A·1 + Q·z + ε,  y = num / den;
 *             S += Kᵀ V, z += Kᵀ1; the S and z met by each chunk are saved for the backward.
 *   backward (chunks in reverse, R, r the sums over later chunks):
 *             G = dy / den,  g_d = −(dy·y) / den,  Bm = tril(G Vᵀ + g_d 1ᵀ),  A recomputed,
 *             dQ = Bm K + G Sᵀ + g_d zᵀ,  dK = Bmᵀ Q + V Rᵀ + 1 rᵀ,  dV = Aᵀ G + K R,
 *             (dQ, dK times φ's slope min(φ, 1) when phi);  R += Qᵀ G,  r += Qᵀ g_d.
 *
 * Layouts (float32, C-contiguous): q, k, dq, dk (B, T, H, F); v, y, dy, dv (B, T, H, Dv); the head
 * h is read and written in place through row strides H·F and H·Dv (the matrix products take them as
 * leading dimensions), so nothing is gathered or scattered but φ(q), φ(k) of one chunk. eps: a
 * (B, T, H) tensor when eps_per_query, else one value. Saved per head: states (B, N, F, Dv), norms
 * (B, N, F), den (B, T). Every product is the BLAS sgemm PyTorch itself uses (blas.h), on operands
 * of one chunk that stay in cache; the elementwise work is vectorised here; single-threaded apart
 * from what the sgemm does. Every function returns 0, or 1 if its scratch allocation failed. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "elu.h"
#include "blas.h"

typedef struct {
    float *q, *k, *a, *m, *g, *s, *z, *gd, *asum;
} scratch_t;

static int scratch_alloc(scratch_t *w, int64_t C, int64_t F, int64_t Dv)
{
    const size_t floats = (size_t)(2 * C * F + 2 * C * C + C * Dv + F * Dv + F + 2 * C);
    float *base = aligned_alloc(64, ((floats * sizeof(float) + 63) / 64) * 64 + 64 * 9);
    if (!base)
        return 1;
    /* each block starts on a 64-byte boundary */
    size_t offset = 0;
    float **blocks[9] = {&w->q, &w->k, &w->a, &w->m, &w->g, &w->s, &w->z, &w->gd, &w->asum};
    const int64_t sizes[9] = {C * F, C * F, C * C, C * C, C * Dv, F * Dv, F, C, C};
    for (int i = 0; i < 9; ++i) {
        *blocks[i] = base + offset;
        offset += (size_t)((sizes[i] + 15) / 16 * 16);
    }
    return 0;
}

/* c rows of X features (row stride ld) into a contiguous (c × X) block, through φ if phi. */
static void load_features(float *restrict dst, const float *restrict src, int64_t c, int64_t X, int64_t ld,
                          int64_t phi)
{
    for (int64_t r = 0; r < c; ++r) {
        const float *restrict row = src + r * ld;
        float *restrict out = dst + r * X;
        if (phi) {
#pragma omp simd
            for (int64_t x = 0; x < X; ++x)
                out[x] = elu_plus_one(row[x]);
        } else {
            memcpy(out, row, (size_t)X * sizeof *out);
        }
    }
}

/* Zero the strict upper triangle of a (c × c, row stride C) block. */
static void lower_triangle(float *a, int64_t c, int64_t C)
{
    for (int64_t r = 0; r < c; ++r)
        memset(a + r * C + r + 1, 0, (size_t)(c - r - 1) * sizeof *a);
}

int causal_forward(int64_t B, int64_t T, int64_t H, int64_t F, int64_t Dv, int64_t h, int64_t C,
                   int64_t phi, int64_t eps_per_query, sgemm_fn sgemm, const float *q, const float *k,
                   const float *v, const float *eps, float *y, float *states, float *norms, float *den)
{
    scratch_t w;
    if (scratch_alloc(&w, C, F, Dv))
        return 1;
    const int64_t N = (T + C - 1) / C, ldf = H * F, ldv = H * Dv;
    for (int64_t b = 0; b < B; ++b) {
        memset(w.s, 0, (size_t)(F * Dv) * sizeof(float));
        memset(w.z, 0, (size_t)F * sizeof(float));
        for (int64_t i = 0; i < N; ++i) {
            const int64_t t0 = i * C, c = T - t0 < C ? T - t0 : C;
            const int64_t row0 = (b * T + t0) * H + h;
            const float *vc = v + row0 * Dv;
            float *yc = y + row0 * Dv;
            load_features(w.q, q + row0 * F, c, F, ldf, phi);
            load_features(w.k, k + row0 * F, c, F, ldf, phi);
            memcpy(states + (b * N + i) * F * Dv, w.s, (size_t)(F * Dv) * sizeof(float));
            memcpy(norms + (b * N + i) * F, w.z, (size_t)F * sizeof(float));
            gemm_rowmajor(sgemm, 'N', 'T', c, c, F, w.q, F, w.k, F, 0.0f, w.a, C);  /* A = Q Kᵀ */
            lower_triangle(w.a, c, C);
            gemm_rowmajor(sgemm, 'N', 'N', c, Dv, c, w.a, C, vc, ldv, 0.0f, yc, ldv);      /* A V */
            gemm_rowmajor(sgemm, 'N', 'N', c, Dv, F, w.q, F, w.s, Dv, 1.0f, yc, ldv);      /* + Q S */
            for (int64_t r = 0; r < c; ++r) {
                const float *restrict ar = w.a + r * C, *restrict qr = w.q + r * F;
                float sa = 0.0f, sz = 0.0f;
#pragma omp simd reduction(+:sa)
                for (int64_t j = 0; j < c; ++j)
                    sa += ar[j];
#pragma omp simd reduction(+:sz)
                for (int64_t x = 0; x < F; ++x)
                    sz += qr[x] * w.z[x];
                const float d = sa + sz + (eps_per_query ? eps[(b * T + t0 + r) * H + h] : eps[0]);
                den[b * T + t0 + r] = d;
                float *restrict yr = yc + r * ldv;
#pragma omp simd
                for (int64_t x = 0; x < Dv; ++x)
                    yr[x] /= d;
            }
            gemm_rowmajor(sgemm, 'T', 'N', F, Dv, c, w.k, F, vc, ldv, 1.0f, w.s, Dv);      /* S += Kᵀ V */
            for (int64_t r = 0; r < c; ++r) {
                const float *restrict kr = w.k + r * F;
#pragma omp simd
                for (int64_t x = 0; x < F; ++x)
                    w.z[x] += kr[x];
            }
        }
    }
    free(w.q);
    return 0;
}

/* out rows (c × X, row stride ld) += w[r]·vecᵀ (w NULL: weight 1), then times min(feat, 1) (φ's
 * slope, feat the chunk's φ values, c × X contiguous) when phi. */
static void finish_rows(float *restrict out, int64_t c, int64_t X, int64_t ld, const float *restrict w,
                        const float *restrict vec, const float *restrict feat, int64_t phi)
{
    for (int64_t r = 0; r < c; ++r) {
        float *restrict o = out + r * ld;
        const float *restrict f = feat + r * X;
        const float weight = w ? w[r] : 1.0f;
#pragma omp simd
        for (int64_t x = 0; x < X; ++x) {
            const float value = fmaf(weight, vec[x], o[x]);
            o[x] = phi ? value * elu_slope(f[x]) : value;
        }
    }
}

int causal_backward(int64_t B, int64_t T, int64_t H, int64_t F, int64_t Dv, int64_t h, int64_t C,
                    int64_t phi, sgemm_fn sgemm, const float *q, const float *k, const float *v,
                    const float *y, const float *dy, const float *states, const float *norms,
                    const float *den, float *dq, float *dk, float *dv)
{
    scratch_t w;
    if (scratch_alloc(&w, C, F, Dv))
        return 1;
    const int64_t N = (T + C - 1) / C, ldf = H * F, ldv = H * Dv;
    for (int64_t b = 0; b < B; ++b) {
        float *R = w.s, *rvec = w.z;  /* the sums over later chunks */
        memset(R, 0, (size_t)(F * Dv) * sizeof(float));
        memset(rvec, 0, (size_t)F * sizeof(float));
        for (int64_t i = N - 1; i >= 0; --i) {
            const int64_t t0 = i * C, c = T - t0 < C ? T - t0 : C;
            const int64_t row0 = (b * T + t0) * H + h;
            const float *vc = v + row0 * Dv, *yc = y + row0 * Dv, *dyc = dy + row0 * Dv;
            const float *Si = states + (b * N + i) * F * Dv, *zi = norms + (b * N + i) * F;
            float *dqc = dq + row0 * F, *dkc = dk + row0 * F, *dvc = dv + row0 * Dv;
            load_features(w.q, q + row0 * F, c, F, ldf, phi);
            load_features(w.k, k + row0 * F, c, F, ldf, phi);
            for (int64_t r = 0; r < c; ++r) {  /* G = dy / den, g_d = −G·y */
                const float d = den[b * T + t0 + r];
                const float *restrict dyr = dyc + r * ldv, *restrict yr = yc + r * ldv;
                float *restrict gr = w.g + r * Dv;
                float dot = 0.0f;
#pragma omp simd reduction(+:dot)
                for (int64_t x = 0; x < Dv; ++x) {
                    gr[x] = dyr[x] / d;
                    dot += gr[x] * yr[x];
                }
                w.gd[r] = -dot;
            }
            gemm_rowmajor(sgemm, 'N', 'T', c, c, F, w.q, F, w.k, F, 0.0f, w.a, C);       /* A = Q Kᵀ */
            lower_triangle(w.a, c, C);
            gemm_rowmajor(sgemm, 'N', 'T', c, c, Dv, w.g, Dv, vc, ldv, 0.0f, w.m, C);     /* G Vᵀ */
            for (int64_t r = 0; r < c; ++r) {
                float *restrict mr = w.m + r * C;
                const float gd = w.gd[r];
#pragma omp simd
                for (int64_t j = 0; j <= r; ++j)
                    mr[j] += gd;
            }
            lower_triangle(w.m, c, C);                                                    /* Bm */
            gemm_rowmajor(sgemm, 'N', 'N', c, F, c, w.m, C, w.k, F, 0.0f, dqc, ldf);      /* dQ = Bm K */
            gemm_rowmajor(sgemm, 'N', 'T', c, F, Dv, w.g, Dv, Si, Dv, 1.0f, dqc, ldf);    /*   + G Sᵀ */
            finish_rows(dqc, c, F, ldf, w.gd, zi, w.q, phi);                               /*   + g_d zᵀ */
            gemm_rowmajor(sgemm, 'T', 'N', c, F, c, w.m, C, w.q, F, 0.0f, dkc, ldf);      /* dK = Bmᵀ Q */
            gemm_rowmajor(sgemm, 'N', 'T', c, F, Dv, vc, ldv, R, Dv, 1.0f, dkc, ldf);     /*   + V Rᵀ */
            finish_rows(dkc, c, F, ldf, NULL, rvec, w.k, phi);                             /*   + 1 rᵀ */
            gemm_rowmajor(sgemm, 'T', 'N', c, Dv, c, w.a, C, w.g, Dv, 0.0f, dvc, ldv);    /* dV = Aᵀ G */
            gemm_rowmajor(sgemm, 'N', 'N', c, Dv, F, w.k, F, R, Dv, 1.0f, dvc, ldv);      /*   + K R */
            gemm_rowmajor(sgemm, 'T', 'N', F, Dv, c, w.q, F, w.g, Dv, 1.0f, R, Dv);       /* R += Qᵀ G */
            for (int64_t r = 0; r < c; ++r) {                                             /* r += Qᵀ g_d */
                const float *restrict qr = w.q + r * F;
                const float gd = w.gd[r];
#pragma omp simd
                for (int64_t x = 0; x < F; ++x)
                    rvec[x] = fmaf(gd, qr[x], rvec[x]);
            }
        }
    }
    free(w.q);
    return 0;
}
