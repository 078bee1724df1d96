"""Causal linear attention on CUDA through flash-linear-attention's fused kernel (issue 10).

The result is the same as ``stripes.nn.attention.linear_attention`` (spec §3; [S] eq. 3, 5, 7):

    y_m = num_m / den_m,   num_m = Σ_{n≤m} (φ(q̃_m)·φ(k̃_n)) v_n,   den_m = φ(q̃_m)·Σ_{n≤m} φ(k̃_n) + ε

* the numerator comes from fla's Triton kernel ``fla.ops.linear_attn.chunk_linear_attn(q, k, v,
  scale=1.0, normalize=False)`` (PyPI ``fla-core``, the ``gpu`` extra: ``pip install -e '.[gpu]'``),
  which takes φ(q̃), φ(k̃) and v in the project's (B, T, H, ·) layout, accumulates its chunk states in
  float32 and returns ``scale · num`` in the input dtype;
* the denominator is computed here, in float32, with the project's ε: fla's own ``normalize=True``
  stores the running key sum Σ_{n≤m} φ(k̃_n) in the *input* dtype (bfloat16 under mixed precision:
  8 significant bits, so each stored sum is off by up to 2^-9 relative, 0.6% measured at T = 4096
  in tests/test_fla_attention.py) and adds a hard-coded 1e-10. The float32 sum uses the features
  exactly as the kernel saw them (after the cast to the kernel dtype), so numerator and denominator
  weigh the same numbers;
* feature width F and value width Dv are zero-padded to multiples of 16 (the kernels' smallest tile;
  fla asserts even widths in bf16): zero features add nothing to any dot product, so this is exact,
  and F-StrIPE1's pooled F = 2 runs on the same path as RoPEPool's 64 or RoPE's 128.

Dtype policy (issue 10): φ and the normaliser are float32; the kernel runs in bfloat16 under bf16
autocast (``trainer=gpu``: ``precision: bf16-mixed``), in float32 otherwise. float16 is refused: the
numerator reaches T·F·|v| (≈ 5·10⁵ at T = 4096, F = 128, |v| ≈ 1), beyond float16's 65504.
In float32 (``32-true``) Triton's dot products may run on TF32 tensor cores (its default on
Ampere and later): relative error ~1e-3, which ``make gpu-check`` measures (section 1).

``fla`` is imported lazily (it needs Triton and CUDA): CPU installs and CI never import it.
``select_impl`` is the dispatch rule of ``model.attention_impl`` (``auto | torch | fla``).
"""

from __future__ import annotations

import functools
import importlib
import warnings

import torch
import torch.nn.functional as F

IMPLS = ("auto", "torch", "fla")
#: The kernels' smallest tile width (fla: ``BK = max(next_power_of_2(K), 16)``).
TILE = 16
INSTALL_HINT = "install the optional extra: pip install -e '.[gpu]' (PyPI fla-core)"


@functools.lru_cache(maxsize=1)
def fla_available() -> bool:
    """True when ``fla.ops.linear_attn`` imports (fla-core and Triton installed); cached."""
    try:
        importlib.import_module("fla.ops.linear_attn")
    except Exception:  # noqa: BLE001 - ImportError, or Triton failing to initialise without a GPU
        return False
    return True


def load_kernel():
    """fla's ``chunk_linear_attn``; ImportError with the install hint when fla-core is missing."""
    try:
        return importlib.import_module("fla.ops.linear_attn").chunk_linear_attn
    except Exception as err:  # noqa: BLE001
        raise ImportError(f"stripes/nn/fla_attention.py: cannot import fla ({err}); {INSTALL_HINT}") from err


@functools.lru_cache(maxsize=None)
def _warn_fallback(device: str) -> None:
    warnings.warn(f"stripes: attention_impl=auto on {device} without fla-core: using the PyTorch "
                  f"chunked linear attention; {INSTALL_HINT} for the fused kernel", stacklevel=3)


