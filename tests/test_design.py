"""The shape of the code (issue 12): no import cycles, a measure-agnostic engine, torchmetrics' protocol."""
import ast
import copy
import pathlib
import re
import threading

import pytest
import torch

from lightning_equivariance import Measurement, Rotation90, measure
from lightning_equivariance.metrics import MEASURES, GEEDSoftmax, LayerContext
from models import SmallCNN

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lightning_equivariance"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
    """Every lightning_equivariance module ``path`` imports (module level and inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("lightning_equivariance"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lightning_equivariance"))
    return found


def _graph():
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {m: {t for t in _imports(p) if t in files and t != m} for m, p in files.items()}
    return files, edges


def _module_edges():
    """The real import graph: each module's own imports (parsed with ``ast``) among the package's modules,
    without the edges into packages (``__init__`` re-exports its children by design, so a cycle through
    a package is not one)."""
    _, edges = _graph()
    packages = {m for m in edges if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    return {m: {t for t in ts if t not in packages} for m, ts in edges.items()}


def _find_cycle(edges):
    """An import cycle of ``edges`` (``{module: imported modules}``) as ``[m0, m1, ..., m0]``, or ``None``."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state:
                cycle = visit(t)
                if cycle:
                    return cycle
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_no_import_cycles_among_the_modules():
    cycle = _find_cycle(_module_edges())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_cycle_check_can_fail():
    # the same check on the real graph, with one planted import: groups importing the engine, which imports groups
    edges = _module_edges()
    engine, groups = "lightning_equivariance.engine", "lightning_equivariance.groups"
    assert groups in edges[engine] and engine not in edges[groups]  # the parsed graph has the real edge
    edges[groups] = edges[groups] | {engine}
    cycle = _find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1] and {engine, groups} <= set(cycle), cycle
    # and every step of the reported cycle is an edge of the graph
    assert all(b in edges[a] for a, b in zip(cycle, cycle[1:])), cycle


def test_engine_names_no_measure():
    source = (PACKAGE / "engine.py").read_text()
    named = [m for m in MEASURES if re.search(rf"\b{re.escape(m)}\b", source)]
    assert named == [], f"engine.py names measures {named}"
    for word in ("BatchNorm", "affine", "_POOLING", "getattr(MEASURES"):
        assert word not in source, word


def test_the_engine_runs_every_pass_alike():
    """Issue 22: the passes live in passes.py (which imports nothing from the engine) and push contexts into
    the engine; the engine never branches on the kind of pass, keeps no mutable chunk dict, and no
    measure shares work through a tuple-keyed cache (a context's shared work is typed: metrics/shared.py)."""
    source = (PACKAGE / "engine.py").read_text()
    for word in ("forward_mode", "FORWARD_MODE", "pass_kind", "ForwardModePass", "lie_pass", "LieContext"):
        assert word not in source, word
    assert not re.search(r"chunk\s*(:\s*Dict|\[|\.update\(|=\s*\{)", source), "a mutable chunk dict"
    edges = _module_edges()
    assert "lightning_equivariance.passes" in edges["lightning_equivariance.engine"]
    assert not {m for m in edges["lightning_equivariance.passes"] if m.startswith("lightning_equivariance.engine")}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in (r"\.cache\[", r"\.shared\[", r"cache\[\(", r"_cached\("):
            assert not re.search(pattern, text), f"{path.name}: {pattern}"
    fields = set(LayerContext.__dataclass_fields__)
    assert not fields & {"cache", "shared"}, fields


def test_contributions_are_their_own_room_outside_the_engine():
    """Gruver et al.'s Eq. 5-6 analysis lives in contributions.py (issue 22): no module imports it but the
    package, which re-exports it (the lie.py alias goes through the package's lazy table), and lie.py holds
    none of its code."""
    edges = _module_edges()
    contributions = "lightning_equivariance.contributions"
    assert {"lightning_equivariance.engine", "lightning_equivariance.lie"} <= edges[contributions]  # the graph sees it
    importers = sorted(m for m, ts in edges.items() if contributions in ts)
    assert importers == ["lightning_equivariance"], importers  # only the package, which re-exports it
    lie = (PACKAGE / "lie.py").read_text()
    for name in ("_ContributionHooks", "_contribution_projections", "_replace_first_tensor", "Hutchinson"):
        assert name not in lie, name


def test_only_the_callback_imports_lightning_and_functional_is_pure_torch():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        if path.name != "callback.py":
            lightning = ("lightning", "pytorch_lightning")
            assert not any(n.startswith(lightning) and not n.startswith("lightning_equivariance") for n in names), path
        if path.parent.name == "functional":
            assert not any(n.startswith(("lightning", "tensorboard", "torchmetrics")) for n in names), path


