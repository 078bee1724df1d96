/* φ = elu + 1 in float32 for the native kernels (causal_attention.c).
 * Needs the flags of native.py: -fno-math-errno (rintf and fmaf inline and vectorise). */

#ifndef STRIPES_ELU_H
#define STRIPES_ELU_H

#include <stdint.h>
#include <math.h>

#ifndef INLINE
#define INLINE static inline __attribute__((always_inline))
#endif

/* exp(x) for x ≤ 0 in float32: x = n·ln2 + r with n = rint(x/ln2) (Cody–Waite, two FMA terms),
 * |r| ≤ ln2/2, exp(r) = 1 + r + r²·p(r) with Cephes' expf minimax coefficients (≤ 2 ulp relative
 * against the float64 exp, tests/test_causal_attention_kernel.py), times 2^n built in the exponent
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

/* φ(x) = elu(x) + 1 = max(x, 0) + exp(min(x, 0)). max and min are written as comparisons (GCC
 * does not vectorise fmaxf/fminf without -ffinite-math-only), ordered so that a NaN input gives a
 * NaN φ, as torch.clamp does. */
INLINE float elu_plus_one(float x)
{
    return (x < 0.0f ? 0.0f : x) + exp_nonpositive(x < 0.0f ? x : 0.0f);
}

/* dφ/dx = min(φ, 1) from φ's output (a NaN stays NaN). */
INLINE float elu_slope(float phi)
{
    return phi > 1.0f ? 1.0f : phi;
}

#endif
