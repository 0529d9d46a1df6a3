"""Client side of the Hub tests: run as ``python tests/hub_client.py SCENARIO CONFIG.json REPORT.json``.

``huggingface_hub`` and ``transformers`` read ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, when they are imported,
and the test process has imported them offline already (``conftest.py``). So everything that talks to the
Hub-protocol server runs here, in a fresh process whose environment points at the server; ``test_hub.py`` starts the
server, runs a scenario, and asserts on the report this script writes (and on the server's store).

Scenarios:
    roundtrip  train a tiny DMIX model with checkpoint pushes, push it with ``DMixTrainer.push_to_hub``, pull it back
               (snapshot, ``from_pretrained``, ``pipeline``, ``ModelCard.load``, ``load_dmix_info``), then publish a
               private copy with ``hf_dmix.push_to_hub`` and read it with the owner's and another user's token.
    publish    load the models ``run_dmix.py`` published (full, LoRA adapter) with plain ``transformers``, push the
               adapter merged and load it, then push faults and a retry through ``run_dmix.main``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

TEXTS = ["good great movie", "the plot was bad and awful", "a nice film", "sad ugly scene", "the actor is very lovely"]


def _error(fn) -> str:
    """The class name of the exception ``fn()`` raises, or ``"ok"``."""
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the report records which error it was
        return type(err).__name__
    return "ok"


def roundtrip(cfg: dict) -> dict:
    import torch
    from conftest import make_sentences, tiny_model, train_tokenizer
    from datasets import Dataset
    from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
    from transformers import AutoModelForSequenceClassification, pipeline

    from hf_dmix import DMixConfig, DMixTrainer, HubError, load_dmix_info, push_to_hub
    from hf_dmix.metrics import make_compute_metrics

    work, repo, alice, bob = Path(cfg["workdir"]), cfg["repo"], cfg["alice_token"], cfg["bob_token"]
    texts, labels = make_sentences(48, seed=0)
    tokenizer = train_tokenizer(texts + TEXTS)
    names = ["negative", "positive"]
    model = tiny_model(
        "bert",
        vocab_size=tokenizer.vocab_size,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    data = Dataset.from_dict({"text": texts, "label": [1 - y for y in labels]})  # label 1 = positive words
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=32), batched=True)
    train, dev, test = data.select(range(32)), data.select(range(32, 40)), data.select(range(40, 48))
    out = work / "roundtrip-out"
    args = DMixConfig(
        output_dir=str(out),
        max_steps=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        tau=0.5,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        push_to_hub=True,
        hub_model_id=repo,
        hub_token=alice,
        hub_strategy="checkpoint",
    )
    trainer = DMixTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(),
    )
    trainer.set_model_card_metadata(language="en", license="apache-2.0")
    trainer.train()
    trainer.wait_for_hub_pushes()
    api = HfApi(token=alice)
    report: dict = {"output_dir": str(out)}

    # Checkpoint pushes (hub_strategy="checkpoint") carried the card and dmix_config.json.
    commits = api.list_repo_commits(repo)
    step2 = next(c.commit_id for c in commits if c.title == "Training in progress, step 2")
    card2 = ModelCard.load(hf_hub_download(repo, "README.md", revision=step2))
    report["checkpoint_card"] = {
        "tags": card2.data.tags,
        "splits": sorted({r.dataset_split for r in card2.data.eval_results or []}),
        "has_dmix_config": "dmix_config.json" in api.list_repo_files(repo, revision=step2),
    }
    report["checkpoint_files"] = sorted(f for f in api.list_repo_files(repo) if f.startswith("last-checkpoint/"))

    # The final push: results.json first, then Trainer.push_to_hub (save, DMIX card, upload).
    def strip(metrics: dict, prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}

    results = {
        "run_id": trainer.run_id,  # this run's results: the card quotes them (another run's it would not)
        "metrics": {
            "test": strip(trainer.predict(test, metric_key_prefix="test").metrics, "test_"),
            "validation": strip(trainer.evaluate(dev, metric_key_prefix="validation"), "validation_"),
        },
        "data": {"source": {"train": "/somewhere/train.csv"}, "used_sizes": {"train": 32, "validation": 8, "test": 8}},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    trainer.push_to_hub()
    report["results"] = results

    snapshot = snapshot_download(repo, local_dir=str(work / "roundtrip-snapshot"), token=alice)
    report["snapshot_dir"] = snapshot
    remote = AutoModelForSequenceClassification.from_pretrained(repo, token=alice).eval()
    local = trainer.model.eval()
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        report["logits_local"] = local(**batch).logits.tolist()
        report["logits_remote"] = remote(**batch).logits.tolist()
    report["local_labels"] = [local.config.id2label[int(i)] for i in torch.tensor(report["logits_local"]).argmax(-1)]
    report["pipeline_labels"] = [p["label"] for p in pipeline("text-classification", model=repo, token=alice)(TEXTS)]
    card = ModelCard.load(repo, token=alice)
    report["card"] = {
        "library_name": card.data.library_name,
        "tags": card.data.tags,
        "language": card.data.language,
        "eval_results": [
            {"name": r.metric_name, "type": r.metric_type, "value": r.metric_value, "split": r.dataset_split}
            for r in card.data.eval_results or []
        ],
    }
    info = load_dmix_info(repo, token=alice)
    report["info"] = {
        "settings": info.settings,
        "label_names": info.label_names,
        "metrics": info.metrics("test"),
        "revision": info.revision,
        "tau": info.to_dmix_config(str(work / "repro")).tau,
    }

    # Private repositories: readable with the owner's token, invisible to another token and to anonymous users.
    private = cfg["private_repo"]
    pushed = push_to_hub(out, private, token=alice, private=True)
    report["private_push"] = {"repo_id": pushed.repo_id, "files": list(pushed.files)}
    owner = HfApi(token=alice)
    other = HfApi(token=bob)
    report["private"] = {
        "owner_info": owner.model_info(private).private,
        "owner_snapshot": sorted(
            os.listdir(snapshot_download(private, token=alice, local_dir=str(work / "private-owner")))
        ),
        "owner_listing": private in [m.id for m in owner.list_models(author=private.split("/")[0])],
        "owner_load_dmix_info": load_dmix_info(private, token=alice).settings["tau"],
        "other_info": _error(lambda: other.model_info(private)),
        "other_snapshot": _error(lambda: snapshot_download(private, token=bob, local_dir=str(work / "private-other"))),
        "other_download": _error(lambda: hf_hub_download(private, "config.json", token=bob)),
        "other_from_pretrained": _error(lambda: AutoModelForSequenceClassification.from_pretrained(private, token=bob)),
        "other_listing": private in [m.id for m in other.list_models(author=private.split("/")[0])],
        "anonymous_info": _error(lambda: HfApi(token=False).model_info(private, token=False)),
        "other_private_exists": os.path.exists(work / "private-other"),
    }
    try:
        load_dmix_info(private, token=bob)
        report["private"]["other_load_dmix_info"] = "ok"
    except HubError as err:
        report["private"]["other_load_dmix_info"] = str(err)
    return report


def publish(cfg: dict) -> dict:
    """Load what ``run_dmix.py`` published with plain transformers, then push through ``run_dmix.main``.

    1. The full model and the LoRA adapter, with no ``hf_dmix`` import at all (``from_pretrained``, ``pipeline``).
    2. ``--push_only --merge_lora_before_push`` of the LoRA folder; the merged model loads like any checkpoint.
    3. Push faults on the folder of the run whose Hub went away: a wrong token, a foreign namespace, a stopped
       server (the endpoint switched to a closed port); each must raise a one-line ``HubError``. Then the retry.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    full, adapter, merged, labels = cfg["full"], cfg["adapter"], cfg["merged"], cfg["label_names"]
    report: dict = {}
    kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    report["full_pipeline"] = [p["label"] for p in pipeline("text-classification", model=full)(TEXTS)]
    model = AutoModelForSequenceClassification.from_pretrained(full).eval()
    report["full_id2label"] = {str(k): v for k, v in model.config.id2label.items()}
    report["adapter_pipeline"] = [
        p["label"] for p in pipeline("text-classification", model=adapter, model_kwargs=kwargs)(TEXTS)
    ]
    tokenizer = AutoTokenizer.from_pretrained(full)
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        local = AutoModelForSequenceClassification.from_pretrained(cfg["full_local"]).eval()
        report["full_local_vs_remote"] = float((local(**batch).logits - model(**batch).logits).abs().max())
        adapter_logits = AutoModelForSequenceClassification.from_pretrained(adapter, **kwargs).eval()(**batch).logits
    report["hf_dmix_imported_before_pushing"] = "hf_dmix" in sys.modules

    import huggingface_hub.constants

    import run_dmix
    from hf_dmix import HubError, load_dmix_info

    token = ["--hub_token", cfg["token"]]
    report["merged_push"] = run_dmix.main(
        ["--push_only", "--output_dir", cfg["lora_dir"], "--hub_model_id", merged, "--merge_lora_before_push", *token]
    )
    report["merged_pipeline"] = [p["label"] for p in pipeline("text-classification", model=merged)(TEXTS)]
    with torch.no_grad():
        merged_logits = AutoModelForSequenceClassification.from_pretrained(merged).eval()(**batch).logits
    report["adapter_vs_merged"] = float((adapter_logits - merged_logits).abs().max())
    info = load_dmix_info(full)
    report["full_info"] = {"settings": info.settings, "label_names": info.label_names, "metrics": info.metrics()}
    report["adapter_info_peft"] = load_dmix_info(adapter).peft

    push = ["--push_only", "--output_dir", cfg["fault_dir"]]
    cases = {
        "wrong token": [*push, "--hub_model_id", cfg["fault_repo"], "--hub_token", cfg["wrong_token"]],
        "foreign namespace": [*push, "--hub_model_id", cfg["foreign_repo"], "--hub_token", cfg["fault_token"]],
        "server stopped": [*push, "--hub_model_id", cfg["fault_repo"], "--hub_token", cfg["fault_token"]],
    }
    report["faults"] = {}
    endpoint = huggingface_hub.constants.ENDPOINT
    for name, argv in cases.items():
        if name == "server stopped":
            huggingface_hub.constants.ENDPOINT = cfg["dead_endpoint"]  # HfApi() reads it when it is created
        try:
            run_dmix.main(argv)
            report["faults"][name] = "no error"
        except HubError as err:
            report["faults"][name] = str(err)
        finally:
            huggingface_hub.constants.ENDPOINT = endpoint
    report["retry"] = run_dmix.main([*push, "--hub_model_id", cfg["fault_repo"], "--hub_token", cfg["fault_token"]])
    return report


if __name__ == "__main__":
    scenario, config_path, report_path = sys.argv[1:4]
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    result = {"roundtrip": roundtrip, "publish": publish}[scenario](config)
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, default=str)
