#!/usr/bin/env python3
"""flowhn's byte-level BPE tokenizer against Hugging Face `tokenizers`.

On a few megabytes of text made here (the licence and copyright files every
Debian machine has, plus generated text in many scripts, whitespace kinds,
digits, emoji, controls and <|endoftext|>):
  1. a tokenizer trained by `flowhn tokenizer train` gives the same ids from
     `flowhn tokenizer encode` and from HF's Tokenizer.from_file, and decodes
     back to the text;
  2. tokenizer.json files trained and written by HF (current merges format;
     also without the full byte alphabet; also with the Sequence(Split +
     ByteLevel) pre-tokenizer newer versions write) load in flowhn and give
     HF's ids.
Needs ./flowhn (or $FLOWHN) with the tokenizer command; installs nothing:
without the `tokenizers` package it fails, saying so.
Prints ok/FAIL lines and a final RESULT line (tools/run_tests.sh)."""
import glob
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import unicodedata

passed = failed = 0
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOWHN = os.environ.get("FLOWHN", os.path.join(ROOT, "flowhn"))
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def case(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("ok   " + name)
    else:
        failed += 1
        print("FAIL %s %s" % (name, detail))
    sys.stdout.flush()


def debian_text(limit):
    """licence and copyright texts, in a fixed order, up to `limit` characters"""
    files = sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright"))
    parts, n = [], 0
    for f in files:
        if n >= limit or not os.path.isfile(f):
            continue
        with open(f, "rb") as fh:
            t = fh.read().decode("utf-8", errors="replace")
        parts.append(t)
        n += len(t)
    return "".join(parts)[:limit]


def table_version():
    with open(os.path.join(ROOT, "src/data/unicode_tables.h"), encoding="utf-8") as f:
        m = re.search(r"Unicode version: ([0-9.]+)", f.read())
    return m.group(1) if m else None


def unicode_text(rng, n_words):
    """words in many scripts separated by whitespace runs and punctuation"""
    same_version = table_version() == unicodedata.unidata_version
    if not same_version:
        print("note: Python's Unicode %s differs from the table's %s; random code points limited to < U+0800"
              % (unicodedata.unidata_version, table_version()))

    def assigned(cp):
        return unicodedata.category(chr(cp)) not in ("Cn", "Cs", "Co")

    ranges = [(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xFF), (0x100, 0x17F), (0x391, 0x3C9), (0x410, 0x44F),
              (0x5D0, 0x5EA), (0x621, 0x64A), (0x660, 0x669), (0x300, 0x36F), (0x905, 0x939), (0x93E, 0x94D),
              (0x966, 0x96F), (0xE01, 0xE3A), (0x2160, 0x2188), (0x3041, 0x3096), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x10400, 0x1044F)]
    if not same_version:
        ranges = [r for r in ranges if r[1] < 0x800]
    singles = "\u00b2\u00b3\u00b9\u00bc\u00bd\u00be\u200d\ufe0f\u00ad\u2019\u201c\u201d\u2014\u00a7"
    spaces = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2000", "\u200a",
              "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", " \n ", "   \t", "\x1c", "\x1f", "\u200b", "\ufeff"]
    punct = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "''", "!", "?!", "...", "-", ",", ".", "(", ")",
             "\"", "#", "$", "%", "&", "*", "@", "<|endoftext|>", "<|endoftext", "\x00", "\x01", "\x7f"]

    def rand_char():
        while True:
            if rng.random() < 0.1:
                cp = rng.randrange(0x20, 0x800 if not same_version else 0x30000)
            else:
                lo, hi = rng.choice(ranges)
                cp = rng.randint(lo, hi)
            if assigned(cp) and not 0xD800 <= cp <= 0xDFFF:
                return chr(cp)

    out = []
    for _ in range(n_words):
        r = rng.random()
        if r < 0.6:
            out.append("".join(rand_char() for _ in range(rng.randint(1, 8))))
        elif r < 0.7:
            out.append(rng.choice(singles))
        elif r < 0.85:
            out.append(rng.choice(punct))
        else:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
        out.append(rng.choice(spaces) if rng.random() < 0.5 else " ")
    return "".join(out)


