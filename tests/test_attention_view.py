"""Attention views: the HTML holds the pattern values of the chosen heads; the figure draws them."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch

from interp import InputError, Site
from probes import attention_view
from tests.conftest import D_VOCAB


def test_html_holds_the_chosen_heads_patterns_and_the_figure_draws_them(attn_only_model):
    tokens = torch.randint(1, D_VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))
    view = attention_view(attn_only_model, tokens, layers=[1], heads=[0, 2], prompt=1)
    _, cache = attn_only_model.run_with_cache(tokens, [Site("pattern", 1)])
    expected = cache[Site("pattern", 1)][1, [0, 2]]
    torch.testing.assert_close(view.patterns, expected)
    page = view._repr_html_()
    assert "<script" not in page and "http" not in page  # self-contained: nothing fetched
    tables = re.findall(r'data-head="([^"]+)" data-pattern="([^"]+)"', page)
    assert [name for name, _ in tables] == ["L1H0", "L1H2"]
    for (_, data), pattern in zip(tables, expected, strict=True):
        torch.testing.assert_close(torch.tensor(json.loads(html.unescape(data))), pattern, atol=1e-6, rtol=0)
    assert all(t in page for t in attn_only_model.to_str_tokens(tokens[1]))
    fig = view.figure()
    assert [ax.get_title() for ax in fig.axes] == ["L1H0", "L1H2"]
    assert float(fig.axes[0].images[0].get_array().sum()) == pytest.approx(float(expected[0].sum()), abs=1e-4)


def test_circuitsvis_view_carries_the_same_patterns(attn_only_model):
    tokens = torch.randint(1, D_VOCAB, (1, 5), generator=torch.Generator().manual_seed(6))
    view = attention_view(attn_only_model, tokens, layers=[0], heads=[1])
    rendered = str(view.circuitsvis())  # the dev extra installs circuitsvis (the `vis` extra for users)
    data = json.loads(re.search(r'"attention": (\[.*?\]\]\])', rendered).group(1))
    torch.testing.assert_close(torch.tensor(data), view.patterns, atol=1e-6, rtol=0)


def test_attention_view_bad_inputs(attn_only_model):
    tokens = torch.randint(1, D_VOCAB, (1, 5))
    for kwargs, names in [(dict(layers=[4]), "layer 4"), (dict(heads=[9]), "head 9"), (dict(prompt=3), "prompt=3"), (dict(heads=[]), "No heads")]:
        with pytest.raises(InputError, match=re.escape(names)):
            attention_view(attn_only_model, tokens, **kwargs)
