/* The BLAS sgemm that PyTorch itself runs on the CPU, called from the native kernels.
 *
 * The caller passes the address of the Fortran-interface ``sgemm_`` exported by PyTorch's
 * libtorch_cpu (the MKL of the x86 wheels; ``stripes.kernels.native.blas_sgemm``); the Python side
 * keeps its torch.bmm path where there is none. Integer arguments are passed as pointers to int64
 * values holding small non-negative numbers: they read the same as 32-bit integers (LP64) on a
 * little-endian CPU, and as 64-bit ones (ILP64). Included by spe.c and causal_attention.c
 * (native.py hashes every header into each library's cache key). */

#ifndef STRIPES_BLAS_H
#define STRIPES_BLAS_H

#include <stdint.h>

typedef void (*sgemm_fn)(const char *transa, const char *transb, const void *m, const void *n, const void *k,
                         const float *alpha, const float *a, const void *lda, const float *b, const void *ldb,
                         const float *beta, float *c, const void *ldc);

/* Row-major C (M × N, row stride ldc) = op(A) · op(B) + beta·C, op(X) = X ('N') or Xᵀ ('T'); A is
 * stored M × K (or K × M for 'T') with row stride lda, B K × N (or N × K) with row stride ldb.
 * A row-major matrix is the column-major transpose, so this is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ:
 * sgemm with the operands swapped and the same flags. */
static inline void gemm_rowmajor(sgemm_fn sgemm, char ta, char tb, int64_t M, int64_t N, int64_t K,
                                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                                 float *C, int64_t ldc)
{
    const float one = 1.0f;
    sgemm(&tb, &ta, &N, &M, &K, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

#endif
