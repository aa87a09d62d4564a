"""Attention views: the page carries the patterns once as compact data, stays small for a whole
model, and a real (headless Chromium) browser shows the chosen head's weights through its controls."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from interp import InputError, Site
from probes import AttentionView, attention_view
from tests.browser import Chromium, dump_dom
from tests.conftest import D_VOCAB

QUANTUM = 1 / 255  # the page stores round(255 * w): the error is at most half of this
SHOWN = 0.0005  # the page prints weights with three decimals


def decode(page: str) -> tuple[dict, torch.Tensor]:
    """The JSON blob of the one view in ``page`` and the patterns it holds, decoded independently
    of the module (the format as its docstring states it)."""
    blobs = re.findall(r'<script type="application/json" class="ia-data">(.*?)</script>', page, re.S)
    assert len(blobs) == 1, "one data blob per view"
    spec = json.loads(blobs[0])
    n_heads, n_query, n_key = spec["shape"]
    raw = np.frombuffer(base64.b64decode(spec["data"]), dtype=np.uint8).astype(np.float32) / spec["scale"]
    if spec["encoding"] == "uint8-tril":
        out = np.zeros((n_heads, n_query, n_key), dtype=np.float32)
        rows, cols = np.tril_indices(n_query)
        out[:, rows, cols] = raw.reshape(n_heads, -1)
    else:
        assert spec["encoding"] == "uint8"
        out = raw.reshape(n_heads, n_query, n_key)
    return spec, torch.from_numpy(out)


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I), "nothing fetched from the network"
    assert "import(" not in page and "@import" not in page and "url(" not in page


def causal_softmax(n_heads: int, n_tokens: int, seed: int) -> torch.Tensor:
    scores = torch.randn(n_heads, n_tokens, n_tokens, generator=torch.Generator().manual_seed(seed)) * 2
    return scores.masked_fill(torch.ones(n_tokens, n_tokens, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def whole_model_view(n_layers: int = 30, n_heads: int = 9, n_tokens: int = 24) -> AttentionView:
    """SmolLM2-135M's shape: 30 layers x 9 heads."""
    labels = [f"L{layer}H{head}" for layer in range(n_layers) for head in range(n_heads)]
    return AttentionView(causal_softmax(n_layers * n_heads, n_tokens, seed=0), labels,
                         [f" word{i}" for i in range(n_tokens)])


@pytest.fixture
def model_view(attn_only_model):
    """Every head of the tiny model on one prompt, and the patterns read straight from its cache."""
    tokens = torch.randint(1, D_VOCAB, (1, 9), generator=torch.Generator().manual_seed(7))
    view = attention_view(attn_only_model, tokens)
    sites = [Site("pattern", layer) for layer in range(attn_only_model.n_layers)]
    _, cache = attn_only_model.run_with_cache(tokens, sites)
    return view, torch.cat([cache[s][0] for s in sites])  # heads in L0H0, L0H1, ..., L1H3 order


def test_page_carries_the_chosen_heads_patterns_once(attn_only_model):
    tokens = torch.randint(1, D_VOCAB, (2, 7), generator=torch.Generator().manual_seed(5))
    view = attention_view(attn_only_model, tokens, layers=[1], heads=[0, 2], prompt=1)
    _, cache = attn_only_model.run_with_cache(tokens, [Site("pattern", 1)])
    expected = cache[Site("pattern", 1)][1, [0, 2]]
    torch.testing.assert_close(view.patterns, expected)
    page = view._repr_html_()
    assert_self_contained(page)
    assert "<td" not in page and "data-pattern" not in page  # values are carried as data, not as cells
    spec, decoded = decode(page)
    assert spec["labels"] == ["L1H0", "L1H2"] and spec["shape"] == [2, 7, 7]
    assert spec["tokens"] == attn_only_model.to_str_tokens(tokens[1])
    assert spec["encoding"] == "uint8-tril"  # a causal model: only the lower triangle is stored
    assert (decoded - expected).abs().max() <= QUANTUM / 2 + 1e-6
    assert spec["groups"] == [{"name": "layer 1", "layer": 1, "heads": [
        {"index": 0, "name": "head 0", "head": 0}, {"index": 1, "name": "head 2", "head": 2}]}]
    assert spec == view.encode() | {"cell": 18, "standalone": False}


