"""Loading a state dict into layers: every key and shape checked before anything is written.

Shared by ``Layer.load_state_dict`` and the containers; it knows a container
only as a layer whose ``children()`` lists ``(key, layer)``, whose state is
under ``"<key>.*"``.
"""
import numpy as np

from .backends import device_of, move, to_host
from .parameter import Parameter

__all__ = ["layer_slots", "as_array", "check_and_load"]


def layer_slots(layer, prefix=""):
    """(key, owner, attribute) for each parameter and buffer, in state_dict order."""
    children = layer.children()
    if children:  # a container: each child's slots under "<key>."
        out = []
        for key, sub in children:
            out.extend(layer_slots(sub, f"{prefix}{key}."))
        return out
    out = [(prefix + n, layer, n) for n in layer.param_names if getattr(layer, n) is not None]
    out += [(prefix + n, layer, n) for n in layer.buffer_names if getattr(layer, n) is not None]
    return out


def as_array(value):
    """numpy view of a numpy array, scalar, device array or torch tensor."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return to_host(value)


def check_and_load(entries, state, strict=True):
    """Check every key, dtype, shape and value range of ``state``, then copy it into the layers.

    ``entries`` is a list of (layer, prefix). Nothing is written unless the
    whole state checks out; the error names the first wrong key. A float
    value cast into a narrower float dtype (float64 into float32) must be
    within that dtype's range: a finite value beyond it raises ValueError
    instead of loading as inf.
    """
    slots = []
    for layer, prefix in entries:
        slots.extend(layer_slots(layer, prefix))
    loaded = []
    for key, owner, attr in slots:
        if key not in state:
            raise KeyError(f"load_state_dict: missing key {key!r} "
                           f"({type(owner).__name__}.{attr})")
        current = getattr(owner, attr)
        current = current.data if isinstance(current, Parameter) else current
        value = as_array(state[key])
        if value.dtype.kind not in ("f" if current.dtype.kind == "f" else "biu"):
            raise TypeError(f"load_state_dict: key {key!r} has dtype {value.dtype}, "
                            f"expected {'a float' if current.dtype.kind == 'f' else 'an integer'}"
                            f" array like {current.dtype}")
        if value.shape != current.shape:
            raise ValueError(f"load_state_dict: key {key!r} has shape {value.shape}, "
                             f"expected {current.shape}")
        if value.dtype.kind == "f" and value.dtype.itemsize > current.dtype.itemsize:
            # a finite value beyond the narrower dtype's range would load as inf
            fmax = np.finfo(current.dtype).max
            too_big = np.isfinite(value) & (np.abs(value) > fmax)
            if too_big.any():
                raise ValueError(f"load_state_dict: key {key!r} holds {value[too_big][0]:g}, "
                                 f"which overflows {current.dtype}")
        loaded.append((owner, attr, value))
    if strict:
        expected = {key for key, _, _ in slots}
        prefixes = tuple(p for _, p in entries)
        for key in state:
            if key.startswith(prefixes) and key not in expected:
                raise KeyError(f"load_state_dict: unexpected key {key!r}")
    # Each value goes onto the device (and into the dtype) of what it replaces.
    for owner, attr, value in loaded:
        current = getattr(owner, attr)
        if isinstance(current, Parameter):
            current.data[...] = move(value.astype(current.data.dtype), current.device)
        else:
            setattr(owner, attr, move(np.array(value, dtype=current.dtype), device_of(current)))
