/* Fused CPU kernel of sineSPE's elementwise work ([L] eq. 6–7 with the gate; stripes/pe/spe_codes.py)
 * for one chunk of C tokens and up to two sides (queries, keys) at once.
 *
 * Layouts (float32, C-contiguous; H heads, K sines, D dims, P position dims, KD = K·D,
 * W = (2K + G)·D with G = 1 when gated, else 0):
 *   pos (C, P); omega (H, P, KD) angular frequencies (k, d) with d fastest; x, dx (C, H, D) (rows
 *   of the caller's (N, H, D) tensors: a pointer to the chunk's first token); codes / dcodes
 *   (H, C, W) laid out [cos (k, d) | sin (k, d) | gate (d)], the buffers of the caller's bmm.
 * For every (head h, token c): a_kd = Σ_p pos_p ω[h, p, kd] (float32, like the PyTorch path's bmm)
 * and ONE sincos per (k, d) (sincos.h) serves both sides. The query phases are folded into the
 * noise rows by the caller, so the sides differ only in x.
 *
 * Forward: codes[h, c] = [x_d cos a_kd | x_d sin a_kd | x_d].
 * Backward, from dcodes = (dC, dS, dE) = g z'ᵀ (the caller's bmm) and the row scales s (H, K, D),
 * t (H, D) (NULL without the gate):
 *   w = dC cos a + dS sin a,  v = dS cos a − dC sin a,  dx_d = Σ_k s_kd w_kd + t_d dE_d,
 * and the token sums of the side, added into sums (H, P + 1, W) float64 (accumulated in float32
 * over the chunk first): row p < P, columns KD…2KD: Σ_c pos_p x v; row P: [Σ x w | Σ x v | Σ x dE].
 * (Row p < P, columns outside KD…2KD are left alone.)
 * Tokens are the outer loop (x and dx are read / written sequentially; heads inner), and with
 * AVX-512, D a multiple of 16 and 64-byte aligned dx rows, dx is written with non-temporal stores
 * (it is not read again here: no read-for-ownership). Measured at T = 8192, H = 4, D = 128, K = 1,
 * both sides, 64 chunks of 128 tokens: forward 9 → 8 ms, backward 15 → 10 ms against heads outer
 * and plain stores (interleaved, best of 7, 2-core Xeon). Single-threaded. */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "sincos.h"
#include "blas.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define SPE_AVX512 1
#else
#define SPE_AVX512 0
#endif

/* dst = src (D floats), with non-temporal stores when STREAM (AVX-512, D % 16 == 0, dst 64-byte
 * aligned): dx is not read again by this kernel, so its lines skip the read-for-ownership. */
INLINE void put_row(float *restrict dst, const float *restrict src, int64_t D, const int STREAM)
{
#if SPE_AVX512
    if (STREAM) {
        for (int64_t d = 0; d < D; d += 16)
            _mm512_stream_ps(dst + d, _mm512_loadu_ps(src + d));
        return;
    }
#endif
    (void)STREAM;
    memcpy(dst, src, sizeof(float) * D);
}

/* cos a (KD) and sin a (KD) of token pn for head h's frequencies om (P, KD); a is KD scratch. */
INLINE void angles(float *restrict cs, float *restrict sn, float *restrict a, const float *restrict pn,
                   const float *restrict om, int64_t KD, int64_t P)
{
    if (P == 1) {
        const float p0 = pn[0];
#pragma omp simd
        for (int64_t i = 0; i < KD; ++i)
            a[i] = p0 * om[i];
    } else {
        memset(a, 0, sizeof(float) * KD);
        for (int64_t p = 0; p < P; ++p) {
            if (pn[p] == 0.f)
                continue;
            const float pp = pn[p];
#pragma omp simd
            for (int64_t i = 0; i < KD; ++i)
                a[i] = fmaf(pp, om[p * KD + i], a[i]);
        }
    }
#pragma omp simd
    for (int64_t i = 0; i < KD; ++i) {
        const sincos_t sc = sincos_f32(a[i]);
        cs[i] = sc.c;
        sn[i] = sc.s;
    }
}

INLINE void encode(float *restrict out, const float *restrict x, const float *restrict cs,
                   const float *restrict sn, int64_t K, int64_t D, int gated)
{
    const int64_t KD = K * D;
    for (int64_t k = 0; k < K; ++k) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
            out[k * D + d] = x[d] * cs[k * D + d];
            out[KD + k * D + d] = x[d] * sn[k * D + d];
        }
    }
    if (gated)
        memcpy(out + 2 * KD, x, sizeof(float) * D);
}

