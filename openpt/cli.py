"""Command line: ``openpt run | eval | predict | template check | template generate | verbalizer search``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .errors import OpenPTError


def _run(args: argparse.Namespace) -> int:
    from .experiments.config import load_config
    from .experiments.runner import Experiment, results_table
    from .training import distributed

    config = load_config(args.config, args.overrides)  # a bad config fails here, before any process is launched
    if args.num_processes > 1 and distributed.current().size == 1:
        command = distributed.launch_command(args.num_processes, without_option(args.argv, "--num-processes"))
        return subprocess.run(command).returncode
    if not distributed.current().is_main:  # one process reports; all of them compute
        sys.stdout = open(os.devnull, "w")
    output = args.output or config.output or f"runs/{config.name}"
    if config.sweep is not None:
        if args.resume or args.checkpoint_every:
            raise OpenPTError("--resume/--checkpoint-every apply to single experiments; a sweep skips its finished runs when rerun")
        return _run_sweep(config, output, progress=not args.no_progress)
    results = Experiment(config, output, checkpoint_every=args.checkpoint_every, resume=args.resume).run()
    print(results_table(results))
    print(f"\nwrote {Path(output) / 'results.json'} and {Path(output) / 'prompt'}/ ({results['wall_seconds']:.1f}s)")
    return 0


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            out.append(item)
    return out


def _run_sweep(config, output: str, *, progress: bool) -> int:
    from .experiments.report import markdown_table
    from .experiments.sweep import Sweep, read_records

    summary = Sweep(config, output, progress=progress).run()
    print(markdown_table(read_records(summary.results)))
    print(f"{summary.finished} run(s) finished, {summary.failed} failed, {summary.skipped} skipped (already done) of {summary.total}; "
          f"appended to {summary.results} ({summary.seconds:.1f}s)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .experiments.report import write_report

    if not Path(args.results).is_file():
        raise OpenPTError(f"{args.results}: no such results file")
    table, written = write_report(args.results, args.output, k=args.k)
    print(table)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _load_prompt(args: argparse.Namespace):
    from .backbone.base import load_backbone
    from .model.saving import load_prompt, read_prompt_config

    backbone = None
    if args.backbone:
        backbone = load_backbone(args.backbone, kind=read_prompt_config(args.prompt)["backbone"]["kind"])
    if args.ensemble:  # more saved prompts of the same task: mean class probabilities
        from .model.ensemble import PromptEnsemble

        return PromptEnsemble.load([args.prompt, *args.ensemble], backbone)
    return load_prompt(args.prompt, backbone)


def _eval(args: argparse.Namespace) -> int:
    from .data.loading import load_split
    from .training.loop import evaluate

    model = _load_prompt(args)
    dataset = load_split(args.data, args.split, label_names=model.verbalizer.label_names if not Path(args.data).is_dir() else None)
    model.verbalizer.check_labels(dataset.label_names)
    scores = evaluate(model, dataset.examples, args.batch_size)
    print(json.dumps({"examples": len(dataset), **scores}, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .types import InputExample

    model = _load_prompt(args)
    texts = list(args.texts)
    if args.file:
        texts += [line.rstrip("\n") for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise OpenPTError("no texts given: pass TEXT arguments or --file")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise OpenPTError(f"text {empty[0] + 1} is empty")
    labels, probs = model.predict([InputExample(text=t) for t in texts], args.batch_size)
    names = model.verbalizer.label_names
    for text, label, p in zip(texts, labels, probs):
        print(f"{names[label]}\t{p[label]:.4f}\t{text}")
    return 0


def _template_check(args: argparse.Namespace) -> int:
    from .model.build import template_class, template_spec
    from .template.parser import format_template
    from .types import InputExample

    path = Path(args.file)
    if path.suffix in (".yaml", ".yml"):
        spec = template_spec(str(path))
    else:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OpenPTError(f"{path}: cannot read ({exc.strerror})") from None
        spec = template_spec(text)
    print(f"{path}: ok ({spec.name or 'unnamed'}): {format_template(spec.segments)}")
    if args.example is not None and not args.backbone:
        raise OpenPTError("rendering an --example needs the tokenizer of a --backbone")
    if args.backbone:
        from .backbone.base import load_backbone

        backbone = load_backbone(args.backbone)
        template = template_class(spec)(
            spec, backbone.tokenizer, backbone.input_embeddings(), mask_token_id=backbone.mask_token_id, max_length=args.max_length
        )
        rendered = template.render(InputExample(text=args.example or "a gripping , funny film .", text_b=args.example_b))
        print(" ".join(f"<<{token}>>" if role == "mask" else token for token, role in rendered))
        masks = [i for i, (_, role) in enumerate(rendered) if role == "mask"]
        soft = [i for i, (_, role) in enumerate(rendered) if role == "soft"]
        print(f"{len(rendered)} tokens; mask at {masks}; {len(soft)} soft position(s){' at ' + str(soft) if soft else ''}")
    return 0


def _template_generate(args: argparse.Namespace) -> int:
    from .backbone.base import load_backbone
    from .data.loading import load_split
    from .data.sampling import lmbff_split
    from .experiments.template_search import TemplateSearchConfig, generate_templates, rank_on_dev, write_templates
    from .verbalizer import load_verbalizer

    verbalizer = load_verbalizer(args.verbalizer)
    words = getattr(verbalizer, "words", None)
    if not isinstance(words, dict):
        raise OpenPTError(f"{args.verbalizer}: template generation needs a verbalizer with label words")
    train, dev, _ = lmbff_split(load_split(args.data, args.split), args.k, args.seed)
    verbalizer.check_labels(train.label_names)
    config = TemplateSearchConfig(beam=args.beam, max_span_tokens=args.max_span_tokens, layout=args.layout)
    found = generate_templates(load_backbone(args.generator), train.examples, [words[label][0] for label in verbalizer.label_names], config)
    ranked = rank_on_dev(found[: args.candidates], load_backbone(args.backbone), str(Path(args.verbalizer).resolve()), dev.examples)
    header = (f"generated by `openpt template generate` with {args.generator} (K={args.k}, seed {args.seed}, beam {args.beam}), "
              f"ranked on the K-shot dev set with {args.backbone}")
    for path, candidate in zip(write_templates(ranked[: args.top], args.output_dir, args.name, header), ranked):
        print(f"{path}\tdev {candidate.dev_accuracy:.4f}\tlog-prob {candidate.log_prob:.2f}\t{candidate.text}")
    return 0


def _verbalizer_search(args: argparse.Namespace) -> int:
    from .backbone.base import load_backbone
    from .data.loading import load_split
    from .data.sampling import kshot_indices
    from .model.build import PromptOptions, build_model, template_spec
    from .training.cache import cache_mask_states
    from .verbalizer.auto import AutoVerbalizer

    dataset = load_split(args.data, args.split)
    if args.k:
        dataset = dataset.subset(kshot_indices(dataset.labels(), args.k, args.seed, num_classes=len(dataset.label_names)))
    backbone = load_backbone(args.backbone)
    verbalizer = AutoVerbalizer(dataset.label_names, words_per_class=args.words_per_class, candidates=args.candidates,
                                mask=args.mask, name=args.name)
    model = build_model(backbone, template_spec(args.template), verbalizer, PromptOptions(max_length=args.max_length))
    verbalizer.prepare(backbone, cache_mask_states(model, dataset.examples, args.batch_size))
    print(verbalizer.describe())
    if args.output:
        header = (f"Label words found by `openpt verbalizer search` on {len(dataset)} examples of {dataset.source}"
                  f"{f' (k={args.k}, seed={args.seed})' if args.k else ''}\nbackbone: {args.backbone}; template: {args.template}\n"
                  "Edit freely: this is an ordinary manual verbalizer.")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(verbalizer.manual_yaml(header), encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of steps, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of steps >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openpt", description="Prompt learning over Hugging Face backbones.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a few-shot experiment from a YAML config")
    run.add_argument("config")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=0.01 data.seeds=[13]")
    run.add_argument("--output", "-o", help="output directory (default: the config's 'output' or runs/<name>)")
    run.add_argument("--checkpoint-every", type=_non_negative, default=0, metavar="N",
                     help="save the full training state to OUTPUT/checkpoints/ every N steps and at the end of each seed (0: off)")
    run.add_argument("--resume", action="store_true", help="continue a killed run from OUTPUT/checkpoints/ (same results as an uninterrupted run)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar for sweeps")
    run.add_argument("--num-processes", type=int, default=1, metavar="N",
                     help="train data-parallel in N processes through accelerate (gloo on CPU; see docs/distributed.md)")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="markdown table and plots from a sweep's results.jsonl")
    report.add_argument("results", help="results.jsonl written by a sweep")
    report.add_argument("--output", "-o", help="directory for report.md and PNGs (default: <results dir>/report)")
    report.add_argument("--k", type=int, help="only this K in the table")
    report.set_defaults(func=_report)

    for name, func, help_text in (("eval", _eval, "evaluate a saved prompt on a labeled split"), ("predict", _predict, "label texts with a saved prompt")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("prompt", help="saved prompt directory")
        cmd.add_argument("--backbone", help="backbone directory (default: the one recorded in the prompt)")
        cmd.add_argument("--batch-size", type=int, default=64)
        cmd.add_argument("--ensemble", action="append", metavar="PROMPT",
                         help="another saved prompt of the same task (repeatable): average the class probabilities")
        cmd.set_defaults(func=func)
        if name == "eval":
            cmd.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
            cmd.add_argument("--split", default="test")
        else:
            cmd.add_argument("texts", nargs="*")
            cmd.add_argument("--file", help="one text per line")

    template = sub.add_parser("template", help="template tools").add_subparsers(dest="template_command", required=True)
    check = template.add_parser("check", help="validate a template and show how it renders")
    check.add_argument("file", help="template YAML file (or a text file with inline template text)")
    check.add_argument("--backbone", help="render with this backbone's tokenizer")
    check.add_argument("--example", help="text to render (default: a short review)")
    check.add_argument("--example-b", default="is it good ?", help="text_b to render")
    check.add_argument("--max-length", type=int, default=128)
    check.set_defaults(func=_template_check)
    generate = template.add_parser("generate", help="generate templates with a T5 model on K-shot data (LM-BFF), rank them on dev, write the best")
    generate.add_argument("--generator", required=True, help="T5-style seq2seq model directory (span filling)")
    generate.add_argument("--backbone", required=True, help="masked-LM backbone that ranks the candidates on the K-shot dev set")
    generate.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
    generate.add_argument("--split", default="train")
    generate.add_argument("--verbalizer", required=True, help="verbalizer YAML (its first word per class fills the spans)")
    generate.add_argument("--k", type=int, default=16, help="examples per class for train and for dev")
    generate.add_argument("--seed", type=int, default=13)
    generate.add_argument("--beam", type=int, default=20)
    generate.add_argument("--max-span-tokens", type=int, default=8)
    generate.add_argument("--layout", choices=["after", "before"], default="after", help="the spans and mask after or before the text")
    generate.add_argument("--candidates", type=int, default=20, help="best decodes ranked on dev")
    generate.add_argument("--top", type=int, default=5, help="templates written")
    generate.add_argument("--output-dir", required=True)
    generate.add_argument("--name", default="auto")
    generate.set_defaults(func=_template_generate)
    verbalizer = sub.add_parser("verbalizer", help="verbalizer tools").add_subparsers(dest="verbalizer_command", required=True)
    search = verbalizer.add_parser("search", help="search label words on labeled data and write them as a verbalizer YAML")
    search.add_argument("--backbone", required=True, help="masked-LM backbone directory")
    search.add_argument("--template", required=True, help="template YAML file or inline template text with [MASK]")
    search.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
    search.add_argument("--split", default="train")
    search.add_argument("--k", type=int, default=16, help="examples per class to search on (0: the whole split)")
    search.add_argument("--seed", type=int, default=13, help="seed of the k-shot draw")
    search.add_argument("--words-per-class", type=int, default=3)
    search.add_argument("--candidates", type=int, default=100, help="per class, the most likely words ranked by likelihood ratio")
    search.add_argument("--mask", type=int, default=0, help="which [MASK] slot the words fill")
    search.add_argument("--name", default="auto_words")
    search.add_argument("--max-length", type=int, default=128)
    search.add_argument("--batch-size", type=int, default=32)
    search.add_argument("--output", "-o", help="verbalizer YAML to write")
    search.set_defaults(func=_verbalizer_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    args.argv = argv
    if extra:  # overrides may follow options: openpt run CONFIG --output DIR train.lr=0.1
        if args.command != "run" or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except OpenPTError as exc:
        print(f"openpt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("openpt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
