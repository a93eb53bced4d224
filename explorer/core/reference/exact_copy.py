"""The exact reference: a float32 (or float16) copy of a quantized GGUF, written once with the `gguf` package.

Every quantized tensor is dequantized with gguf's own quants module; float tensors are copied as they are; metadata is
copied key by key (general.file_type says the new type). The copy is cached in the app's data folder under a name made
from the source's fingerprint, so a second use costs nothing; it is written to a temporary name and renamed, so a copy
cut short is never taken for a whole one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType, ReaderTensor
from gguf.quants import dequantize, quant_shape_to_byte_shape

from explorer.core.errors import ExplorerError, ModelError

Progress = Callable[[int, int], None]  # (tensors written, tensors in all)
_FLOAT_TYPES = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
DATA_DIR_ENV = "ROLLOUT_EXPLORER_DATA_DIR"


def app_data_dir() -> Path:
    """The app's data folder (where Qt's AppDataLocation puts it for this app); ROLLOUT_EXPLORER_DATA_DIR overrides."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    org, app = "rollout-explorer", "Rollout Explorer"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / org / app
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / org / app
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / org / app


def tensor_shape(t: ReaderTensor) -> tuple[int, ...]:
    """A tensor's shape in numpy order (GGUF's ne[0] is the last axis)."""
    return tuple(int(n) for n in reversed(t.shape.tolist()))


def as_float32(t: ReaderTensor) -> np.ndarray:
    """A tensor's values as float32, dequantized with gguf's quants module where quantized."""
    try:
        return dequantize(np.asarray(t.data), t.tensor_type).reshape(tensor_shape(t))
    except NotImplementedError:
        raise ExplorerError(f"gguf cannot dequantize tensor {t.name} of type {t.tensor_type.name}") from None


def copy_gguf(src: Union[str, Path], dst: Union[str, Path], out_type: Callable[[ReaderTensor], GGMLQuantizationType],
              data: Callable[[ReaderTensor, GGMLQuantizationType], np.ndarray], file_type: int,
              progress: Optional[Progress] = None) -> Path:
    """Write dst: src's metadata (general.file_type set to file_type) and every tensor as data(t, out_type(t)) gives
    it (float32 / float16 values, or the quantized bytes as uint8 rows); one tensor in memory at a time."""
    try:
        reader = GGUFReader(str(src))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{src}: cannot read it as GGUF ({exc})") from exc
    arch_field = reader.get_field("general.architecture")
    if arch_field is None:
        raise ModelError(f"{src}: no general.architecture key")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    writer = GGUFWriter(str(tmp), arch=arch_field.contents())
    alignment = reader.get_field("general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue  # the header's own fields, and the two the writer sets itself
        vtype = f.types[0]
        sub_type = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, f.contents(), vtype, sub_type=sub_type)
    writer.add_file_type(file_type)
    plans = []
    for t in reader.tensors:
        qtype = out_type(t)
        shape = tensor_shape(t)
        if qtype in _FLOAT_TYPES:
            np_type = np.dtype(_FLOAT_TYPES[qtype])
        else:
            shape, np_type = quant_shape_to_byte_shape(shape, qtype), np.dtype(np.uint8)
        writer.add_tensor_info(t.name, shape, np_type, int(np.prod(shape)) * np_type.itemsize, raw_dtype=qtype)
        plans.append((t, qtype, shape, np_type))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (t, qtype, shape, np_type) in enumerate(plans):
            array = np.ascontiguousarray(data(t, qtype), dtype=np_type).reshape(shape)
            writer.write_tensor_data(array)
            if progress is not None:
                progress(done + 1, len(plans))
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst


def write_exact_copy(src: Union[str, Path], dst: Union[str, Path], dtype: str = "f32",
                     progress: Optional[Progress] = None) -> Path:
    """Write dst: src with every quantized tensor dequantized to dtype ("f32" or "f16"; 1-D tensors are always
    float32, as llama.cpp wants its norms); float tensors are copied as they are."""
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")

    def out_type(t: ReaderTensor) -> GGMLQuantizationType:
        if t.tensor_type in _FLOAT_TYPES:
            return t.tensor_type
        if dtype == "f32" or len(t.shape) == 1:
            return GGMLQuantizationType.F32
        return GGMLQuantizationType.F16

    def data(t: ReaderTensor, qtype: GGMLQuantizationType) -> np.ndarray:
        if t.tensor_type == qtype:
            return np.asarray(t.data)
        return as_float32(t)

    file_type = LlamaFileType.ALL_F32 if dtype == "f32" else LlamaFileType.MOSTLY_F16
    return copy_gguf(src, dst, out_type, data, int(file_type), progress)


def cached_exact_copy(src: Union[str, Path], fingerprint: str, progress: Optional[Progress] = None,
                      dtype: str = "f32", directory: Optional[Path] = None) -> Path:
    """The exact copy of src in the app's data folder, written first if it is not there yet."""
    folder = (directory or app_data_dir()) / "exact-references"
    path = folder / f"{Path(src).stem}.{fingerprint[:16]}.{dtype}.gguf"
    if not path.is_file():
        write_exact_copy(src, path, dtype, progress)
    return path
