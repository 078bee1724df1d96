/* Fused CPU kernel of pooled F-StrIPE features ([F] eq. 6 and 9, pooled as SPE's eq. 7).
 *
 * Layouts (float32, C-contiguous; N tokens = B·T, H heads, D dims, NF frequencies, P position dims):
 *   pos (N, P); q, k (N, H, D); outputs qt, kt (N, H, 2NF) with slot 2w = cos, 2w+1 = sin;
 *   freq (H, P, NF, D) = 2π f (radians per label unit); g, gc, gs, ct, st (H, NF, D).
 * With a = Σ_p pos_p freq_p (the key-side angle, θ = 0) one sincos per (token, head, d, w) serves
 * both sides: the query side is cos(a + θ) = c cosθ − s sinθ, sin(a + θ) = s cosθ + c sinθ.
 *   kt[2w] = Σ_d k_d g c,          kt[2w+1] = Σ_d k_d g s
 *   qt[2w] = Σ_d q_d (gc c − gs s), qt[2w+1] = Σ_d q_d (gc s + gs c)    (gc = g cosθ, gs = g sinθ)
 * Vectorised over d (the innermost, contiguous axis; checked with objdump: 512-bit vrndscaleps,
 * vcvttps2dq, vfmadd on zmm registers under -march=native on AVX-512): the forward by the
 * auto-vectoriser (its sums over d need the reassociation native.py allows), the backward with
 * #pragma omp simd. Single-threaded. The sincos is sincos.h's (shared with rotary.c). */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "sincos.h"

/* Tokens accumulated in float32 before the parameter-gradient sums are added into float64. */
#define FLUSH_TOKENS 64

/* angles[j] = Σ_p pos_p F[p·stride + j] for j < stride (P > 1: one pass per non-zero pos_p, so
 * binary positions such as BIN's 12-d chroma cost one pass per active pitch class). */
INLINE void angles_into(float *angles, const float *pn, const float *F, int64_t stride, int64_t P)
{
    for (int64_t j = 0; j < stride; ++j)
        angles[j] = 0.f;
    for (int64_t p = 0; p < P; ++p) {
        if (pn[p] == 0.f)
            continue;
        for (int64_t j = 0; j < stride; ++j)
            angles[j] = fmaf(pn[p], F[p * stride + j], angles[j]);
    }
}

INLINE void forward_body(int64_t N, int64_t H, int64_t D, int64_t NF, int64_t P,
                         const float *pos, const float *freq, const float *g,
                         const float *gc, const float *gs, const float *q, const float *k,
                         float *qt, float *kt, float *angles, const int has_q, const int has_k, const int one_pos)
{
    const int64_t stride = NF * D;
    for (int64_t h = 0; h < H; ++h) {
        const float *Fh = freq + h * P * stride;
        const float *gh = g + h * stride, *gch = gc + h * stride, *gsh = gs + h * stride;
        for (int64_t n = 0; n < N; ++n) {
            const float *pn = pos + n * P;
            const float *qn = has_q ? q + (n * H + h) * D : 0;
            const float *kn = has_k ? k + (n * H + h) * D : 0;
            float *qo = has_q ? qt + (n * H + h) * 2 * NF : 0;
            float *ko = has_k ? kt + (n * H + h) * 2 * NF : 0;
            if (!one_pos)
                angles_into(angles, pn, Fh, stride, P);
            for (int64_t w = 0; w < NF; ++w) {
                const float *Fw = Fh + w * D, *aw = angles + w * D;
                const float *gw = gh + w * D, *gcw = gch + w * D, *gsw = gsh + w * D;
                float qc = 0.f, qs = 0.f, kc = 0.f, ks = 0.f;

                for (int64_t d = 0; d < D; ++d) {
                    const sincos_t sc = sincos_f32(one_pos ? pn[0] * Fw[d] : aw[d]);
                    const float s = sc.s, c = sc.c;
                    if (has_k) {
                        float kg = kn[d] * gw[d];
                        kc += kg * c;
                        ks += kg * s;
                    }
                    if (has_q) {
                        float u = qn[d] * gcw[d], v = qn[d] * gsw[d];
                        qc += u * c - v * s;
                        qs += u * s + v * c;
                    }
                }
                if (has_q) { qo[2 * w] = qc; qo[2 * w + 1] = qs; }
                if (has_k) { ko[2 * w] = kc; ko[2 * w + 1] = ks; }
            }
        }
    }
}

