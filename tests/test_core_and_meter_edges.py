"""Two things the main tests leave out: mlxk without its compiled core (a source checkout where
it was not built), and the download meter before the blob folder exists and with files that are
not part of the download."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlxk.hub.progress import download_meter

WITHOUT_NATIVE = (
    "import sys\n"
    "sys.modules['mlxk.core._native'] = None  # importing it fails, as when it was never built\n"
    "from mlxk.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def test_without_the_compiled_core_mlxk_runs_on_the_twin(hub: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_NATIVE, "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "(JSON API" in proc.stdout and "pure-Python core)" in proc.stdout.splitlines()[0]
    listed = subprocess.run(
        [sys.executable, "-c", WITHOUT_NATIVE, "list", "--json"], capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and json.loads(listed.stdout)["data"]["count"] == 0


def test_download_meter_counts_only_this_downloads_bytes(tmp_path: Path) -> None:
    blobs = tmp_path / "models--org--m" / "blobs"
    total, done = download_meter(str(blobs), {"a" * 64: 1000, "b" * 40: 30})
    assert (total, done()) == (1030, 0)  # no blob folder yet: nothing arrived
    blobs.mkdir(parents=True)
    (blobs / ("a" * 64 + ".0123.incomplete")).write_bytes(b"x" * 400)  # on its way
    (blobs / ("c" * 64)).write_bytes(b"y" * 5000)  # another revision's blob, not ours
    assert done() == 400
    (blobs / ("a" * 64 + ".0123.incomplete")).rename(blobs / ("a" * 64))
    (blobs / ("b" * 40)).write_bytes(b"z" * 30)
    assert done() == 1030
