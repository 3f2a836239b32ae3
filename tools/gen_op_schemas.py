"""Regenerate edgedl/onnx/op_schemas.json from the onnx package's operator schemas.

The loader checks every node against its op's schema at the model's opset (inputs / outputs
count, attribute names, types, required ones), as onnxruntime does. Importing onnx for that
costs ~0.9 s of start-up and is impossible on 32-bit Pi OS, so the schemas of the default-domain
ops edgedl implements are kept as data; tests/runtime/test_op_schemas.py fails when this file
and the installed onnx disagree. Run: python tools/gen_op_schemas.py
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "edgedl", "onnx", "op_schemas.json")


def table():
    """{op_type: [[since_version, min_in, max_in, min_out, max_out, {attr: [type, required]}],
    ...] ascending} for every default-domain op in edgedl's handler registry."""
    import onnx.defs
    from edgedl.onnx.ops import OPS
    last = onnx.defs.onnx_opset_version()
    res = {}
    for op in sorted(OPS):
        versions = []
        seen = set()
        for v in range(1, last + 1):
            try:
                s = onnx.defs.get_schema(op, v, "")
            except onnx.defs.SchemaError:
                continue
            if s.since_version in seen:
                continue
            seen.add(s.since_version)
            big = 1 << 30
            versions.append([s.since_version, s.min_input, min(s.max_input, big),
                             s.min_output, min(s.max_output, big),
                             {k: [int(a.type.value), bool(a.required)]
                              for k, a in sorted(s.attributes.items())}])
        if versions:
            res[op] = versions
    return {"onnx_opset_version": last, "ops": res}


def main():
    data = table()
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT)}: {len(data['ops'])} ops", file=sys.stderr)


if __name__ == "__main__":
    main()
