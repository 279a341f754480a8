#!/usr/bin/env python3
"""flowhn prepare: text and JSON-lines in, llm.c token shards out. The shards
are read here independently (256 int32 header: 20240520, version, count;
uint16 tokens) and decoded back to the input text with the tokenizer.
Prints ok/FAIL lines and a final RESULT line."""
import json
import os
import struct
import subprocess
import sys
import tempfile

from harness import FLOWHN, case, finish


def read_shard(path):
    blob = open(path, "rb").read()
    magic, version, n = struct.unpack("<3i", blob[:12])
    width = 2 if version == 1 else 4
    fmt = "<%d%s" % (n, "H" if width == 2 else "I")
    return magic, version, n, list(struct.unpack(fmt, blob[1024:1024 + width * n])), len(blob)


def run(*args, stdin=None):
    return subprocess.run([FLOWHN] + list(args), capture_output=True, text=True, input=stdin)


def main():
    with tempfile.TemporaryDirectory() as d:
        text = "".join("Line %d: the quick brown fox jumps over the lazy dog. Ünïcödé ✓\n" % i for i in range(400))
        src = os.path.join(d, "a.txt")
        open(src, "w").write(text)
        tok = os.path.join(d, "tok.json")
        r = run("tokenizer", "train", "--input", src, "--vocab-size", "400", "--out", tok)
        case("tokenizer train", r.returncode == 0, r.stderr)
        out = os.path.join(d, "shards")
        r = run("prepare", "--tokenizer", tok, "--input", src, "--out", out, "--val-fraction", "0.1")
        case("prepare text", r.returncode == 0, r.stderr)
        m1, v1, n1, t1, size1 = read_shard(os.path.join(out, "train_000000.bin"))
        m2, v2, n2, t2, size2 = read_shard(os.path.join(out, "val_000000.bin"))
        case("llm.c header: magic, version 1 for a small vocabulary, exact size",
             m1 == m2 == 20240520 and v1 == v2 == 1 and size1 == 1024 + 2 * n1 and size2 == 1024 + 2 * n2)
        case("validation is about 10%", abs(n2 / (n1 + n2) - 0.1) < 0.01, "(%d of %d)" % (n2, n1 + n2))
        eot = json.load(open(tok))["added_tokens"][0]["id"]
        ids = t1 + t2
        case("document starts with <|endoftext|>", ids[0] == eot)
        r = run("tokenizer", "decode", "--tokenizer", tok, stdin=" ".join(map(str, ids[1:])))
        case("shards decode back to the text", r.stdout == text, r.stderr)
        # JSON lines: one document per line, each preceded by <|endoftext|>
        jl = os.path.join(d, "b.jsonl")
        docs = ["first document", "second one, longer", "third"]
        open(jl, "w").write("".join(json.dumps({"text": t}) + "\n" for t in docs))
        out2 = os.path.join(d, "shards2")
        r = run("prepare", "--tokenizer", tok, "--input", jl, "--out", out2, "--val-fraction", "0")
        _, _, _, t3, _ = read_shard(os.path.join(out2, "train_000000.bin"))
        case("jsonl: one <|endoftext|> per document", r.returncode == 0 and t3.count(eot) == 3, r.stderr)
        bad = os.path.join(d, "bad.jsonl")
        open(bad, "w").write('{"text": "ok"}\n{"body": "no text field"}\n')
        r = run("prepare", "--tokenizer", tok, "--input", bad, "--out", out2)
        case("jsonl: a bad line is reported with file:line", r.returncode != 0 and "bad.jsonl:2" in r.stderr, r.stderr)
        r = run("prepare", "--tokenizer", os.path.join(d, "missing.json"), "--input", src, "--out", out2)
        case("missing tokenizer named", r.returncode != 0 and "missing.json" in r.stderr, r.stderr)


if __name__ == "__main__":
    main()
    finish()
