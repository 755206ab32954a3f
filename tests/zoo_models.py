"""The zoo (issue 11): the smallest member of every classification family of ``torchvision.models``,
and torchvision's three segmentation networks (issue 21).

Shared by ``tests/test_zoo.py`` and ``benchmarks/zoo.py`` (which puts this folder on
``sys.path``). Every member is built with random weights (and no pretrained backbone) and ``num_classes=10``; each
records the smallest square input its forward accepts (``min_size``, found by trying
every size from 1 px up) and is measured at ``max(min_size, MIN_SIZE)``: below 32 px
Rotation90 and Translation act on maps of a pixel or two in most of the network.

:func:`run` measures one family with ``Rotation90`` and ``Translation`` on a few random
images; :func:`summarize` turns the report into what the zoo checks: which selected
layers were measured, refused (``errors``, by reason), skipped by design (``notes``) or
never called (``not_called``), which (layer, measure, group) is accounted for by none
of these, and how many values are NaN.
"""
from __future__ import annotations

import inspect
import math
import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torchvision
from torch import nn

import lightning_equivariance as le
from lightning_equivariance import Rotation90, Translation, measure
from lightning_equivariance.layers import OUTPUT, select_layers

MIN_SIZE = 32
MEASURES = ("invariance", "equivariance")


@dataclass(frozen=True)
class ZooMember:
    family: str
    model: str  # what is built, as a call
    min_size: int  # smallest square input the forward accepts (1 px steps)
    build: Callable[[], nn.Module]
    fast: bool = False  # in the default test run (not marked zoo)

    @property
    def size(self) -> int:
        """The input size the zoo measures at: ``min_size``, but at least :data:`MIN_SIZE`."""
        return max(self.min_size, MIN_SIZE)


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs)


def _small_maxvit() -> nn.Module:
    # 32 px: the stem halves it to 16, the two blocks to 8 and 4, each divisible by the
    # partition size 4 (block and grid attention on 4 x 4 windows). maxvit_t needs 224 px.
    from torchvision.models.maxvit import MaxVit

    return MaxVit(
        input_size=(32, 32),
        stem_channels=16,
        partition_size=4,
        block_channels=[16, 32],
        block_layers=[1, 1],
        head_dim=8,
        stochastic_depth_prob=0.0,
        num_classes=10,
    )


_ZOO = [
    ZooMember("alexnet", "alexnet()", 63, _tv("alexnet")),
    ZooMember("vgg", "vgg11()", 32, _tv("vgg11")),
    ZooMember("resnet", "resnet18()", 1, _tv("resnet18")),
    ZooMember("resnext", "resnext50_32x4d()", 1, _tv("resnext50_32x4d")),
    ZooMember("wide_resnet", "wide_resnet50_2()", 1, _tv("wide_resnet50_2")),
    ZooMember("densenet", "densenet121()", 29, _tv("densenet121")),
    ZooMember(
        "googlenet",
        "googlenet(aux_logits=False, init_weights=True)",
        15,
        _tv("googlenet", aux_logits=False, init_weights=True),
    ),
    ZooMember(
        "inception_v3",
        "inception_v3(aux_logits=False, init_weights=True)",
        75,
        _tv("inception_v3", aux_logits=False, init_weights=True),
    ),
    ZooMember("squeezenet", "squeezenet1_1()", 17, _tv("squeezenet1_1")),
    ZooMember("shufflenet", "shufflenet_v2_x0_5()", 1, _tv("shufflenet_v2_x0_5"), fast=True),
    ZooMember("mobilenet_v2", "mobilenet_v2()", 1, _tv("mobilenet_v2")),
    ZooMember("mobilenet_v3", "mobilenet_v3_small()", 1, _tv("mobilenet_v3_small"), fast=True),
    ZooMember("mnasnet", "mnasnet0_5()", 1, _tv("mnasnet0_5")),
    ZooMember("efficientnet", "efficientnet_b0()", 1, _tv("efficientnet_b0")),
    ZooMember("efficientnet_v2", "efficientnet_v2_s()", 1, _tv("efficientnet_v2_s")),
    ZooMember("regnet", "regnet_x_400mf()", 1, _tv("regnet_x_400mf")),
    ZooMember("convnext", "convnext_tiny()", 32, _tv("convnext_tiny")),
    ZooMember("swin", "swin_t()", 4, _tv("swin_t")),
    ZooMember("swin_v2", "swin_v2_t()", 4, _tv("swin_v2_t")),
    ZooMember(
        "maxvit",
        "MaxVit(input_size=(32, 32), partition_size=4, block_channels=[16, 32], block_layers=[1, 1], ...)",
        29,
        _small_maxvit,
    ),
    # vit_b_16 takes its image size: 32 px is a 2 x 2 patch grid (plus the class token).
    ZooMember("vit", "vit_b_16(image_size=32)", 32, _tv("vit_b_16", image_size=32)),
]


