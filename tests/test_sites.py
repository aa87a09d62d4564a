import pytest
from hypothesis import given
from hypothesis import strategies as st

from interp import Site, SiteError
from interp.sites import HEAD_KINDS, KINDS, grid


@given(kind=st.sampled_from(KINDS), layer=st.integers(0, 63), head=st.none() | st.integers(0, 31), pos=st.none() | st.integers(-64, 63))
def test_site_hook_name_round_trip(kind, layer, head, pos):
    head = head if kind in HEAD_KINDS else None
    layer = None if kind == "embed" else layer
    site = Site(kind, layer, head, pos)
    assert Site.parse(site.hook_name, head=head, pos=pos) == site
    assert Site.parse(site.hook_name).full == site.full
    assert site.hook_name.endswith(site.hook_name.split(".")[-1])


def test_tl_aliases_parse():
    assert Site.parse("blocks.2.hook_in") == Site("resid_pre", 2)
    assert Site.parse("blocks.0.attn.o.hook_in") == Site("z", 0)
    assert Site.parse("hook_embed") == Site("embed")


@pytest.mark.parametrize(
    "name, hint",
    [("blocks.0.hook_resid_pree", "blocks.0.hook_resid_pre"), ("blocks.1.attn.hook_zz", "blocks.0.attn.hook_z")],
)
def test_unknown_hook_name_suggests_closest(name, hint):
    with pytest.raises(SiteError, match=f"Did you mean '{hint}'"):
        Site.parse(name)


def test_unknown_kind_suggests_closest():
    with pytest.raises(SiteError, match="Did you mean 'resid_post'"):
        Site("resid_pots", 0)


def test_head_on_headless_kind_is_an_error():
    with pytest.raises(SiteError, match="no head axis"):
        Site("resid_pre", 0, head=1)


def test_missing_layer_is_an_error():
    with pytest.raises(SiteError, match="needs a layer"):
        Site("resid_pre")


def test_validate_against_model(attn_only_model, mlp_model):
    with pytest.raises(SiteError, match=r"layer 5 is out of range.*valid: 0 to 1"):
        Site("resid_pre", 5).validate(attn_only_model)
    with pytest.raises(SiteError, match=r"head 4 is out of range.*valid: 0 to 3"):
        Site("z", 0, head=4).validate(attn_only_model)
    with pytest.raises(SiteError, match=r"position 12 is out of range.*valid: 0 to 11"):
        Site("resid_pre", 0, pos=12).validate(attn_only_model, seq_len=12)
    with pytest.raises(SiteError, match="attention-only"):
        Site("mlp_out", 0).validate(attn_only_model)
    assert Site("mlp_out", 1).validate(mlp_model) == Site("mlp_out", 1)
    assert Site("resid_pre", 0, pos=-12).validate(attn_only_model, seq_len=12).pos == -12


def test_grid_builds_every_combination():
    sites = grid("resid_pre", layers=range(2), positions=range(3))
    assert len(sites) == 6 and sites[0] == Site("resid_pre", 0, pos=0) and sites[-1] == Site("resid_pre", 1, pos=2)
    heads = grid(["z", "pattern"], layers=[1], heads=range(4))
    assert len(heads) == 8 and {s.kind for s in heads} == {"z", "pattern"}
    assert grid("embed", layers=range(3)) == [Site("embed")]


def test_select_slices_the_right_axes():
    import torch

    z = torch.arange(2 * 5 * 4 * 3).reshape(2, 5, 4, 3)
    assert torch.equal(Site("z", 0, head=2, pos=1).select(z), z[:, 1, 2])
    pattern = torch.arange(2 * 4 * 5 * 5).reshape(2, 4, 5, 5)
    assert torch.equal(Site("pattern", 0, head=3, pos=-1).select(pattern), pattern[:, 3, -1])
