/* Vectorisable float32 sincos shared by the native kernels (fourier.c, rotary.c, spe.c).
 *
 * Included by each kernel's .c file (native.py hashes this header into every library's cache key).
 * Needs the flags of native.py: -fno-math-errno (rintf and fmaf inline and vectorise). */

#ifndef STRIPES_SINCOS_H
#define STRIPES_SINCOS_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define INLINE static inline __attribute__((always_inline))

typedef struct { float s, c; } sincos_t;

/* x with its sign flipped where bit 31 of mask is set (mask's other bits are ignored). */
INLINE float flip_sign(float x, uint32_t mask)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits ^= mask & 0x80000000u;
    memcpy(&x, &bits, sizeof bits);
    return x;
}

/* sin and cos of a float32 angle: Cody–Waite reduction by π/2 with FMA (2 terms: the residual
 * error k·|π/2 − P1 − P2| < 1e-15·|k| is far below the rounding of the float32 angle itself), then
 * minimax polynomials on [−π/4, π/4] (Cephes sinf/cosf coefficients, ≤ 2 ulp there) and the
 * quadrant's swap and signs. Branch-free, so it vectorises. */
INLINE sincos_t sincos_f32(float a)
{
    const float two_over_pi = 0.636619772367581343f;
    const float pio2_hi = 1.57079637050628662109375f;           /* float(π/2) */
    const float pio2_lo = -4.37113900018624283e-8f;             /* float(π/2 − pio2_hi) */
    float kf = rintf(a * two_over_pi);
    int quadrant = (int)kf;
    float r = fmaf(-kf, pio2_hi, a);
    r = fmaf(-kf, pio2_lo, r);
    float r2 = r * r;
    float sp = fmaf(fmaf(fmaf(-1.9515295891e-4f, r2, 8.3321608736e-3f), r2, -1.6666654611e-1f), r2 * r, r);
    float cp = fmaf(fmaf(fmaf(fmaf(2.443315711809948e-5f, r2, -1.388731625493765e-3f), r2,
                              4.166664568298827e-2f), r2, -0.5f), r2, 1.0f);
    /* quadrant q: (sin, cos) = (sp, cp), (cp, −sp), (−sp, −cp), (−cp, sp) for q mod 4 = 0…3 */
    const int swap = quadrant & 1;
    sincos_t out = { flip_sign(swap ? cp : sp, (uint32_t)quadrant << 30),
                     flip_sign(swap ? sp : cp, (uint32_t)(quadrant + 1) << 30) };
    return out;
}

#endif /* STRIPES_SINCOS_H */
