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
save_prompt(model, "my-prompt")                                  # ~31 KB
labels, probs = load_prompt("my-prompt").predict([InputExample("a gripping , funny film .")])
