"""Mutation fuzzer for model loading (issue 15, point 7): mutants of the shared detectors
(truncated, bytes flipped, and protobuf-level changes to dims, attributes, initializer sizes,
opset / IR versions and node input names) through ``InferenceSession(bytes).run(...)``.

Every outcome must be a clean result or an ``edgedl.errors`` exception; any other exception,
a signal (crash) or a timeout (hang) fails, naming the case's seed. The cases run in a child
process (many per child, so start-up is paid once): the child prints a line before and after
each case, so the parent knows which case a crash or hang belongs to, and a fresh child goes
on with the next case. Seeds are deterministic.

Default: 300 cases (~30-60 s). ``EDGEDL_FUZZ_LONG=1``: 3000; ``EDGEDL_FUZZ_CASES=n`` sets the
count, ``EDGEDL_FUZZ_SEED=s`` the first seed, ``EDGEDL_FUZZ_THREADS=n`` the children's
thread count (1), ``EDGEDL_BACKEND`` their backend. Replay one case in this process (to get
a traceback or run it under gdb): ``python tests/runtime/test_fuzz_models.py SEED``.

Long runs (2 shared cores, mutations as of this file): cython 1 thread seeds 0-2999, numba
3000-3999, cython 2 threads 4000-4999, numpy 5000-5999: 6000 cases, 0 crashes, 0 hangs,
0 non-edgedl exceptions; outcomes ~76% ModelError, ~24% ok, 0.2-0.4% ResourceError (1 GiB
child limit), a few UnsupportedOpsError (a flipped op-type byte).
"""
import os
import random
import selectors
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))           # tests/ (conftest's shared_path)
from onnx_compat import needs_onnx, np_dtype  # noqa: E402

pytestmark = needs_onnx(why="the fuzzer mutates the models with the onnx package")

#: (model file, weight): the cheap models more often, so the default run stays short.
MODELS = [("yunet_n_320.onnx", 4), ("ultraface_rfb320.onnx", 3), ("fastestdet.onnx", 2),
          ("yolox_nano.onnx", 1)]
CASE_TIMEOUT = 30.0            # seconds one case may take before it counts as a hang
#: Memory the child may use: edgedl's guard below the address-space cap, so an allocation
#: the guard misses surfaces as a plain MemoryError (a failure) instead of swapping the box.
CHILD_MEMORY_LIMIT = 1 << 30
CHILD_ADDRESS_SPACE = 8 << 30
FEED_MAX_BYTES = 64 << 20      # a mutated input shape larger than this is only loaded

INTERESTING = [-(1 << 62), -(1 << 31), -7, -1, 0, 1, 2, 3, 5, 16, 1000, 1 << 16,
               (1 << 31) - 1, 1 << 31, 1 << 40, 1 << 62]
SMALL = [-1, 0, 1, 2, 3, 4, 7, 64, 1000]
ATTRS = {"pads", "strides", "dilations", "kernel_shape", "group", "axis", "axes", "perm",
         "output_padding", "keepdims", "ceil_mode", "split", "to", "mode"}


def _count():
    if os.environ.get("EDGEDL_FUZZ_CASES"):
        return int(os.environ["EDGEDL_FUZZ_CASES"])
    return 3000 if os.environ.get("EDGEDL_FUZZ_LONG", "") not in ("", "0") else 300


# ----------------------------------------------------------------------------- mutations
def _pick(rng, seq):
    return seq[rng.randrange(len(seq))] if len(seq) else None


def _value(rng):
    return _pick(rng, INTERESTING if rng.random() < 0.5 else SMALL)


def mutate_dims(m, rng):
    if rng.random() < 0.4 and m.graph.input:
        vi = _pick(rng, m.graph.input)
        if rng.random() < 0.15:      # another element type (string, bfloat16, unknown, ...)
            vi.type.tensor_type.elem_type = _pick(rng, [0, 2, 7, 8, 9, 10, 11, 16, 17, 99])
            return f"input {vi.name} elem_type -> {vi.type.tensor_type.elem_type}"
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            return "dims: none"
        k = rng.randrange(len(dims))
        if rng.random() < 0.2:
            dims[k].dim_param = "sym"
            return f"input {vi.name} dim {k} -> symbolic"
        v = _pick(rng, SMALL + [32, 160, 1 << 20])
        dims[k].dim_value = v
        return f"input {vi.name} dim {k} -> {v}"
    t = _pick(rng, m.graph.initializer)
    if t is None or not t.dims:
        return "dims: none"
    r = rng.random()
    if r < 0.5:
        k = rng.randrange(len(t.dims))
        t.dims[k] = _value(rng)
        return f"initializer {t.name} dims {list(t.dims)}"
    if r < 0.75:
        dims = list(t.dims)
        rng.shuffle(dims)            # same size, another shape
        del t.dims[:]
        t.dims.extend(dims)
        return f"initializer {t.name} dims permuted to {dims}"
    if rng.random() < 0.5:
        t.dims.append(1)
    else:
        del t.dims[-1]
    return f"initializer {t.name} rank -> {list(t.dims)}"


