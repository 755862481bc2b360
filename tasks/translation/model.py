"""Pre-norm encoder-decoder Transformer (fairseq's transformer_wmt_en_de_big_t2t, sizes from profile).

Every prunable matrix is the weight of its own nn.Linear (separate q/k/v/out projections, two FFN
matrices), so the masking core and the FLOPs hooks see each one. The embedding table is the weight of
the output projection (shared source/target/output embeddings over a joint vocabulary); it is a
Linear weight too, so a profile may choose to prune it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .vocab import PAD


@dataclass(frozen=True)
class ModelConfig:
    """Transformer sizes; the defaults are Transformer-big."""

    vocab_size: int
    d_model: int = 1024
    ffn_dim: int = 4096
    heads: int = 16
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    max_positions: int = 1024


class MultiheadAttention(nn.Module):
    """Scaled dot-product attention with separate q/k/v/out Linear layers (prunable one by one)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert d_model % heads == 0, "d_model must be divisible by heads"
        self.heads, self.dropout = heads, dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """mask: bool, broadcastable to (batch, heads, tq, tk); True means 'may attend'."""
        return self.attend(query, *self.keys_values(key), mask)

    def keys_values(self, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `key`, split into heads: (batch, heads, tk, d / heads)."""
        return self._split(self.k_proj(key)), self._split(self.v_proj(key))

    def attend(
        self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        q = self._split(self.q_proj(query))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """fc1 -> ReLU -> dropout -> fc2."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Pre-norm: x + drop(attn(norm(x))); x + drop(ffn(norm(x)))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn(h, h, mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention over the encoder output, then the FFN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(cfg.d_model)
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor, mem_mask: torch.Tensor
    ) -> torch.Tensor:
        h = self.self_attn_norm(x)
        x = x + self.dropout(self.self_attn(h, h, self_mask))
        x = x + self.dropout(self.cross_attn(self.cross_attn_norm(x), memory, mem_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))

    def step(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        mem_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """`forward` for the newest position alone (x: batch, 1, d), given the self-attention keys
        and values of the earlier positions (`cache`) and the cross-attention keys and values of
        the memory; returns the output and the extended cache. A position attends to itself and
        every earlier one, as under the causal mask."""
        h = self.self_attn_norm(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        x = x + self.dropout(self.self_attn.attend(h, k, v, None))
        x = x + self.dropout(self.cross_attn.attend(self.cross_attn_norm(x), *memory_kv, mem_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x))), (k, v)


@dataclass
class DecoderState:
    """What incremental decoding keeps between steps: per decoder layer, the memory's
    cross-attention keys/values (fixed) and the self-attention keys/values of the prefix."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]
    mem_mask: torch.Tensor
    self_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    length: int = 0  # positions decoded so far

    def select(self, rows: torch.Tensor) -> None:
        """Keep the prefixes `rows` (beam search's reordering); memory rows stay, since a beam
        never moves to another sentence."""
        if self.self_kv is not None:
            self.self_kv = [(k[rows], v[rows]) for k, v in self.self_kv]


def sinusoidal_positions(n: int, d: int) -> torch.Tensor:
    """Fixed sinusoidal position table (never trained, never pruned)."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(n, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    return F.pad(table, (0, d - table.size(1)))


class Transformer(nn.Module):
    """Encoder-decoder with shared embeddings; `output_proj.weight` is the embedding table."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = nn.ModuleDict(
            {
                "layers": nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers)),
                "norm": nn.LayerNorm(cfg.d_model),
            }
        )
        self.decoder = nn.ModuleDict(
            {
                "layers": nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers)),
                "norm": nn.LayerNorm(cfg.d_model),
            }
        )
        self.output_proj = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer(
            "positions", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fairseq's init: xavier-uniform projections, N(0, d^-1/2) embeddings, pad row zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.output_proj.weight, mean=0.0, std=self.cfg.d_model**-0.5)
        with torch.no_grad():
            self.output_proj.weight[PAD].zero_()

    def embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Token embeddings of positions offset, offset + 1, ..."""
        end = offset + tokens.size(1)
        if end > self.cfg.max_positions:
            raise ValueError(f"sequence of {end} > max_positions")
        x = F.embedding(tokens, self.output_proj.weight, padding_idx=PAD)
        x = x * math.sqrt(self.cfg.d_model) + self.positions[offset:end]
        return self.dropout(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the encoder output and its attention mask (batch, 1, 1, src_len)."""
        mask = (src != PAD)[:, None, None, :]
        x = self.embed(src)
        for layer in self.encoder["layers"]:
            x = layer(x, mask)
        return self.encoder["norm"](x), mask

    def decode(
        self, prev: torch.Tensor, memory: torch.Tensor, mem_mask: torch.Tensor
    ) -> torch.Tensor:
        """Logits for every target position given the shifted target `prev` (teacher forcing)."""
        t = prev.size(1)
        causal = torch.ones(t, t, dtype=torch.bool, device=prev.device).tril()
        x = self.embed(prev)
        for layer in self.decoder["layers"]:
            x = layer(x, memory, causal[None, None], mem_mask)
        return self.output_proj(self.decoder["norm"](x))

    def start_decoding(self, memory: torch.Tensor, mem_mask: torch.Tensor) -> DecoderState:
        kv = [layer.cross_attn.keys_values(memory) for layer in self.decoder["layers"]]
        return DecoderState(kv, mem_mask)

    def decode_step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Logits of the next token (batch, vocab) after `tokens` (batch,), the newest token of
        each prefix; the same as decode(prefix)[:, -1] at a cost that does not grow with the
        prefix (search only; training uses teacher forcing)."""
        x = self.embed(tokens[:, None], state.length)
        caches = state.self_kv or [None] * len(self.decoder["layers"])
        new = []
        for layer, cache, memory_kv in zip(self.decoder["layers"], caches, state.memory_kv):
            x, kv = layer.step(x, cache, memory_kv, state.mem_mask)
            new.append(kv)
        state.self_kv, state.length = new, state.length + 1
        return self.output_proj(self.decoder["norm"](x))[:, 0]

    def forward(self, src: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        memory, mem_mask = self.encode(src)
        return self.decode(prev, memory, mem_mask)
