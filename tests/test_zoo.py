"""The zoo (issue 11): every torchvision classification family, random weights, Rotation90 and Translation.

Issue 21 adds torchvision's segmentation networks (their up-sampled output is the layer "(output)").

The whole zoo is marked ``zoo`` (deselected by default): ``python -m pytest -m zoo tests/test_zoo.py``.
A few fast families run by default. Builders and the analysis are in ``zoo_models.py``,
shared with ``benchmarks/zoo.py`` (which prints the table).
"""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

import reference as ref
import zoo_models


def _check(family: str) -> dict:
    return _checked_run(family)[2]


def _checked_run(family: str):
    model, report, info = zoo_models.run(family)  # completes: no exception
    s = zoo_models.summarize(model, report)
    # every selected layer is measured, or each (measure, group) it lacks a result for is in
    # errors or notes, or it is not called
    assert not s["uncovered"], (
        f"{family}: {len(s['uncovered'])} (layer, measure, group) with no result, error, note or not_called "
        f"entry, e.g. {s['uncovered'][:5]}"
    )
    assert not s["nan"], f"{family}: NaN values {s['nan'][:5]}"
    assert not s["non_square"], (
        f"{family}: measured on non-square maps of a square input (a tensor misread as a map): {s['non_square'][:5]}"
    )
    assert s["measured"] > 0, f"{family}: no layer measured; errors {list(s['errors'].items())[:3]}"
    return model, report, s


@pytest.mark.zoo
@pytest.mark.parametrize("family", list(zoo_models.ZOO))
def test_zoo(family):
    _check(family)


@pytest.mark.parametrize("family", zoo_models.FAST)
def test_zoo_fast_family(family):
    """Fast members (well under 15 s each) in the default run."""
    s = _check(family)
    assert s["not_called"] == []


# ---- dense prediction (issue 21)
@pytest.mark.zoo
@pytest.mark.parametrize("family", zoo_models.SEGMENTATION)
def test_zoo_segmentation_measures_the_output_map_in_final(family):
    """The up-sampled ``out`` map is the layer "(output)": a full-size map, last, in Final, the decoder not in Final."""
    model, report, info = zoo_models.run(family)
    assert report.selected[-1] == "(output)" and "(output)" not in report.not_called
    index, part = report.depth["(output)"]
    assert part == "Final" and index == max(i for i, _ in report.depth.values())
    assert [n for n, (_, p) in report.depth.items() if p == "Final"] == ["(output)"]
    rows = report.to_dataframe().query("layer == '(output)'")
    errors = {k: v for k, v in report.errors.items() if k[0] == "(output)"}
    # each (measure, group): a value or a reason
    assert len(rows) + len(errors) == len(zoo_models.MEASURES) * len(zoo_models.zoo_groups()), errors
    assert set(rows.kind) <= {"map"} and all(r.shape == (10, info["size"], info["size"]) for r in report.results
                                             if r.layer == "(output)")
# ---- end of dense prediction


def test_zoo_script_reports_a_failing_family_and_goes_on(capsys):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "zoo.py")
    spec = importlib.util.spec_from_file_location("zoo_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(
        ["--families", "no_such_family,shufflenet", "--threads", str(torch.get_num_threads())]
    )  # keep the session's threads
    out = capsys.readouterr().out
    assert rc == 1  # the unknown family fails ...
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert "crashed" in rows[1] and "no_such_family" in rows[1]
    assert rows[2].startswith("| shufflenet |")  # ... and the next one is still measured


# ---------------------------------------------------------- timm (issue 21): skipped, with the reason, without timm
def _refused(report, layer):
    return [reason for key, reason in report.errors.items() if key[0] == layer]


