#!/usr/bin/env python3
"""Crash safety of training checkpoints: `flowhn train --ckpt-every 1` on a
tiny model is killed with SIGKILL at random moments (20+ trials, under a time
budget). After each kill, out/checkpoint.bin (when it exists) must be a whole
checkpoint, checked here independently of flowhn (magic, sizes, FNV-1a
checksum, end marker), and must resume for one step; the only other
checkpoint-like file allowed is the killed run's temp file
checkpoint.bin.tmp.<pid>, and when that one is torn, flowhn must refuse to
resume from it. Prints ok/FAIL lines and a RESULT line."""
import json
import os
import random
import re
import signal
import struct
import subprocess
import tempfile
import time

from harness import FLOWHN, case, finish

TRIALS = 24
BUDGET_S = 50          # wall-clock budget for all trials
MIN_TRIALS = 20


def run(*args, timeout=60):
    return subprocess.run([FLOWHN] + list(args), capture_output=True, text=True, timeout=timeout)


def fnv1a(blob):
    h = 14695981039346656037
    for b in blob:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def check_checkpoint(path):
    """(None, header) if path is a whole checkpoint, else (reason, None)."""
    blob = open(path, "rb").read()
    if len(blob) < 36 or blob[:8] != b"FLOWHNCK":
        return "bad magic or too short (%d bytes)" % len(blob), None
    version, hlen = struct.unpack("<IQ", blob[8:20])
    if version != 1 or 20 + hlen + 16 > len(blob):
        return "version %d, header length %d" % (version, hlen), None
    try:
        hdr = json.loads(blob[20:20 + hlen])
    except ValueError:
        return "header is not JSON", None
    n = int(hdr.get("n_params", -1))
    want = 20 + hlen + 4 * n * (3 if hdr.get("has_optimizer") else 1) + 16
    if len(blob) != want:
        return "size %d, header implies %d" % (len(blob), want), None
    if blob[-8:] != b"FLOWHEND":
        return "no end marker", None
    if struct.unpack("<Q", blob[-16:-8])[0] != fnv1a(blob[:-16]):
        return "checksum mismatch", None
    return None, hdr


def make_data(d):
    rng = random.Random(7)
    words = "the a cat dog sat ran on to park mat and of big small red blue fox jumps over lazy".split()
    text = os.path.join(d, "text.txt")
    with open(text, "w") as f:
        f.write("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)))
    tok = os.path.join(d, "tok.json")
    r = run("tokenizer", "train", "--input", text, "--vocab-size", "300", "--out", tok)
    if r.returncode:
        return None, r.stderr
    data = os.path.join(d, "data")
    r = run("prepare", "--tokenizer", tok, "--input", text, "--out", data, "--val-fraction", "0.1")
    if r.returncode:
        return None, r.stderr
    # the tiny llama preset, with room for the tokenizer's 300 ids
    here = os.path.dirname(os.path.abspath(__file__))
    cfg = json.load(open(os.path.join(here, "..", "..", "configs", "tiny-llama.json")))
    cfg["vocab_size"] = 320
    cfg_path = os.path.join(d, "tiny.json")
    json.dump(cfg, open(cfg_path, "w"))
    return (cfg_path, data), ""


def main():
    with tempfile.TemporaryDirectory() as d:
        made, err = make_data(d)
        case("tokenizer train + prepare make a tiny shard dataset", made is not None, err)
        if made is None:
            return
        cfg, data = made
        common = ["--config", cfg, "--data", data, "--batch", "2", "--seq-len", "16", "--val-every", "0",
                  "--ckpt-every", "1"]
        rng = random.Random(int(os.environ.get("CRASH_SEED", "12345")))
        t0 = time.time()
        trials = with_ckpt = with_tmp = 0
        bad = []
        while trials < TRIALS and time.time() - t0 < BUDGET_S:
            out = os.path.join(d, "out%d" % trials)
            p = subprocess.Popen([FLOWHN, "train", "--out", out, "--steps", "100000"] + common,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, 0.8))
            p.send_signal(signal.SIGKILL)
            p.wait()
            trials += 1
            names = sorted(os.listdir(out)) if os.path.isdir(out) else []
            tmp_re = re.compile(r"checkpoint\.bin\.tmp\.%d$" % p.pid)
            for name in names:
                if name.startswith("checkpoint") and name != "checkpoint.bin" and not tmp_re.match(name):
                    bad.append("trial %d: unexpected file %s" % (trials, name))
            for name in filter(tmp_re.match, names):
                with_tmp += 1
                why, _ = check_checkpoint(os.path.join(out, name))
                if why:   # torn temp file: flowhn must refuse it
                    r = run("train", "--out", os.path.join(d, "scratch"), "--steps", "2",
                            "--resume", os.path.join(out, name), *common)
                    if r.returncode == 0:
                        bad.append("trial %d: resumed from a torn temp file (%s)" % (trials, why))
            ck = os.path.join(out, "checkpoint.bin")
            if not os.path.exists(ck):
                continue
            with_ckpt += 1
            why, hdr = check_checkpoint(ck)
            if why:
                bad.append("trial %d: checkpoint.bin is not whole: %s" % (trials, why))
                continue
            step = int(hdr["state"]["step"])
            r = run("train", "--out", out, "--steps", str(step + 1), "--resume", ck, *common)
            if r.returncode:
                bad.append("trial %d: resume from step %d failed: %s" % (trials, step, r.stderr.strip()[-300:]))
                continue
            why, hdr2 = check_checkpoint(ck)
            if why or int(hdr2["state"]["step"]) != step + 1:
                bad.append("trial %d: after resuming from step %d the checkpoint is %s" %
                           (trials, step, why or "at step %s" % hdr2["state"]["step"]))
        elapsed = time.time() - t0
        print("    %d trials in %.1f s: %d left a checkpoint.bin, %d a temp file" % (trials, elapsed, with_ckpt, with_tmp))
        case("%d+ kill -9 trials within the %d s budget" % (MIN_TRIALS, BUDGET_S), trials >= MIN_TRIALS,
             "(only %d)" % trials)
        case("some kills land after a checkpoint was written (the test is not vacuous)", with_ckpt >= trials // 4,
             "(%d of %d)" % (with_ckpt, trials))
        case("every checkpoint.bin left by a kill is whole and resumes one step; no stray or accepted temp file",
             not bad, "\n    " + "\n    ".join(bad[:10]))


if __name__ == "__main__":
    main()
    finish()
