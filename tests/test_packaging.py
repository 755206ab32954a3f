"""Packaging (issue 17): version, ``--version``, ``py.typed``, optional e2cnn and its NumPy 2 patch."""
import importlib
import importlib.metadata
import importlib.util
import inspect
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lightning_equivariance
from lightning_equivariance import _e2cnn_compat as compat

ROOT = Path(__file__).resolve().parents[1]
NUMPY = tuple(int(p) for p in np.__version__.split(".")[:2])


# ----------------------------------------------------------------------------- version
def test_version_comes_from_the_package_metadata():
    assert lightning_equivariance.__version__ == importlib.metadata.version("lightning-equivariance")


def test_version_falls_back_when_the_package_is_not_installed(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    try:
        assert importlib.reload(lightning_equivariance).__version__ == "0+unknown"
    finally:
        monkeypatch.undo()
        importlib.reload(lightning_equivariance)
    assert lightning_equivariance.__version__ == importlib.metadata.version("lightning-equivariance")


def test_python_m_version_prints_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "lightning_equivariance", "--version"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"lightning-equivariance {lightning_equivariance.__version__}"


# ----------------------------------------------------------------------------- py.typed
def test_py_typed_ships_in_the_wheel(tmp_path):
    """Build a wheel from a copy of the sources (the checkout stays clean) and look inside."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("lightning_equivariance", "tb_plugin"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    assert (src / "lightning_equivariance" / "py.typed").is_file()
    build = (
        "import sys; from setuptools import build_meta; "
        "print(build_meta.build_wheel(sys.argv[1]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], capture_output=True, text=True, timeout=300, cwd=src
    )
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    assert "lightning_equivariance/py.typed" in names
    assert "lightning_equivariance/_e2cnn_compat.py" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Provides-Extra: steerable" in text and "Provides-Extra: examples" in text
    requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
    # e2cnn only through the extras; NumPy without an upper bound.
    assert all("extra ==" in line for line in requires if "e2cnn" in line), requires
    assert any(line.startswith("Requires-Dist: numpy") and "<" not in line for line in requires), requires


# ----------------------------------------------------------------------------- e2cnn optional
def test_the_library_imports_without_e2cnn_and_the_steerable_parts_name_the_extra():
    code = """
import sys
sys.modules["e2cnn"] = None  # as if it were not installed
import lightning_equivariance
from lightning_equivariance import baselines, steerable
from lightning_equivariance.cli import main
baselines.PlainCNN(); baselines.Bruintjes7Layer()
for build in (baselines.SteerableCNN, steerable.patch_e2cnn):
    try:
        build()
    except ImportError as e:
        print("ImportError:", e)
print("loaded e2cnn:", sorted(m for m in sys.modules if m.startswith("e2cnn.")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("ImportError:")]
    assert len(errors) == 2 and all('pip install "lightning-equivariance[steerable]"' in e for e in errors), out.stdout
    assert "loaded e2cnn: []" in out.stdout


# ----------------------------------------------------------------------------- the NumPy 2 patch
e2cnn_needed = pytest.mark.skipif(
    importlib.util.find_spec("e2cnn") is None, reason='needs e2cnn: pip install "lightning-equivariance[steerable]"'
)


@pytest.fixture
def patched():
    """The patch applied even under NumPy 1.x (``force``); the previous state is put back after."""
    was = compat.is_applied()
    compat.apply(force=True)
    yield compat
    if not was:
        compat.restore()


def _originals():
    import e2cnn.kernels.utils as utils

    return {name: compat.original(utils, name) for name in ("psi", "chi", "psichi")}


ANGLES = np.linspace(0.0, 2 * np.pi, 9)
CASES = [  # (function name, positional args, keyword args) with Python scalars, as e2cnn calls them
    ("psi", (ANGLES,), {}),
    ("psi", (ANGLES,), {"k": 3, "gamma": 0.25}),
    ("psi", (0.7,), {"k": 2}),
    ("psi", (ANGLES,), {"k": np.arange(4), "gamma": np.linspace(0, 1, 4)}),
    ("chi", (0,), {}),
    ("chi", (1,), {}),
    ("chi", (np.array([0, 1, 1]),), {}),
    ("psichi", (ANGLES, 0), {}),
    ("psichi", (ANGLES, 1), {"k": 2, "gamma": np.pi / 2}),
    ("psichi", (0.3, 1), {"k": 5}),
    ("psichi", (ANGLES, np.array([0, 1, 1])), {"k": np.array([1, 2, 3]), "gamma": 0.0}),
]


def _as_arrays(function, args, kwargs):
    """The same arguments (defaults included) as 1-d arrays but ``theta``: each ``np.array(x, copy=False)``
    of e2cnn's original then needs no copy, so it runs under NumPy 2 too; ``reshape(-1, 1)``
    makes a scalar and a one-element array the same ``1 x 1`` array."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: v if k in ("theta", "out") else np.atleast_1d(v) for k, v in bound.arguments.items()}


@e2cnn_needed
@pytest.mark.parametrize("name,args,kwargs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_patched_functions_match_e2cnns_own(name, args, kwargs):
    new = getattr(compat, name)(*args, **kwargs)
    original = _originals()[name]
    expected = original(**_as_arrays(original, args, kwargs))
    np.testing.assert_array_equal(new, expected)
    if NUMPY < (2, 0):  # NumPy 1 semantics: e2cnn's own function takes the Python scalars too
        np.testing.assert_array_equal(new, original(*args, **kwargs))
    out = np.full_like(new, np.nan)
    assert getattr(compat, name)(*args, out=out, **kwargs) is out
    np.testing.assert_array_equal(out, new)


def _solutions():
    from e2cnn.group import cyclic_group, dihedral_group, o2_group, so2_group
    from e2cnn.kernels import irreps_basis as ib

    return [
        ib.R2FlipsSolution(cyclic_group(2), 1, 1, axis=0.0, max_frequency=3),
        ib.R2ContinuousRotationsSolution(so2_group(3), 1, 2),
        ib.R2FlipsDiscreteRotationsSolution(dihedral_group(4), (1, 1), (1, 1), axis=0.0, max_frequency=3),
        ib.R2FlipsContinuousRotationsSolution(o2_group(3), (1, 1), (1, 2), axis=0.0),
    ]


@e2cnn_needed
def test_patched_hashes_are_e2cnns_own_with_tobytes(patched):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for basis in _solutions():
            gamma = basis.gamma.tobytes() if isinstance(basis.gamma, np.ndarray) else basis.gamma
            value = type(basis).__hash__(basis)
            assert value == hash(basis.in_irrep) + hash(basis.out_irrep) + hash(basis.mu.tobytes()) + hash(gamma)
            if hasattr(np.ndarray, "tostring"):  # NumPy < 2.3: e2cnn's own __hash__ still runs
                assert value == compat.original(type(basis), "__hash__")(basis)
            assert basis.sample(ANGLES[None, :]).shape[-1] == len(ANGLES)  # samples through the patched psichi


@e2cnn_needed
def test_apply_is_idempotent_and_restore_undoes_it(patched):
    import e2cnn.kernels
    import e2cnn.kernels.irreps_basis as ib
    import e2cnn.kernels.utils as utils

    owners = [utils, e2cnn.kernels, ib]
    assert compat.is_applied()
    assert all(m.psichi is compat.psichi and m.psi is compat.psi and m.chi is compat.chi for m in owners)
    before = {(o, n): compat.original(o, n) for o in owners for n in ("psi", "chi", "psichi")}
    assert all(f.__module__ == "e2cnn.kernels.utils" for f in before.values())
    assert compat.apply(force=True) and compat.apply(force=True)  # again: nothing changes
    assert all(compat.original(o, n) is f for (o, n), f in before.items())
    assert all(m.psichi is compat.psichi for m in owners)
    hashes = {cls: cls.__hash__ for cls in (type(b) for b in _solutions())}
    compat.restore()
    assert not compat.is_applied()
    assert all(getattr(o, n) is f for (o, n), f in before.items())
    assert all(
        cls.__hash__ is not h and cls.__hash__.__module__ == "e2cnn.kernels.irreps_basis" for cls, h in hashes.items()
    )
    compat.apply(force=True)
    assert all(cls.__hash__ is h for cls, h in hashes.items())


@e2cnn_needed
def test_apply_changes_nothing_under_numpy_1_and_nothing_global(patched):
    compat.restore()
    assert compat.apply() == (NUMPY >= (2, 0)) == compat.is_applied()
    assert hasattr(np.ndarray, "tostring") == (NUMPY < (2, 3))  # NumPy itself is left alone
    if NUMPY >= (2, 0):
        with pytest.raises(ValueError):
            np.array(1.0, copy=False)  # NumPy 2 semantics for everyone but e2cnn
