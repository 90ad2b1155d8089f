#!/usr/bin/env python3
"""Rewrites a GGUF with its quantised matrices requantised to another block type, using
gguf-py (the reference implementation llama.cpp ships): every tensor of a block type is
dequantised with `gguf.quants.dequantize` and quantised again with `gguf.quants.quantize`;
F32 tensors (norms) and all metadata are copied unchanged.

    python3 scripts/requantize_gguf.py IN.gguf OUT.gguf Q8_0

The tests use it to make a Q8_0 copy of the default model (needs `pip install gguf numpy`).
"""
import sys

import gguf
import numpy as np


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst, type_name = sys.argv[1:]
    try:
        target = gguf.GGMLQuantizationType[type_name]
    except KeyError:
        print(f"unknown block type {type_name!r}", file=sys.stderr)
        return 2
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        # The architecture and the GGUF.* header fields are written by GGUFWriter itself.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    kept = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    for t in reader.tensors:
        if t.tensor_type in kept or len(t.shape) < 2:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        blocks = gguf.quants.quantize(values, target)
        writer.add_tensor(t.name, blocks, raw_shape=blocks.shape, raw_dtype=target)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