def mutate_attribute(m, rng):
    cands = [(n, a) for n in m.graph.node for a in n.attribute if a.name in ATTRS]
    if not cands:
        return "attr: none"
    n, a = _pick(rng, cands)
    label = f"{n.op_type} {n.name!r} {a.name}"
    if rng.random() < 0.15:          # another type under the same name, or an unknown name
        from onnx import helper
        v = _pick(rng, [1.5, "x", [1.0, 2.0], [b"a"], 3, [1, 2]])
        name = a.name if rng.random() < 0.8 else "bogus"
        n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(name, v))
        return f"{n.op_type} {n.name!r} attribute {name} -> {v!r}"
    if a.type == a.INTS:
        r = rng.random()
        if r < 0.6 and len(a.ints):
            k = rng.randrange(len(a.ints))
            a.ints[k] = _value(rng)
        elif r < 0.8:
            a.ints.append(_value(rng))
        elif len(a.ints):
            del a.ints[-1]
        return f"{label} -> {list(a.ints)}"
    if a.type == a.INT:
        a.i = _value(rng)
        return f"{label} -> {a.i}"
    if a.type == a.STRING:
        a.s = _pick(rng, [b"", b"nearest", b"linear", b"cubic", b"SAME_UPPER", b"VALID",
                          b"\xff\xfe"])
        return f"{label} -> {a.s!r}"
    return "attr: other type"


def mutate_geometry(m, rng):
    """Unusual but in-range pads / dilations / strides on a conv or pool: these reach the
    kernels' index arithmetic (the class of issue 15's heap corruption), where out-of-range
    values stop at validation."""
    from onnx import helper
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "MaxPool", "AveragePool")]
    n = _pick(rng, nodes)
    if n is None:
        return "geometry: none"
    is_conv = n.op_type == "Conv"
    done = []
    for name in rng.sample(["pads", "dilations", "strides"], rng.randint(1, 3)):
        if name == "dilations" and not is_conv and rng.random() < 0.5:
            continue
        v = {"pads": lambda: rng.randint(0, 40), "dilations": lambda: rng.randint(1, 12),
             "strides": lambda: rng.randint(1, 9)}[name]
        vals = [v() for _ in range(4 if name == "pads" else 2)]
        for a in list(n.attribute):
            if a.name in (name, "auto_pad"):
                n.attribute.remove(a)
        n.attribute.append(helper.make_attribute(name, vals))
        done.append(f"{name}={vals}")
    return f"{n.op_type} {n.name!r} " + " ".join(done)


def mutate_initializer_size(m, rng):
    t = _pick(rng, [t for t in m.graph.initializer if t.raw_data])
    if t is None:
        return "init size: none"
    n = len(t.raw_data)
    r = rng.random()
    if r < 0.4:
        t.raw_data = t.raw_data[:rng.randrange(n)]
    elif r < 0.7:
        t.raw_data = t.raw_data + bytes(rng.randrange(1, 64))
    else:
        t.ClearField("raw_data")     # no data at all (dims say otherwise)
    return f"initializer {t.name} raw_data {n} -> {len(t.raw_data)} bytes"


def mutate_opset(m, rng):
    if rng.random() < 0.3:
        m.ir_version = _pick(rng, [0, 1, 2, 3, 7, 10, 14, 15, 99, 1 << 40])
        return f"ir_version -> {m.ir_version}"
    o = _pick(rng, m.opset_import)
    o.version = _pick(rng, [0, 1, 5, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 28, 29, 99, -1])
    return f"opset -> {o.version}"


