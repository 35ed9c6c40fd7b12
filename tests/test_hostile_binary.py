"""Issue 26, item 2: binary readers trust no number in a file. A weights file, an image header or an
image-cache header that states a huge shape, a zero stride or an offset past its data is refused in
one line before anything is allocated. Each hostile file is read in a child process whose address
space is capped a little above what it has already mapped (``RLIMIT_AS``), so an allocation bomb
fails the test as a MemoryError (or a crash) instead of taking the machine's memory."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

MAGIC = 0x1950A86A20F9469CFC6C
HEADROOM = 256 << 20  # what the capped child may still map: far above what reading a small file needs

# Run ``code`` (which sets ``result``) with the address space capped; print ``result`` or the error.
_CAPPED = """
import resource, sys
import numpy as np
{imports}
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom}, resource.RLIM_INFINITY))
try:
{code}
except MemoryError:
    print("MemoryError")
    sys.exit(3)
except Exception as e:
    print(f"{{type(e).__name__}}: {{e}}")
    sys.exit(4 if isinstance(e, EdgeclfError) else 5)
print(repr(result))
"""


def run_capped(imports: str, code: str) -> tuple[int, str]:
    """(exit code, output) of ``code`` in a child with the address space capped: 0 read, 4 an
    EdgeclfError (a one-line refusal), 3 MemoryError, 5 another exception."""
    script = _CAPPED.format(imports=imports + "\nfrom edgeclf.errors import EdgeclfError", headroom=HEADROOM,
                            code=textwrap.indent(textwrap.dedent(code), "    "))
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    return res.returncode, (res.stdout + res.stderr).strip()


# ---------------------------------------------------------------------------------- .pth weights
def _int(n: int) -> bytes:
    """A pickle LONG1 opcode: any integer, however large or negative."""
    raw = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _tensor_pickle(tensors: dict[str, tuple[int, int, tuple[int, ...], tuple[int, ...]]]) -> bytes:
    """A state dict pickled with opcodes, as ``torch.save`` writes one: name -> (storage numel,
    offset, size, stride), every tensor on storage "0" (float32)."""
    out = b"\x80\x02ccollections\nOrderedDict\n)R"
    for name, (numel, offset, size, stride) in tensors.items():
        storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu") + _int(numel) + b"tQ"
        out += _text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + _int(offset)
        out += _ints(size) + _ints(stride) + b"\x89ccollections\nOrderedDict\n)Rt" + b"Rs"
    return out + b"."


def write_pth(path: Path, tensors: dict, numel: int) -> Path:
    """A legacy ``.pth``: magic, protocol, system info, the state dict, the storage keys, then
    storage "0" (``numel`` float32 values)."""
    head = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}))
    storage = struct.pack("<q", numel) + np.arange(numel, dtype=np.float32).tobytes()
    path.write_bytes(head + _tensor_pickle(tensors) + pickle.dumps(["0"], protocol=2) + storage)
    return path


def read_pth(path: Path) -> tuple[int, str]:
    return run_capped("from edgeclf.train.torch_weights import read_state_dict",
                      f"result = {{k: v.shape for k, v in read_state_dict({str(path)!r}).items()}}")


def test_a_well_formed_tensor_still_reads(tmp_path):
    f = write_pth(tmp_path / "ok.pth", {"w": (6, 0, (2, 3), (3, 1)), "b": (6, 4, (2,), (1,))}, numel=6)
    assert read_pth(f) == (0, "{'w': (2, 3), 'b': (2,)}")


@pytest.mark.parametrize("size, stride, offset, numel", [
    ((100_000, 100_000), (0, 0), 0, 4),  # zero strides: 4 floats of data read as 40 GB
    ((60_000, 60_000), (0, 1), 0, 60_000),  # one row repeated: 14 GB out of 240 kB
    ((1 << 62, 1 << 62), (0, 0), 0, 4),  # a shape numpy cannot even represent
    ((2, 3), (3, 1), 1 << 40, 6),  # an offset far past the storage
    ((2, 3), (-3, 1), 3, 6),  # a negative stride
    ((2, 3), (3,), 0, 6),  # a stride per dimension, short
])
def test_hostile_tensor_is_one_line_error_without_allocating(tmp_path, size, stride, offset, numel):
    f = write_pth(tmp_path / "bomb.pth", {"w": (numel, offset, size, stride)}, numel=numel)
    assert f.stat().st_size < 300_000
    code, out = read_pth(f)
    assert code == 4, out  # an EdgeclfError, not a MemoryError, nor another exception
    assert out.startswith("WeightsError: ") and str(f) in out and "\n" not in out


def test_many_names_on_one_storage_cannot_multiply_it(tmp_path):
    """10,000 names for the same 1 MB of data would be 10 GB of copies: the tensors of a file may
    hold no more than the file's data."""
    numel = 1 << 18
    tensors = {f"w{i}": (numel, 0, (numel,), (1,)) for i in range(10_000)}
    f = write_pth(tmp_path / "fan.pth", tensors, numel=numel)
    code, out = read_pth(f)
    assert code == 4 and "more data than the file holds" in out, out