# ---- dense prediction (issue 21): torchvision's segmentation networks. They return
# {"out": logits up-sampled by F.interpolate}: no module computes that map, so the library
# measures it as the layer "(output)" (docs/layers.md). weights_backbone=None: no download.
def _segmentation(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, num_classes=10)


_SEGMENTATION = [
    ZooMember("fcn", "segmentation.fcn_resnet50(weights_backbone=None)", 1, _segmentation("fcn_resnet50")),
    ZooMember("deeplabv3", "segmentation.deeplabv3_mobilenet_v3_large(weights_backbone=None)", 1,
              _segmentation("deeplabv3_mobilenet_v3_large")),
    ZooMember("lraspp", "segmentation.lraspp_mobilenet_v3_large(weights_backbone=None)", 1,
              _segmentation("lraspp_mobilenet_v3_large")),
]
SEGMENTATION = [m.family for m in _SEGMENTATION]
_ZOO += _SEGMENTATION
# ---- end of dense prediction

ZOO: Dict[str, ZooMember] = {m.family: m for m in _ZOO}
# Measured only when named (benchmarks/zoo.py --families maxvit_t): the real member, at 224 px.
EXTRA: Dict[str, ZooMember] = {"maxvit_t": ZooMember("maxvit_t", "maxvit_t()", 224, _tv("maxvit_t"))}
FAST = [f for f, m in ZOO.items() if m.fast]


# ---------------------------------------------------------- timm (issue 21; optional: timm is no core dependency)
def timm_available() -> bool:
    try:
        import timm  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


TIMM_SKIP_REASON = "timm is not installed: the timm zoo needs it (pip install 'lightning-equivariance[test]')"


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build():
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)

    return build


# (model name, input size, create_model's size arguments): random weights, the smallest size that keeps
# every stage a map of at least 1 x 1 where the model takes an img_size (ViTs: a 4 x 4 patch grid).
_TIMM = [
    ("vit_small_patch16_224", 64, dict(img_size=64)),
    ("deit_tiny_patch16_224", 64, dict(img_size=64)),
    ("convnext_nano", 64, {}),
    ("efficientnet_b0", 64, {}),
    ("resnet18d", 64, {}),
    ("regnetx_002", 64, {}),
    ("mobilevit_xxs", 64, {}),
    ("mobilevitv2_050", 64, {}),
    ("coat_lite_tiny", 64, dict(img_size=64)),
    ("poolformer_s12", 64, {}),
    # Swin's 7 x 7 windows need maps divisible by 7 in every stage: 224 px (56, 28, 14, 7)
    ("swin_tiny_patch4_window7_224", 224, {}),
    ("eva02_tiny_patch14_224", 56, dict(img_size=56)),
    ("mixer_b16_224", 64, dict(img_size=64)),
    ("mixer_l16_224", 64, dict(img_size=64)),
    ("levit_128s", 64, dict(img_size=64)),
    ("ghostnetv2_100", 64, {}),
]
TIMM_FAMILIES = ["timm_" + name for name, _, _ in _TIMM]
TIMM: Dict[str, ZooMember] = {
    "timm_" + name: ZooMember(
        "timm_" + name,
        f"timm.create_model({name!r}{''.join(f', {k}={v!r}' for k, v in kw.items())})",
        size,
        _timm(name, **kw),
    )
    for name, size, kw in _TIMM
}