def mutate_names(m, rng):
    nodes = m.graph.node
    n = _pick(rng, nodes)
    values = [o for x in nodes for o in x.output] + [i.name for i in m.graph.input]
    if rng.random() < 0.7 and len(n.input):
        k = rng.randrange(len(n.input))
        n.input[k] = _pick(rng, values + ["", "nope"])
        return f"{n.op_type} {n.name!r} input {k} -> {n.input[k]!r}"
    k = rng.randrange(len(n.output))
    n.output[k] = _pick(rng, values)
    return f"{n.op_type} {n.name!r} output {k} -> {n.output[k]!r}"


PROTO_MUTATIONS = [mutate_dims, mutate_attribute, mutate_geometry, mutate_initializer_size,
                   mutate_opset, mutate_names]
_BASES = {}


def _base(name):
    """(serialized bytes, ModelProto) of a shared model, cached."""
    if name not in _BASES:
        import onnx
        from conftest import shared_path
        path = os.path.join(str(shared_path()), "models", name)
        data = open(path, "rb").read()
        _BASES[name] = (data, onnx.load_from_string(data))
    return _BASES[name]


def make_case(seed):
    """(model bytes, description) of case ``seed``: deterministic."""
    import onnx
    rng = random.Random(seed)
    name = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
    data, proto = _base(name)
    r = rng.random()
    if r < 0.15:
        cut = rng.randrange(len(data))
        return data[:cut], f"{name} truncated at {cut}"
    if r < 0.35:
        buf = bytearray(data)
        flips = [rng.randrange(len(buf)) for _ in range(rng.randint(1, 8))]
        for k in flips:
            buf[k] ^= rng.randrange(1, 256)
        return bytes(buf), f"{name} bytes flipped at {flips}"
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    done = [rng.choice(PROTO_MUTATIONS)(m, rng) for _ in range(rng.randint(1, 3))]
    return m.SerializeToString(), f"{name} " + "; ".join(done)


# ----------------------------------------------------------------------------- one case
def _feed(sess, rng):
    """Random inputs of the declared shapes (symbolic dims: 1); None when too large."""
    import onnx
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in (i.shape or [])]
        elem = onnx.TensorProto.DataType.Value(i.type[len("tensor("):-1].upper())
        dt = np_dtype(elem)
        if int(np.prod(shape, dtype=np.float64)) * dt.itemsize > FEED_MAX_BYTES:
            return None
        if dt.kind == "f":
            feed[i.name] = (rng.standard_normal(shape) * 50).astype(dt)
        elif dt.kind == "b":
            feed[i.name] = rng.random(shape) < 0.5
        else:
            feed[i.name] = rng.integers(0, 8, shape).astype(dt)
    return feed


def run_case(seed):
    """'ok', 'loaded' (input too large to feed) or 'error <Class>'; anything that is not an
    edgedl error propagates."""
    import edgedl
    from edgedl.errors import EdgeDLError
    if seed < 0 and os.environ.get("EDGEDL_FUZZ_SELFTEST"):
        return _selftest(seed)
    data, _ = make_case(seed)
    try:
        sess = edgedl.InferenceSession(data)
        feed = _feed(sess, np.random.default_rng(seed))
        if feed is None:
            return "loaded"
        sess.run(None, feed)
        sess.run(None, feed)        # the second run executes the plan's steps
    except EdgeDLError as e:
        return f"error {type(e).__name__}"
    return "ok"


def _selftest(seed):
    """Negative seeds under EDGEDL_FUZZ_SELFTEST: the failures the harness must catch."""
    if seed == -1:
        os.abort()                       # a crash (SIGABRT, like heap corruption)
    if seed == -2:
        time.sleep(3600)                 # a hang
    if seed == -3:
        raise KeyError("not an edgedl error")
    return "ok"


def child_main(seeds):
    """Run cases in this (child) process, one line before and one after each."""
    import resource
    import edgedl
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):   # ASan reserves terabytes
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    edgedl.set_memory_limit(CHILD_MEMORY_LIMIT)
    for seed in seeds:
        print(f"start {seed}", flush=True)
        try:
            out = run_case(seed)
        except BaseException as e:          # noqa: BLE001 - reported, not swallowed
            msg = " ".join(str(e).split())[:300]
            out = f"BAD {type(e).__module__}.{type(e).__name__}: {msg}"
        print(f"done {seed} {out}", flush=True)