def test_storage_length_stated_in_the_file_is_checked(tmp_path):
    f = write_pth(tmp_path / "long.pth", {"w": (6, 0, (2, 3), (3, 1))}, numel=6)
    data = bytearray(f.read_bytes())
    data[-6 * 4 - 8:-6 * 4] = struct.pack("<q", 1 << 60)  # the storage claims 2**60 elements
    f.write_bytes(bytes(data))
    code, out = read_pth(f)
    assert code == 4 and "WeightsError" in out, out


# ------------------------------------------------------------------------------------ image headers
def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0" + b"\0" * 64


def _jpeg_header(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xda" + b"\0" * 64 + b"\xff\xd9"


@pytest.mark.parametrize("name, data", [
    ("huge.png", _png_header(100_000, 100_000)),
    ("huge.jpg", _jpeg_header(65_535, 65_535)),
    ("huge.bmp", b"BM" + b"\0" * 12 + struct.pack("<IiiHH", 40, 60_000, -60_000, 1, 24) + b"\0" * 64),
    ("huge.gif", b"GIF89a" + struct.pack("<HH", 65_535, 65_535) + b"\0" * 64),
])
def test_image_header_stating_a_huge_size_is_refused_before_decoding(tmp_path, name, data):
    f = tmp_path / name
    f.write_bytes(data)
    code, out = run_capped("from edgeclf.image import read_image", f"result = read_image({str(f)!r}).shape")
    assert code == 4 and "ImageReadError" in out and "\n" not in out, out


# ----------------------------------------------------------------------------------- image cache .npy
def test_image_cache_npy_header_stating_a_huge_shape_is_not_trusted(tmp_path):
    """An entry's .npy rewritten with a header claiming 10^6 rows of 4096x4096 (50 TB) is a damaged
    entry, rebuilt from the images, not a shape to allocate or read."""

    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, f in enumerate(images):
        cv2.imwrite(str(f), np.full((20, 30, 3), 80 * i, np.uint8))
    cache = tmp_path / "cache"
    build = (f"from pathlib import Path\nfiles = [Path(p) for p in {[str(f) for f in images]!r}]\n"
             f"c = cached_images(files, (8, 8), Path({str(cache)!r}))\nresult = (c.built, c.load().shape)")
    assert run_capped("from edgeclf.train.imagecache import cached_images", build) == (0, "(True, (3, 8, 8, 3))")
    (npy,) = cache.rglob("*.npy")
    with open(npy, "r+b") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 4096, 4096, 3)})
    code, out = run_capped("from edgeclf.train.imagecache import cached_images", build)
    assert code == 0 and "(True, (3, 8, 8, 3))" in out and "damaged" in out, out  # rebuilt, with a warning
