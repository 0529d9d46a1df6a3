"""hf-dmix on the Hub: push, pull, private repositories, faults and secrets, against a Hub-protocol server on 127.0.0.1.

The server (``tests/hub_server.py``) runs in this process; the real ``huggingface_hub`` / ``transformers`` clients run
in subprocesses (``tests/hub_client.py``, ``run_dmix.py``) whose ``HF_ENDPOINT`` points at it: those libraries read
the endpoint once, at import, and this process imported them offline (``conftest.py``). Pushed files are checked in
the server's store, byte for byte.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_sentences, tiny_model, train_tokenizer
from hub_server import FakeHub

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
ALICE, BOB = "alice", "bob"
# Long, distinctive tokens: grepping for them anywhere must find nothing.
ALICE_TOKEN = "hf_aliceSECRETtoken0123456789abcdef"
BOB_TOKEN = "hf_bobSECRETtoken0123456789abcdef"
CAROL, CAROL_TOKEN = "carol", "hf_carolSECRETtoken0123456789abcdef"
WRONG_TOKEN = "hf_wrongSECRETtoken0123456789abcdef"
LABELS = ["negative", "positive"]
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
DMIX_FILES = {"README.md", "results.json", "dmix_config.json", "training_args.bin"}
TIMEOUT = 300


# ---------------------------------------------------------------------- helpers


def _env(hub_url: str, home: Path, token: str | None = None) -> dict[str, str]:
    """A client environment: the server as endpoint, online, a private HF_HOME, and HF_TOKEN only if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(home),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",  # several clients run at once on few cores
    )
    if token:
        env["HF_TOKEN"] = token
    return env


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_dmix.py"), *args]


def _train_args(model: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        model,
        "--train_file",
        str(data),
        "--output_dir",
        str(out),
        "--preset",
        "dmix",
        "--tau",
        "0.5",
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "16",
        "--max_seq_length",
        "24",
        "--learning_rate",
        "1e-3",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        *extra,
    ]


def _start_client(scenario: str, config: dict, env: dict[str, str], workdir: Path) -> subprocess.Popen:
    config_path = workdir / f"{scenario}-config.json"
    config_path.write_text(json.dumps(config))
    return _start(
        [
            sys.executable,
            str(HERE / "hub_client.py"),
            scenario,
            str(config_path),
            str(workdir / f"{scenario}-report.json"),
        ],
        env,
    )


def _report(scenario: str, proc: subprocess.CompletedProcess, workdir: Path) -> dict:
    assert proc.returncode == 0, f"hub_client.py {scenario} failed:\n{proc.stderr[-6000:]}"
    return json.loads((workdir / f"{scenario}-report.json").read_text())


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hashes(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in _local_files(folder).items()}


def _containing(files: dict[str, bytes], secret: str) -> list[str]:
    return sorted(name for name, data in files.items() if secret.encode() in data)


def _card(text: bytes | str) -> tuple[dict, str]:
    """(YAML header, body) of a model card."""
    text = text.decode() if isinstance(text, bytes) else text
    assert text.startswith("---\n"), text[:200]
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def _index_metrics(header: dict) -> dict[str, float]:
    [entry] = header["model-index"]
    [result] = entry["results"]
    return {m["name"]: m["value"] for m in result["metrics"]}


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The CLI's one-line error: the last line of stderr, with no traceback before it."""
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("run_dmix.py: error: "), proc.stderr[-4000:]
    return lines[-1]


# ---------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def hub():
    server = FakeHub(users={ALICE: ALICE_TOKEN, BOB: BOB_TOKEN, CAROL: CAROL_TOKEN}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("hub")


@pytest.fixture(scope="module")
def assets(workdir, hub):
    """A tiny base model (local folder and ``alice/tiny-base`` on the server), a labelled CSV and a τ-sweep PNG."""
    texts, labels = make_sentences(60, seed=3)
    tokenizer = train_tokenizer(texts + make_sentences(40, seed=9)[0])
    base = workdir / "tiny-base"
    tiny_model("bert", vocab_size=tokenizer.vocab_size).save_pretrained(base)
    tokenizer.save_pretrained(base)
    hub.seed(f"{ALICE}/tiny-base", {name: (base / name).read_bytes() for name in os.listdir(base)})
    data = workdir / "reviews.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([t, "positive" if y == 0 else "negative"] for t, y in zip(texts, labels, strict=True))
    plot = workdir / "sweep.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image, but a file the card must point to")
    return {"base": base, "data": data, "plot": plot}