def member(family: str) -> ZooMember:
    if family in ZOO:
        return ZOO[family]
    if family in EXTRA:
        return EXTRA[family]
    if family in TIMM:
        if not timm_available():
            raise ImportError(TIMM_SKIP_REASON)
        return TIMM[family]
    raise KeyError(f"unknown zoo family {family!r}; choose from {sorted(ZOO) + sorted(EXTRA) + TIMM_FAMILIES}")


def engine_records_errors() -> bool:
    """Whether the engine records failures per (layer, measure, group) by default (issue 11's engine)."""
    return "layouts" in inspect.signature(le.Measurement).parameters


def zoo_groups() -> List:
    """Rotation90 and diagonal shifts of 1 and 2 px (scaled down and floored on smaller maps: on
    32 px inputs only the 2 px shift still moves a 16 x 16 map, by 1)."""
    return [Rotation90(), Translation(max_shift=2)]


def run(family: str, images: int = 4, seed: int = 0, size: Optional[int] = None, **kwargs):
    """Build ``family`` and measure it; returns ``(model, report, info)``.

    ``info``: ``family, model, size, build_s, measure_s, warnings`` (how many RuntimeWarnings
    the engine gave). ``kwargs`` go to :func:`measure` (``batch_size`` defaults to one
    forward for all images and their transformed copies).
    """
    m = member(family)
    size = size or m.size
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = m.build().eval()
    build_s = time.perf_counter() - t0
    x = torch.randn(images, 3, size, size)
    groups = zoo_groups()
    kwargs.setdefault("batch_size", images * (1 + sum(len(g) for g in groups)))
    if not engine_records_errors():
        kwargs.setdefault("on_error", "warn")  # the engine before issue 11 raises by default
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = measure(model, x, measures=MEASURES, groups=groups, **kwargs)
    measure_s = time.perf_counter() - t0
    info = dict(family=family, model=m.model, size=size, build_s=round(build_s, 2), measure_s=round(measure_s, 2),
                warnings=sum(issubclass(w.category, RuntimeWarning) for w in caught))
    return model, report, info


# ------------------------------------------------------------------ analysis
def _base(layer: str) -> str:
    """``"layer1.0.relu:1"`` (the second call of a module) -> ``"layer1.0.relu"``."""
    return layer.split(":")[0]


def _errors_by_instance(errors) -> Dict[str, Dict[Tuple[Optional[str], Optional[str]], str]]:
    """``{layer_instance: {(measure, group): reason}}`` from either shape of ``report.errors``:
    ``{(layer, measure, group): reason}`` (issue 11) or ``{layer: reason}`` (before; ``(None, None)``: all)."""
    out: Dict[str, Dict[Tuple[Optional[str], Optional[str]], str]] = {}
    for key, reason in errors.items():
        if isinstance(key, tuple):
            layer, m, g = (tuple(key) + (None, None))[:3]
        else:
            layer, m, g = key, None, None
        out.setdefault(layer, {})[(m, g)] = str(reason)
    return out


def short_reason(reason: str, width: int = 70) -> str:
    """A reason without layer names and shapes, so that equal causes count together."""
    r = str(reason).strip().splitlines()[0] if str(reason).strip() else "?"
    r = re.sub(r"^layer '[^']*'( \([^()]*(\([^()]*\))?[^()]*\))?(, [\w/]+)?:\s*", "", r)
    r = re.sub(r"^skipping\s+", "", r)
    r = re.sub(r"'[^']*'", "'..'", r)
    r = re.sub(r"\((\d+, )*\d+,?\)", "(..)", r)
    r = re.sub(r"\[(\d+, )*\d+\]", "[..]", r)
    r = re.sub(r"\d+", "N", r)
    return r if len(r) <= width else r[: width - 3] + "..."


