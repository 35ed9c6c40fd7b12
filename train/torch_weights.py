"""Read a legacy (pre-zip) PyTorch state dict with numpy alone, without running what it contains.

A ``.pth`` file of that format is five pickles and raw data: magic number, protocol, system info,
the state dict (tensors refer to storages by persistent id), the list of storage keys, then for
each storage an 8-byte little-endian element count and its bytes. A pickle is code, so the state
dict is read with an unpickler that knows only the few globals a state dict needs and refuses
every other one before anything runs.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclf.errors import EdgeclfError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
MAX_FILE_BYTES = 1 << 30  # a backbone's weights, not a data set: bound what a file can cost

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class WeightsError(EdgeclfError):
    """A weights file that cannot be read safely."""


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2: records where the tensor's data lies."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise WeightsError(f"{self.path}: refused to load: the file names {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise WeightsError(f"{self.path}: not a PyTorch state dict (unexpected persistent id)")
        return _StorageRef(str(pid[2]), pid[1].dtype, int(pid[4]))


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The named arrays of a legacy PyTorch state dict; raises WeightsError in one line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WeightsError(f"{path}: {size / 2**20:.0f} MiB is too large for a weights file")
        data = path.read_bytes()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights ({e.strerror or e})") from None
    f = io.BytesIO(data)
    try:
        load = lambda: _StateDictUnpickler(f, path).load()  # every pickle, headers included, is restricted
        if load() != MAGIC_NUMBER:
            raise WeightsError(f"{path}: not a legacy PyTorch file (bad magic number); save it with "
                               "torch.save(..., _use_new_zipfile_serialization=False)")
        load()  # the protocol version: nothing to check beyond the magic number
        sys_info = load()
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
            raise WeightsError(f"{path}: only little-endian weights files are supported")
        state = load()
        keys = load()
    except WeightsError:
        raise
    except Exception as e:  # a truncated or corrupt pickle: any of pickle's many error types
        raise WeightsError(f"{path}: corrupt weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise WeightsError(f"{path}: not a PyTorch state dict")
    storages = _read_storages(f, data, keys, state, path)
    tensors = {str(name): t for name, t in state.items() if isinstance(t, _TensorRef)}
    counts = {name: _check_layout(t, storages, path, name) for name, t in tensors.items()}
    held = sum(counts[name] * np.dtype(t.storage.dtype).itemsize for name, t in tensors.items())
    if held > len(data):  # names sharing one storage (or overlapping views) would multiply its bytes
        raise WeightsError(f"{path}: its tensors would take {held / 2**20:.0f} MiB, more data than the file holds "
                           f"({len(data) / 2**20:.0f} MiB)")
    return {name: _materialise(t, storages) for name, t in tensors.items()}


def _read_storages(f: io.BytesIO, data: bytes, keys: list, state: dict, path: Path) -> dict[str, np.ndarray]:
    """Each listed storage as a view of ``data`` (nothing copied), its length checked against the file."""
    refs = {t.storage.key: t.storage for t in state.values() if isinstance(t, _TensorRef)}
    storages: dict[str, np.ndarray] = {}
    pos = f.tell()
    for key in keys:
        ref = refs.get(str(key))
        if ref is None:
            raise WeightsError(f"{path}: storage {key} is listed but never used")
        if pos + 8 > len(data):
            raise WeightsError(f"{path}: truncated (storage {key} is missing)")
        numel = int.from_bytes(data[pos:pos + 8], "little")
        nbytes = numel * np.dtype(ref.dtype).itemsize
        if numel != ref.numel or pos + 8 + nbytes > len(data):
            raise WeightsError(f"{path}: truncated or inconsistent storage {key}")
        storages[ref.key] = np.frombuffer(data, ref.dtype, numel, pos + 8)
        pos += 8 + nbytes
    return storages


def _check_layout(t: _TensorRef, storages: dict[str, np.ndarray], path: Path, name: str) -> int:
    """The tensor's element count, once its shape, strides and offset are known to stay inside its
    storage and to hold no more elements than it (a zero stride would turn a few bytes into
    gigabytes): checked on the numbers, before anything is allocated."""
    flat = storages.get(t.storage.key)
    if flat is None:
        raise WeightsError(f"{path}: tensor {name} has no data")
    if len(t.size) != len(t.stride) or any(s < 0 for s in t.size + t.stride) or t.offset < 0:
        raise WeightsError(f"{path}: tensor {name} has a bad shape")
    count = math.prod(t.size)
    if count > len(flat):
        raise WeightsError(f"{path}: tensor {name} has {count} elements, more than its storage's {len(flat)}")
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) if count else t.offset - 1
    if last >= len(flat):
        raise WeightsError(f"{path}: tensor {name} reaches past its storage")
    return count


def _materialise(t: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    """The tensor as a new array (checked by ``_check_layout`` first)."""
    flat = storages[t.storage.key]
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], shape=t.size, strides=[s * item for s in t.stride])
    return np.array(view)  # a copy: owns its memory, writable