def flowhn(*args, stdin=None):
    r = subprocess.run([FLOWHN, "tokenizer", *args], input=stdin, capture_output=True)
    if r.returncode:
        raise RuntimeError("flowhn tokenizer %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
    return r.stdout


def our_ids(tok_path, text_path):
    return [int(x) for x in flowhn("encode", "--tokenizer", tok_path, "--input", text_path, "--ids").split()]


def first_diff(a, b):
    k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return "(%d vs %d ids; first difference at %d: %s vs %s)" % (len(a), len(b), k, a[k:k + 5], b[k:k + 5])


def main():
    try:
        from tokenizers import Tokenizer, Regex, decoders, models, pre_tokenizers, trainers
    except ImportError:
        # .ci/run installs it; a comparison that cannot run must not pass silently
        case("Python package `tokenizers` available", False, "(pip install tokenizers)")
        return
    if subprocess.run([FLOWHN, "tokenizer", "--help"], capture_output=True).returncode:
        case("flowhn has the tokenizer command", False, "(%s tokenizer --help failed: build it with the tokenizer "
             "command in src/cli/command_list.h)" % FLOWHN)
        return
    rng = random.Random(1234)
    text = debian_text(2_500_000) + unicode_text(rng, 150_000)
    with tempfile.TemporaryDirectory() as d:
        text_path = os.path.join(d, "corpus.txt")
        with open(text_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        data = text.encode("utf-8")
        print("corpus: %.1f MB" % (len(data) / 1e6))

        # 1. ours -> HF
        ours = os.path.join(d, "ours.json")
        flowhn("train", "--input", text_path, "--vocab-size", "3000", "--out", ours)
        hf = Tokenizer.from_file(ours)
        ids = our_ids(ours, text_path)
        hf_ids = hf.encode(text).ids
        case("flowhn-trained tokenizer: flowhn ids == HF ids", ids == hf_ids, first_diff(ids, hf_ids))
        back = flowhn("decode", "--tokenizer", ours, stdin=" ".join(map(str, ids)).encode())
        case("flowhn-trained tokenizer: decode(encode(text)) == text", back == data)
        case("flowhn-trained tokenizer: HF decodes flowhn's ids to the text",
             hf.decode(ids, skip_special_tokens=False) == text)
        with open(ours, encoding="utf-8") as f:
            vocab = json.load(f)["model"]["vocab"]
        case("flowhn-trained tokenizer: vocabulary of 3000", len(vocab) == 3000 and max(vocab.values()) == 2999)

        # 2. HF -> ours
        def hf_tokenizer(full_alphabet, sequence):
            t = Tokenizer(models.BPE())
            if sequence:
                t.pre_tokenizer = pre_tokenizers.Sequence([
                    pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
            else:
                t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            t.decoder = decoders.ByteLevel()
            tr = trainers.BpeTrainer(vocab_size=2500, special_tokens=["<|endoftext|>"], show_progress=False,
                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [])
            t.train_from_iterator([text], tr)
            return t

        for label, full, seq in (("HF-trained ByteLevel", True, False),
                                 ("HF-trained, bytes missing from the alphabet", False, False),
                                 ("HF-trained Sequence(Split, ByteLevel)", True, True)):
            t = hf_tokenizer(full, seq)
            p = os.path.join(d, "hf.json")
            t.save(p)
            try:
                ids = our_ids(p, text_path)
            except RuntimeError as e:
                case(label + ": flowhn loads it", False, str(e))
                continue
            hf_ids = t.encode(text).ids
            case(label + ": flowhn ids == HF ids", ids == hf_ids, first_diff(ids, hf_ids))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a crash is one failed case, not a missing RESULT line
        case("test_tokenizer_hf ran", False, repr(e))
    print("RESULT %d passed, %d failed" % (passed, failed))
