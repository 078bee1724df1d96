"""The causal encoder Transformer used for melody harmonization [S §IV-C].

Architecture (spec §5; the authors' ICASSP-2024 code is the closest public evidence):

    x (B,T,256) ─► Linear(256→d_model) ─► L × post-LN encoder layer ─► Linear(d_model→384) ─► logits

Each encoder layer is post-LN, as `torch.nn.TransformerEncoderLayer(norm_first=False)`:

    h = LayerNorm(x + Dropout(Attention(x, pos)))
    y = LayerNorm(h + Dropout(W₂ Dropout(ReLU(W₁ h))))

`Attention` is `stripes.nn.attention.MultiHeadAttention` (kind "linear" = causal linear attention,
the paper's setting, or "softmax" = causal SDPA, a reference that is not one of the paper's methods).
The positional encoding (PE) enters only through the attention's query/key feature transform; the
positions `pos` come from the batch's context (TIME / REP / KEY / BIN, spec §2).

One PE module or one per layer (`share_pe`): [F] Table II counts the added parameters of SPE and
F-StrIPE as O(h·d·N_f), with no factor ℓ (number of layers), while the runtime memory is
O(ℓ·t·h·d·N_f). So the PE parameters (the learnable frequencies) are shared by all layers and the
transform is recomputed in each layer. `share_pe=True` is therefore the default; `False` gives each
layer its own PE (an option, not a paper setting).

No Lightning or Hydra import here: the model is plain PyTorch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from stripes.nn.attention import MultiHeadAttention
from stripes.pe import build_pe


class EncoderLayer(nn.Module):
    """One post-LN causal encoder layer: attention sublayer then feed-forward sublayer."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        pe: nn.Module,
        attention: str = "linear",
        feature_map: str = "elu",
        attention_impl: str = "auto",
        feature_map_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(
            d_model, num_heads, pe, kind=attention, feature_map=feature_map, dropout=0.0,
            attention_impl=attention_impl,
            feature_map_options=dict(feature_map_options or {}),
        )
        self.norm_attention = nn.LayerNorm(d_model)
        self.norm_feedforward = nn.LayerNorm(d_model)
        self.feedforward_in = nn.Linear(d_model, d_ff)
        self.feedforward_out = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, causal: bool = True) -> torch.Tensor:
        x = self.norm_attention(x + self.dropout(self.attention(x, pos, causal=causal)))
        hidden = self.dropout(torch.relu(self.feedforward_in(x)))
        return self.norm_feedforward(x + self.dropout(self.feedforward_out(hidden)))


def feature_map_config(model_cfg: Any) -> dict:
    """φ's options from ``model``: ``model.favor`` (num_features, redraw) when φ is FAVOR+, else {}."""
    if str(model_cfg.get("feature_map", "elu")) != "favor":
        return {}
    favor = model_cfg.get("favor", None) or {}
    return {str(k): v for k, v in dict(favor).items()}


class HarmonizationTransformer(nn.Module):
    """Causal encoder mapping melody ⊕ bridge (256) to logits for melody ⊕ bridge ⊕ piano (384).

    Args:
        pe_name: registry key of the positional encoding (`stripes.pe.build_pe`).
        pos_dim: width P of the positions (1 for TIME/REP/KEY, 12 for BIN).
        pe_options: keyword arguments for the PE constructor (conf/pe/<name>.yaml `options`).
        input_dim, output_dim: 256 and 384 in the paper.
        d_model, num_heads, num_layers, d_ff, dropout: spec §5 (512, 4, 2, 512, 0.1).
        attention: "linear" (paper) or "softmax" (reference baseline).
        feature_map: φ of the linear attention ("elu" = elu + 1, spec §3, or "favor" = FAVOR+).
        feature_map_options: keyword arguments of φ (FAVOR+: ``num_features`` M, ``redraw``).
        share_pe: one PE module for all layers (default, see module docstring) or one per layer.
        attention_impl: linear-attention implementation, "auto" (fused fla kernel on CUDA when
            installed, else PyTorch), "torch" or "fla" (`stripes.nn.fla_attention.select_impl`).
    """

    def __init__(
        self,
        pe_name: str,
        pos_dim: int,
        pe_options: Mapping[str, Any] | None = None,
        input_dim: int = 256,
        output_dim: int = 384,
        d_model: int = 512,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int = 512,
        dropout: float = 0.1,
        attention: str = "linear",
        feature_map: str = "elu",
        share_pe: bool = True,
        attention_impl: str = "auto",
        feature_map_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"HarmonizationTransformer: d_model={d_model} is not divisible by num_heads={num_heads}"
            )
        if attention not in ("linear", "softmax"):
            raise ValueError(f"HarmonizationTransformer: attention must be 'linear' or 'softmax', got {attention!r}")
        self.pos_dim = int(pos_dim)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        head_dim = d_model // num_heads
        options = dict(pe_options or {})

        def make_pe() -> nn.Module:
            return build_pe(pe_name, num_heads, head_dim, self.pos_dim, **options)

        shared = make_pe() if share_pe else None
        self.input_projection = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(
            EncoderLayer(
                d_model,
                num_heads,
                d_ff,
                dropout,
                shared if share_pe else make_pe(),
                attention=attention,
                feature_map=feature_map,
                attention_impl=attention_impl,
                feature_map_options=feature_map_options,
            )
            for _ in range(num_layers)
        )
        self.output_projection = nn.Linear(d_model, output_dim)

    @classmethod
    def from_config(cls, cfg: Any) -> "HarmonizationTransformer":
        """Build from a composed config with nodes `model`, `pe` and `context` (conf/train.yaml)."""
        model = cfg.model
        options = cfg.pe.get("options", None) or {}
        return cls(
            pe_name=str(cfg.pe.name),
            pos_dim=int(cfg.context.pos_dim),
            pe_options={str(k): v for k, v in dict(options).items()},
            input_dim=int(model.input_dim),
            output_dim=int(model.output_dim),
            d_model=int(model.d_model),
            num_heads=int(model.num_heads),
            num_layers=int(model.num_layers),
            d_ff=int(model.d_ff),
            dropout=float(model.dropout),
            attention=str(model.attention),
            feature_map=str(model.feature_map),
            share_pe=bool(model.share_pe),
            attention_impl=str(model.get("attention_impl", "auto")),  # absent in older run configs
            feature_map_options=feature_map_config(model),
        )

    def positional_encodings(self) -> list[nn.Module]:
        """The distinct PE modules (one if shared, else one per layer)."""
        seen: list[nn.Module] = []
        for layer in self.layers:
            pe = layer.attention.pe
            if not any(pe is s for s in seen):
                seen.append(pe)
        return seen

    def forward(self, inputs: torch.Tensor, positions: torch.Tensor, causal: bool = True) -> torch.Tensor:
        """inputs (B,T,input_dim), positions (B,T,pos_dim) → logits (B,T,output_dim)."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_dim:
            raise ValueError(
                f"HarmonizationTransformer: inputs must be (B,T,{self.input_dim}), got {tuple(inputs.shape)}"
            )
        if positions.shape[:2] != inputs.shape[:2] or positions.shape[-1] != self.pos_dim:
            raise ValueError(
                "HarmonizationTransformer: positions must be (B,T,"
                f"{self.pos_dim}) matching inputs {tuple(inputs.shape[:2])}, got {tuple(positions.shape)}"
            )
        x = self.input_projection(inputs)
        for layer in self.layers:
            x = layer(x, positions, causal=causal)
        return self.output_projection(x)
