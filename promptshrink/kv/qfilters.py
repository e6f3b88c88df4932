"""Q-Filters (Godey et al., 2025): score keys by their projection on each head's dominant query direction.

The direction is estimated offline (SVD of queries collected on generic text) and stored under
``models/<model>/qfilters.safetensors``; scoring needs no attention weights, so it works with FlashAttention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, ModelUnavailableError
from ..paths import models_dir
from .base import ScorerPress, hook_hidden
from .observation import attention_modules, window_queries
from .registry import register_press

FILENAME = "qfilters.safetensors"


@register_press
@dataclass
class QFiltersPress(ScorerPress):
    """Keep the keys with the largest ⟨k, u⟩, u = the layer/KV-head filter oriented so that E⟨q, u⟩ > 0.

    Reference: Godey et al., "Q-Filters: Leveraging QK Geometry for Efficient KV Cache Compression", 2025.

    Args:
        filters: Per layer and KV head query direction, [layers, kv_heads, head_dim] (``compute_qfilters``);
            ``make_press("qfilters", model=m)`` without it loads the filters saved for ``m``.
    """

    name = "qfilters"
    summary = "Keys scored by their projection on each head's dominant query direction (no attention needed)."
    needs_queries = False

    filters: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filters is not None and (not isinstance(self.filters, torch.Tensor) or self.filters.dim() != 3):
            raise InvalidInputError("filters must be a tensor [layers, kv_heads, head_dim] (see compute_qfilters)")

    @classmethod
    def for_model(cls, model: nn.Module | None = None, **kwargs: Any) -> QFiltersPress:
        """Without a ``filters`` argument, the filters saved for ``model`` (by its model key)."""
        if "filters" in kwargs:
            return cls(**kwargs)
        from ..model_loading import model_key

        return cls.from_pretrained(
            model_key(getattr(getattr(model, "config", None), "name_or_path", "") or ""), **kwargs
        )

    def score(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float
    ) -> torch.Tensor:
        if self.filters is None:
            raise InvalidInputError(
                "QFiltersPress needs filters: QFiltersPress.from_pretrained(key) or compute_qfilters()"
            )
        from .dispatch import qfilter_scores

        return qfilter_scores(keys, self.filters[layer].to(keys.device))

    @classmethod
    def from_pretrained(cls, key: str, ratio: float = 0.5, root: Path | None = None, **kwargs: Any) -> QFiltersPress:
        """Load the filters saved for a model key (see ``promptshrink.model_loading.model_key``)."""
        from safetensors.torch import load_file

        path = (root or models_dir()) / key / FILENAME
        if not path.is_file():
            raise ModelUnavailableError(
                f"no Q-Filters at {path}; compute and store them with kv.compute_qfilters and kv.save_qfilters"
            )
        return cls(ratio=ratio, filters=load_file(str(path))["filters"], **kwargs)


@torch.no_grad()
def compute_qfilters(model: nn.Module, batches: Iterable[torch.Tensor], max_queries: int = 4096) -> torch.Tensor:
    """Filters [layers, kv_heads, head_dim] from the post-RoPE queries of ``batches`` of input ids."""
    modules = attention_modules(model)
    collected: list[list[torch.Tensor]] = [[] for _ in modules]

    def make_hook(i: int):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            hidden = hook_hidden(args, kwargs)
            q = window_queries(module, hidden, kwargs["position_embeddings"], hidden.shape[1])
            collected[i].append(q.float().cpu())

        return hook

    handles = [m.register_forward_hook(make_hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        for ids in batches:
            model(input_ids=ids.to(model.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    kv_heads = model.config.num_key_value_heads
    out = []
    for qs in collected:
        q = torch.cat(qs, dim=2)  # [batch, heads, tokens, dim]
        b, h, t, d = q.shape
        q = q.view(b, kv_heads, h // kv_heads, t, d).permute(1, 0, 2, 3, 4).reshape(kv_heads, -1, d)
        q = q[:, torch.randperm(q.shape[1])[:max_queries]]
        u = torch.linalg.svd(q, full_matrices=False).Vh[:, 0]  # [kv_heads, dim]
        sign = torch.where(torch.einsum("ktd,kd->k", q, u) >= 0, 1.0, -1.0)
        out.append(u * sign[:, None])
    return torch.stack(out)


def save_qfilters(filters: torch.Tensor, key: str, root: Path | None = None) -> Path:
    from safetensors.torch import save_file

    path = (root or models_dir()) / key / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"filters": filters.contiguous().float()}, str(path))
    return path
