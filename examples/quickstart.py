from openpt import (InputExample, ManualVerbalizer, TrainConfig, build_model, evaluate,
                    lmbff_split, load_backbone, load_prompt, load_split, save_prompt, train)
from openpt.template.spec import template_spec_from_text

backbone = load_backbone("../shared/models/minilm-mlm")           # any AutoModelForMaskedLM dir
template = template_spec_from_text("[SOFT*20] {text} It was [MASK].")
verbalizer = ManualVerbalizer({"negative": ["terrible"], "positive": ["great"]})
model = build_model(backbone, template, verbalizer, seed=13)     # backbone frozen
print(model.trainable_summary())                                 # 7,680 trainable params

data = load_split("../shared/data/sst2", "train")
train_set, dev_set, _ = lmbff_split(data, k=16, seed=13)         # 16 per class each
train(model, train_set.examples, dev_set.examples, TrainConfig(lr=0.01, epochs=10))
print(evaluate(model, load_split("../shared/data/sst2", "dev").examples))
save_prompt(model, "runs/quickstart-prompt")                     # ~31 KB (runs/ is git-ignored)
labels, probs = load_prompt("runs/quickstart-prompt").predict([InputExample("a gripping , funny film .")])
print(verbalizer.label_names[labels[0]], f"{probs[0, labels[0]]:.3f}")
