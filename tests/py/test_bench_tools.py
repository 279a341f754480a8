"""The benchmark report tools on made-up logs (no GPU): tools/plot_bench.py reads
bench_all's BENCH/BENCHTAG lines (a failed row is dropped, a later run of a row wins)
and draws its two plots, or says it cannot; tools/bench_compare.sh --report-only takes
the table header's settings from the first row that has each side, also when the
first config's flowhn side failed; `flowhn bench --profile` (training and
--decode) prints the op table on the CPU."""
import importlib.util
import os
import subprocess
import sys
import tempfile

from harness import FLOWHN, case, finish

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def bench_line(arch, T, tok_s, flops):
    return ("BENCH config=configs/%s-135m.json device=cuda precision=bf16 graph=1 B=8 T=%d params=1 step_ms=1.0 "
            "tokens_per_s=%s flops_per_token=%s tflops=1 mfu_bf16=0.2 mfu_fp32=1 peak_alloc_gib=1\n"
            "BENCHTAG arch=%s size=135m\n" % (arch, T, tok_s, flops, arch))


def main():
    spec = importlib.util.spec_from_file_location("plot_bench", os.path.join(ROOT, "tools", "plot_bench.py"))
    pb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pb)
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "bench_all.log")
        with open(log, "w") as f:
            f.write(bench_line("llama", 1024, 100.0, 5e8))
            f.write(bench_line("flowhn-fac", 1024, 120.0, 4e8))
            f.write(bench_line("llama", 4096, 80.0, 6e8))
            f.write(bench_line("flowhn-fac", 4096, 110.0, 4.2e8))
            f.write("== mamba1-135m T=1024 B=8\nBENCHFAIL arch=mamba1-135m T=1024\nBENCHTAG arch=mamba1 size=135m\n")
            f.write(bench_line("llama", 1024, 105.0, 5e8))   # measured again: this one counts
        rows = pb.read_rows([log])
        case("plot_bench reads every row once", sorted(rows) == sorted(
            [("llama", "135m", 1024), ("flowhn-fac", "135m", 1024), ("llama", "135m", 4096),
             ("flowhn-fac", "135m", 4096)]), str(sorted(rows)))
        case("plot_bench: a later run of a row wins", rows[("llama", "135m", 1024)]["tok_s"] == 105.0)
        case("plot_bench: a failed row is dropped", not any(k[0] == "mamba1" for k in rows))
        out = os.path.join(d, "p")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_bench.py"), log, "--out", out],
                           capture_output=True, text=True)
        have_mpl = importlib.util.find_spec("matplotlib") is not None
        if have_mpl:
            case("plot_bench writes both plots", r.returncode == 0 and os.path.getsize(out + "_sizes.svg") > 1000
                 and os.path.getsize(out + "_seq.svg") > 1000, r.stderr)
        else:
            case("plot_bench without matplotlib says so and exits 0",
                 r.returncode == 0 and "no matplotlib" in r.stderr, r.stderr)
        empty = os.path.join(d, "empty.log")
        open(empty, "w").close()
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plot_bench.py"), empty, "--out", out],
                           capture_output=True, text=True)
        case("plot_bench refuses a log without rows, naming it", r.returncode != 0 and "empty.log" in r.stderr,
             r.stderr)

        cdir = os.path.join(d, "cmp")
        os.makedirs(cdir)
        with open(os.path.join(cdir, "bench_compare.log"), "w") as f:
            f.write("== llama-135m B=8 T=1024: flowhn\nFLOWHNFAIL name=llama-135m\n"
                    "TORCHBENCH config=configs/llama-135m.json precision=bf16 B=8 T=1024 tokens_per_s=600000 "
                    "step_ms=13.6 compile=1\nCMPTAG name=llama-135m\n")
            f.write(bench_line("flowhn-fac", 1024, 500000.0, 4e8).splitlines()[0] + "\n"
                    "TORCHBENCH config=configs/flowhn-fac-135m.json precision=bf16 B=8 T=1024 tokens_per_s=250000 "
                    "step_ms=27 compile=1\nCMPTAG name=flowhn-fac-135m\n")
        r = subprocess.run(["bash", os.path.join(ROOT, "tools", "bench_compare.sh"), "--report-only", "--out", cdir],
                           capture_output=True, text=True, cwd=ROOT)
        md = open(os.path.join(cdir, "bench_compare.md")).read() if os.path.exists(
            os.path.join(cdir, "bench_compare.md")) else ""
        case("bench_compare header: precision from the first row with a flowhn side",
             "--precision bf16" in md and "?" not in md.splitlines()[0], md[:300] + r.stderr[-300:])
        case("bench_compare: the ratio of the complete row", "| 2.000 |" in md, md)

    for extra in ([], ["--decode", "--prompt-len", "4", "--steps", "3"]):
        cmd = [FLOWHN, "bench", "--config", os.path.join(ROOT, "configs", "tiny-flowhn-fac.json"), "--batch", "2",
               "--seq-len", "16", "--steps", "2", "--warmup", "1", "--profile"] + extra
        r = subprocess.run(cmd, capture_output=True, text=True)
        rows = [l for l in r.stdout.splitlines() if l.startswith("| ")]
        want = "attention_decode_at" if extra else "linear_bwd"
        case("bench --profile%s: the op table" % (" --decode" if extra else ""),
             r.returncode == 0 and any(l.startswith("| linear_fwd |") for l in rows)
             and any(l.startswith("| %s |" % want) for l in rows) and any(l.startswith("| all ops |") for l in rows),
             r.stdout[-600:] + r.stderr[-300:])
    finish()


if __name__ == "__main__":
    main()