@pytest.mark.zoo
@pytest.mark.parametrize("family", zoo_models.TIMM_FAMILIES)
def test_zoo_timm(family):
    if not zoo_models.timm_available():
        pytest.skip(zoo_models.TIMM_SKIP_REASON)
    model, report, s = _checked_run(family)
    measured = {r.layer for r in report.results}
    if "mixer" in family:  # the token MLP: transposed tokens out, hidden units refused (issue 21's misread layers)
        fc2 = [n for n in s_layers(model) if n.endswith("mlp_tokens.fc2")]
        assert fc2 and all(n in measured and report.layouts[n] == "tokens_transposed" for n in fc2)
        hidden = [n for n in s_layers(model) if n.endswith(("mlp_tokens.fc1", "mlp_tokens.act"))]
        assert hidden and all(any("token-mixing MLP" in r for r in _refused(report, n)) for n in hidden)
        assert all(report.layouts[n] == "tokens" for n in s_layers(model) if n.endswith("mlp_channels.fc2"))
    if family == "timm_mobilevitv2_050":  # unfolded patches B x C x P x N: folded back, never read as maps
        inside = [n for n in measured if ".transformer." in n]
        assert inside and all(report.layouts[n] == "patches" for n in inside)
    if family == "timm_mobilevit_xxs":  # (B*P) x N x C: folded back
        inside = [n for n in measured if ".transformer." in n]
        assert len(inside) > 40 and all(report.layouts[n] == "windows" for n in inside)
    if family == "timm_swin_tiny_patch4_window7_224":  # windows (B*nW) x P x C: folded back
        assert all(n in measured for n in s_layers(model) if n.endswith("attn.proj"))
    if family == "timm_levit_128s":  # (B*N) x C batch norms: folded back; its tokens stay tokens
        assert sum(v == "windows" for v in report.layouts.values()) >= 20  # (some start dead: zero-initialised)
        assert sum(report.layouts.get(n) == "windows" for n in measured) >= 10
        assert sum(report.layouts.get(n) == "tokens" for n in measured) >= 30
    tokens = {"timm_vit_small_patch16_224": 85, "timm_deit_tiny_patch16_224": 85, "timm_eva02_tiny_patch14_224": 72,
              "timm_coat_lite_tiny": 61}
    if family in tokens:  # measured as today: every token layer read as tokens (class tokens apart)
        assert sum(report.layouts.get(n) == "tokens" for n in measured) == tokens[family]
        assert not s["refused"]


def s_layers(model):
    return [n for n, _ in zoo_models.select_layers(model)]


def _best_match(u, v):
    """For each row c of u: max over rows c2 of v of the Pearson correlation clipped at 0 (reference.pearson_relu's
    rule: a numerically constant row correlates with nothing), as a matrix product over 1024 x 1024 channel pairs."""
    u, v = u.astype(np.float64), v.astype(np.float64)
    uc, vc = u - u.mean(1, keepdims=True), v - v.mean(1, keepdims=True)
    nu, nv = np.sqrt((uc * uc).sum(1)), np.sqrt((vc * vc).sum(1))
    alive_u = (nu > 0) & (nu > 1e-10 * np.abs(u).max(1))
    alive_v = (nv > 0) & (nv > 1e-10 * np.abs(v).max(1))
    r = (uc @ vc.T) / np.where(np.outer(alive_u, alive_v), np.outer(nu, nv), np.inf)
    return np.maximum(r, 0.0).max(1)


@pytest.mark.zoo
def test_zoo_timm_mixer_l16_token_mlp_matches_reference():
    """Issue 21's first row: mixer_l16_224 at 64 px, blocks.0.mlp_tokens.fc2 (B x 1024 x 16): 1024 channels on a
    4 x 4 grid (it was read as tokens on a 32 x 32 grid), against a reference on the hooked output reshaped by hand."""
    if not zoo_models.timm_available():
        pytest.skip(zoo_models.TIMM_SKIP_REASON)
    import timm

    torch.manual_seed(0)
    model = timm.create_model("mixer_l16_224", pretrained=False, img_size=64, num_classes=10).double().eval()
    layer = "blocks.0.mlp_tokens.fc2"
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    report = zoo_models.measure(model, x, measures=("invariance", "equivariance"), groups=[zoo_models.Rotation90()],
                                layers=[layer])
    assert report.errors == {} and report.layouts[layer] == "tokens_transposed"
    modules = dict(model.named_modules())

    def hooked(images):
        out = {}
        h = modules[layer].register_forward_hook(lambda m, i, o: out.__setitem__("a", o.detach().clone()))
        try:
            with torch.no_grad():
                model(images)
        finally:
            h.remove()
        b, d, n = out["a"].shape
        s = math.isqrt(n)
        return out["a"].reshape(b, d, s, s).numpy()  # tokens last, row-major: D x 4 x 4, by hand

    ax = hooked(x)
    per_elem = []
    for e in [("rot", 1), ("rot", 2), ("rot", 3)]:
        xt = torch.stack([torch.from_numpy(ref.transform_np(x[i].numpy(), e, (64, 64))[0].copy()) for i in range(2)])
        agx = hooked(xt)
        inv = eqv = count = 0.0
        for i in range(2):
            tax, mask = ref.transform_np(ax[i], e, (64, 64))
            best = _best_match(agx[i][:, mask], tax[:, mask])  # max over c2 of Pearson(agx_c, T tax_c2), clipped at 0
            for c in range(ax.shape[1]):
                r = ref.pearson_relu(agx[i, c][mask], tax[c][mask])
                if r is None:
                    continue
                inv, eqv, count = inv + r, eqv + best[c], count + 1
        per_elem.append((inv / count, eqv / count))
    expected = np.mean(per_elem, axis=0)
    got = {r.measure: r.value for r in report.results}
    assert got["invariance"] == pytest.approx(expected[0], rel=1e-5)
    assert got["equivariance"] == pytest.approx(expected[1], rel=1e-5)