/* Forward: q or k may be NULL (that side is skipped). Returns 0, or 1 if scratch allocation failed. */
int fourier_forward(int64_t N, int64_t H, int64_t D, int64_t NF, int64_t P,
                    const float *pos, const float *freq, const float *g,
                    const float *gc, const float *gs, const float *q, const float *k,
                    float *qt, float *kt)
{
    float *angles = (float *)aligned_alloc(64, ((sizeof(float) * NF * D + 63) / 64) * 64);
    if (!angles)
        return 1;
#define FWD(HQ, HK, PP) forward_body(N, H, D, NF, PP, pos, freq, g, gc, gs, q, k, qt, kt, angles, HQ, HK, PP == 1)
    if (q && k) { if (P == 1) FWD(1, 1, 1); else FWD(1, 1, P); }
    else if (q) { if (P == 1) FWD(1, 0, 1); else FWD(1, 0, P); }
    else if (k) { if (P == 1) FWD(0, 1, 1); else FWD(0, 1, P); }
#undef FWD
    free(angles);
    return 0;
}

/* Backward, given the upstream gradients gq, gk (N, H, 2NF) of qt, kt:
 *   dq_d = Σ_w g (gq_c C' + gq_s S'),  C' = cos(a+θ) = ct c − st s, S' = sin(a+θ) = st c + ct s
 *   dk_d = Σ_w g (gk_c c + gk_s s)
 *   dL/da (query) = q_d g (gq_s C' − gq_c S'),  dL/da (key) = k_d g (gk_s c − gk_c s)
 *   dgain = Σ_n [q_d (gq_c C' + gq_s S') + k_d (gk_c c + gk_s s)],  dphase = Σ_n dL/da (query)
 *   dfreq_p = Σ_n pos_p (dL/da (query) + dL/da (key))          (w.r.t. freq = 2π f)
 * The parameter sums run over tokens in float32 blocks of FLUSH_TOKENS added into the float64
 * outputs dfreq (H, P, NF, D), dphase and dgain (H, NF, D), which are overwritten.
 * Returns 0, or 1 if the scratch allocation failed. */