/* Forward for one chunk; xk / ck may be NULL (one side). Returns 0, or 1 if scratch allocation failed. */
int spe_forward(int64_t C, int64_t H, int64_t K, int64_t D, int64_t P, int64_t gated,
                const float *pos, const float *omega, const float *xq, const float *xk,
                float *cq, float *ck)
{
    const int64_t KD = K * D, W = (2 * K + (gated ? 1 : 0)) * D;
    float *scratch = (float *)malloc(sizeof(float) * 3 * KD);
    if (!scratch)
        return 1;
    float *cs = scratch, *sn = scratch + KD, *a = scratch + 2 * KD;
    for (int64_t c = 0; c < C; ++c)  /* tokens outer: x is read sequentially */
        for (int64_t h = 0; h < H; ++h) {
            angles(cs, sn, a, pos + c * P, omega + h * P * KD, KD, P);
            const int64_t at = (c * H + h) * D, row = (h * C + c) * W;
            encode(cq + row, xq + at, cs, sn, K, D, (int)gated);
            if (xk)
                encode(ck + row, xk + at, cs, sn, K, D, (int)gated);
        }
    free(scratch);
    return 0;
}

/* One side's backward for token c of head h (module comment); acc: (P + 1, W) float32 of head h,
 * xv: KD scratch (x v for the position rows when P > 1). One pass over (k, d) computes w, v, dx and
 * the row-P sums (and with P = 1 the position row). */
INLINE void decode(float *restrict dx, float *restrict acc, float *restrict xv, const float *restrict dc,
                   const float *restrict x, const float *restrict pn, const float *restrict cs,
                   const float *restrict sn, const float *restrict sh, const float *restrict th,
                   int64_t K, int64_t D, int64_t P, int64_t W,
                   const int HAS_DX, const int GATED, const int P1, float *restrict dxs, const int STREAM)
{
    const int64_t KD = K * D;
    const float *restrict dE = dc + 2 * KD;
    float *restrict one = acc + P * W;
    const float p0 = pn[0];
    for (int64_t k = 0; k < K; ++k) {
        const float *restrict dC = dc + k * D, *restrict dS = dc + KD + k * D;
        const float *restrict ck = cs + k * D, *restrict sk = sn + k * D, *restrict sc = sh + k * D;
        float *restrict ow = one + k * D, *restrict ov = one + KD + k * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
            const float w = dC[d] * ck[d] + dS[d] * sk[d], v = dS[d] * ck[d] - dC[d] * sk[d];
            const float xw = x[d] * w, xvd = x[d] * v;
            ow[d] += xw;
            ov[d] += xvd;
            if (P1)
                acc[KD + k * D + d] = fmaf(p0, xvd, acc[KD + k * D + d]);
            else
                xv[k * D + d] = xvd;
            if (HAS_DX) {
                const float base = k ? dxs[d] : (GATED ? th[d] * dE[d] : 0.f);
                dxs[d] = fmaf(sc[d], w, base);
            }
        }
    }
    if (HAS_DX)
        put_row(dx, dxs, D, STREAM);
    if (GATED) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d)
            one[2 * KD + d] += x[d] * dE[d];
    }
    for (int64_t p = 0; !P1 && p < P; ++p) {
        if (pn[p] == 0.f)
            continue;
        const float pp = pn[p];
        float *restrict row = acc + p * W + KD;
#pragma omp simd
        for (int64_t i = 0; i < KD; ++i)
            row[i] = fmaf(pp, xv[i], row[i]);
    }
}

/* Backward for one chunk. Side q: dcq (H, C, W), xq, dxq (C, H, D) (dxq may be NULL: no gradient of
 * x wanted), sums_q (H, P + 1, W) float64 (added into); dcq NULL skips the side. Likewise side k.
 * sh: s (H, K, D); th: t (H, D) or NULL (ungated). Returns 0, or 1 if scratch allocation failed. */