# ----------------------------------------------------------------------------- parent
def fuzz(seeds, timeout=CASE_TIMEOUT):
    """Run ``seeds`` in child processes; returns ({seed: outcome}, [failure lines])."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_fuzz_models as f; "
            "f.child_main([int(s) for s in sys.stdin.read().split()])")
    env = dict(os.environ, EDGEDL_NUM_THREADS=os.environ.get("EDGEDL_FUZZ_THREADS", "1"),
               PYTHONFAULTHANDLER="1")
    outcomes, failures = {}, []
    todo = list(seeds)
    while todo:
        errf = tempfile.TemporaryFile()      # a file, not a pipe: warnings cannot fill it
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errf, env=env)
        proc.stdin.write(" ".join(map(str, todo)).encode())
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current, deadline = None, time.monotonic() + 120      # start-up: imports
        hung, buf, eof = False, b"", False
        while not eof:
            if not sel.select(timeout=max(deadline - time.monotonic(), 0)):
                hung = True
                proc.kill()
                break
            # raw reads: a buffered readline could hold a second line select() never sees
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            eof = not chunk
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                kind, seed, *rest = line.decode().split(" ", 2)
                if kind == "start":
                    current, deadline = int(seed), time.monotonic() + timeout
                elif kind == "done":
                    outcomes[int(seed)] = rest[0].strip()
                    todo.remove(int(seed))
                    current, deadline = None, time.monotonic() + timeout
        proc.wait()
        sel.close()
        proc.stdout.close()
        errf.seek(0)
        err = errf.read()[-20000:].decode(errors="replace")
        errf.close()
        if current is None:
            if todo:     # died between cases or before the first: not a case's fault
                raise RuntimeError(f"fuzz child exited with {proc.returncode} outside a "
                                   f"case: {err[-2000:]}")
            break
        what = (f"HANG (> {timeout:.0f} s)" if hung else
                f"CRASH (exit status {proc.returncode})")
        outcomes[current] = what
        todo.remove(current)
        tail = " | ".join(err.strip().splitlines()[-6:])
        failures.append(f"seed {current}: {what}: {make_case(current)[1]} -- stderr: {tail}")
    for seed, out in sorted(outcomes.items()):
        if out.startswith("BAD"):
            failures.append(f"seed {seed}: {out} -- {make_case(seed)[1]}")
    return outcomes, failures


def summary(outcomes):
    counts = {}
    for out in outcomes.values():
        key = out.split(":")[0] if out.startswith(("BAD", "CRASH", "HANG")) else out
        key = key.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def test_fuzz_model_loading(shared_dir):
    first = int(os.environ.get("EDGEDL_FUZZ_SEED", "0"))
    seeds = range(first, first + _count())
    outcomes, failures = fuzz(seeds)
    print(f"\n{len(outcomes)} cases: {summary(outcomes)}")
    assert len(outcomes) == len(seeds)
    assert not failures, (f"{len(failures)} of {len(seeds)} fuzz cases crashed, hung or raised "
                          "a non-edgedl exception (replay: python "
                          "tests/runtime/test_fuzz_models.py SEED):\n" + "\n".join(failures[:30]))


def test_harness_catches_crash_hang_and_foreign_exception(shared_dir, monkeypatch):
    monkeypatch.setenv("EDGEDL_FUZZ_SELFTEST", "1")
    outcomes, failures = fuzz([-1, -4, -2, -3, -5], timeout=2.0)
    assert outcomes[-1].startswith("CRASH (exit status -6)"), outcomes
    assert outcomes[-2].startswith("HANG"), outcomes
    assert outcomes[-3].startswith("BAD builtins.KeyError"), outcomes
    assert outcomes[-4] == outcomes[-5] == "ok", outcomes     # the next cases go on
    assert [f.split(":")[0] for f in failures] == ["seed -1", "seed -2", "seed -3"]


def test_mutations_are_deterministic_and_varied(shared_dir):
    cases = [make_case(s) for s in range(40)]
    assert cases == [make_case(s) for s in range(40)]
    kinds = " ".join(d for _, d in cases)
    for word in ("truncated", "flipped", "initializer", "opset", "input"):
        assert word in kinds, word


if __name__ == "__main__":        # replay: python tests/runtime/test_fuzz_models.py SEED...
    for s in sys.argv[1:]:
        print(s, make_case(int(s))[1])
        print(" ->", run_case(int(s)))