@pytest.fixture(scope="module")
def runs(hub, workdir, assets):
    """Every client process of this module, in two waves (each process pays ~10 s of imports; they share few cores).

    Wave 1, four processes at once: ``roundtrip`` (``hub_client.py``: DMixTrainer with checkpoint pushes,
    ``push_to_hub``, pulls, a private copy); ``full``: ``run_dmix.py --push_to_hub`` (token on the command line, τ plot,
    card metadata); ``lora``: ``--use_lora`` from ``alice/tiny-base`` on the server (token in HF_TOKEN); ``fault``:
    carol's run, during which the Hub goes away (for carol) once the results are written — after training, right
    before the push; ``early``: a run with a wrong token, which must stop before loading data.
    Wave 2: ``publish`` (``hub_client.py``): the published models through plain transformers, the LoRA adapter pushed
    merged, the three push faults on carol's folder and the retry.
    """
    full, lora, fault = workdir / "cli-full", workdir / "cli-lora", workdir / "fault-run"
    hub.outage = lambda method, path, headers: (
        CAROL_TOKEN in (headers.get("Authorization") or "") and (fault / "results.json").exists()
    )
    wave = {
        "roundtrip": _start_client(
            "roundtrip",
            {
                "workdir": str(workdir),
                "repo": f"{ALICE}/roundtrip",
                "private_repo": f"{ALICE}/roundtrip-private",
                "alice_token": ALICE_TOKEN,
                "bob_token": BOB_TOKEN,
            },
            _env(hub.url, workdir / "hf-home-roundtrip"),
            workdir,
        ),
        "full": _start(
            _cli(
                *_train_args(
                    str(assets["base"]),
                    assets["data"],
                    full,
                    "--push_to_hub",
                    "--hub_model_id",
                    f"{ALICE}/cli-full",
                    "--hub_token",
                    ALICE_TOKEN,
                    "--card_language",
                    "en",
                    "--card_license",
                    "apache-2.0",
                    "--tau_sweep_plot",
                    str(assets["plot"]),
                )
            ),
            _env(hub.url, workdir / "hf-home-full"),
        ),
        "lora": _start(
            _cli(
                *_train_args(
                    f"{ALICE}/tiny-base",
                    assets["data"],
                    lora,
                    "--push_to_hub",
                    "--hub_model_id",
                    f"{ALICE}/cli-lora",
                    "--use_lora",
                    "--lora_r",
                    "4",
                    "--lora_target_modules",
                    "query",
                    "value",
                )
            ),
            _env(hub.url, workdir / "hf-home-lora", token=ALICE_TOKEN),
        ),
        "fault": _start(
            _cli(
                *_train_args(
                    str(assets["base"]),
                    assets["data"],
                    fault,
                    "--push_to_hub",
                    "--hub_model_id",
                    f"{CAROL}/fault-run",
                )
            ),
            _env(hub.url, workdir / "hf-home-fault", token=CAROL_TOKEN),
        ),
        "early": _start(
            _cli(
                *_train_args(
                    str(assets["base"]),
                    assets["data"],
                    workdir / "never-trained",
                    "--push_to_hub",
                    "--hub_model_id",
                    f"{ALICE}/never",
                    "--hub_token",
                    WRONG_TOKEN,
                )
            ),
            _env(hub.url, workdir / "hf-home-early"),
        ),
    }
    done = {name: _finish(proc) for name, proc in wave.items()}
    hub.outage = None  # the Hub is back
    hashes = {"lora": _hashes(lora), "fault": _hashes(fault)}

    dead = FakeHub(users={CAROL: CAROL_TOKEN})  # bound, then closed: a port where no server listens any more
    dead_url = dead.url
    dead.httpd.server_close()
    shutil.rmtree(dead.data_dir, ignore_errors=True)
    done["publish"] = _finish(
        _start_client(
            "publish",
            {
                "full": f"{ALICE}/cli-full",
                "adapter": f"{ALICE}/cli-lora",
                "merged": f"{ALICE}/cli-lora-merged",
                "full_local": str(full),
                "lora_dir": str(lora),
                "label_names": LABELS,
                "token": ALICE_TOKEN,
                "fault_dir": str(fault),
                "fault_repo": f"{CAROL}/fault-run",
                "foreign_repo": f"{BOB}/stolen",
                "fault_token": CAROL_TOKEN,
                "wrong_token": WRONG_TOKEN,
                "dead_endpoint": dead_url,
            },
            _env(hub.url, workdir / "hf-home-publish"),
            workdir,
        )
    )  # no HF_TOKEN: public repositories need none
    hashes["lora_after"], hashes["fault_after"] = _hashes(lora), _hashes(fault)
    return {"procs": done, "hashes": hashes, "full": full, "lora": lora, "fault": fault, "dead_url": dead_url}


