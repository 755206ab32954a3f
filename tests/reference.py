"""Brute-force reference implementations, written straight from the papers' equations.

Loops over samples, group elements and channels; numpy only for the arithmetic. They
share no code with the library: transforms, masks, hooks and correlations are all
re-implemented here, so a test comparing the two can fail.
"""
import math

import numpy as np
import torch


def capture(model, x):
    """Every hooked leaf module's outputs for ONE image x (1 x C x H x W), in call order."""
    outs = []
    hooks = []
    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):
            hooks.append(
                mod.register_forward_hook(
                    lambda m, i, o, name=name: outs.append((name, o.detach().double().numpy()[0].copy()))
                )
            )
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in hooks:
            h.remove()
    names, seen = [], {}
    for name, _ in outs:
        k = seen.get(name, 0)
        seen[name] = k + 1
        names.append(name if k == 0 else f"{name}:{k}")
    return dict(zip(names, [o for _, o in outs]))


#: the three non-identity quarter turns, as elements of transform_np
ROT = [("rot", 1), ("rot", 2), ("rot", 3)]


def hooked(model, names, x):
    """Raw outputs of the named modules for a batch x (plain hooks, no library code)."""
    modules = dict(model.named_modules())
    outs, handles = {}, []
    for n in names:
        handles.append(modules[n].register_forward_hook(lambda m, i, o, n=n: outs.__setitem__(n, o.detach().clone())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


def shift_np(a, sx, sy, circular=False):
    """Shift the last two axes of a by (sy rows, sx cols), zero fill (explicit loops)."""
    h, w = a.shape[-2:]
    out = np.zeros_like(a)
    for y in range(h):
        for x in range(w):
            ys, xs = y - sy, x - sx
            if circular:
                out[..., y, x] = a[..., ys % h, xs % w]
            elif 0 <= ys < h and 0 <= xs < w:
                out[..., y, x] = a[..., ys, xs]
    return out


def shift_mask_np(h, w, sx, sy):
    m = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            m[y, x] = 0 <= y - sy < h and 0 <= x - sx < w
    return m


def transform_np(a, element, in_size):
    """T_g on an array C x h x w for an input of size in_size = (H, W); returns (array, mask)."""
    h, w = a.shape[-2:]
    kind, val = element
    if kind == "rot":
        return np.rot90(a, val, axes=(-2, -1)).copy(), np.ones((h, w), bool)
    if kind == "hflip":
        return a[..., :, ::-1].copy(), np.ones((h, w), bool)
    if kind == "vflip":
        return a[..., ::-1, :].copy(), np.ones((h, w), bool)
    if kind in ("shift", "cshift"):
        dx, dy = val
        sx, sy = math.floor(dx * w / in_size[1] + 1e-9), math.floor(dy * h / in_size[0] + 1e-9)
        circ = kind == "cshift"
        mask = np.ones((h, w), bool) if circ else shift_mask_np(h, w, sx, sy)
        return shift_np(a, sx, sy, circular=circ), mask
    raise ValueError(kind)


def pearson_relu(u, v, centre=True):
    u = u.astype(np.float64).ravel()
    v = v.astype(np.float64).ravel()
    # dead: (numerically) constant, judged against the raw magnitude - a constant map's
    # centred values are round-off, so comparing with them would call it alive
    scale_u, scale_v = np.abs(u).max(), np.abs(v).max()
    if centre:
        u = u - u.mean()
        v = v - v.mean()
    nu, nv = np.sqrt((u * u).sum()), np.sqrt((v * v).sum())
    if nu == 0 or nv == 0 or nu <= 1e-10 * scale_u or nv <= 1e-10 * scale_v:
        return None
    return max(0.0, float((u * v).sum() / (nu * nv)))


def correlation_brute(model, images, elements, centre=True):
    """{layer: (invariance, equivariance)} averaged over elements (Bruintjes et al. 2023 Eq. 4, 7)."""
    in_size = tuple(images.shape[-2:])
    per_elem = {}
    for e in elements:
        sums = {}
        for i in range(images.shape[0]):
            x = images[i : i + 1]
            xt = torch.from_numpy(transform_np(x.numpy()[0], e, in_size)[0].copy()).unsqueeze(0)
            a_x, a_gx = capture(model, x), capture(model, xt)
            for layer, ax in a_x.items():
                agx = a_gx[layer]
                s = sums.setdefault(layer, [0.0, 0.0, 0])
                if ax.ndim == 1 or (ax.ndim == 3 and ax.shape[-1] * ax.shape[-2] == 1):
                    r = pearson_relu(agx, ax, centre)
                    if r is not None:
                        s[0] += r
                        s[1] += r
                        s[2] += 1
                    continue
                tax, mask = transform_np(ax, e, in_size)
                C = ax.shape[0]
                for c in range(C):
                    inv = pearson_relu(agx[c][mask], tax[c][mask], centre)
                    if inv is None:
                        continue
                    best = 0.0
                    for c2 in range(C):
                        r = pearson_relu(agx[c][mask], tax[c2][mask], centre)
                        if r is not None:
                            best = max(best, r)
                    s[0] += inv
                    s[1] += best
                    s[2] += 1
        for layer, (si, se, n) in sums.items():
            per_elem.setdefault(layer, []).append((si / n, se / n))
    return {layer: tuple(np.mean(v, axis=0)) for layer, v in per_elem.items()}


def assert_same_details(got, want, rtol, atol):
    """Two ``compute_details()`` dicts equal: same keys, tensors and floats within ``rtol``/``atol``,
    everything else exactly."""
    import pytest
    import torch

    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        if isinstance(w, torch.Tensor):
            torch.testing.assert_close(g, w, rtol=rtol, atol=atol, msg=key)
        elif isinstance(w, float):
            assert g == pytest.approx(w, rel=rtol, abs=atol), key
        else:
            assert g == w, key
