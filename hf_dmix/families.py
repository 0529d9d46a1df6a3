"""The encoder families DMIX supports: where each one's embeddings, layers and classification head are.

What lives here: the family table (``_FAMILIES``, data rather than branches: a new family is one entry), the lookups
on it (:func:`resolve_family`, :func:`modality_of`, :func:`num_layers`), loading a classifier by name with its
family's auto class, and the checks of a model that DMIX will hook into (a single-label head, no settings under
which a step would not mix). What does not: the hooks themselves (``mixing.py``) and training (``trainer.py``).

A new family is one ``EncoderFamily`` row: the dotted paths of its embeddings module (site 0), its list of encoder
layers (sites ``1..N``) and the final linear layer whose input is the sentence vector (site ``N+1``), how its layers
receive the attention mask, and its modality. ``mixing.py`` reads the row; nothing else branches on the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderFamily:
    """Where DMIX hooks into one architecture family.

    Attributes:
        name: human-readable family name.
        embeddings: dotted path of the embeddings module (site 0).
        layers: dotted path of the ``nn.ModuleList`` of encoder layers (sites 1..N).
        sentence_head: dotted path of the final linear layer whose input is the sentence vector (site N+1).
        mask_kind: ``"key"`` when layers receive a key-padding mask broadcast over queries (combined with an
            element-wise maximum), ``"product"`` when they receive a query×key product mask (DeBERTa-v2).
        mask_arg: position of the attention mask among the layer's positional arguments (it is looked up by the
            keyword ``attention_mask`` first).
        modality: ``"text"``, ``"image"`` or ``"audio"``: which inputs the model takes and which auto class loads it.
        frame_mask: for speech models whose ``attention_mask`` covers input *samples*, the name of the model's method
            that turns it into the mask over feature frames (``_get_feature_vector_attention_mask``). The head pools
            with it, so after a mixing site ``<= N`` the mixer makes it return the pair's union; the embedding pass
            pools with it too.
        hint: added to the error for a model of this type without the expected layout.
        keyless_rows: some layers can leave a padding query with no key at all (sliding-window attention); such
            rows are filled by :func:`fill_keyless_rows` while mixing (see the module docstring).
    """

    name: str
    embeddings: str
    layers: str
    sentence_head: str
    mask_kind: Literal["key", "product"] = "key"
    mask_arg: int = 1
    modality: Literal["text", "image", "audio"] = "text"
    frame_mask: str | None = None
    hint: str = ""
    keyless_rows: bool = False

    @property
    def auto_class(self) -> str:
        """The ``transformers`` auto class that loads this family's classifier."""
        return _AUTO_CLASSES[self.modality]


_AUTO_CLASSES = {
    "text": "AutoModelForSequenceClassification",
    "image": "AutoModelForImageClassification",
    "audio": "AutoModelForAudioClassification",
}
_SPEECH_FRAME_MASK = "_get_feature_vector_attention_mask"


