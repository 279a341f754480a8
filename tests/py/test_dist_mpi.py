#!/usr/bin/env python3
"""The `mpi` rendezvous (src/dist/rendezvous_mpi.c: MPI loaded at run time):
under `mpirun -np 3`, build/tests/rendezvous_probe ranks hand rank 0's
128-byte blob to every rank through MPI_Bcast; the default rendezvous under
Open MPI is `mpi`; a library that is not MPI is refused with the fix. Needs
mpirun (Debian: openmpi-bin; .ci/run installs it); without it the cases are
reported as skipped, not passed. Open MPI's own allocations are not checked
for leaks under ASan (detect_leaks=0 for these ranks)."""
import os
import shutil
import subprocess
import tempfile

from harness import FLOWHN, case, finish

BUILD = os.environ.get("FLOWHN_BUILD", os.path.join(os.path.dirname(FLOWHN), "build"))
PROBE = os.path.join(BUILD, "tests", "rendezvous_probe")


def expected(seed):
    return "".join("%02x" % ((((seed * 2654435761) & 0xFFFFFFFF) >> (i % 24)) + i * 7 & 0xFF) for i in range(128))


def mpirun(args, env_extra=None, np=3):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               ASAN_OPTIONS="detect_leaks=0", OMPI_MCA_btl="self,vader", OMPI_MCA_plm_rsh_agent="")
    env.update(env_extra or {})
    for k in ("FLOWHN_RANK", "FLOWHN_WORLD_SIZE", "FLOWHN_LOCAL_RANK", "FLOWHN_RENDEZVOUS"):
        env.pop(k, None)
    with tempfile.TemporaryDirectory() as d:
        return subprocess.run(["mpirun", "-np", str(np), "--oversubscribe", PROBE] + args, capture_output=True,
                              text=True, timeout=120, env=env, cwd=d)


def main():
    if not shutil.which("mpirun"):
        print("skipped: no mpirun (install openmpi-bin); 0 cases run")
        return
    if not os.path.exists(PROBE):
        case("the probe binary exists", False, PROBE + " (make tests builds it)")
        return
    r = mpirun(["mpi", "12345"])
    lines = sorted(l for l in r.stdout.splitlines() if l.startswith("rank "))
    want = expected(12345)
    got = [l.split(":", 1)[1] for l in lines]
    case("mpirun -np 3: every rank holds rank 0's 128 bytes after the MPI exchange",
         r.returncode == 0 and len(got) == 3 and all(g == want for g in got),
         f"rc {r.returncode}\n{r.stdout}\n{r.stderr[-800:]}")
    case("each rank read its rank and world from mpirun's environment",
         [l.split(":", 1)[0] for l in lines] == [f"rank {i} of 3 (mpirun)" for i in range(3)], r.stdout)

    r = mpirun(["default", "99"])
    case("under Open MPI the default rendezvous is mpi, and it works",
         r.returncode == 0 and "spec mpi" in r.stdout and r.stdout.count(expected(99)) == 3,
         f"rc {r.returncode}\n{r.stdout}\n{r.stderr[-800:]}")

    r = mpirun(["mpi", "1"], {"FLOWHN_MPI_LIB": "libm.so.6"}, np=2)
    case("a library that is not MPI is refused, naming the fix",
         r.returncode != 0 and "not an MPI library" in r.stderr, f"rc {r.returncode}\n{r.stderr[-800:]}")


main()
finish()
