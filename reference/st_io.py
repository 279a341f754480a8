"""Minimal safetensors reader/writer in pure Python (struct + json; no numpy, no torch), and a
checker for the fixtures in tests/fixtures.

File format: 8-byte little-endian header length n, n bytes of JSON
{name: {"dtype": "F32"|"F64"|"I32", "shape": [...], "data_offsets": [begin, end]}} (padded with
spaces to a multiple of 8), then the raw little-endian data; offsets count from the data start.

    python3 reference/st_io.py [tests/fixtures]     # check every fixture there
"""
import json
import math
import os
import struct
import sys

_FMT = {"F32": "f", "F64": "d", "I32": "i"}
_SIZE = {"F32": 4, "F64": 8, "I32": 4}


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write_safetensors(path, entries):
    """entries: list of (name, dtype, shape, flat sequence of numbers), written in that order."""
    header, blobs, off = {}, [], 0
    for name, dtype, shape, values in entries:
        values = list(values)
        if len(values) != _numel(shape):
            raise ValueError("%s: %d values for shape %s" % (name, len(values), shape))
        blob = struct.pack("<%d%s" % (len(values), _FMT[dtype]), *values)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """Returns {name: (dtype, shape, tuple of values)}; checks that offsets tile the data exactly."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n].decode())
    header.pop("__metadata__", None)
    body = data[8 + n:]
    out, spans = {}, []
    for name, h in header.items():
        dtype, shape, (b, e) = h["dtype"], h["shape"], h["data_offsets"]
        count = _numel(shape)
        if e - b != count * _SIZE[dtype] or e > len(body):
            raise ValueError("%s: %s bad offsets %s" % (path, name, [b, e]))
        out[name] = (dtype, shape, struct.unpack_from("<%d%s" % (count, _FMT[dtype]), body, b))
        spans.append((b, e))
    spans.sort()
    pos = 0
    for b, e in spans:
        if b != pos:
            raise ValueError("%s: gap or overlap at byte %d" % (path, b))
        pos = e
    if pos != len(body):
        raise ValueError("%s: %d trailing bytes" % (path, len(body) - pos))
    return out


def check_fixture(json_path):
    """Reads one fixture back and checks it against the contract (names, shapes, dtypes, split
    plans recomputed here, targets = next tokens or -1, finite numbers). Returns a list of problems."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from contract import DEFAULTS, Config, param_layout, split_plan
    with open(json_path) as f:
        raw = json.load(f)
    problems = []
    if set(raw) != set(DEFAULTS):
        problems.append("config keys differ from section 1: %s" % sorted(set(raw) ^ set(DEFAULTS)))
    c = Config(raw)
    t = read_safetensors(json_path[:-5] + ".safetensors")
    B, T = t["tokens"][1]
    expect = {"tokens": ("I32", [B, T]), "targets": ("I32", [B, T]),
              "logits": ("F64", [B, T, c.V]), "loss": ("F64", [1])}
    for name, shape in param_layout(c):
        expect["param." + name] = ("F32", shape)
        expect["grad." + name] = ("F64", shape)
    if c.architecture == "flowhn":
        for l, (pa, _) in enumerate(split_plan(c, T)):
            expect["split.layer%d.attn" % l] = ("I32", [len(pa)])
            got = t.get("split.layer%d.attn" % l)
            if got is not None and list(got[2]) != pa:
                problems.append("split.layer%d.attn %s != contract %s" % (l, list(got[2]), pa))
    for name, (dtype, shape) in expect.items():
        if name not in t:
            problems.append("missing " + name)
        elif (t[name][0], t[name][1]) != (dtype, shape):
            problems.append("%s is %s %s, want %s %s" % (name, t[name][0], t[name][1], dtype, shape))
    extra = sorted(set(t) - set(expect))
    if extra:
        problems.append("unexpected tensors %s" % extra)
    for name, (dtype, _, vals) in t.items():
        if dtype != "I32" and not all(math.isfinite(v) for v in vals):
            problems.append(name + " not finite")
    tok, tgt = t["tokens"][2], t["targets"][2]
    for b in range(B):
        for i in range(T - 1):
            if tgt[b * T + i] not in (-1, tok[b * T + i + 1]):
                problems.append("targets[%d,%d] is not the next token" % (b, i))
    if not all(0 <= v < c.V for v in tok) or not all(-1 <= v < c.V for v in tgt):
        problems.append("token out of range")
    return problems


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    names = sorted(f for f in os.listdir(d) if f.endswith(".json"))
    bad = 0
    for f in names:
        p = check_fixture(os.path.join(d, f))
        print(("ok   " if not p else "FAIL ") + f + "".join("\n     " + x for x in p))
        bad += bool(p)
    print("%d fixtures, %d bad" % (len(names), bad))
    return 1 if bad or not names else 0


if __name__ == "__main__":
    sys.exit(main())