_FAMILIES: dict[str, EncoderFamily] = {
    "bert": EncoderFamily("BERT", "bert.embeddings", "bert.encoder.layer", "classifier"),
    "roberta": EncoderFamily("RoBERTa", "roberta.embeddings", "roberta.encoder.layer", "classifier.out_proj"),
    "xlm-roberta": EncoderFamily("XLM-R", "roberta.embeddings", "roberta.encoder.layer", "classifier.out_proj"),
    "electra": EncoderFamily("ELECTRA", "electra.embeddings", "electra.encoder.layer", "classifier.out_proj"),
    "distilbert": EncoderFamily("DistilBERT", "distilbert.embeddings", "distilbert.transformer.layer", "classifier"),
    "deberta-v2": EncoderFamily(
        "DeBERTa-v2", "deberta.embeddings", "deberta.encoder.layer", "classifier", mask_kind="product"
    ),
    "modernbert": EncoderFamily("ModernBERT", "model.embeddings", "model.layers", "classifier", keyless_rows=True),
    # images (AutoModelForImageClassification)
    "vit": EncoderFamily("ViT", "vit.embeddings", "vit.layers", "classifier", modality="image"),
    "deit": EncoderFamily(
        "DeiT",
        "deit.embeddings",
        "deit.layers",
        "classifier",
        modality="image",
        hint=" Distilled DeiT checkpoints load as DeiTForImageClassificationWithTeacher (two heads, one fed by the "
        "distillation token); DMIX needs DeiTForImageClassification.from_pretrained(name).",
    ),
    # audio (AutoModelForAudioClassification)
    "wav2vec2": EncoderFamily(
        "wav2vec2",
        "wav2vec2.encoder.dropout",
        "wav2vec2.encoder.layers",
        "classifier",
        modality="audio",
        frame_mask=_SPEECH_FRAME_MASK,
    ),
    "hubert": EncoderFamily(
        "HuBERT",
        "hubert.encoder.dropout",
        "hubert.encoder.layers",
        "classifier",
        modality="audio",
        frame_mask=_SPEECH_FRAME_MASK,
    ),
    "audio-spectrogram-transformer": EncoderFamily(
        "AST",
        "audio_spectrogram_transformer.embeddings",
        "audio_spectrogram_transformer.layers",
        "classifier.dense",
        modality="audio",
    ),
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_FAMILIES)


def modality_of(model_type: str | None) -> str:
    """``"text"``, ``"image"`` or ``"audio"``: the modality of a supported ``config.model_type`` (text otherwise)."""
    family = _FAMILIES.get(model_type) if model_type else None
    return "text" if family is None else family.modality


def unwrap_model(model: nn.Module) -> Any:
    """The ``transformers`` model under DDP/accelerate wrappers and PEFT adapters (the same module objects).

    Typed ``Any``: its ``config`` and heads are attributes of the concrete class, which the caller does not know.
    """
    base: Any = model
    while hasattr(base, "module") and isinstance(base.module, nn.Module):  # DDP / DataParallel
        base = base.module
    if hasattr(base, "get_base_model"):  # PEFT
        base = base.get_base_model()
    return base


