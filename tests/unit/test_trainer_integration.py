"""transformers.Trainer on an openpt prompt: prompt-only optimizer, loss goes down, checkpoints hold a loadable prompt."""
from __future__ import annotations

import torch

from openpt.integrations.trainer import PromptCollator, SavePromptCallback, TrainerModel
from openpt.model.saving import load_prompt
from openpt.types import InputExample

from .helpers import SENTIMENT, backbone_digest, make_model, sharpened_copy

import datasets
import transformers


def test_trainer_lowers_loss_keeps_backbone_and_saves_a_reloadable_prompt(tiny_bert_dir, tmp_path):
    model = make_model(sharpened_copy(tiny_bert_dir, tmp_path / "sharp"))
    before = backbone_digest(model)
    # all-positive labels: a random tiny LM knows no sentiment, a one-sided label set shows the prompt steering it
    rows = datasets.Dataset.from_dict({"sentence": [e.text for e in SENTIMENT] * 2, "label": [1] * 12})
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "trainer"), max_steps=10, per_device_train_batch_size=6,
                                          learning_rate=0.1, lr_scheduler_type="constant", logging_steps=1, save_steps=5,
                                          remove_unused_columns=False, report_to="none", use_cpu=True, disable_tqdm=True,
                                          seed=0, max_grad_norm=0.0)
    callback = SavePromptCallback(model)
    trainer = transformers.Trainer(model=TrainerModel(model), args=args, train_dataset=rows,
                                   data_collator=PromptCollator(model, field_map={"text": "sentence"}), callbacks=[callback])
    trainer.train()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.trainable_parameters()} == {id(model.template.soft.weight)}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 10 and losses[-1] < losses[0] * 0.6
    assert backbone_digest(model) == before
    assert [p.parent.name for p in callback.saved] == ["checkpoint-5", "checkpoint-10"]
    reloaded = load_prompt(callback.saved[-1])
    torch.testing.assert_close(reloaded.predict(SENTIMENT)[1], model.predict(SENTIMENT)[1], atol=0, rtol=0)
    assert set(trainer.model.state_dict()) == {"prompt_model.template.soft.weight"}  # Trainer's own checkpoints stay small


def test_collator_maps_fields_and_label_names(tiny_bert_dir):
    model = make_model(tiny_bert_dir, "{text} ? [MASK] , {text_b}")
    collate = PromptCollator(model, field_map={"text": "premise", "text_b": "hypothesis"})
    batch = collate([{"premise": "a b", "hypothesis": "c", "label": "positive"}, {"premise": "d", "hypothesis": "e f", "label": 0}])
    assert batch["labels"].tolist() == [1, 0] and batch["input_ids"].shape[0] == 2
    expected = model.template.collate(model.template.encode([InputExample("a b", "c", 1), InputExample("d", "e f", 0)]))
    assert torch.equal(batch["input_ids"], expected.input_ids) and torch.equal(batch["mask_positions"], expected.mask_positions)