def test_full_grids_are_stored_when_the_upper_triangle_is_not_empty():
    patterns = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(1))
    spec, decoded = decode(AttentionView(patterns, ["a", "b", "c"], list("vwxyz")).html())
    assert spec["encoding"] == "uint8"
    assert (decoded - patterns).abs().max() <= QUANTUM / 2 + 1e-6
    assert spec["groups"][0]["name"] == "all heads" and [h["name"] for h in spec["groups"][0]["heads"]] == ["a", "b", "c"]


def test_page_for_a_whole_30_layer_model_is_small():
    view = whole_model_view()
    page = view.html()
    assert len(page.encode()) < 1_000_000, f"{len(page.encode())} bytes"
    assert len(page.encode()) < 250_000  # measured: about 0.14 MB (24 x 25 / 2 bytes per head, base64)
    spec, decoded = decode(page)
    assert spec["shape"] == [270, 24, 24] and spec["labels"] == view.labels
    assert [g["layer"] for g in spec["groups"]] == list(range(30))
    assert all([h["head"] for h in g["heads"]] == list(range(9)) for g in spec["groups"])
    assert (decoded - view.patterns).abs().max() <= QUANTUM / 2 + 1e-6


def test_each_rendering_has_its_own_id_and_scopes_its_style_and_script():
    view = AttentionView(causal_softmax(2, 4, seed=2), ["L0H0", "L0H1"], ["a", "b", "c", "d"])
    first, second = view.html(), view.html()
    ids = [re.match(r'<div id="(interp-attn-[0-9a-f]{32})"', page).group(1) for page in (first, second)]
    assert ids[0] != ids[1]
    for page, root in zip((first, second), ids, strict=True):
        css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
        selectors = [s.strip() for block in re.findall(r"([^{}]+)\{", css) for s in block.split(",")]
        assert selectors and all(s.startswith(f"#{root}") for s in selectors)
        script = re.findall(r"<script>(.*?)</script>", page, re.S)
        assert len(script) == 1 and f'"{root}"' in script[0] and "document.querySelector" not in script[0]
        assert "document.getElementById" in script[0]  # the script finds its own root, then queries inside it


def test_token_strings_are_kept_exact_and_cannot_break_the_page():
    tokens = ["</script><b>x", " Paris", "\n", "&amp;", "\"'"]
    view = AttentionView(causal_softmax(1, 5, seed=3), ["L0H0"], tokens)
    page = view.html()
    assert page.count("</script>") == 2 and "<b>" not in page  # the blob's and the code's own
    assert decode(page)[0]["tokens"] == tokens


