"""OpenPrompt's ``tutorial/0_basic.py`` (premise/hypothesis classification with a manual template,
a manual verbalizer, ``PromptForClassification`` and a hand-written AdamW loop), in openpt.

The template and label words stay in OpenPrompt's own files (``manual_template.txt``, one template
per line; ``manual_verbalizer.txt``, one class per line, verbalizers separated by blank lines).
The tutorial fine-tunes the whole model (``freeze_plm=False``); so does this script. See
``docs/migrating_from_openprompt.md`` for the two side by side.

    python examples/openprompt_migration/basic.py --backbone ../shared/models/minilm-mlm --data ../shared/data/rte
"""
from __future__ import annotations

import argparse
from pathlib import Path

from openpt import PromptOptions, TrainConfig, build_model, evaluate, lmbff_split, load_backbone, load_split, train
from openpt.model.build import template_spec, verbalizer_spec

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="../shared/models/minilm-mlm")
    parser.add_argument("--data", default="../shared/data/rte", help="shared-format pair dataset (text, text_b, label)")
    parser.add_argument("--k", type=int, default=16, help="training examples per class")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-eval", type=int, default=200, help="evaluate on the first N dev examples")
    args = parser.parse_args(argv)

    data = load_split(args.data, "train")
    # OpenPrompt: ManualTemplate(tokenizer=tokenizer, text=...) / .from_file(path, choice=0)
    template = template_spec({"file": "manual_template.txt", "choice": 0}, base_dir=HERE)
    # OpenPrompt: ManualVerbalizer(tokenizer, classes=...).from_file(path, choice=0); classes by line order
    verbalizer = verbalizer_spec({"file": "manual_verbalizer.txt", "choice": 0, "labels": data.label_names}, base_dir=HERE)
    # OpenPrompt: load_plm("bert", path) + PromptForClassification(plm, template, verbalizer, freeze_plm=False)
    model = build_model(load_backbone(args.backbone), template, verbalizer, PromptOptions(max_length=256, freeze_backbone=False))
    # OpenPrompt: PromptDataLoader(...) + the AdamW loop (lr 1e-4 on every weight); openpt batches, pads and steps itself
    train_set, dev_set, _ = lmbff_split(data, k=args.k, seed=13)
    train(model, train_set.examples, None, TrainConfig(steps=args.steps, batch_size=4, backbone_lr=1e-4, lr=1e-4, eval_every=0))
    # OpenPrompt: the validation loop with argmax and accuracy
    scores = evaluate(model, load_split(args.data, "dev").examples[: args.max_eval])
    print({name: round(value, 4) for name, value in scores.items()})
    return scores


if __name__ == "__main__":
    main()
