"""A careful reader of GGUF headers: every count and length is checked against the bytes that are really there.

The gguf package's GGUFReader maps every array (a 49k-token vocabulary takes it about two seconds) and trusts the
counts it reads; llama.cpp aborts on some malformed files. This reader walks the header once through a sliding 1 MiB
window of plain reads (an mmap would turn a file shrinking under it into SIGBUS), keeps only
scalars, short strings and short arrays, and turns every problem into a GGUFError whose message names the file and the
reason: nothing a hostile file says makes it allocate more than the file holds, or loop longer than the file is long.
Type codes and block sizes come from the gguf package.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, BinaryIO, Mapping, Optional

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from explorer.core.errors import ModelError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER_SIZE = 24  # magic, u32 version, u64 tensor count, u64 key/value count
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1
MAX_TENSORS = 1 << 20  # far above any real model (a few thousand), far below what would stall a loop
MAX_KVS = 1 << 20
MAX_ARRAY_ITEMS = 1 << 25  # vocabularies and merge lists are below 2^20
MAX_KEY_LENGTH = 1 << 16
MAX_STRING_LENGTH = 1 << 24  # chat templates are kilobytes
_WINDOW = 1 << 20
KEEP_ARRAY_ITEMS = 64  # longer arrays are checked and skipped, only their length kept

_SCALARS: dict[int, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"), GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"), GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"), GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"), GGUFValueType.BOOL: struct.Struct("<?"),
    GGUFValueType.UINT64: struct.Struct("<Q"), GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GGUFError(ModelError):
    """A file that is not a usable GGUF. str() is "<path>: <reason>"; reason alone suits a table cell."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class _Bad(Exception):
    """Raised inside the walk with the reason only; read_header() adds the path."""


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array: its item type and length; the items themselves only when there are few."""

    item_type: int
    length: int
    items: Optional[tuple[Any, ...]] = None


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]  # ne: the fastest-varying dimension first
    type_id: int
    offset: int  # relative to the start of the data section
    n_elements: int
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGMLQuantizationType(self.type_id).name


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: Mapping[str, Any]  # scalars, strings and ArrayValue
    tensors: tuple[TensorEntry, ...]
    alignment: int
    data_start: int
    file_size: int


def format_count(n: int) -> str:
    """Huge powers of two read better as 2^k (hostile files tend to use them)."""
    if n >= 1 << 16 and n & (n - 1) == 0:
        return f"2^{n.bit_length() - 1}"
    return str(n)


class _Walker:
    def __init__(self, handle: BinaryIO, size: int):
        self.handle = handle
        self.size = size
        self.buf = b""  # the bytes of the file from self.base on
        self.base = 0
        self.pos = 0
        self.where = "the header"

    def window(self, end: int) -> None:
        """Make the bytes [pos, end) available in buf (end must be within the file)."""
        if self.base <= self.pos and end <= self.base + len(self.buf):
            return
        self.handle.seek(self.pos)
        self.buf = self.handle.read(max(end - self.pos, _WINDOW))
        self.base = self.pos
        if len(self.buf) < end - self.pos:
            raise _Bad("the file changed (got shorter) while it was being read")

    def need(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise _Bad(f"truncated: the file ends at byte {self.size} inside {what}")
        self.window(self.pos + n)

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        self.need(fmt.size, what)
        (value,) = fmt.unpack_from(self.buf, self.pos - self.base)
        self.pos += fmt.size
        return value

    def length(self, noun: str, subject: str, limit: int, item_size: int = 1) -> int:
        """A u64 count of items of at least item_size bytes: implausible beyond the limit (no real file comes near
        it), truncated when the items would run past the end of the file."""
        n = self.unpack(_U64, self.where)
        if n > limit:
            raise _Bad(f"implausible {noun} {format_count(n)} for {subject} (at most {format_count(limit)})")
        if self.pos + n * item_size > self.size:
            raise _Bad(f"truncated: the file ends at byte {self.size} inside {self.where}")
        return n

    def string(self, noun: str, subject: str, limit: int = MAX_STRING_LENGTH) -> str:
        n = self.length(noun, subject, limit)
        self.window(self.pos + n)
        start = self.pos - self.base
        self.pos += n
        return self.buf[start:start + n].decode("utf-8", errors="replace")

    def skip_strings(self, count: int, key: str) -> None:
        """Step over `count` strings without decoding them: the hot loop for vocabularies."""
        unpack_from, size, pos = _U64.unpack_from, self.size, self.pos
        buf, base, buf_end = self.buf, self.base, self.base + len(self.buf)
        for index in range(count):
            if pos + 8 > buf_end:
                if pos + 8 > size:
                    raise _Bad(f"truncated: the file ends at byte {size} inside item {index} of {key!r}")
                self.pos = pos
                self.window(pos + 8)
                buf, base, buf_end = self.buf, self.base, self.base + len(self.buf)
            n = unpack_from(buf, pos - base)[0]
            pos += 8 + n
            if pos > size:
                if n > MAX_STRING_LENGTH:
                    raise _Bad(f"implausible string length {format_count(n)} at item {index} of {key!r}")
                raise _Bad(f"truncated: the file ends at byte {size} inside item {index} of {key!r}")
        self.pos = pos

    def value(self, vtype: int, key: str) -> Any:
        scalar = _SCALARS.get(vtype)
        if scalar is not None:
            return self.unpack(scalar, f"the value of {key!r}")
        if vtype == GGUFValueType.STRING:
            return self.string("string length", repr(key))
        if vtype != GGUFValueType.ARRAY:
            raise _Bad(f"unknown value type {vtype} for key {key!r}")
        item_type = self.unpack(_U32, f"the array type of {key!r}")
        if item_type == GGUFValueType.ARRAY:
            raise _Bad(f"key {key!r} holds an array of arrays, which GGUF readers do not support")
        if item_type != GGUFValueType.STRING and item_type not in _SCALARS:
            raise _Bad(f"unknown array item type {item_type} for key {key!r}")
        item_size = _SCALARS[item_type].size if item_type in _SCALARS else 8
        count = self.length("array length", repr(key), MAX_ARRAY_ITEMS, item_size)
        if count <= KEEP_ARRAY_ITEMS:
            items = tuple(self.value(item_type, key) for _ in range(count))
            return ArrayValue(item_type, count, items)
        if item_type == GGUFValueType.STRING:
            self.skip_strings(count, key)
        else:
            self.pos += count * item_size  # length() checked that these bytes exist
        return ArrayValue(item_type, count)

    def metadata(self, n_kv: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for index in range(n_kv):
            self.where = f"key #{index}"
            key = self.string("key length", f"key #{index}", MAX_KEY_LENGTH)
            self.where = f"the value of {key!r}"
            if key in found:
                raise _Bad(f"duplicate key {key!r}")
            vtype = self.unpack(_U32, f"the value type of {key!r}")
            found[key] = self.value(vtype, key)
        return found

    def tensor_infos(self, n_tensors: int) -> list[tuple[str, tuple[int, ...], int, int]]:
        infos = []
        names: set[str] = set()
        for index in range(n_tensors):
            self.where = f"tensor info #{index}"
            name = self.string("name length", f"tensor #{index}", MAX_KEY_LENGTH)
            self.where = f"the info of tensor {name!r}"
            if len(name.encode()) > MAX_TENSOR_NAME:
                raise _Bad(f"tensor name {name[:40]!r}... is too long ({len(name.encode())} bytes, "
                           f"at most {MAX_TENSOR_NAME})")
            if name in names:
                raise _Bad(f"duplicate tensor {name!r}")
            names.add(name)
            n_dims = self.unpack(_U32, f"the info of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise _Bad(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
            shape = tuple(self.unpack(_U64, f"the info of tensor {name!r}") for _ in range(n_dims))
            type_id = self.unpack(_U32, f"the info of tensor {name!r}")
            offset = self.unpack(_U64, f"the info of tensor {name!r}")
            infos.append((name, shape, type_id, offset))
        return infos


def _alignment(metadata: Mapping[str, Any]) -> int:
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise _Bad(f"general.alignment {alignment!r} is not a power of two")
    return alignment


def _tensor(name: str, shape: tuple[int, ...], type_id: int, offset: int, alignment: int) -> TensorEntry:
    try:
        qtype = GGMLQuantizationType(type_id)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise _Bad(f"tensor {name!r} has unknown type {type_id}") from None
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if n_elements >= 1 << 62:
        raise _Bad(f"implausible shape {list(shape)} for tensor {name!r}")
    if shape and shape[0] % block_size:
        raise _Bad(f"tensor {name!r}: row length {shape[0]} is not a multiple of the {qtype.name} "
                   f"block size {block_size}")
    if offset % alignment:
        raise _Bad(f"tensor {name!r}: data offset {offset} is not a multiple of the alignment {alignment}")
    return TensorEntry(name, shape, type_id, offset, n_elements, n_elements // block_size * type_size)


def _walk(handle: BinaryIO, size: int) -> GGUFHeader:
    if size < 4:
        raise _Bad(f"truncated: {size} bytes is too short to be a GGUF file")
    walker = _Walker(handle, size)
    walker.need(4, "the magic")
    magic = walker.buf[:4]
    if magic != MAGIC:
        raise _Bad(f"not a GGUF file (magic {magic!r}, expected {MAGIC!r})")
    walker.pos = 4
    version = walker.unpack(_U32, "the header")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise _Bad("big-endian GGUF file: this machine needs a little-endian one")
        if version == 1:
            raise _Bad("GGUF version 1 is obsolete (llama.cpp reads versions 2 and 3): convert the model again")
        raise _Bad(f"unsupported GGUF version {version} (known versions are 1-3; llama.cpp reads 2 and 3)")
    n_tensors = walker.unpack(_U64, "the header")
    n_kv = walker.unpack(_U64, "the header")
    # Counts within the caps are walked: every item takes at least one byte, so a lying count ends in "truncated".
    if n_tensors > MAX_TENSORS:
        raise _Bad(f"implausible tensor count {format_count(n_tensors)} (at most {format_count(MAX_TENSORS)})")
    if n_kv > MAX_KVS:
        raise _Bad(f"implausible key/value count {format_count(n_kv)} (at most {format_count(MAX_KVS)})")
    metadata = walker.metadata(n_kv)
    alignment = _alignment(metadata)
    infos = walker.tensor_infos(n_tensors)
    data_start = -(-walker.pos // alignment) * alignment
    tensors = tuple(_tensor(name, shape, type_id, offset, alignment) for name, shape, type_id, offset in infos)
    if tensors:
        last = max(tensors, key=lambda t: t.offset + t.n_bytes)
        end = data_start + last.offset + last.n_bytes
        if end > size:
            raise _Bad(f"truncated: tensor {last.name!r} needs bytes up to {end} but the file has {size}")
    return GGUFHeader(version, MappingProxyType(metadata), tensors, alignment, data_start, size)


def read_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Walk and check a GGUF header. Raises GGUFError (a ModelError) for anything unusable, whatever the bytes."""
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise GGUFError(shown, "no such file") from None
    except OSError as exc:
        raise GGUFError(shown, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise GGUFError(shown, "is a directory, not a GGUF file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise GGUFError(shown, "is not a regular file")
    if info.st_size == 0:
        raise GGUFError(shown, "empty file (0 bytes)")
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise _Bad("empty file (0 bytes)")
            return _walk(handle, size)
    except _Bad as exc:
        raise GGUFError(shown, str(exc)) from None
    except PermissionError:
        raise GGUFError(shown, "cannot read: permission denied") from None
    except Exception as exc:  # whatever the bytes, the caller gets one line, never a traceback
        raise GGUFError(shown, f"unreadable ({type(exc).__name__}: {exc})") from None


MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: it aborts the process (an assert) beyond it


def hparams_problem(meta: Mapping[str, Any], arch: str) -> Optional[str]:
    """Settings llama.cpp only checks with asserts that kill the process: refuse them with a reason instead."""
    layers = meta.get(f"{arch}.block_count")
    if layers is not None and (not isinstance(layers, int) or not 0 < layers <= MAX_LAYERS):
        return f"implausible {arch}.block_count {layers!r} (1..{MAX_LAYERS} layers)"
    for key in ("embedding_length", "context_length", "attention.head_count", "feed_forward_length"):
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, int) and value <= 0:
            return f"implausible {arch}.{key} {value} (must be positive)"
    for key in ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"):
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
            return f"implausible {arch}.{key} {value} (must be a finite number >= 0)"
    return None
