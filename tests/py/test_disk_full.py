#!/usr/bin/env python3
"""Every file flowhn writes, on a disk that fills up: each writer command is
run under RLIMIT_FSIZE (SIGXFSZ ignored, so a write past the limit fails with
EFBIG, as a full disk fails with ENOSPC) at several limits, so that the
failure lands in different parts of the file. Each time the command must exit
non-zero with a message naming the file, must not crash, and must leave no
partial file under the final name: a file that existed before is unchanged,
one that did not exists not at all (temp files are removed); the training
log may keep the whole lines of the steps done. Writers: the
tokenizer (tokenizer.json), prepare (token shards), init (checkpoint),
export (model.safetensors + config.json), train (checkpoint, log, plot).
Prints ok/FAIL lines and a RESULT line."""
import hashlib
import json
import os
import resource
import signal
import subprocess
import tempfile

from harness import FLOWHN, case, finish

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "tiny-flowhn-fac.json")


def run(args, limit=None, timeout=120):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([FLOWHN] + args, capture_output=True, text=True, timeout=timeout, preexec_fn=pre)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.exists(path) else None


def snapshot(d):
    """name -> digest of every file in d (recursively)"""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, d)] = digest(p)
    return out


def log_ok(path):
    """The training log is appended line by line as steps finish (a run that
    fails keeps the lines of the steps it did): it may be new or longer, but
    every line in it must be whole JSON."""
    if not path.endswith("log.jsonl"):
        return False
    try:
        for line in open(path):
            json.loads(line)
        return True
    except ValueError:
        return False


def largest_file(d):
    return max((os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs), default=0)


def check_writer(name, args, outdir, names, probe):
    """Runs args under file-size limits that cut the largest output file at
    its start, a third in and one byte short (its size is learned first by a
    run into the `probe` directory, which `args` must name through the
    placeholder PROBE-or-OUT pairs given as (probe_args, args)); `names` =
    files the message may name (any of them)."""
    probe_args, args = args
    r = run(probe_args)
    size = largest_file(probe)
    case(f"{name}: probe run wrote its output ({size} B)", r.returncode == 0 and size > 2, r.stderr.strip()[:300])
    sizes = sorted({1, max(2, size // 3), size - 1})
    before = snapshot(outdir)
    for lim in sizes:
        r = run(args, limit=lim)
        after = snapshot(outdir)
        crashed = r.returncode < 0 or r.returncode > 128
        named = any(n in r.stderr for n in names)
        case(f"{name}: limit {lim} B -> error", r.returncode != 0 and not crashed and named,
             f"rc {r.returncode}, stderr: {r.stderr.strip()[:300]}")
        changed = {k: v for k, v in after.items() if before.get(k) != v and not log_ok(os.path.join(outdir, k))}
        case(f"{name}: limit {lim} B leaves earlier files as they were and no partial file", not changed,
             f"changed or new: {sorted(changed)[:5]}")
    r = run(args)
    case(f"{name}: without a limit it succeeds", r.returncode == 0, r.stderr.strip()[:300])


with tempfile.TemporaryDirectory(prefix="flowhn-diskfull-") as d:
    corpus = os.path.join(d, "corpus.txt")
    with open(corpus, "w") as f:
        words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex bad jam".split()
        f.write("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(14)) for i in range(3000)))

    # tokenizer.json: a fresh directory (no earlier file) and then over an existing one
    def probe_dir(tag):
        p = os.path.join(d, "probe-" + tag); os.mkdir(p); return p

    # a tiny FlowHN with the tokenizer's vocabulary
    cfg = os.path.join(d, "model.json")
    c = json.load(open(CONFIG)); c["vocab_size"] = 320
    json.dump(c, open(cfg, "w"))

    tokdir = os.path.join(d, "tok"); os.mkdir(tokdir)
    tok = os.path.join(tokdir, "tokenizer.json")
    tok_args = ["tokenizer", "train", "--input", corpus, "--vocab-size", "320", "--out"]
    p = probe_dir("tok")
    check_writer("tokenizer train (new file)", (tok_args + [os.path.join(p, "t.json")], tok_args + [tok]), tokdir,
                 ["tokenizer.json"], p)
    tok_args[5] = "300"  # a different file over the existing one
    p = probe_dir("tok2")
    check_writer("tokenizer train (over an existing file)", (tok_args + [os.path.join(p, "t2.json")],
                 tok_args + [tok]), tokdir, ["tokenizer.json"], p)

    data = os.path.join(d, "data")
    prep = ["prepare", "--tokenizer", tok, "--input", corpus, "--val-fraction", "0.1", "--shard-tokens", "20000",
            "--out"]
    p = probe_dir("prep")
    check_writer("prepare", (prep + [os.path.join(p, "data")], prep + [data]), d, ["train_", "val_", data], p)

    ck = os.path.join(d, "ck", "init.bin"); os.mkdir(os.path.dirname(ck))
    init = ["init", "--config", cfg, "--out"]
    p = probe_dir("init")
    check_writer("init", (init + [os.path.join(p, "i.bin")], init + [ck]), os.path.dirname(ck), ["init.bin"], p)

    ex = os.path.join(d, "export")
    exp = ["export", "--checkpoint", ck, "--out"]
    p = probe_dir("export")
    check_writer("export", (exp + [os.path.join(p, "e")], exp + [ex]), d, ["model.safetensors", "config.json", ex], p)

    tr = os.path.join(d, "train")
    train = ["train", "--config", cfg, "--data", data, "--steps", "2", "--batch", "2", "--seq-len", "32",
             "--val-every", "1", "--val-batches", "1", "--out"]
    p = probe_dir("train")
    check_writer("train", (train + [os.path.join(p, "t")], train + [tr]), d,
                 ["checkpoint.bin", "log.jsonl", "loss.svg", tr], p)

    # resuming onto a full disk: the earlier log lines and the checkpoint stay
    logp, ckp = os.path.join(tr, "log.jsonl"), os.path.join(tr, "checkpoint.bin")
    old_log, old_ck = open(logp).read(), digest(ckp)
    r = run(train[:train.index("--steps") + 1] + ["4"] + train[train.index("--steps") + 2:] + [tr, "--resume", ckp],
            limit=len(old_log) + 40)
    new_log = open(logp).read()
    case("train --resume on a full disk: fails, keeps the earlier log lines and the checkpoint",
         r.returncode not in (0,) and r.returncode < 128 and new_log.startswith(old_log) and log_ok(logp)
         and digest(ckp) == old_ck, f"rc {r.returncode}, log {len(old_log)} -> {len(new_log)} B, {r.stderr[:200]}")
finish()