def test_save_writes_a_standalone_page(tmp_path):
    view = AttentionView(causal_softmax(2, 4, seed=4), ["L0H0", "L1H0"], list("abcd"))
    path = view.save(tmp_path / "attention.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and '<meta charset="utf-8">' in text and text.rstrip().endswith("</html>")
    assert_self_contained(text)
    spec, decoded = decode(text)
    assert spec["standalone"] is True and (decoded - view.patterns).abs().max() <= QUANTUM / 2 + 1e-6


def test_repr_is_one_line_for_a_whole_model():
    assert repr(whole_model_view()) == "AttentionView(heads=270 (L0H0 ... L29H8), tokens=24)"
    small = AttentionView(causal_softmax(2, 3, seed=0), ["L0H0", "L0H1"], list("abc"))
    assert repr(small) == "AttentionView(heads=['L0H0', 'L0H1'], tokens=3)"


def test_figure_draws_chosen_heads_and_refuses_too_many(attn_only_model):
    import matplotlib.pyplot as plt

    tokens = torch.randint(1, D_VOCAB, (1, 6), generator=torch.Generator().manual_seed(8))
    view = attention_view(attn_only_model, tokens)
    fig = view.figure()
    assert [ax.get_title() for ax in fig.axes] == view.labels
    assert float(fig.axes[5].images[0].get_array().sum()) == pytest.approx(float(view.patterns[5].sum()), abs=1e-4)
    plt.close(fig)
    fig = view.figure(heads=["L1H2", 0])
    assert [ax.get_title() for ax in fig.axes] == ["L1H2", "L0H0"]
    plt.close(fig)
    fig = view.figure(layer=1)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["L1H0", "L1H1", "L1H2", "L1H3"]
    plt.close(fig)
    odd = AttentionView(causal_softmax(1, 3, seed=0), ["L0H0"], ["$", " a", "\n"])
    fig = odd.figure()
    fig.canvas.draw()  # "$" would start mathtext; whitespace is shown
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [r"\$", "\u00b7a", "\u23ce"]
    plt.close(fig)
    with pytest.raises(InputError, match=re.escape("figure(heads=['L3H2', ...]) or figure(layer=3)")):
        whole_model_view().figure()
    with pytest.raises(InputError, match="head 'L9H9' is not in this view"):
        view.figure(heads=["L9H9"])
    with pytest.raises(InputError, match="layer=5"):
        view.figure(layer=5)


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
    with pytest.raises(InputError, match="2 labels for 3 heads"):
        AttentionView(torch.zeros(3, 4, 4), ["a", "b"], list("abcd")).html()
    with pytest.raises(InputError, match="3 tokens for patterns of 4 queries"):
        AttentionView(torch.zeros(1, 4, 4), ["a"], list("abc")).save("unused.html")


# -- in a real browser: headless Chromium (apt packages chromium, chromium-driver) -------------------


def strip_weights(dom: str, kind: str) -> torch.Tensor:
    strip = re.search(rf'<div class="ia-strip ia-{kind}">(.*?)</div>', dom, re.S).group(1)
    return torch.tensor([float(w) for w in re.findall(r'data-weight="([0-9.]+)"', strip)])


def test_saved_page_opens_on_the_head_and_token_named_in_its_url(model_view, tmp_path):
    view, patterns = model_view
    path = view.save(tmp_path / "attention.html")
    dom = dump_dom(path.as_uri() + "?layer=1&head=2&pos=4")
    root = re.search(r'<div id="interp-attn-[0-9a-f]+"[^>]*>', dom).group(0)
    assert 'data-ready="1"' in root and 'data-shown="L1H2"' in root and 'data-q="4"' in root, root
    shown = patterns[view.labels.index("L1H2")]
    torch.testing.assert_close(strip_weights(dom, "row"), shown[4], atol=QUANTUM / 2 + SHOWN, rtol=0)
    torch.testing.assert_close(strip_weights(dom, "col"), shown[:, 4], atol=QUANTUM / 2 + SHOWN, rtol=0)
    assert re.search(r'<div class="ia-nojs" hidden="">', dom), "the no-JavaScript notice is hidden once drawn"


# JavaScript run in the page; ROOTS[i] is the i-th view's root element.
SETUP = "var ROOTS = Array.from(document.querySelectorAll('.interp-attention'));"


def choose(browser: Chromium, view: int, control: str, value: int) -> None:
    browser.eval(f"{SETUP} var s = ROOTS[{view}].querySelector('.ia-{control}'); s.value = '{value}';"
                 "s.dispatchEvent(new Event('change'));")


def hover(browser: Chromium, view: int, selector: str, index: int) -> None:
    browser.eval(f"{SETUP} ROOTS[{view}].querySelectorAll('{selector}')[{index}]"
                 ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));")


def read(browser: Chromium, view: int) -> dict:
    return browser.eval(f"""{SETUP} (function (r) {{
        var weights = function (s) {{ return Array.from(r.querySelectorAll(s)).map(function (e) {{ return +e.getAttribute('data-weight'); }}); }};
        var out = r.querySelector('.ia-readout');
        return {{shown: r.getAttribute('data-shown'), layer: r.querySelector('.ia-layer').value,
                head: r.querySelector('.ia-head').value, heads: r.querySelectorAll('.ia-head option').length,
                pressed: Array.from(r.querySelectorAll('.ia-thumb')).map(function (b) {{ return b.getAttribute('aria-pressed'); }}),
                row: weights('.ia-row .ia-tok'), col: weights('.ia-col .ia-tok'),
                q: +out.getAttribute('data-q'), k: +out.getAttribute('data-k'), weight: +out.getAttribute('data-weight'),
                readout: out.textContent,
                rowLabels: Array.from(r.querySelectorAll('.ia-rows .ia-lab')).map(function (e) {{ return e.textContent; }}),
                colLabels: Array.from(r.querySelectorAll('.ia-cols .ia-lab')).map(function (e) {{ return e.textContent; }}),
                strip: Array.from(r.querySelectorAll('.ia-row .ia-tok')).map(function (e) {{ return e.textContent; }}),
                uiHidden: r.querySelector('.ia-ui').hidden}};
    }})(ROOTS[{view}])""")