def select_impl(impl: str, features: torch.Tensor) -> str:
    """The linear-attention implementation for these features: ``"fla"`` or ``"torch"``.

    ``auto``: fla on CUDA when fla-core imports (float32/bfloat16 features), else the PyTorch path
    (the reference, and the CPU implementation). ``torch``: always the PyTorch path. ``fla``: the
    fused kernel or an error.

    Raises:
        ValueError: unknown ``impl``, or ``fla`` asked for float64 features (Triton has no such kernel).
        RuntimeError: ``fla`` asked for features that are not on a CUDA device.
        ImportError: ``fla`` asked for and fla-core is not installed.
    """
    if impl not in IMPLS:
        raise ValueError(f"model.attention_impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch":
        return "torch"
    on_cuda = features.device.type == "cuda"
    if impl == "fla":
        if not on_cuda:
            raise RuntimeError(f"model.attention_impl=fla needs a CUDA device; the attention runs on "
                               f"{features.device} (use auto or torch there)")
        if features.dtype == torch.float64:
            raise ValueError("model.attention_impl=fla: float64 features have no fused kernel; use torch")
        if not fla_available():
            raise ImportError(f"model.attention_impl=fla: fla-core is not importable; {INSTALL_HINT}")
        return "fla"
    if not on_cuda or features.dtype == torch.float64:
        return "torch"
    if not fla_available():
        _warn_fallback(str(features.device))
        return "torch"
    return "fla"


def kernel_dtype(device_type: str) -> torch.dtype | None:
    """Autocast's lower-precision dtype when autocast is on for ``device_type`` (bfloat16 under
    ``bf16-mixed``), else None (= the features' float32). Call it *before* disabling autocast."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def causal_denominator(q_feat: torch.Tensor, k_feat: torch.Tensor,
                       eps: float | torch.Tensor) -> torch.Tensor:
    """den_m = φ(q̃_m)·Σ_{n≤m} φ(k̃_n) + ε in float32 (float64 if given), shape (B, T, H, 1).

    Args: q_feat, k_feat (B, T, H, F) non-negative features; ε added to the dot product, a float
    or a (B, T, H) tensor of per-query values (FAVOR+'s rescaled ε, ``FavorFeatureMap.features``).
    """
    acc = torch.float64 if q_feat.dtype == torch.float64 else torch.float32
    k_sum = k_feat.to(acc).cumsum(dim=1)
    if torch.is_tensor(eps):
        eps = eps.detach().to(acc).unsqueeze(-1)
    return (q_feat.to(acc) * k_sum).sum(-1, keepdim=True) + eps


def _pad_last(x: torch.Tensor, multiple: int) -> torch.Tensor:
    width = x.shape[-1]
    target = max(multiple, -(-width // multiple) * multiple)
    return x if target == width else F.pad(x, (0, target - width))


def fused_causal_linear_attention(
    q_feat: torch.Tensor,
    k_feat: torch.Tensor,
    v: torch.Tensor,
    eps: float | torch.Tensor = 1e-6,
    dtype: torch.dtype | None = None,
    kernel=None,
) -> torch.Tensor:
    """Causal linear attention: fused numerator (fla) over a float32 denominator (module docstring).

    Args:
        q_feat, k_feat: (B, T, H, F) feature-mapped queries/keys φ(q̃), φ(k̃) (non-negative).
        v: (B, T, H, Dv) values.
        eps: added to the normaliser (the project's ε, ``MultiHeadAttention.eps``).
        dtype: the kernel's dtype (``kernel_dtype``: bfloat16 under autocast); default the
            features' dtype.
        kernel: a callable with fla's ``chunk_linear_attn`` signature (default: fla's, imported now).

    Returns:
        (B, T, H, Dv) in v's dtype.

    Raises:
        ValueError: shapes that do not match, or a float16 / float64 kernel dtype.
        ImportError: fla-core is not installed (and no ``kernel`` was given).
    """
    if q_feat.dim() != 4 or q_feat.shape != k_feat.shape or v.dim() != 4 or v.shape[:3] != q_feat.shape[:3]:
        raise ValueError("stripes/nn/fla_attention.py: expects q_feat, k_feat (B,T,H,F) and v (B,T,H,Dv); "
                         f"got {tuple(q_feat.shape)}, {tuple(k_feat.shape)}, {tuple(v.shape)}")
    dtype = dtype or q_feat.dtype
    if dtype == torch.float16:
        raise ValueError("stripes/nn/fla_attention.py: float16 linear attention overflows (the running "
                         "numerator exceeds 65504 at T = 4096); use bf16-mixed or 32-true precision")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"stripes/nn/fla_attention.py: kernel dtype {dtype} not supported "
                         "(float32 or bfloat16; float64 has no kernel)")
    kernel = kernel or load_kernel()
    q, k, val = q_feat.to(dtype), k_feat.to(dtype), v.to(dtype)
    num, _ = kernel(_pad_last(q, TILE), _pad_last(k, TILE), _pad_last(val, TILE), scale=1.0, normalize=False)
    num = num[..., : v.shape[-1]].float()
    return (num / causal_denominator(q, k, eps)).to(v.dtype)