int spe_backward(int64_t C, int64_t H, int64_t K, int64_t D, int64_t P,
                 const float *pos, const float *omega, const float *sh, const float *th,
                 const float *dcq, const float *xq, float *dxq, double *sums_q,
                 const float *dck, const float *xk, float *dxk, double *sums_k)
{
    const int64_t KD = K * D, W = (2 * K + (th ? 1 : 0)) * D, A = (P + 1) * W;
    float *scratch = (float *)malloc(sizeof(float) * (5 * KD + D + 2 * H * A));
    if (!scratch)
        return 1;
    float *cs = scratch, *sn = scratch + KD, *a = scratch + 2 * KD, *wv = scratch + 3 * KD;
    float *dxs = scratch + 5 * KD, *acc_q = dxs + D, *acc_k = acc_q + H * A;  /* (H, P + 1, W) each */
    memset(acc_q, 0, sizeof(float) * 2 * H * A);
    const int stream = SPE_AVX512 && D % 16 == 0 && (uintptr_t)dxq % 64 == 0 && (uintptr_t)dxk % 64 == 0;
    for (int64_t c = 0; c < C; ++c) {  /* tokens outer: x and dx are streamed sequentially */
        const float *pn = pos + c * P;
        for (int64_t h = 0; h < H; ++h) {
            const float *sh_h = sh + h * KD, *th_h = th ? th + h * D : 0;
            float *aq = acc_q + h * A, *ak = acc_k + h * A;
            angles(cs, sn, a, pn, omega + h * P * KD, KD, P);
            const int64_t at = (c * H + h) * D, row = (h * C + c) * W;
            /* literal flags: the inlined loops carry no branch */
#define SIDE(DC, X, DX, ACC, ST)                                                                      \
            if (DC) {                                                                               \
                float *dxp = DX ? DX + at : 0;                                                      \
                const float *dcp = DC + row, *xp = X + at;                                          \
                if (P == 1) {                                                                       \
                    if (DX) { if (th_h) decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 1, 1, 1, dxs, ST); \
                              else decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 1, 0, 1, dxs, ST); }      \
                    else { if (th_h) decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 0, 1, 1, dxs, ST); \
                           else decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 0, 0, 1, dxs, ST); }    \
                } else {                                                                            \
                    if (DX) { if (th_h) decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 1, 1, 0, dxs, ST); \
                              else decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 1, 0, 0, dxs, ST); }      \
                    else { if (th_h) decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 0, 1, 0, dxs, ST); \
                           else decode(dxp, ACC, wv, dcp, xp, pn, cs, sn, sh_h, th_h, K, D, P, W, 0, 0, 0, dxs, ST); }    \
                }                                                                                   \
            }
            if (stream) { SIDE(dcq, xq, dxq, aq, 1) } else { SIDE(dcq, xq, dxq, aq, 0) }
            if (stream) { SIDE(dck, xk, dxk, ak, 1) } else { SIDE(dck, xk, dxk, ak, 0) }
#undef SIDE
        }
    }
#if SPE_AVX512
    _mm_sfence();  /* the streamed dx lines are globally visible before the caller reads them */
#endif
    for (int64_t i = 0; i < H * A; ++i) {
        if (dcq)
            sums_q[i] += acc_q[i];
        if (dck)
            sums_k[i] += acc_k[i];
    }
    free(scratch);
    return 0;
}

/* ---- Whole passes: the chunk loop with its noise products, so Python makes one call per pass ----
 *
 * The products of the codes with the noise rows go to the BLAS sgemm the caller passes (PyTorch's
 * own MKL: the same routine, hence the same numbers, as the torch.bmm of the per-chunk Python loop
 * in stripes/pe/spe_native.py; blas.h gives the calling convention). Fortran interface,
 * column-major: a row-major product Y = X Z is computed as Yᵀ = Zᵀ Xᵀ. Per chunk of C tokens (the last may be shorter):
 *   forward:  codes (H, c, W) of both sides (spe_forward), then out[n, h, :] = codes[h, n] · z[h]
 *             for every head and side, written into the (N, H, R) outputs (row stride H·R);
 *   backward: dcodes[h, n] = g[n, h, :] · z'[h]ᵀ for every head and side with a gradient (z' the
 *             rotated, unscaled rows, (H, W, R)), then spe_backward.
 * The codes / dcodes buffers are the caller's (H, C, W) scratch, one per side. Measured at T = 8192,
 * one thread, both sides, forward + backward of the PE: 76–83 → 65–70 ms against the same chunks
 * looped over in Python with torch.bmm (interleaved, best of 30). */