def _ok(runs: dict, name: str) -> subprocess.CompletedProcess:
    proc = runs["procs"][name]
    assert proc.returncode == 0, f"{name} failed:\n{proc.stderr[-6000:]}"
    return proc


# ---------------------------------------------------------------------- 1. round trip (DMixTrainer.push_to_hub)


@pytest.fixture(scope="module")
def roundtrip(runs, workdir):
    return _report("roundtrip", runs["procs"]["roundtrip"], workdir)


@pytest.fixture(scope="module")
def publish(runs, workdir):
    return _report("publish", runs["procs"]["publish"], workdir)


def test_roundtrip_same_bytes_logits_labels_and_card(hub, roundtrip):
    out, snapshot = Path(roundtrip["output_dir"]), Path(roundtrip["snapshot_dir"])
    pulled = {
        k: v
        for k, v in _local_files(snapshot).items()
        if not k.startswith((".cache/", "last-checkpoint/")) and k != ".gitattributes"
    }
    assert set(pulled) >= MODEL_FILES | DMIX_FILES
    local = _local_files(out)
    for name, data in pulled.items():
        assert data == local[name], f"{name} differs between the output folder and the snapshot"
    server = hub.files(f"{ALICE}/roundtrip")
    assert all(server[name] == data for name, data in pulled.items())

    assert roundtrip["logits_remote"] == roundtrip["logits_local"]  # identical, not just close
    assert roundtrip["pipeline_labels"] == roundtrip["local_labels"]
    assert set(roundtrip["pipeline_labels"]) <= set(LABELS)

    card = roundtrip["card"]
    assert card["library_name"] == "transformers" and card["language"] == ["en"]
    assert {"dmix", "mixup", "text-classification"} <= set(card["tags"])
    test = roundtrip["results"]["metrics"]["test"]
    published = {r["name"]: r["value"] for r in card["eval_results"]}
    assert {r["split"] for r in card["eval_results"]} == {"test"}
    assert published == {"Macro-F1": test["macro_f1"], "Weighted-F1": test["weighted_f1"], "Accuracy": test["accuracy"]}

    info = roundtrip["info"]
    assert info["settings"]["tau"] == 0.5 and info["settings"]["partner_distance"] == "hyperbolic"
    assert info["label_names"] == LABELS and info["metrics"] == test and info["tau"] == 0.5
    record = json.loads(server["dmix_config.json"])
    assert record["dmix"] == info["settings"] and record["mix_layers_resolved"] == [1, 2, 3]


def test_checkpoint_pushes_carry_the_card(roundtrip):
    checkpoint = roundtrip["checkpoint_card"]
    assert "dmix" in checkpoint["tags"] and checkpoint["has_dmix_config"]
    assert checkpoint["splits"] == ["validation"]  # the card of a checkpoint shows the evaluation so far
    assert {
        "last-checkpoint/README.md",
        "last-checkpoint/dmix_config.json",
        "last-checkpoint/model.safetensors",
    } <= set(roundtrip["checkpoint_files"])


# ---------------------------------------------------------------------- 3. private repositories


def test_private_repo_readable_by_owner_only(hub, roundtrip):
    repo = f"{ALICE}/roundtrip-private"
    assert hub.store.repos[f"model:{repo}"]["private"] is True
    private = roundtrip["private"]
    assert private["owner_info"] is True and private["owner_listing"] is True
    assert set(private["owner_snapshot"]) >= MODEL_FILES | DMIX_FILES
    assert private["owner_load_dmix_info"] == 0.5
    assert private["other_info"] == "RepositoryNotFoundError"
    assert private["anonymous_info"] == "RepositoryNotFoundError"
    assert private["other_download"] == "RepositoryNotFoundError"
    assert private["other_snapshot"] != "ok" and private["other_from_pretrained"] != "ok"
    assert private["other_listing"] is False
    assert "not found" in private["other_load_dmix_info"] and "\n" not in private["other_load_dmix_info"]


