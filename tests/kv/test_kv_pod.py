"""PoD, training-free (``pod``): layer groups share the selection of distant tokens; each keeps its recent ones."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from promptshrink.errors import InvalidInputError
from promptshrink.kv.pod import find_layer_groups, layer_similarity
from tests.support.tiny_llama import CUDA, random_ids, tiny_model


def positions(keys: torch.Tensor) -> list[list[int]]:
    """The positions encoded in channel 0 of each KV head's kept keys."""
    return keys[0, :, :, 0].round().long().tolist()


def test_a_group_shares_the_leaders_distant_tokens() -> None:
    torch.manual_seed(0)
    seq, dim = 120, 8
    keys = torch.randn(1, 2, seq, dim)
    keys[..., 0] = torch.arange(seq, dtype=torch.float32)  # channel 0 = position (queries ignore it below)
    press = kv.make_press("pod", ratio=0.25, window=8, recent=8, groups=(0, 2))
    kept = []
    for layer in range(3):
        q = torch.randn(1, 4, 8, dim)
        q[..., 0] = 0.0
        k, _ = press.compress(layer, 3, keys, keys, q, 1.0)
        kept.append(positions(k))
    for layer_kept in kept:
        for head in layer_kept:
            assert len(head) == 30 and head[-8:] == list(range(112, 120))  # its own recent tokens
    assert kept[1] == kept[0]  # layer 1 follows layer 0, same distant tokens per head
    assert kept[2] != kept[0]  # layer 2 leads a new group and selects for itself


def test_question_aware_keeps_no_recent_context() -> None:
    keys = torch.randn(1, 1, 64, 8)
    keys[..., 0] = torch.arange(64, dtype=torch.float32)
    press = kv.make_press("pod", ratio=0.25, recent=8)
    press.question = 4
    q = torch.zeros(1, 1, 4, 8)
    q[..., 1] = 1.0
    keys[0, 0, 10, 1] = 50.0  # the question attends to position 10
    k, _ = press.compress(0, 1, keys, keys, q, 1.0)
    assert 10 in positions(k)[0] and len(positions(k)[0]) == 16


@pytest.mark.parametrize("groups", [(1, 2), (0, 2, 2), (0, 3, 1), (0, -1), (), "0,2"])
def test_bad_groups_are_invalid_input(groups) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInputError, match="groups"):
        kv.make_press("pod", groups=groups)


def test_layer_groups_from_attention_similarity() -> None:
    m = tiny_model()
    sim = layer_similarity(m, [random_ids(64, seed=5)], window=16)
    assert sim.shape == (2,) and ((sim > 0) & (sim <= 1)).all()
    assert find_layer_groups(torch.tensor([0.9, 0.2, 0.8, 0.95, 0.1]), 3) == (0, 2, 5)
    assert find_layer_groups(sim, 1) == (0,)
    with pytest.raises(InvalidInputError, match="n_groups"):
        find_layer_groups(sim, 4)
    cache = kv.prefill(m, random_ids(200), kv.make_press("pod", ratio=0.25, groups=find_layer_groups(sim, 2)))
    assert [layer.keys.shape[-2] for layer in cache.layers] == [50, 50, 50]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_pod_on_gpu_matches_cpu() -> None:
    out = {}
    for device in ("cpu", "cuda"):
        m = tiny_model(device=device)
        cache = kv.prefill(m, random_ids(300).to(device), kv.make_press("pod", ratio=0.25))
        out[device] = cache.layers[1].keys.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)
