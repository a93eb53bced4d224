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
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize

from .errors import ExplorerError, ModelError

Progress = Callable[[int, int], None]  # (tensors written, tensors in all)
_KEEP_AS_IS = (GGMLQuantizationType.F32, GGMLQuantizationType.F16)
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


def write_exact_copy(src: Union[str, Path], dst: Union[str, Path], dtype: str = "f32",
                     progress: Optional[Progress] = None) -> Path:
    """Write dst: src with every quantized tensor dequantized to dtype ("f32" or "f16"; 1-D tensors are always
    float32, as llama.cpp wants its norms)."""
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
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
    writer.add_file_type(int(LlamaFileType.ALL_F32 if dtype == "f32" else LlamaFileType.MOSTLY_F16))
    plans = []
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # numpy order: ne[0] is the last axis
        if t.tensor_type in _KEEP_AS_IS:
            out_type = t.tensor_type
        elif len(shape) == 1 or dtype == "f32":
            out_type = GGMLQuantizationType.F32
        else:
            out_type = GGMLQuantizationType.F16
        np_type = np.float32 if out_type == GGMLQuantizationType.F32 else np.float16
        writer.add_tensor_info(t.name, shape, np.dtype(np_type), int(np.prod(shape)) * np.dtype(np_type).itemsize,
                               raw_dtype=out_type)
        plans.append((t, shape, out_type, np_type))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (t, shape, out_type, np_type) in enumerate(plans):
            if t.tensor_type == out_type:
                data = np.asarray(t.data).reshape(shape)
            else:
                try:
                    data = dequantize(np.asarray(t.data), t.tensor_type)
                except NotImplementedError:
                    raise ExplorerError(f"{src}: gguf cannot dequantize tensor {t.name} of type "
                                        f"{t.tensor_type.name}; no exact copy") from None
                data = data.reshape(shape).astype(np_type)
            writer.write_tensor_data(np.ascontiguousarray(data))
            if progress is not None:
                progress(done + 1, len(plans))
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst


def cached_exact_copy(src: Union[str, Path], fingerprint: str, progress: Optional[Progress] = None,
                      dtype: str = "f32", directory: Optional[Path] = None) -> Path:
    """The exact copy of src in the app's data folder, written first if it is not there yet."""
    folder = (directory or app_data_dir()) / "exact-references"
    path = folder / f"{Path(src).stem}.{fingerprint[:16]}.{dtype}.gguf"
    if not path.is_file():
        write_exact_copy(src, path, dtype, progress)
    return path
