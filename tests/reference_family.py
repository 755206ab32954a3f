"""Brute-force references for G-EED (Kvinge et al. 2022 §3.1) and Quiroga's transformational measures.

Written from the equations: every transformed image is its own forward pass, the ST
matrices are built explicitly sample by sample and transformation by transformation,
distances are explicit pairwise sums, orbit averages explicit sums. numpy (and scipy for
the normal and F distributions) only; transforms, masks, inverses and interpolation are
re-implemented here with loops, sharing no code with the library (``reference.py`` is
test code too).

Elements are tuples: ``("rot", k)`` (k quarter turns, as ``np.rot90``), ``("hflip", None)``,
``("vflip", None)``, ``("shift", (dx, dy))`` (zero fill), ``("angle", degrees)`` (bilinear),
``("zoom", factor)`` (bilinear), ``("dihedral", (degrees, flipped))``.
"""
import math

import numpy as np
import torch
from scipy import stats

from reference import capture, shift_mask_np, shift_np


# ---------------------------------------------------------------------- bilinear sampling
def _bilinear(a, src):
    """Sample a (... x h x w) at the pixel coordinates src(y, x) -> (py, px) with zero padding (loops)."""
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    for y in range(h):
        for x in range(w):
            py, px = src(y, x)
            y0, x0 = math.floor(py), math.floor(px)
            for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[..., y, x] += wy * wx * a[..., yy, xx]
    return out


def _norm(i, n):
    return (2 * i + 1) / n - 1  # pixel centre in [-1, 1] (align_corners=False)


def _pix(u, n):
    return ((u + 1) * n - 1) / 2


def rotate_np(a, degrees):
    """Counter-clockwise on screen like rot90: output (x, y) reads input (c x - s (h/w) y, s (w/h) x + c y)."""
    h, w = a.shape[-2:]
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)

    def src(y, x):
        xn, yn = _norm(x, w), _norm(y, h)
        return _pix(s * (w / h) * xn + c * yn, h), _pix(c * xn - s * (h / w) * yn, w)

    return _bilinear(a, src)


def zoom_np(a, f):
    h, w = a.shape[-2:]
    return _bilinear(a, lambda y, x: (_pix(_norm(y, h) / f, h), _pix(_norm(x, w) / f, w)))


def zoom_mask_np(h, w, f):
    m = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            py, px = _pix(_norm(y, h) / f, h), _pix(_norm(x, w) / f, w)
            m[y, x] = -1e-9 <= py <= h - 1 + 1e-9 and -1e-9 <= px <= w - 1 + 1e-9
    return m