# ---------------------------------------------------------------------- 2. run_dmix.py --push_to_hub, LoRA, loading


def test_cli_push_to_hub_end_to_end(hub, runs, assets):
    proc = _ok(runs, "full")
    pushed, local = hub.files(f"{ALICE}/cli-full"), _local_files(runs["full"])
    assert MODEL_FILES | DMIX_FILES | {"tau_sweep.png"} <= set(pushed)
    assert "predictions.csv" in local and "predictions.csv" not in pushed  # test texts stay local
    for name, data in pushed.items():
        if name != ".gitattributes":
            assert data == local[name], name
    assert pushed["tau_sweep.png"] == assets["plot"].read_bytes()
    assert f"Pushed {len(pushed) - 1} files to {ALICE}/cli-full" in proc.stdout

    results = json.loads(pushed["results.json"])
    header, body = _card(pushed["README.md"])
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-classification"
    assert header["language"] == ["en"] and header["license"] == "apache-2.0"
    assert "base_model" not in header and "`tiny-base` (a local model)" in body  # a local path is never published
    assert header["model-index"][0]["name"] == f"{ALICE}/cli-full"
    test = results["metrics"]["test"]
    assert _index_metrics(header) == {
        "Macro-F1": test["macro_f1"],
        "Weighted-F1": test["weighted_f1"],
        "Accuracy": test["accuracy"],
    }
    assert "![τ sweep](tau_sweep.png)" in body and f'pipeline("text-classification", model="{ALICE}/cli-full")' in body
    assert "| 0 | negative |" in body and "| 1 | positive |" in body
    record = json.loads(pushed["dmix_config.json"])
    assert {k: record["dmix"][k] for k in results["dmix"]} == results["dmix"]
    assert record["label_names"] == LABELS == results["data"]["label_names"]
    assert str(assets["base"]) not in pushed["README.md"].decode() + pushed["dmix_config.json"].decode()


def test_cli_lora_adapter_and_merged_pushes(hub, runs, publish):
    _ok(runs, "lora")
    adapter = hub.files(f"{ALICE}/cli-lora")
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} | DMIX_FILES <= set(adapter)
    assert not {"config.json", "model.safetensors"} & set(adapter)
    assert json.loads(adapter["adapter_config.json"])["base_model_name_or_path"] == f"{ALICE}/tiny-base"
    header, body = _card(adapter["README.md"])
    assert header["library_name"] == "peft" and header["base_model"] == f"{ALICE}/tiny-base"
    assert {"dmix", "peft", "lora"} <= set(header["tags"])
    assert "LoRA adapter" in body and "model_kwargs" in body and "merge_and_unload" in body
    assert json.loads(adapter["dmix_config.json"])["peft"]["merged"] is False

    assert publish["merged_push"]["hub"]["merged_lora"] is True
    merged = hub.files(f"{ALICE}/cli-lora-merged")
    assert set(merged) >= MODEL_FILES | DMIX_FILES
    assert not any(name.startswith("adapter_") for name in merged)
    header, body = _card(merged["README.md"])
    assert header["library_name"] == "transformers" and header["base_model"] == f"{ALICE}/tiny-base"
    assert "merged-lora" in header["tags"] and "LoRA, merged" in body
    assert header["model-index"][0]["name"] == f"{ALICE}/cli-lora-merged"
    assert json.loads(merged["dmix_config.json"])["peft"]["merged"] is True
    assert set(json.loads(merged["config.json"])["id2label"].values()) == set(LABELS)
    assert (
        runs["hashes"]["lora_after"] == runs["hashes"]["lora"]
    )  # merging for the push leaves the adapter folder as it was


def test_published_models_load_anywhere(runs, publish):
    assert publish["hf_dmix_imported_before_pushing"] is False  # loading needed no hf_dmix
    assert publish["full_id2label"] == {"0": "negative", "1": "positive"}
    assert set(publish["full_pipeline"]) <= set(LABELS)
    assert publish["full_local_vs_remote"] == 0.0
    assert publish["adapter_pipeline"] == publish["merged_pipeline"] and set(publish["merged_pipeline"]) <= set(LABELS)
    assert publish["adapter_vs_merged"] < 1e-5
    results = json.loads((runs["full"] / "results.json").read_text())
    assert publish["full_info"]["metrics"] == results["metrics"]["test"]
    assert publish["full_info"]["label_names"] == LABELS and publish["full_info"]["settings"]["tau"] == 0.5
    assert publish["adapter_info_peft"]["r"] == 4 and publish["adapter_info_peft"]["target_modules"] == [
        "query",
        "value",
    ]