def test_duplicate_measures_are_rejected():
    with pytest.raises(ValueError, match="duplicates.*'sv', 'sv'"):
        measure(SmallCNN(), torch.rand(2, 1, 8, 8), measures=("sv", "sv"))


def test_no_preferred_direction_stays_none_in_the_report():
    report = measure(SmallCNN(), torch.rand(3, 1, 8, 8), measures=("sv", "sd", "nv"), groups=[Rotation90()])
    direction = {r.measure: r.higher_is_better for r in report.results}
    assert direction == {"sv": None, "sd": None, "nv": False}
    assert {s.measure: s.higher_is_better for s in report.series()} == direction


def test_lee_from_two_threads():
    """Two threads, each measuring its own copy of a model (hooks on one module object are shared by
    every thread): torch's one dual level per process must not make one of them fail."""
    torch.manual_seed(0)
    model, x = SmallCNN().double(), torch.rand(4, 1, 12, 12, dtype=torch.float64)
    expected = measure(model, x, measures=("lee",), groups=("rotation",)).to_dataframe().value.tolist()
    results, errors = [], []

    def run():
        own = copy.deepcopy(model)
        try:
            for _ in range(3):
                results.append(measure(own, x, measures=("lee",), groups=("rotation",)).to_dataframe().value.tolist())
        except Exception as e:  # noqa: BLE001 - the test reports whichever error the call raises
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 6
    assert all(r == pytest.approx(expected, rel=1e-12) for r in results)


def _ctx(x, gx):
    g = Rotation90()
    return LayerContext(layer="l", kind="vector", group=g, elements=g.elements, a_x=x, a_gx=gx, input_size=(8, 8))


def test_updates_go_through_torchmetrics_update():
    x = torch.randn(6, 5, dtype=torch.float64)
    ctx = _ctx(x, torch.stack([x.roll(1, 0), x * 2, x + 1]))
    for name in ("invariance", "nv", "geed_channel", "geed_latent_l2"):
        metric = MEASURES[name].for_layer(ctx)
        metric.update(ctx)
        assert metric.update_count == 1, name
        value = float(metric.compute())
        metric.update(_ctx(-x, torch.stack([x, x, x])))
        assert metric.update_count == 2
        assert float(metric.compute()) != value, f"{name}: compute() returned a stale cache"


def test_geed_softmax_forgets_its_input_decision_on_reset():
    probs = torch.softmax(torch.randn(4, 3, dtype=torch.float64), -1)
    logits = torch.randn(4, 3, dtype=torch.float64) * 5
    metric = GEEDSoftmax(num_elements=1)
    metric.update(probs, probs.unsqueeze(0))
    assert metric.inputs == "auto" and metric._decided == "probs"
    metric.reset()
    metric.update(logits, logits.unsqueeze(0))
    assert metric._decided == "logits"


def test_similarity_is_an_alias_of_measure_options():
    m = Measurement(SmallCNN(), similarity="cosine")
    assert m.options == {"similarity": "cosine"}
    with pytest.raises(ValueError, match="contradicts"):
        Measurement(SmallCNN(), similarity="cosine", measure_options={"similarity": "pearson"})


def test_the_callback_assigns_its_attributes_and_names_layers_through_the_engine():
    source = (PACKAGE / "callback.py").read_text()
    assert "vars(self).update" not in source
    for attribute in ("csv_file", "every_n_epochs", "measures", "layouts", "summary"):
        assert re.search(rf"^\s+self\.{attribute} = ", source, re.M), attribute
    imported = _module_edges()["lightning_equivariance.callback"]
    assert "lightning_equivariance.engine" in imported and "lightning_equivariance.layers" not in imported, imported


def test_renamed_words_keep_deprecated_aliases():
    """Issue 22's renames ("probe" = probe images only, "left out" = dead channels only, "part" = depth part only)
    keep the old Python names for one release, each with a DeprecationWarning that names the new one."""
    import lightning_equivariance.probe as old_module
    from lightning_equivariance import layers
    from lightning_equivariance.metrics import base

    with pytest.warns(DeprecationWarning, match="lightning_equivariance.layers.LayerHooks"):
        assert old_module.Probe is layers.LayerHooks
    with pytest.warns(DeprecationWarning, match="lightning_equivariance.layers.select_layers"):
        assert old_module.select_layers is layers.select_layers
    with pytest.warns(DeprecationWarning, match="NonFiniteImages"):
        assert base.ImagesLeftOut is base.NonFiniteImages
    meas = Measurement(SmallCNN(), groups=[Rotation90()])
    with pytest.warns(DeprecationWarning, match="non_finite_images"):
        assert meas.images_left_out is meas.non_finite_images
    from lightning_equivariance.metrics.transformational import NormalizedVariance

    assert NormalizedVariance.summaries == ("tv", "cols") and not hasattr(NormalizedVariance, "parts")
