"""One backbone interface: kind detection, the registry, loading, and shared template/verbalizer files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from openpt.backbone import CausalLMBackbone, MaskedLMBackbone, Seq2SeqBackbone, detect_kind, load_backbone
from openpt.model.build import PromptOptions, build_model
from openpt.errors import BackboneError, SpecError
from openpt.registry import BACKBONES
from openpt.template.spec import load_template_spec, template_spec_from_text
from openpt.verbalizer import ManualVerbalizer, Verbalizer, load_verbalizer
from openpt.verbalizer.generation import GenerationVerbalizer

from .helpers import SENTIMENT

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"bert": "mlm", "roberta": "mlm", "t5": "seq2seq", "bart": "seq2seq", "gpt2": "causal", "llama": "causal"}
CLASSES = {"mlm": MaskedLMBackbone, "seq2seq": Seq2SeqBackbone, "causal": CausalLMBackbone}


@pytest.fixture(scope="module")
def backbones(request):
    """The six tiny backbones, loaded once for this module."""
    return {name: load_backbone(request.getfixturevalue(f"tiny_{name}_dir")) for name in KINDS}


@pytest.mark.parametrize(
    "model_type,kind",
    [("bert", "mlm"), ("roberta", "mlm"), ("distilbert", "mlm"),
     ("t5", "seq2seq"), ("mt5", "seq2seq"), ("bart", "seq2seq"), ("mbart", "seq2seq"), ("pegasus", "seq2seq"),
     ("gpt2", "causal"), ("llama", "causal"), ("mistral", "causal"), ("qwen2", "causal")],
)
def test_detect_kind_maps_model_type_to_kind(model_type, kind):
    assert detect_kind(AutoConfig.for_model(model_type)) == kind


@pytest.mark.parametrize("model_type", ["vit", "clip"])
def test_detect_kind_names_an_unsupported_type(model_type):
    with pytest.raises(BackboneError, match=f"unsupported backbone type '{model_type}'"):
        detect_kind(AutoConfig.for_model(model_type))


def test_registry_holds_one_class_per_kind():
    assert BACKBONES.names() == ["causal", "mlm", "seq2seq"]
    for kind, cls in CLASSES.items():
        assert BACKBONES.get(kind) is cls and cls.kind == kind


def test_load_backbone_detects_kind_from_a_local_directory(backbones):
    for name, kind in KINDS.items():
        backbone = backbones[name]
        assert type(backbone) is CLASSES[kind] and backbone.scores_words == (kind != "mlm")
        assert backbone.signature()["kind"] == kind and backbone.signature()["model_type"] == name
    t5, bart, gpt2 = backbones["t5"], backbones["bart"], backbones["gpt2"]
    assert t5.tokenizer.convert_ids_to_tokens(t5.mask_token_id) == "<extra_id_0>"
    assert bart.mask_token_id == bart.tokenizer.mask_token_id
    assert gpt2.tokenizer.mask_token_id is None and gpt2.special_frame() == ([], [])
    assert backbones["llama"].special_frame() == ([backbones["llama"].tokenizer.bos_token_id], [])
    assert t5.special_frame() == ([], [t5.tokenizer.eos_token_id])


def test_load_backbone_errors_are_clear(tiny_t5_dir):
    with pytest.raises(BackboneError, match="unknown backbone type 'nope'.*expected one of: causal, mlm, seq2seq"):
        load_backbone(tiny_t5_dir, kind="nope")
    with pytest.raises(BackboneError, match="t5-small: not a local model directory and not in the Hugging Face cache"):
        load_backbone("t5-small")  # a hub name; the tests run offline


def test_same_template_and_verbalizer_files_on_every_backbone(backbones):
    """The files the masked-LM integration test uses, unchanged, on all six kinds."""
    spec = load_template_spec(ROOT / "templates/sst2/it_was.yaml")
    for name, backbone in backbones.items():
        verbalizer = load_verbalizer(ROOT / "verbalizers/sst2/great_terrible.yaml")
        model = build_model(backbone, spec, verbalizer, PromptOptions(max_length=64))
        labels, probs = model.predict(SENTIMENT)
        assert probs.shape == (len(SENTIMENT), 2) and torch.allclose(probs.sum(-1), torch.ones(len(SENTIMENT)))
        words = [backbone.tokenizer.decode(ids).strip() for ids in (verbalizer.word_ids or [[i] for i in verbalizer.token_ids])]
        assert words == ["terrible", "great"], name


@pytest.mark.parametrize("name", ["t5", "bart", "gpt2", "llama"])
def test_shipped_generic_files_build_on_word_scoring_backbones(backbones, name):
    templates = sorted((ROOT / "templates/generic").glob("*.yaml"))
    verbalizers = sorted((ROOT / "verbalizers/generic").glob("*.yaml"))
    assert len(templates) == 3 and len(verbalizers) == 2
    for template in templates:
        for path in verbalizers:
            verbalizer = load_verbalizer(path)
            assert isinstance(verbalizer, GenerationVerbalizer)
            model = build_model(backbones[name], load_template_spec(template), verbalizer, PromptOptions(max_length=64))
            assert model.scores(SENTIMENT[:2]).shape == (2, verbalizer.num_classes)


def test_verbalizers_that_need_mask_logits_are_refused_on_word_scoring_backbones(backbones):
    class LogitsOnly(Verbalizer):
        def bind(self, tokenizer, mask_spaces):
            self.token_ids = [0]

    spec = template_spec_from_text("{text} it was [MASK] .")
    with pytest.raises(SpecError, match="LogitsOnly reads LM logits at a \\[MASK\\] slot.*expected a manual or generation verbalizer"):
        build_model(backbones["t5"], spec, LogitsOnly(["a", "b"]))
    with pytest.raises(SpecError, match="generation verbalizer .* needs a seq2seq or causal backbone"):
        build_model(backbones["bert"], spec, GenerationVerbalizer(["negative", "positive"]))
    with pytest.raises(SpecError, match="'sum' needs a seq2seq or causal backbone"):
        build_model(backbones["bert"], spec, ManualVerbalizer({"a": ["bad"], "b": ["good"]}, multi_token="sum"))


def test_generation_verbalizer_yaml_errors_name_the_key(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("type: generation\nlabels: [a, b]\nmode: sample\n")
    with pytest.raises(SpecError, match="v.yaml:3: mode: expected one of score, generate, got 'sample'"):
        load_verbalizer(path)
    path.write_text("type: generation\nlabels: [a, b]\nmax_new_token: 3\n")
    with pytest.raises(SpecError, match="v.yaml:3: max_new_token: unknown key; did you mean 'max_new_tokens'"):
        load_verbalizer(path)