# ---------------------------------------------------------------------- 4. faults lose nothing


def test_server_dying_during_the_push_loses_nothing(hub, runs):
    proc, out = runs["procs"]["fault"], runs["fault"]
    assert proc.returncode == 2, proc.stderr[-4000:]
    line = _error_line(proc)
    assert "could not reach the Hub" in line and hub.url in line
    assert f"--push_only --output_dir {out} --hub_model_id {CAROL}/fault-run" in line
    assert "the model, card and results are saved in" in line
    assert MODEL_FILES | DMIX_FILES | {"predictions.csv"} <= set(os.listdir(out))
    assert "macro_f1" in json.loads((out / "results.json").read_text())["metrics"]["test"]
    header, _ = _card((out / "README.md").read_text())
    assert header["model-index"][0]["name"] == f"{CAROL}/fault-run"
    assert "Results written to" in proc.stdout  # trained and evaluated: the Hub went away after the access check


def test_wrong_token_stops_the_run_before_training(runs, workdir):
    proc = runs["procs"]["early"]
    assert proc.returncode == 2, proc.stderr[-4000:]
    line = _error_line(proc)
    assert f"Creating the Hub repository '{ALICE}/never' failed: the Hub at" in line
    assert "rejected the token (401 Unauthorized)" in line and WRONG_TOKEN not in proc.stdout + proc.stderr
    assert "Data:" not in proc.stderr and not (workdir / "never-trained").exists()  # seconds, not a training run


def test_push_faults_are_clear_and_change_nothing(hub, runs, publish):
    expected = {
        "wrong token": "rejected the token (401 Unauthorized)",
        "foreign namespace": f"may not write to namespace '{BOB}' (403 Forbidden)",
        "server stopped": f"could not reach the Hub at {runs['dead_url']}",
    }
    for name, message in expected.items():
        error = publish["faults"][name]
        assert message in error, (name, error)
        assert "\n" not in error and "Nothing is lost" in error and "--push_only" in error
    assert f"model:{BOB}/stolen" not in hub.store.repos
    assert runs["hashes"]["fault_after"] == runs["hashes"]["fault"]  # model, card, results: untouched


def test_push_again_after_the_faults_without_retraining(hub, runs, publish):
    assert publish["retry"]["hub"]["repo_id"] == f"{CAROL}/fault-run"
    assert runs["hashes"]["fault_after"] == runs["hashes"]["fault"]
    pushed, local = hub.files(f"{CAROL}/fault-run"), _local_files(runs["fault"])
    assert set(pushed) >= MODEL_FILES | DMIX_FILES
    assert all(pushed[name] == local[name] for name in pushed if name != ".gitattributes")  # the card included
    assert "Data:" not in runs["procs"]["publish"].stderr  # --push_only loaded no data and trained nothing


# ---------------------------------------------------------------------- 5. tokens never appear


def test_tokens_never_appear(hub, runs, roundtrip):
    for name, proc in runs["procs"].items():
        for token in (ALICE_TOKEN, BOB_TOKEN, CAROL_TOKEN, WRONG_TOKEN):
            assert token not in proc.stdout + proc.stderr, f"a token in the log of {name}"
    files = {}
    for folder in (runs["full"], runs["lora"], runs["fault"], Path(roundtrip["output_dir"])):  # checkpoints included
        files.update({f"{folder.name}/{k}": v for k, v in _local_files(folder).items()})
    for key, repo in hub.store.repos.items():
        files.update({f"{key}:{k}": v for k, v in hub.files(repo["id"]).items()})
    assert any("/checkpoint-2/" in name for name in files) and any(":training_args.bin" in name for name in files)
    for token in (ALICE_TOKEN, BOB_TOKEN, CAROL_TOKEN, WRONG_TOKEN):
        assert _containing(files, token) == []
    saved = json.loads((runs["full"] / "results.json").read_text())
    assert saved["training_args"]["hub_token"] == "<redacted>"  # it was given on the command line
    for path in (
        runs["full"] / "training_args.bin",
        Path(roundtrip["output_dir"]) / "checkpoint-2" / "training_args.bin",
    ):
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None and args.push_to_hub is True