INLINE void backward_body(int64_t N, int64_t H, int64_t D, int64_t NF, int64_t P,
                          const float *pos, const float *freq, const float *g,
                          const float *ct, const float *st, const float *q, const float *k,
                          const float *gq, const float *gk, float *dq, float *dk,
                          double *dfreq, double *dphase, double *dgain, float *acc,
                          float *angles, float *dangles, float *dqb, const int has_q, const int has_k,
                          const int one_pos)
{
    const int64_t stride = NF * D;
    float *af = acc, *ath = acc + P * stride, *ag = acc + (P + 1) * stride;
    float *dkb = dqb + D;
    for (int64_t h = 0; h < H; ++h) {
        const float *Fh = freq + h * P * stride;
        const float *gh = g + h * stride, *cth = ct + h * stride, *sth = st + h * stride;
        double *df = dfreq + h * P * stride, *dth = dphase + h * stride, *dg = dgain + h * stride;
        memset(acc, 0, sizeof(float) * (P + 2) * stride);
        for (int64_t n = 0; n < N; ++n) {
            const float *pn = pos + n * P;
            const float *qn = has_q ? q + (n * H + h) * D : 0;
            const float *kn = has_k ? k + (n * H + h) * D : 0;
            const float *gqn = has_q ? gq + (n * H + h) * 2 * NF : 0;
            const float *gkn = has_k ? gk + (n * H + h) * 2 * NF : 0;
            memset(dqb, 0, sizeof(float) * 2 * D);
            if (!one_pos)
                angles_into(angles, pn, Fh, stride, P);
            for (int64_t w = 0; w < NF; ++w) {
                const float *Fw = Fh + w * D, *aw = angles + w * D;
                float *daw = dangles + w * D;
                const float *gw = gh + w * D, *ctw = cth + w * D, *stw = sth + w * D;
                float *afw = af + w * D, *athw = ath + w * D, *agw = ag + w * D;
                const float gqc = has_q ? gqn[2 * w] : 0.f, gqs = has_q ? gqn[2 * w + 1] : 0.f;
                const float gkc = has_k ? gkn[2 * w] : 0.f, gks = has_k ? gkn[2 * w + 1] : 0.f;
#pragma omp simd
                for (int64_t d = 0; d < D; ++d) {
                    const sincos_t sc = sincos_f32(one_pos ? pn[0] * Fw[d] : aw[d]);
                    const float s = sc.s, c = sc.c;
                    float dang = 0.f, dgain_nd = 0.f;
                    if (has_q) {
                        float cq = ctw[d] * c - stw[d] * s, sq = stw[d] * c + ctw[d] * s;
                        float e = gqc * cq + gqs * sq;
                        float qg = qn[d] * gw[d];
                        dqb[d] += gw[d] * e;
                        dgain_nd += qn[d] * e;
                        float da = qg * (gqs * cq - gqc * sq);
                        athw[d] += da;
                        dang += da;
                    }
                    if (has_k) {
                        float e = gkc * c + gks * s;
                        dkb[d] += gw[d] * e;
                        dgain_nd += kn[d] * e;
                        dang += kn[d] * gw[d] * (gks * c - gkc * s);
                    }
                    agw[d] += dgain_nd;
                    if (one_pos)
                        afw[d] = fmaf(pn[0], dang, afw[d]);
                    else
                        daw[d] = dang;
                }
            }
            if (has_q) memcpy(dq + (n * H + h) * D, dqb, sizeof(float) * D);
            if (has_k) memcpy(dk + (n * H + h) * D, dkb, sizeof(float) * D);
            for (int64_t p = 0; !one_pos && p < P; ++p)
                if (pn[p] != 0.f)
                    for (int64_t j = 0; j < stride; ++j)
                        af[p * stride + j] = fmaf(pn[p], dangles[j], af[p * stride + j]);
            if ((n + 1) % FLUSH_TOKENS == 0 || n + 1 == N) {
                for (int64_t i = 0; i < P * stride; ++i) df[i] += af[i];
                for (int64_t i = 0; i < stride; ++i) { dth[i] += ath[i]; dg[i] += ag[i]; }
                memset(acc, 0, sizeof(float) * (P + 2) * stride);
            }
        }
    }
}

int fourier_backward(int64_t N, int64_t H, int64_t D, int64_t NF, int64_t P,
                     const float *pos, const float *freq, const float *g,
                     const float *ct, const float *st, const float *q, const float *k,
                     const float *gq, const float *gk, float *dq, float *dk,
                     double *dfreq, double *dphase, double *dgain)
{
    const size_t block = ((sizeof(float) * NF * D + 63) / 64) * 64;  /* bytes, 64-aligned */
    float *acc = (float *)aligned_alloc(64, block * (P + 4) + ((sizeof(float) * 2 * D + 63) / 64) * 64);
    if (!acc)
        return 1;
    float *angles = (float *)((char *)acc + block * (P + 2)), *dangles = (float *)((char *)acc + block * (P + 3));
    float *dqb = (float *)((char *)acc + block * (P + 4));  /* (2, D): dq and dk of one token */
    /* zero sums even when no side runs (N = 0: empty tensors may come with NULL data pointers) */
    memset(dfreq, 0, sizeof(double) * H * P * NF * D);
    memset(dphase, 0, sizeof(double) * H * NF * D);
    memset(dgain, 0, sizeof(double) * H * NF * D);
#define BWD(HQ, HK, PP) backward_body(N, H, D, NF, PP, pos, freq, g, ct, st, q, k, gq, gk, dq, dk, \
                                      dfreq, dphase, dgain, acc, angles, dangles, dqb, HQ, HK, \
                                      PP == 1)
    if (q && k) { if (P == 1) BWD(1, 1, 1); else BWD(1, 1, P); }
    else if (q) { if (P == 1) BWD(1, 0, 1); else BWD(1, 0, P); }
    else if (k) { if (P == 1) BWD(0, 1, 1); else BWD(0, 1, P); }
#undef BWD
    free(acc);
    return 0;
}