/* Row-major out (c × R, row stride ldo) = codes (c × W, contiguous) · z (W × R, contiguous). */
static void codes_times_rows(sgemm_fn sgemm, int64_t c, int64_t W, int64_t R, const float *codes,
                             const float *z, float *out, int64_t ldo)
{
    const int64_t m = R, n = c, k = W, lda = R, ldb = W;
    const float one = 1.f, zero = 0.f;
    sgemm("N", "N", &m, &n, &k, &one, z, &lda, codes, &ldb, &zero, out, &ldo);
}

/* Row-major dcodes (c × W, contiguous) = g (c × R, row stride ldg) · zᵀ, z (W × R contiguous). */
static void grads_times_rows(sgemm_fn sgemm, int64_t c, int64_t W, int64_t R, const float *g, int64_t ldg,
                             const float *z, float *dcodes)
{
    const int64_t m = W, n = c, k = R, lda = R, ldc = W;
    const float one = 1.f, zero = 0.f;
    sgemm("T", "N", &m, &n, &k, &one, z, &lda, g, &ldg, &zero, dcodes, &ldc);
}

/* Forward of all N tokens in chunks of C. xk, zk, ok, ck NULL: one side. zq, zk: (H, W, R) scaled
 * (and, for queries, rotated) rows; oq, ok: (N, H, R) outputs; cq, ck: (H, C, W) scratch.
 * Returns 0, or 1 if a scratch allocation failed. */
int spe_forward_chunks(int64_t N, int64_t C, int64_t H, int64_t K, int64_t D, int64_t P, int64_t R,
                       int64_t gated, const float *pos, const float *omega, const float *xq,
                       const float *xk, const float *zq, const float *zk, float *oq, float *ok,
                       float *cq, float *ck, void *sgemm)
{
    const int64_t W = (2 * K + (gated ? 1 : 0)) * D;
    for (int64_t start = 0; start < N; start += C) {
        const int64_t c = N - start < C ? N - start : C;
        if (spe_forward(c, H, K, D, P, gated, pos + start * P, omega, xq + start * H * D,
                        xk ? xk + start * H * D : 0, cq, ck))
            return 1;
        for (int64_t h = 0; h < H; ++h) {
            codes_times_rows((sgemm_fn)sgemm, c, W, R, cq + h * c * W, zq + h * W * R, oq + (start * H + h) * R, H * R);
            if (xk)
                codes_times_rows((sgemm_fn)sgemm, c, W, R, ck + h * c * W, zk + h * W * R, ok + (start * H + h) * R, H * R);
        }
    }
    return 0;
}

/* Backward of all N tokens in chunks of C. Per side: g (N, H, R) upstream gradient or NULL (side
 * skipped), z' (H, W, R) rotated unscaled rows, x and dx (N, H, D) (dx NULL: no gradient of x),
 * sums (H, P + 1, W) float64 (added into), dc (H, C, W) scratch. sh, th as in spe_backward.
 * Returns 0, or 1 if a scratch allocation failed. */
int spe_backward_chunks(int64_t N, int64_t C, int64_t H, int64_t K, int64_t D, int64_t P, int64_t R,
                        const float *pos, const float *omega, const float *sh, const float *th,
                        const float *gq, const float *zq, const float *xq, float *dxq, double *sums_q, float *dcq,
                        const float *gk, const float *zk, const float *xk, float *dxk, double *sums_k, float *dck,
                        void *sgemm)
{
    const int64_t W = (2 * K + (th ? 1 : 0)) * D;
    for (int64_t start = 0; start < N; start += C) {
        const int64_t c = N - start < C ? N - start : C, at = start * H * D;
        for (int64_t h = 0; h < H; ++h) {
            if (gq)
                grads_times_rows((sgemm_fn)sgemm, c, W, R, gq + (start * H + h) * R, H * R, zq + h * W * R, dcq + h * c * W);
            if (gk)
                grads_times_rows((sgemm_fn)sgemm, c, W, R, gk + (start * H + h) * R, H * R, zk + h * W * R, dck + h * c * W);
        }
        if (spe_backward(c, H, K, D, P, pos + start * P, omega, sh, th,
                         gq ? dcq : 0, xq ? xq + at : 0, gq && dxq ? dxq + at : 0, sums_q,
                         gk ? dck : 0, xk ? xk + at : 0, gk && dxk ? dxk + at : 0, sums_k))
            return 1;
    }
    return 0;
}
