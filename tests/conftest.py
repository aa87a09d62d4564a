"""Tiny models built in fixtures: a native attention-only model, a native model with MLPs, and a
random Hugging Face GPT-2 saved to a temporary directory (loadable by both backends)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

from interp.models import build_native
from interp.tokenizers import word_tokenizer

D_VOCAB = 32
TINY = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=D_VOCAB, n_ctx=32,
    normalization_type="LN", positional_embedding_type="standard", act_fn="gelu",
)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from a second BLAS thread, and on a busy 2-core machine threads
    spinning cost far more than the arithmetic; the library itself never changes this setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return word_tokenizer([f"t{i}" for i in range(1, D_VOCAB)], tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def attn_only_model(tokenizer):
    return build_native({**TINY, "attn_only": True}, tokenizer, seed=0, name="tiny-attn")


@pytest.fixture(scope="session")
def mlp_model(tokenizer):
    return build_native({**TINY, "attn_only": False, "d_mlp": 64}, tokenizer, seed=1, name="tiny-mlp")


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, vocab_size=D_VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(cfg).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tokens():
    return torch.randint(1, D_VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))


def hook_count(module: torch.nn.Module) -> int:
    """Forward, pre-forward and backward hooks registered anywhere in a module."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())
