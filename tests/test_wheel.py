"""Installing drawgap as users of a released package do: `make dist` in a clean copy of the tree (the files git
tracks, no built page, no venv), the wheel installed into a fresh venv, then the CLI used from there: the
shipped generators listed and sampled, the ClickMe verbs refused without the `clickme` extra (one line, exit
2), and with it the server serving the page.

The fresh venv reuses this environment's installed packages for what the wheel requires without extras (a
.pth file pointing at links to exactly those distributions and what they require, torch==2.13.0 among them, as
the Makefile installs it): pip still resolves the wheel's requirements against them, and an undeclared
dependency is missing there. The `clickme` extra is installed by pip. About 1.5 minutes on 2 busy cores.
"""

from __future__ import annotations

import email
import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from drawgap.clickme.testing import free_port, make_test_stimuli
from drawgap.data.formats import read_samples

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def clean_copy(dest: Path) -> Path:
    """The tree as a fresh clone has it: tracked files and new files git does not ignore, as they are now."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not part of it
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def link_installed(roots: list[str], into: Path) -> list[str]:
    """Links, in `into`, to the installed files of the distributions `roots` and of everything they require
    (no extras), so that a venv with `into` on its path has them installed, and nothing else of this one."""
    into.mkdir()
    seen, todo = set(), list(roots)
    while todo:
        dist = metadata.distribution(todo.pop())
        name = dist.metadata["Name"].lower()
        if name in seen:
            continue
        seen.add(name)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        for top in {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            if not (into / top).exists():
                (into / top).symlink_to(Path(dist.locate_file(top)).resolve())
    return sorted(seen)


def run(cmd: list, env: dict, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_from_a_clean_copy_installs_and_runs_in_a_fresh_venv(tmp_path):
    for tool in ("git", "make", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (.ci/run installs npm; git and make come with the machine)")
    timings = {}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", OMP_NUM_THREADS="1")

    # make dist in a clean copy; this environment is the Makefile's venv (-o: it is not rebuilt).
    t = time.monotonic()
    tree = clean_copy(tmp_path / "tree")
    assert not (tree / "src/drawgap/clickme/web/dist").exists()
    r = run(["make", "dist", f"VENV={sys.prefix}", "-o", f"{sys.prefix}/.installed"], env, 400, tree)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = (tree / "dist").glob("drawgap-*.whl")
    (sdist,) = (tree / "dist").glob("drawgap-*.tar.gz")
    timings["make dist"] = time.monotonic() - t
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for must in ("drawgap/clickme/web/dist/index.html", "drawgap/clickme/web/dist/vendor/jspsych.js",
                 "drawgap/clickme/migrations/env.py", "drawgap/clickme/migrations/versions/0001_baseline.py",
                 "drawgap/models/weights/strokes-cfgdm/weights.safetensors",
                 "drawgap/critics/weights/strokes-protonet/model.safetensors",
                 "drawgap/data/splits/quickdraw-fs-150.json"):  # what demo --data quickdraw rebuilds its test split from
        assert must in names, must
        assert f"src/{must}" in in_sdist, must
    assert not any("node_modules" in n for n in names)

    # A fresh venv with this environment's torch (and what torch needs) linked in, then the wheel, no extras.
    t = time.monotonic()
    venv = tmp_path / "venv"
    r = run([sys.executable, "-m", "venv", venv], env, 120, tmp_path)
    assert r.returncode == 0, r.stderr
    py, drawgap = venv / "bin" / "python", venv / "bin" / "drawgap"
    with zipfile.ZipFile(wheel) as z:
        info = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    core = [Requirement(text) for text in info.get_all("Requires-Dist")]
    linked = link_installed([r.name for r in core if r.marker is None or r.marker.evaluate({"extra": ""})],
                            tmp_path / "linked-site")
    assert "torch" in linked and "fastapi" not in linked and "sqlalchemy" not in linked
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, 60, tmp_path).stdout.strip())
    (site / "_drawgap_test_linked.pth").write_text(f"{tmp_path / 'linked-site'}\n")
    r = run([py, "-m", "pip", "install", "-q", wheel], env, 400, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    timings["venv + install"] = time.monotonic() - t
    r = run([py, "-c", "import drawgap, torch; print(drawgap.__file__); print(torch.__version__)"], env, 120, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(str(site)) and "2.13.0" in r.stdout, (r, linked)

    # The shipped generators: listed as installed, and one of them draws.
    t = time.monotonic()
    r = run([drawgap, "generators"], env, 120, tmp_path)
    assert r.returncode == 0 and "not installed" not in r.stdout and "strokes-cfgdm" in r.stdout, r
    r = run([drawgap, "data", "strokes", "--out", tmp_path / "data", "--classes", "10", "--per-class", "2"], env, 120, tmp_path)
    assert r.returncode == 0, r
    r = run([drawgap, "sample", "strokes-cfgdm", "--exemplars", tmp_path / "data" / "test.npz", "--per-exemplar", "2",
             "--steps", "2", "--classes", "2", "--out", tmp_path / "samples"], env, 300, tmp_path)
    assert r.returncode == 0, r
    (samples,) = (tmp_path / "samples").glob("*.npz")
    assert read_samples(samples).samples.shape[:2] == (2, 2)
    timings["generators + sample"] = time.monotonic() - t

    # Without the extra, the ClickMe server's verbs say which extra to install.
    stimuli = make_test_stimuli(tmp_path / "clickme")
    db = tmp_path / "clickme.sqlite3"
    for verb in (["serve", stimuli, "--port", free_port()], ["export", "--out", tmp_path / "c.npz"], ["status"], ["migrate"]):
        r = run([drawgap, "clickme", verb[0], "--db", db, *verb[1:]], env, 120, tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pip install 'drawgap[clickme]'" in r.stderr, r
    assert not db.exists()

    # With it, the server serves the page.
    t = time.monotonic()
    r = run([py, "-m", "pip", "install", "-q", f"{wheel}[clickme]"], env, 400, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([str(drawgap), "clickme", "serve", str(stimuli), "--db", str(db), "--port", str(port)],
                              env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2.0)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert page is not None and page.status_code == 200, (tmp_path / "server.log").read_text()[-3000:]
        assert "<html" in page.text.lower() and "jspsych" in page.text.lower()
        assert httpx.get(f"http://127.0.0.1:{port}/static/vendor/jspsych.js", timeout=5.0).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    timings["extra + serve"] = time.monotonic() - t
    print("wheel test timings (s):", {k: round(v, 1) for k, v in timings.items()})