def disk_np(h, w):
    m = np.zeros((h, w), bool)
    r = min(h, w) / 2
    for y in range(h):
        for x in range(w):
            m[y, x] = (y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2 <= r * r
    return m


def _quarter(degrees):
    k = degrees / 90.0
    return int(round(k)) % 4 if abs(k - round(k)) < 1e-9 else None


def _rotate_any(a, degrees):
    k = _quarter(degrees % 360)
    return np.rot90(a, k, axes=(-2, -1)).copy() if k is not None else rotate_np(a, degrees)


def transform(a, element, in_size, inverse=False):
    """T_g (or T_g^{-1}) on an array ... x h x w of an input of size in_size; returns (array, content mask)."""
    h, w = a.shape[-2:]
    kind, val = element
    full = np.ones((h, w), bool)
    if kind == "rot":
        return np.rot90(a, -val if inverse else val, axes=(-2, -1)).copy(), full
    if kind == "hflip":
        return a[..., :, ::-1].copy(), full
    if kind == "vflip":
        return a[..., ::-1, :].copy(), full
    if kind == "shift":
        sx, sy = math.floor(val[0] * w / in_size[1] + 1e-9), math.floor(val[1] * h / in_size[0] + 1e-9)
        if inverse:
            sx, sy = -sx, -sy
        return shift_np(a, sx, sy), shift_mask_np(h, w, sx, sy)
    if kind == "angle":
        deg = -val if inverse else val
        return _rotate_any(a, deg), (full if _quarter(val % 360) is not None else disk_np(h, w))
    if kind == "zoom":
        f = 1 / val if inverse else val
        return zoom_np(a, f), (zoom_mask_np(h, w, f) if f < 1 else full)
    if kind == "dihedral":
        deg, flipped = val
        mask = full if _quarter(deg % 360) is not None else disk_np(h, w)
        if not inverse:
            b = a[..., :, ::-1].copy() if flipped else a
            return _rotate_any(b, deg), mask
        b = _rotate_any(a, -deg)
        return (b[..., :, ::-1].copy() if flipped else b), mask
    raise ValueError(kind)


# ---------------------------------------------------------------------- activations
def activations(model, images, elements):
    """{layer: array n x k x ...} with column 0 the untransformed image and column j the j-th element."""
    in_size = tuple(images.shape[-2:])
    out = {}
    for i in range(images.shape[0]):
        x = images[i : i + 1]
        views = [x] + [torch.from_numpy(transform(x.numpy()[0], e, in_size)[0].copy()).unsqueeze(0) for e in elements]
        caps = [capture(model, v) for v in views]
        for layer in caps[0]:
            acts = []
            for cap in caps:
                a = cap[layer]
                if a.ndim == 3 and a.shape[-1] * a.shape[-2] == 1:  # B x C x 1 x 1 -> vector
                    a = a.reshape(-1)
                acts.append(a)
            out.setdefault(layer, []).append(acts)
    return {layer: np.array(v, dtype=np.float64) for layer, v in out.items()}


def st(acts, include_identity=True):
    """ST cube n x k x units (Quiroga Eq. 1) with the identity column first (or dropped)."""
    a = acts if include_identity else acts[:, 1:]
    return a


# ---------------------------------------------------------------------- Quiroga
def _units(cube):
    n, k = cube.shape[:2]
    return cube.reshape(n, k, -1)


def var(v, axis=0):
    """Sample variance (ddof 1) along axis; exactly 0 where all values are identical (np.var leaves ~1e-31)."""
    same = np.all(v == np.take(v, [0], axis=axis), axis=axis)
    return np.where(same, 0.0, np.var(v, axis=axis, ddof=1))


def tv(cube):
    """mean_i Var_j ST[i, j] per unit (Eq. 2), explicit loop over samples."""
    c = _units(cube)
    rows = [var(c[i]) for i in range(c.shape[0])]
    return np.mean(rows, axis=0).reshape(cube.shape[2:])


def sv_columns(cube):
    c = _units(cube)
    return np.array([var(c[:, j]) for j in range(c.shape[1])])


def sv(cube):
    """mean_j Var_i ST[i, j] per unit (Eq. 3)."""
    return sv_columns(cube).mean(0).reshape(cube.shape[2:])


def ratio(num, den):
    out = np.empty_like(num)
    for idx in np.ndindex(num.shape):
        if den[idx] == 0:
            out[idx] = 1.0 if num[idx] == 0 else math.inf
        else:
            out[idx] = num[idx] / den[idx]
    return out


def average_distance(values, d):
    """Eq. 6: sum_{i,j} d(x_i, x_j) / n^2 (values: n x units), explicit double loop."""
    n = values.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            total = total + d(values[i], values[j])
    return total / (n * n)


def euclid(x, y):
    return np.abs(x - y)


def squared(x, y):
    return (x - y) ** 2


def td(cube, d=euclid):
    c = _units(cube)
    return np.mean([average_distance(c[i], d) for i in range(c.shape[0])], axis=0).reshape(cube.shape[2:])


def sd_columns(cube, d=euclid):
    c = _units(cube)
    return np.array([average_distance(c[:, j], d) for j in range(c.shape[1])])


def sd(cube, d=euclid):
    return sd_columns(cube, d).mean(0).reshape(cube.shape[2:])


def anova_invariant(cube, alpha, num_tests=None):
    """1 where the one-way ANOVA over transformations does not reject at alpha / num_tests."""
    c = _units(cube)
    n, k, U = c.shape
    tests = U if num_tests is None else num_tests
    out = np.zeros(U)
    for u in range(U):
        groups = [c[:, j, u] for j in range(k)]
        grand = np.mean(c[:, :, u])
        ssb = sum(n * (g.mean() - grand) ** 2 for g in groups)
        ssw = sum(((g - g.mean()) ** 2).sum() for g in groups)
        if np.all(c[:, :, u] == c[0, 0, u]):
            out[u] = 1.0
            continue
        if ssw == 0:
            out[u] = 0.0
            continue
        F = (ssb / (k - 1)) / (ssw / (k * (n - 1)))
        p = stats.f.sf(F, k - 1, k * (n - 1))
        out[u] = 1.0 if p >= alpha / tests else 0.0
    return out.reshape(cube.shape[2:])


def goodfellow(cube, q=0.99):
    """(m x units) L_j / G with normal fits (Quiroga §3.2.2; column 0 untransformed)."""
    c = _units(cube)
    mu0, s0 = c[:, 0].mean(0), c[:, 0].std(0)
    const0 = np.all(c[:, 0] == c[0, 0], axis=0)
    t = np.where(const0, c[0, 0], mu0 + stats.norm.ppf(q) * s0)
    scores = []
    for j in range(1, c.shape[1]):
        mu, s = c[:, j].mean(0), c[:, j].std(0)
        const = np.all(c[:, j] == c[0, j], axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(const, (c[0, j] > t).astype(float), stats.norm.sf(t, loc=mu, scale=np.where(const, 1, s)))
        scores.append(rate / (1 - q))
    return np.array(scores).reshape(-1, *cube.shape[2:])


def same_equivariance(acts, elements, in_size, include_identity=True):
    """(per_unit C x h x w, mask h x w): mean_i Var_j t_j^{-1}(A(t_j x_i)/||A(t_j x_i)||) (Quiroga §2.6)."""
    n, k = acts.shape[:2]
    h, w = acts.shape[-2:]
    mask = np.ones((h, w), bool)
    for e in elements:
        mask &= transform(np.zeros((1, h, w)), e, in_size, inverse=True)[1]
    rows = []
    for i in range(n):
        maps = []
        if include_identity:
            a = acts[i, 0]
            nrm = np.sqrt((a * a).sum())
            maps.append(a / nrm if nrm > 0 else a)
        for j, e in enumerate(elements):
            a = acts[i, j + 1]
            nrm = np.sqrt((a * a).sum())
            maps.append(transform(a / nrm if nrm > 0 else a, e, in_size, inverse=True)[0])
        rows.append(var(np.array(maps)))
    return np.mean(rows, axis=0) * mask, mask


# ---------------------------------------------------------------------- Kvinge
def _cos(u, v):
    nu, nv = np.sqrt((u * u).sum()), np.sqrt((v * v).sum())
    if nu == 0 or nv == 0:
        return None
    return float((u * v).sum() / (nu * nv))


def orbit_average(acts_i):
    """f_hat(x) = (f(x) + sum_g f(gx)) / (m + 1) for one sample's k x ... activations (Eq. 2, explicit sum)."""
    total = np.zeros_like(acts_i[0])
    for a in acts_i:
        total = total + a
    return total / len(acts_i)


def geed_channel(acts, elements, in_size):
    """(value, per_element, per_channel) of Eq. 5: -(1/C) sum_c cos(a(gx)_c, g a_hat(x)_c)."""
    n, k = acts.shape[:2]
    vector = acts.ndim == 3
    per_element, chan_sum, chan_cnt = [], None, None
    for j, e in enumerate(elements):
        s, cnt = 0.0, 0
        for i in range(n):
            agx = acts[i, j + 1]
            if vector:
                r = _cos(agx, orbit_average(acts[i]))
                if r is not None:
                    s, cnt = s + r, cnt + 1
                continue
            tax, mask = transform(acts[i, 0], e, in_size)
            C = agx.shape[0]
            if chan_sum is None:
                chan_sum, chan_cnt = np.zeros(C), np.zeros(C)
            for c in range(C):
                r = _cos(agx[c][mask], tax[c][mask])
                if r is not None:
                    s, cnt = s + r, cnt + 1
                    chan_sum[c] += r
                    chan_cnt[c] += 1
        per_element.append(-s / cnt)
    per_channel = None if vector else -chan_sum / np.maximum(chan_cnt, 1)
    return float(np.mean(per_element)), per_element, per_channel


def geed_latent(acts, metric="l2"):
    """(value, per_element) of Eq. 6 with explicit orbit averages and pairwise M over distinct points."""
    n, k = acts.shape[:2]
    z = acts[:, 0]
    pairs = []
    for i in range(n):
        for j in range(n):
            if i != j:
                pairs.append(np.sqrt(((z[i] - z[j]) ** 2).sum()) if metric == "l2" else _cos(z[i], z[j]))
    M = float(np.mean(pairs))
    per_element = []
    for j in range(1, k):
        vals = []
        for i in range(n):
            f_hat = orbit_average(acts[i])
            if metric == "l2":
                vals.append(np.sqrt(((acts[i, j] - f_hat) ** 2).sum()))
            else:
                vals.append(-_cos(acts[i, j], f_hat))
        per_element.append(np.mean(vals) / M)
    return float(np.mean(per_element)), per_element


def geed_softmax(acts):
    """(value, per_element): mean KL(softmax(f(gx)) || mean_orbit softmax)."""
    n, k = acts.shape[:2]

    def softmax(v):
        e = np.exp(v - v.max())
        return e / e.sum()

    per_element = []
    for j in range(1, k):
        kls = []
        for i in range(n):
            probs = [softmax(acts[i, t]) for t in range(k)]
            q = orbit_average(np.array(probs))
            p = probs[j]
            kls.append(sum(p[c] * math.log(p[c] / q[c]) for c in range(len(p)) if p[c] > 0))
        per_element.append(np.mean(kls))
    return float(np.mean(per_element)), per_element
