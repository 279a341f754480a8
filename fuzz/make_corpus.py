"""Regenerates the seed corpora in fuzz/corpus/<target>/ (a few valid and a
few broken inputs per target). Run from the repository root after `make`:
    python3 fuzz/make_corpus.py
Uses ./flowhn (or $FLOWHN) for the tokenizer and the checkpoint seeds."""
import json
import os
import shutil
import struct
import subprocess
import tempfile

FLOWHN = os.environ.get("FLOWHN", os.path.abspath("flowhn"))
ROOT = "fuzz/corpus"
TINY = {"architecture": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": 8, "vocab_size": 32, "max_position_embeddings": 8,
        "tie_word_embeddings": True, "split_strategy": "none"}


def put(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def fnv(b):
    h = 14695981039346656037
    for x in b:
        h = ((h ^ x) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def config():
    put("config", "tiny_llama.json", json.dumps(TINY, indent=1))
    for name in ["tests/fixtures/llama.json", "tests/fixtures/flowhn_fac_prefix.json", "tests/fixtures/jamba.json",
                 "tests/fixtures/mamba2.json", "tests/fixtures/hymba.json"]:
        shutil.copy(name, os.path.join(ROOT, "config", os.path.basename(name)))
    put("config", "truncated.json", json.dumps(TINY)[:70])
    put("config", "wrong_type.json", json.dumps(dict(TINY, hidden_size="8")))
    put("config", "unknown_key.json", json.dumps(dict(TINY, hiden_size=8)))
    put("config", "huge.json", json.dumps(dict(TINY, hidden_size=1 << 20, vocab_size=2147483647, num_hidden_layers=1e300)))


def tokenizer(tmp):
    text = os.path.join(tmp, "t.txt")
    with open(text, "w") as f:
        f.write("the cat sat on the mat. The dog ran to the park, and the cat ran too! 123 456\n" * 4)
    out = os.path.join(tmp, "tok.json")
    subprocess.run([FLOWHN, "tokenizer", "train", "--input", text, "--vocab-size", "270", "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    good = open(out, "rb").read()
    put("tokenizer_json", "trained.json", good)
    j = json.loads(good)
    put("tokenizer_json", "truncated.json", good[:len(good) // 2])
    bad = dict(j, model=dict(j["model"], merges=j["model"]["merges"] + ["zz qq"]))
    put("tokenizer_json", "unknown_merge.json", json.dumps(bad))
    bad = dict(j, added_tokens=[{"id": 99999, "content": "<|x|>", "special": True}])
    put("tokenizer_json", "big_added_id.json", json.dumps(bad))
    bad = dict(j, pre_tokenizer={"type": "Whitespace"})
    put("tokenizer_json", "other_pretok.json", json.dumps(bad))
    return text


def shard():
    def hdr(magic, version, n):
        return struct.pack("<3i", magic, version, n) + b"\0" * (1024 - 12)
    toks = list(range(0, 40, 3))
    put("shard", "v1.bin", hdr(20240520, 1, len(toks)) + struct.pack("<%dH" % len(toks), *toks))
    put("shard", "v2.bin", hdr(20240520, 2, len(toks)) + struct.pack("<%dI" % len(toks), *toks))
    put("shard", "v1_bad_id.bin", hdr(20240520, 1, 2) + struct.pack("<2H", 5, 65535))
    put("shard", "truncated.bin", hdr(20240520, 1, 100) + b"\1\0" * 10)
    put("shard", "bad_magic.bin", hdr(12345, 1, 0))
    put("shard", "bad_version.bin", hdr(20240520, 3, 0))
    put("shard", "negative_count.bin", hdr(20240520, 2, -1))


def checkpoint(tmp):
    cfg = os.path.join(tmp, "tiny.json")
    with open(cfg, "w") as f:
        json.dump(TINY, f)
    ck = os.path.join(tmp, "ck.bin")
    subprocess.run([FLOWHN, "init", "--config", cfg, "--out", ck], check=True, stdout=subprocess.DEVNULL)
    good = open(ck, "rb").read()
    # first byte: bit 0 set = the harness rewrites checksum and end marker
    put("checkpoint", "init.bin", b"\0" + good)
    put("checkpoint", "init_fixsum.bin", b"\1" + good)
    put("checkpoint", "truncated.bin", b"\0" + good[:len(good) // 2])
    put("checkpoint", "bad_checksum.bin", b"\0" + good[:100] + bytes([good[100] ^ 1]) + good[101:])
    # with optimizer moments and a trainer state (checksum fixed by the harness)
    hlen = struct.unpack("<Q", good[12:20])[0]
    hdr = json.loads(good[20:20 + hlen])
    n = int(hdr["n_params"])
    hdr["has_optimizer"] = True
    hdr["state"] = {"step": 3, "rng": [1, 2], "data": {"epoch": 0, "pos": 12}}
    h = json.dumps(hdr).encode()
    params = good[20 + hlen:20 + hlen + 4 * n]
    body = good[:8] + struct.pack("<IQ", 1, len(h)) + h + params + params + params
    put("checkpoint", "with_optimizer.bin", b"\1" + body + struct.pack("<Q", fnv(body)) + b"FLOWHEND")
    hdr["config"]["hidden_size"] = 16
    h = json.dumps(hdr).encode()
    body = good[:8] + struct.pack("<IQ", 1, len(h)) + h + params
    put("checkpoint", "other_config.bin", b"\1" + body + b"\0" * 16)


def safetensors():
    def st(header, data):
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data
    a = struct.pack("<6f", *range(6))
    put("safetensors", "two.safetensors", st({"__metadata__": {"format": "pt"},
                                              "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                                              "b": {"dtype": "U8", "shape": [4], "data_offsets": [24, 28]}},
                                             a + b"\1\2\3\4"))
    put("safetensors", "scalar.safetensors", st({"s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}, b"\7" * 8))
    put("safetensors", "out_of_range.safetensors", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}, a))
    put("safetensors", "bad_dtype.safetensors", st({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, a))
    put("safetensors", "huge_header_len.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
    put("safetensors", "shape_mismatch.safetensors", st({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 24]}}, a))


def eval_jsonl():
    # first byte '0': multiple choice, '1': LAMBADA (bit 0)
    lines = [{"Query": "the cat sat on the", "Choices": [" mat", " park"], "label": 0},
             {"Query": "a dog _ to the park", "Choices": ["ran", "sat"], "label": "1"}]
    put("eval_jsonl", "choices.jsonl", "0" + "".join(json.dumps(l) + "\n" for l in lines))
    put("eval_jsonl", "lambada.jsonl", "1" + json.dumps({"Query": "the cat sat on the", "label": "mat"}) + "\n")
    put("eval_jsonl", "long.jsonl", "0" + json.dumps({"Query": "the cat " * 30, "Choices": ["a b c " * 10, "x"], "label": 1}) + "\n")
    put("eval_jsonl", "bad_label.jsonl", "0" + json.dumps({"Query": "q", "Choices": ["a", "b"], "label": 7}) + "\n")
    put("eval_jsonl", "not_object.jsonl", "0[1, 2]\n{\"Query\": \"q\"}\n")
    put("eval_jsonl", "lambada_missing.jsonl", "1{\"Query\": \"q\"}\n")


def cli():
    put("cli", "info.txt", "info\n--config\nc.json\n--seq-len\n8")
    put("cli", "info_bad_seq.txt", "info\n--config\nc.json\n--seq-len\n-3")
    put("cli", "train_no_data.txt", "train\n--config\nc.json\n--data\nnodata\n--out\nout\n--steps\n2\n--lr\n1e-3")
    put("cli", "train_bad_lr.txt", "train\n--config\nc.json\n--data\n.\n--out\nout\n--lr\nnan")
    put("cli", "eval_missing.txt", "eval\n--checkpoint\nnone.bin\n--tokenizer\nt.json\n--choices\nx.jsonl\n--limit\n3")
    put("cli", "generate_no_value.txt", "generate\n--checkpoint\nc.json\n--tokenizer\nc.json\n--top-p")
    put("cli", "version.txt", "version")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        config()
        tokenizer(tmp)
        shard()
        checkpoint(tmp)
        safetensors()
        eval_jsonl()
        cli()