def resolve_family(model: nn.Module) -> EncoderFamily:
    """The :class:`EncoderFamily` of a sequence classifier, or a ``ValueError`` naming the supported families."""
    base = unwrap_model(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type not in _FAMILIES:
        supported = ", ".join(f"{f.name} ({t})" for t, f in _FAMILIES.items())
        raise ValueError(
            f"DMIX does not support model_type {model_type!r} ({type(base).__name__}). Supported encoder families: "
            f"{supported}. Each needs a single-label classification head: AutoModelForSequenceClassification for "
            "text, AutoModelForImageClassification for images, AutoModelForAudioClassification for audio."
        )
    family = _FAMILIES[model_type]
    try:
        _get_module(base, family.layers)
        _get_module(base, family.embeddings)
        _get_module(base, family.sentence_head)
    except AttributeError as err:
        raise ValueError(
            f"{type(base).__name__} has model_type {model_type!r} but not the {family.name} classification layout "
            f"DMIX hooks into ({err}). Load it with {family.auto_class}.{family.hint}"
        ) from None
    return family


def check_mixing_settings(model: nn.Module, strategy: str) -> None:
    """Reject model settings under which a ``strategy`` step would not mix every row (a ``ValueError`` saying why).

    * ``layerdrop > 0`` (wav2vec2, HuBERT): in training each layer is skipped with that probability, hooks included;
      when the step's mixing layer is skipped nothing is mixed although the loss mixes the labels.
    * ``use_weighted_layer_sum`` (wav2vec2, HuBERT): the head reads a weighted sum of *every* layer's output, and the
      layers before an embedding or hidden site hold each clip unmixed.
    """
    config = unwrap_model(model).config
    if strategy == "hidden" and float(getattr(config, "layerdrop", 0.0) or 0.0) > 0:
        raise ValueError(_layerdrop_message(config))
    if strategy in ("hidden", "input") and getattr(config, "use_weighted_layer_sum", False):
        raise ValueError(
            f"use_weighted_layer_sum=True feeds the classifier a weighted sum of every layer's output, including the "
            f"unmixed ones before the mixing site, so mix_strategy={strategy!r} would not train on mixed examples. "
            "Use mix_strategy='sentence' (mixes the classifier input), or load the model with "
            "use_weighted_layer_sum=False."
        )


def _layerdrop_message(config: Any) -> str:
    return (
        f"The model has layerdrop={config.layerdrop}: in training it skips encoder layers at random, and a step whose "
        "mixing layer is skipped would not mix at all. Load the model with layerdrop=0.0 (e.g. "
        "AutoModelForAudioClassification.from_pretrained(name, layerdrop=0.0)), or use mix_strategy='input' or "
        "'sentence'."
    )


def _get_module(root: nn.Module, path: str) -> Any:
    """Follow a dotted path; through PEFT's ``ModulesToSaveWrapper`` it descends into the active trainable copy.

    Typed ``Any``: the module found is of the model's own class (a ``ModuleList`` of layers, an embedding module...).
    """
    module: Any = root
    for part in path.split("."):
        if not hasattr(module, part) and hasattr(module, "modules_to_save"):
            module = module.modules_to_save[module.active_adapters[0]]
        module = getattr(module, part)
    return module


def num_layers(model: nn.Module) -> int:
    """Number of encoder layers ``N`` of a supported model."""
    base = unwrap_model(model)
    return len(_get_module(base, resolve_family(base).layers))


def model_modality(model: Any) -> str | None:
    """``"text"``, ``"image"`` or ``"audio"`` for a model of a supported family, else ``None``."""
    if not isinstance(model, nn.Module):
        return None
    model_type = getattr(getattr(unwrap_model(model), "config", None), "model_type", None)
    family = _FAMILIES.get(model_type) if model_type else None
    return None if family is None else family.modality


def load_classifier(name_or_path: str) -> nn.Module:
    """Load a path / Hub id in float32 with the auto class of its family (text, image or audio classification)."""
    import transformers
    from transformers import AutoConfig

    family = _FAMILIES.get(AutoConfig.from_pretrained(name_or_path).model_type)
    auto = getattr(transformers, _AUTO_CLASSES["text"] if family is None else family.auto_class)
    return auto.from_pretrained(name_or_path, dtype=torch.float32)


def check_classifier(model: nn.Module) -> None:
    """A supported family with a single-label classification head (``num_labels >= 2``), else a ``ValueError``."""
    resolve_family(model)  # raises for unsupported architectures
    config = unwrap_model(model).config
    if config.problem_type in ("regression", "multi_label_classification"):
        raise ValueError(
            f"DMIX mixes one-hot class labels; the model is configured for problem_type={config.problem_type!r}. "
            "Use a single-label classification head (problem_type='single_label_classification', num_labels >= 2)."
        )
    if config.num_labels < 2:
        raise ValueError(
            f"The model has num_labels={config.num_labels}, i.e. a regression head. DMIX needs a single-label "
            "classification head with num_labels >= 2."
        )


def check_anchor_dominant(anchor_dominant: bool, model: nn.Module) -> None:
    """``anchor_dominant`` drops the partner rows after the site: not possible where the head pools over all rows."""
    config = unwrap_model(model).config
    if anchor_dominant and config.model_type == "modernbert" and getattr(config, "classifier_pooling", "cls") == "mean":
        raise ValueError(
            "anchor_dominant=True drops the partner rows after the mixing site, but ModernBERT with "
            "classifier_pooling='mean' pools with the full 2B-row attention mask. Use classifier_pooling='cls' or "
            "anchor_dominant=False."
        )
