#!/usr/bin/env python3
"""flowhn export -> safetensors + config.json, read back by the Python
`safetensors` package and numpy, compared value by value with the
checkpoint it came from (whose format is parsed here independently:
docs/decisions.md, src/train/checkpoint.h).

Prints ok/FAIL lines and a final RESULT line (tools/run_tests.sh)."""
import json
import os
import struct
import subprocess
import sys
import tempfile

from harness import FLOWHN, case, finish


def read_checkpoint(path):
    blob = open(path, "rb").read()
    assert blob[:8] == b"FLOWHNCK", "magic"
    version, hlen = struct.unpack("<IQ", blob[8:20])
    header = json.loads(blob[20:20 + hlen])
    n = int(header["n_params"])
    import numpy as np
    params = np.frombuffer(blob, dtype="<f4", count=n, offset=20 + hlen)
    return header, params


def main():
    try:
        import numpy as np
        from safetensors.numpy import load_file
    except ImportError as e:
        case("python safetensors and numpy available", False, "(%s; .ci/run installs them with pip)" % e)
        return
    flowhn = FLOWHN
    for cfg in ("tests/fixtures/llama.json", "tests/fixtures/flowhn_fac_isolated.json", "tests/fixtures/mamba2.json"):
        name = os.path.basename(cfg)
        with tempfile.TemporaryDirectory() as d:
            ck = os.path.join(d, "ck.bin")
            out = os.path.join(d, "export")
            r1 = subprocess.run([flowhn, "init", "--config", cfg, "--out", ck, "--seed", "3"], capture_output=True, text=True)
            r2 = subprocess.run([flowhn, "export", "--checkpoint", ck, "--out", out], capture_output=True, text=True)
            if r1.returncode or r2.returncode:
                case("export " + name, False, r1.stderr + r2.stderr)
                continue
            header, params = read_checkpoint(ck)
            tensors = load_file(os.path.join(out, "model.safetensors"))
            # tensors in file order = layout order; their concatenation is the parameter buffer
            raw = open(os.path.join(out, "model.safetensors"), "rb").read()
            hl = struct.unpack("<Q", raw[:8])[0]
            order = [k for k, v in sorted(json.loads(raw[8:8 + hl]).items(), key=lambda kv: kv[1]["data_offsets"][0]
                                          if kv[0] != "__metadata__" else -1) if k != "__metadata__"]
            flat = np.concatenate([tensors[k].reshape(-1) for k in order])
            case("export %s: values equal the checkpoint" % name, flat.dtype == np.float32 and
                 flat.shape == params.shape and np.array_equal(flat, params),
                 "(%s vs %s)" % (flat.shape, params.shape))
            cfg_out = json.load(open(os.path.join(out, "config.json")))
            case("export %s: config.json equals the checkpoint's config" % name, cfg_out == header["config"])
            H, V = cfg_out["hidden_size"], cfg_out["vocab_size"]
            case("export %s: embed.weight is [vocab, hidden]" % name, tensors["embed.weight"].shape == (V, H))
            case("export %s: norm_f.weight initialised to ones" % name, np.all(tensors["norm_f.weight"] == 1.0))


if __name__ == "__main__":
    if not os.path.exists(FLOWHN):
        case("./flowhn is built (run from the repository root after make)", False)
        finish()
    main()
    finish()
