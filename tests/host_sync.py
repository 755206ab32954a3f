"""A dispatch mode that fails on host synchronisation: what update paths must never do (issue 16)."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class NoHostRead(TorchDispatchMode):
    """Raises on the ops that read a device value on the host (``aten._local_scalar_dense``: every
    ``.item()``, ``bool()``, ``int()`` of a tensor) or compact a tensor by a mask."""

    FORBIDDEN = {"_local_scalar_dense", "nonzero", "nonzero_static", "masked_select", "item"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.FORBIDDEN:
            raise AssertionError(f"host synchronisation in update: aten.{name}")
        if name in ("index", "index_put", "index_put_") and len(args) > 1:
            # boolean-mask indexing compacts (a nonzero inside the kernel on CPU)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
                raise AssertionError(f"host synchronisation in update: boolean aten.{name}")
        return func(*args, **(kwargs or {}))