def close(values, expected) -> bool:
    return bool((torch.tensor(values, dtype=torch.float32) - expected).abs().max() <= QUANTUM / 2 + SHOWN)


def test_browser_controls_show_the_chosen_heads_weights(model_view, tmp_path):
    """Two renderings of the same view and a third view on one page: the controls of one move only it."""
    view, patterns = model_view
    other = AttentionView(causal_softmax(1, 4, seed=9), ["L0H0"], [" Paris", "\n", "<b>", "\tx"])
    path = tmp_path / "page.html"
    path.write_text(f'<!doctype html><html><head><meta charset="utf-8"></head><body>'
                    f"{view.html()}{view.html()}{other.html()}</body></html>", encoding="utf-8")
    label = view.labels.index
    with Chromium() as browser:
        browser.open(path)
        first, second, third = (read(browser, i) for i in range(3))
        assert [first["shown"], second["shown"], third["shown"]] == ["L0H0", "L0H0", "L0H0"]
        assert not first["uiHidden"] and first["q"] == first["k"] == 8  # the last token is focused first
        assert close(first["row"], patterns[label("L0H0"), 8]) and close(first["col"], patterns[label("L0H0"), :, 8])

        choose(browser, 1, "layer", 1)  # the second rendering: layer 1 (head 0 kept), then head 3
        assert read(browser, 1)["shown"] == "L1H0"
        choose(browser, 1, "head", 3)
        hover(browser, 1, ".ia-row .ia-tok", 3)  # hover token 3 in the strip
        state = read(browser, 1)
        shown = patterns[label("L1H3")]
        assert state["shown"] == "L1H3" and state["heads"] == 4 and state["pressed"] == ["false"] * 3 + ["true"]
        assert state["q"] == state["k"] == 3 and state["weight"] == pytest.approx(float(shown[3, 3]), abs=QUANTUM / 2 + SHOWN)
        assert close(state["row"], shown[3]) and close(state["col"], shown[:, 3])
        assert state["readout"].startswith("L1H3: ")
        assert read(browser, 0) == first, "the first rendering of the same view did not move"

        browser.eval(f"{SETUP} ROOTS[1].querySelectorAll('.ia-thumb')[1].click()")  # a thumbnail picks the head
        state = read(browser, 1)
        assert state["shown"] == "L1H1" and state["head"] == "1" and state["pressed"] == ["false", "true", "false", "false"]
        assert close(state["row"], patterns[label("L1H1"), 3])

        hover(browser, 1, ".ia-rows .ia-lab", 6)  # a row label
        state = read(browser, 1)
        assert state["q"] == state["k"] == 6 and close(state["row"], patterns[label("L1H1"), 6])

        # a grid cell: query 7, key 2, by its position on the canvas
        browser.eval(f"""{SETUP} var c = ROOTS[1].querySelector('canvas.ia-grid'), b = c.getBoundingClientRect(),
            cell = b.width / {len(view.tokens)};
            c.dispatchEvent(new MouseEvent('mousemove', {{bubbles: true, clientX: b.left + 2.5 * cell, clientY: b.top + 7.5 * cell}}));""")
        state = read(browser, 1)
        cell = patterns[label("L1H1")]
        assert (state["q"], state["k"]) == (7, 2)
        assert state["weight"] == pytest.approx(float(cell[7, 2]), abs=QUANTUM / 2 + SHOWN)
        assert f"{state['weight']:.3f}" in state["readout"]
        assert close(state["row"], cell[7]) and close(state["col"], cell[:, 2])

        third = read(browser, 2)  # whitespace shown visibly, markup shown as text
        visible = ["\u00b7Paris", "\u23ce", "<b>", "\u21e5x"]
        assert third["rowLabels"] == visible and third["colLabels"] == visible and third["strip"] == visible
        assert browser.eval(f"{SETUP} ROOTS[2].querySelectorAll('b').length") == 0