def summarize(model: nn.Module, report, groups: Optional[List[str]] = None, measures=MEASURES) -> dict:
    """What the zoo checks, from a report (either engine): counts, and the lists behind them.

    Returns a dict with ``selected, measured, refused, refused_by_reason, notes, not_called,
    nan, non_finite, uncovered, non_square`` (``uncovered``: ``(layer, measure, group)`` of a
    called layer with no result, error or note, and selected layers of which nothing at all is
    known; ``non_square``: ``(layer, shape)`` of results on a non-square map).
    """
    selected = [n for n, _ in select_layers(model)]
    selected += [n for n in getattr(report, "selected", []) if n == OUTPUT]  # the model's output, when measured apart
    groups = groups or sorted({r.group for r in report.results} | {k[2] for k in report.notes})
    if not groups:
        groups = [g.name for g in zoo_groups()]
    results = {(r.layer, r.measure, r.group) for r in report.results}
    errors = _errors_by_instance(getattr(report, "errors", {}) or {})
    notes = dict(getattr(report, "notes", {}) or {})
    not_called = list(getattr(report, "not_called", []) or [])
    layouts = dict(getattr(report, "layouts", {}) or {})
    instances = {k[0] for k in results} | set(errors) | {k[0] for k in notes} | set(layouts)
    by_base: Dict[str, set] = {}
    for i in instances:
        by_base.setdefault(_base(i), set()).add(i)

    uncovered = []
    for n in selected:
        if n in not_called:
            continue
        if n not in by_base:
            uncovered.append((n, "*", "*"))
            continue
        for i in sorted(by_base[n]):
            errs = errors.get(i, {})
            for m in measures:
                for g in groups:
                    if (i, m, g) in results or (i, m, g) in notes:
                        continue
                    if any((em in (m, None, "*")) and (eg in (g, None, "*")) for em, eg in errs):
                        continue
                    uncovered.append((i, m, g))

    refused_by_reason: Dict[str, int] = {}
    for errs in errors.values():
        for reason in sorted({short_reason(r) for r in errs.values()}):
            refused_by_reason[reason] = refused_by_reason.get(reason, 0) + 1
    nan = [(r.layer, r.measure, r.group) for r in report.results if isinstance(r.value, float) and math.isnan(r.value)]
    nan += [(r.layer, r.measure, r.group, e) for r in report.results for e, v in (r.per_element or {}).items()
            if isinstance(v, float) and math.isnan(v) and not math.isnan(r.value)]
    non_finite = [(r.layer, r.measure, r.group) for r in report.results if not math.isfinite(r.value)]
    measured = sorted({_base(k[0]) for k in results})
    # The zoo's inputs are square, so every map of the image grid is square too: a result on a
    # non-square h x w is a tensor misread as a map (e.g. MaxViT's window partitions
    # B x windows x P*P x C taken for B x h x w x C), measured under Translation only.
    non_square = sorted(
        {(r.layer, tuple(r.shape)) for r in report.results if len(r.shape) == 3 and r.shape[1] != r.shape[2]}
    )
    return dict(
        selected=len(selected),
        measured=len(measured),
        layouts_count={v: sum(1 for x in layouts.values() if x == v) for v in sorted(set(map(str, layouts.values())))},
        refused=len({_base(i) for i in errors}),
        refused_by_reason=refused_by_reason,
        notes=len(notes),
        not_called=not_called,
        nan=nan,
        non_finite=non_finite,
        non_finite_positions=dict(getattr(report, "non_finite", {}) or {}),
        uncovered=uncovered,
        non_square=non_square,
        errors={str(k): str(v) for k, v in (getattr(report, "errors", {}) or {}).items()},
    )
