"""``openpt verbalizer search``: label words searched on a K-shot set, written as an editable YAML file."""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import OpenPTError
from .fileio import atomic_write


def verbalizer_search(args: argparse.Namespace) -> int:
    from .backbone.base import load_backbone
    from .data.loading import load_split
    from .data.sampling import kshot_indices
    from .model.build import PromptOptions, build_model, template_spec
    from .training.cache import cache_mask_states
    from .verbalizer.auto import AutoVerbalizer

    dataset = load_split(args.data, args.split)
    if args.k:
        dataset = dataset.subset(kshot_indices(dataset.labels(), args.k, args.seed, num_classes=len(dataset.label_names)))
    backbone = load_backbone(args.backbone, device=args.device)
    verbalizer = AutoVerbalizer(dataset.label_names, words_per_class=args.words_per_class, candidates=args.candidates,
                                mask=args.mask, name=args.name)
    model = build_model(backbone, template_spec(args.template), verbalizer, PromptOptions(max_length=args.max_length))
    verbalizer.prepare(backbone, cache_mask_states(model, dataset.examples, args.batch_size))
    print(verbalizer.describe())
    if args.output:
        header = (f"Label words found by `openpt verbalizer search` on {len(dataset)} examples of {dataset.source}"
                  f"{f' (k={args.k}, seed={args.seed})' if args.k else ''}\nbackbone: {args.backbone}; template: {args.template}\n"
                  "Edit freely: this is an ordinary manual verbalizer.")
        from .fileio import atomic_write

        target, text = Path(args.output), verbalizer.manual_yaml(header)
        if target.is_dir() or target.is_symlink():
            raise OpenPTError(f"{target}: --output names a directory or link; give the verbalizer YAML file to write")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OpenPTError(f"{target.parent}: cannot create directory ({exc.strerror or exc})") from None
        atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.output}")
    return 0
