"""Command line: ``openpt run | eval | predict | serve | report | export | import | data check | template check | template generate | verbalizer search``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_hf import add_commands, add_predict_options
from .cli_launch import add_launch_options, launch_options, run_sweep
from .cli_parsing import DEVICE_HELP, Parser, common_options, non_negative, positive_batch, whole_number
from .cli_verbalizer import verbalizer_search
from .errors import OpenPTError
from .serving.command import add_serve_command


def _run(args: argparse.Namespace) -> int:
    from .experiments.config import load_config
    from .experiments.runner import Experiment, results_table
    from .experiments.trackers import resolve as resolve_trackers
    from .training import distributed

    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    config = load_config(args.config, overrides)  # a bad config fails here, before any process is launched
    launch_options(args, config.sweep is not None)  # bad launcher options too
    resolve_trackers(config.report_to)  # and a tracker that is not installed
    if args.num_processes > 1 and distributed.current().size == 1:
        from .device import resolve_device

        cpu = resolve_device(config.device).type != "cuda"
        command = distributed.launch_command(args.num_processes, without_option(args.argv, "--num-processes"), cpu=cpu)
        return subprocess.run(command, env={**os.environ, distributed.CPU_VARIABLE: "1"} if cpu else None).returncode
    if not distributed.current().is_main:  # one process reports; all of them compute
        sys.stdout = open(os.devnull, "w")
    output = args.output or config.output or f"runs/{config.name}"
    launch, shard = launch_options(args, config.sweep is not None)
    if config.multitask is not None:  # one run of every task's prompt together (openpt.experiments.multitask_run)
        from .experiments.multitask_run import run_multitask

        results = run_multitask(config, output, overwrite=args.overwrite)
        print(f"{results['table']}\n\nwrote {Path(output) / 'results.json'}, results.md and prompts/ ({results['wall_seconds']:.1f}s)")
        return 0
    if config.sweep is not None:
        if args.checkpoint_every:
            raise OpenPTError("--checkpoint-every applies to single experiments; a sweep skips its finished runs when rerun")
        return run_sweep(config, output, args, launch, shard)  # --resume: a sweep continues anyway (and collects detached jobs)
    results = Experiment(config, output, checkpoint_every=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite).run()
    print(results_table(results))
    print(f"\nwrote {Path(output) / 'results.json'}, {Path(output) / 'results.jsonl'}, {Path(output) / 'report' / 'report.md'} "
          f"and {Path(output) / 'prompt'}/ ({results['wall_seconds']:.1f}s)")
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


def _report(args: argparse.Namespace) -> int:
    from .experiments.report import write_report

    results = args.results[0]
    if len(args.results) > 1:  # shards of one sweep: merged into OUTPUT/results.jsonl first
        from .experiments.merge import write_merged

        if not args.output:
            raise OpenPTError("several results files: give --output DIR for the merged results.jsonl and its report")
        results = str(write_merged([Path(p) for p in args.results], Path(args.output), overwrite=args.overwrite))
        print(f"merged {len(args.results)} results files into {results}")
    elif not Path(results).is_file():
        raise OpenPTError(f"{results}: no such results file")
    split = lambda text: [k.strip() for k in text.split(",") if k.strip()] if text else None  # noqa: E731
    table, written = write_report(results, args.output, k=args.k, rows=split(args.rows), cols=split(args.cols), x=args.x, hue=args.hue,
                                  where=args.where, refs=args.ref, metric=args.metric,
                                  overwrite=args.overwrite and len(args.results) == 1)  # merged: the directory was just written
    print(table)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _load_prompt(args: argparse.Namespace):
    from .backbone.base import load_backbone
    from .model.saving import load_prompt, read_prompt_config

    backbone = None
    if args.backbone:
        backbone = load_backbone(args.backbone, kind=read_prompt_config(args.prompt)["backbone"]["kind"], device=args.device)
    if args.ensemble:  # more saved prompts of the same task: mean class probabilities
        from .model.ensemble import PromptEnsemble

        return _compiled(PromptEnsemble.load([args.prompt, *args.ensemble], backbone, device=args.device), args)
    return _compiled(load_prompt(args.prompt, backbone, device=args.device), args)


def _compiled(model: Any, args: argparse.Namespace) -> Any:
    """``model`` (a PromptModel or PromptEnsemble) with its backbones' layers compiled if ``--compile`` asks."""
    if getattr(args, "compile", None):
        from .model.compiling import COMPILE_MODES, CompileConfig, compile_layers

        if args.compile not in COMPILE_MODES:
            raise OpenPTError(f"--compile: expected one of {', '.join(COMPILE_MODES)}, got {args.compile!r}")
        for member in getattr(model, "models", [model]):
            compile_layers(member.backbone.model, CompileConfig(mode=args.compile))
    return model


def _eval(args: argparse.Namespace) -> int:
    from .data.loading import LabelRules, load_split
    from .cli_parsing import eval_metrics
    from .data.streaming import parse_field_map
    from .model.build import template_spec, verbalizer_spec
    from .model.saving import read_prompt_config
    from .tasks import task_from_config, task_of
    from .training.loop import evaluate

    given_spec = template_spec(args.template) if args.prompt is None and args.template else None  # zero-shot: read once
    generating = given_spec is not None and given_spec.has_target
    if args.prompt is None and not (args.backbone and args.template and (args.verbalizer or generating)):
        raise OpenPTError("openpt eval needs a saved PROMPT directory, or --backbone, --template and --verbalizer "
                          "to score a template and verbalizer zero-shot (a generation template ending in {target}: no --verbalizer)")
    if generating and args.verbalizer:
        raise OpenPTError("--verbalizer: a template ending in {target} generates text and reads no verbalizer; drop --verbalizer")
    if args.prompt is not None and (args.template or args.verbalizer):
        raise OpenPTError("--template/--verbalizer are for zero-shot evaluation without a saved prompt; drop them or the PROMPT directory")
    if args.split is None and Path(args.data).is_dir():
        raise OpenPTError(f"--split: which split of {args.data} to evaluate? (e.g. --split dev or --split test)")
    split, field_map = args.split or "test", parse_field_map(args.fields)
    provided: tuple[str, ...] = ()  # fields a task fills in itself, e.g. a yes/no question's {label}
    if given_spec is not None:  # the data and its fields are checked before the backbone loads
        spec = given_spec
        rules = (LabelRules(required=True, answer="target") if generating else
                 LabelRules(hint=verbalizer_spec(args.verbalizer).label_names, required=True))
        dataset = load_split(args.data, split, field_map=field_map, rules=rules)
        provided = ("target",) if generating else ()
    else:
        saved = read_prompt_config(args.prompt)
        saved_task = task_from_config(saved.get("task"))
        spec, provided = template_spec(saved["template"]), saved_task.provided_fields()
        labels = saved_task.data_labels(saved) if not Path(args.data).is_dir() else None
        dataset = load_split(args.data, split, field_map=field_map, label_names=labels,
                             rules=LabelRules(required=True, answer=saved_task.answer_field))
    missing = [name for name in spec.fields if name not in dataset.fields() and name not in provided]
    if missing:
        raise OpenPTError(f"{dataset.source}: the template reads {{{missing[0]}}}, which its rows lack (fields: "
                          f"{', '.join(sorted(dataset.fields()))}); map a column with --fields {missing[0]}=COLUMN")
    if args.prompt is None:
        from .model.zero_shot import zero_shot_model

        model = _compiled(zero_shot_model(args.backbone, spec, args.verbalizer, max_length=args.max_length), args)
    else:
        model = _load_prompt(args)
    task = task_of(model)
    metrics = eval_metrics(args.metrics, task)
    if model.verbalizer is not None:  # a classification task (generation has no verbalizer)
        names = task.class_names(model)
        if args.prompt is not None and names != list(saved_task.data_labels(saved) or []) and not Path(args.data).is_dir():  # a task's own names
            dataset = load_split(args.data, split, field_map=field_map, label_names=names, rules=LabelRules(required=True))
        if not task.predicts_sets:
            model.verbalizer.check_labels(dataset.label_names)
        elif list(dataset.label_names) != names:
            raise OpenPTError(f"{dataset.source}: labels {dataset.label_names} differ from the prompt's {names}")
    scores = evaluate(model, dataset.examples, args.batch_size, metrics)
    print(json.dumps({"examples": len(dataset), **scores}, indent=2))
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from .experiments.config import load_config
    from .experiments.data_check import check_config_data

    reports = check_config_data(load_config(args.config, args.overrides))
    for name, report in reports:
        print(f"== {name} ==\n{report.text()}" if len(reports) > 1 else report.text())
    return 1 if any(report.problems for _, report in reports) else 0


def _predict(args: argparse.Namespace) -> int:
    from .cli_hf import predict

    return predict(args, _load_prompt)


def _template_check(args: argparse.Namespace) -> int:
    from .model.build import template_class, template_spec, template_text_file
    from .template.parser import format_template
    from .types import InputExample

    path = Path(args.file)
    if path.suffix in (".yaml", ".yml"):
        spec = template_spec(str(path))
    elif path.is_file():
        spec = template_text_file(path)
    else:
        raise OpenPTError(f"{path}: file not found")
    print(f"{path}: ok ({spec.name or 'unnamed'}): {format_template(spec.segments)}")
    if args.example is not None and not args.backbone:
        raise OpenPTError("rendering an --example needs the tokenizer of a --backbone")
    if args.backbone:
        from .backbone.base import load_backbone

        backbone = load_backbone(args.backbone)
        template = template_class(spec)(
            spec, backbone.tokenizer, backbone.input_embeddings(), mask_token_id=backbone.mask_token_id, max_length=args.max_length
        )
        text_b = args.example_b
        if text_b is None and "text_b" in spec.fields:
            text_b = "is it good ?"
            print(f"note: the template uses {{text_b}} and no --example-b was given; rendering it as {text_b!r}")
        rendered = template.render(InputExample(text=args.example or "a gripping , funny film .", text_b=text_b))
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="openpt", description="Prompt learning over Hugging Face backbones.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="run a few-shot experiment from a YAML config")

    common_options(run)
    run.add_argument("config", help="experiment YAML (a sweep when it has a 'sweep:' section)")
    run.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=0.01 data.seeds=[13]")
    run.add_argument("--output", "-o", help="output directory (default: the config's 'output' or runs/<name>)")
    run.add_argument("--checkpoint-every", type=non_negative, default=0, metavar="N",
                     help="save the full training state to OUTPUT/checkpoints/ every N steps and at the end of each seed (0: off)")
    run.add_argument("--resume", action="store_true", help="continue a killed run from OUTPUT/checkpoints/ (same results as an uninterrupted run); "
                     "a sweep: continue it, collecting the cells of a --detach submission")
    run.add_argument("--overwrite", action="store_true",
                     help="reuse an output directory that holds an earlier run: delete the files openpt wrote there (others stay)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (they are off anyway when stderr is not a terminal)")
    run.add_argument("--num-processes", type=whole_number(1, "processes", 1024), default=1, metavar="N",
                     help="train data-parallel in N processes through accelerate (one per GPU over NCCL, gloo on CPU; see docs/distributed.md)")
    run.add_argument("--device", help=DEVICE_HELP + " (default: the config's 'device', else auto)")
    add_launch_options(run)
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="markdown table and plots from a sweep's results.jsonl")

    common_options(report)
    report.add_argument("results", nargs="+", help="results.jsonl written by a sweep; several (e.g. --shard parts) are merged into "
                        "OUTPUT/results.jsonl, refusing two ok rows of one run id with different metrics")
    report.add_argument("--output", "-o", help="directory for report.md and PNGs (default: <results dir>/report)")
    report.add_argument("--overwrite", action="store_true", help="write into an output directory that holds other files (openpt's own are replaced)")
    report.add_argument("--k", type=whole_number(1, "examples per class"), help="only this K in the table (default: every K)")
    report.add_argument("--rows", metavar="KEYS", help="pivot: comma-separated keys for table rows (fields such as dataset, method, k, "
                        "or swept keys such as train.lr)")
    report.add_argument("--cols", metavar="KEYS", help="pivot: comma-separated keys for table columns")
    report.add_argument("--x", metavar="KEY", help="plot the metric against this key (one PNG per remaining setting)")
    report.add_argument("--hue", metavar="KEY", help="one line per value of this key in the --x plots")
    report.add_argument("--where", action="append", metavar="KEY=VALUE[,...]", help="keep only records with these values")
    report.add_argument("--ref", action="append", metavar="KEY=VALUE[,...]",
                        help="records matching are references: a table of their own and horizontal lines in plots (repeatable)")
    report.add_argument("--metric", help="metric to show (default: each record's primary metric)")
    report.set_defaults(func=_report)

    for name, func, help_text in (("eval", _eval, "evaluate a saved prompt, or a template + verbalizer zero-shot, on a labeled split"),
                                  ("predict", _predict, "label texts with a saved prompt")):
        cmd = sub.add_parser(name, help=help_text)
        common_options(cmd)
        cmd.add_argument("prompt", nargs="?" if name == "eval" else None, help="saved prompt directory")
        cmd.add_argument("--backbone", help="backbone directory (default: the one recorded in the prompt)")
        cmd.add_argument("--batch-size", type=positive_batch, default=64, help="examples per forward pass")
        cmd.add_argument("--device", default="auto", help=DEVICE_HELP)
        cmd.add_argument("--compile", metavar="MODE",
                         help="torch.compile the backbone's layers in this inductor mode (default, reduce-overhead, max-autotune); "
                              "for GPUs")
        cmd.add_argument("--ensemble", action="append", metavar="PROMPT",
                         help="another saved prompt of the same task (repeatable): average the class probabilities")
        cmd.set_defaults(func=func)
        if name == "eval":
            cmd.add_argument("--no-progress", action="store_true", help="no progress bar (off anyway when stderr is not a terminal)")
            cmd.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
            cmd.add_argument("--split", help="split of a --data directory to evaluate, e.g. dev or test (required there; a file is read whole)")
            cmd.add_argument("--fields", help="template field -> column, e.g. text=sentence,text_b=question (default: same names)")
            cmd.add_argument("--template", help="without PROMPT: template YAML file or inline text (no soft tokens), scored zero-shot")
            cmd.add_argument("--verbalizer", help="without PROMPT: verbalizer YAML file (no learned parameters)")
            cmd.add_argument("--max-length", type=whole_number(8, "tokens"), default=128,
                             help="without PROMPT: maximum sequence length (default: 128)")
            cmd.add_argument("--metrics", help="comma-separated metrics (default: the task's; e.g. bleu,chrf,rougeL,exact_match)")
        else:
            add_predict_options(cmd)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    data_check = data.add_parser("check", help="show what each split of a config resolves to (files, rows, labels, fields, K-shot pool)")
    data_check.add_argument("config")
    data_check.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.holdout=0.2")
    data_check.set_defaults(func=_data_check)

    add_commands(sub)  # export --to peft, import peft
    add_serve_command(sub)  # serve: HTTP over a PromptBank
    template = sub.add_parser("template", help="template tools").add_subparsers(dest="template_command", required=True)
    check = template.add_parser("check", help="validate a template and show how it renders")
    common_options(check)
    check.add_argument("file", help="template YAML file (or a text file with inline template text)")
    check.add_argument("--backbone", help="render with this backbone's tokenizer")
    check.add_argument("--example", help="text to render (default: a short review)")
    check.add_argument("--example-b", help="text_b to render (a template with {text_b} gets 'is it good ?', with a note, when not given)")
    check.add_argument("--max-length", type=whole_number(1, "tokens"), default=128, help="maximum sequence length, special tokens included")
    check.set_defaults(func=_template_check)
    generate = template.add_parser("generate", help="generate templates with a T5 model on K-shot data (LM-BFF), rank them on dev, write the best")
    generate.add_argument("--generator", required=True, help="T5-style seq2seq model directory (span filling)")
    generate.add_argument("--backbone", required=True, help="masked-LM backbone that ranks the candidates on the K-shot dev set")
    generate.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
    generate.add_argument("--split", default="train", help="split the K-shot train and dev sets are drawn from")
    generate.add_argument("--verbalizer", required=True, help="verbalizer YAML (its first word per class fills the spans)")
    generate.add_argument("--k", type=whole_number(1, "examples per class"), default=16, help="examples per class for train and for dev")
    generate.add_argument("--seed", type=whole_number(0, "seed", 2**32 - 1), default=13, help="seed of the K-shot draw")
    generate.add_argument("--beam", type=whole_number(1, "beams"), default=20, help="beam width of the span decoding")
    generate.add_argument("--max-span-tokens", type=whole_number(1, "tokens"), default=8, help="longest decoded span")
    generate.add_argument("--layout", choices=["after", "before"], default="after", help="the spans and mask after or before the text")
    generate.add_argument("--candidates", type=whole_number(1, "candidates"), default=20, help="best decodes ranked on dev")
    generate.add_argument("--top", type=whole_number(1, "templates"), default=5, help="templates written")
    generate.add_argument("--output-dir", required=True, help="directory for the generated template files")
    generate.add_argument("--name", default="auto", help="file name prefix of the generated templates")
    generate.set_defaults(func=_template_generate)
    verbalizer = sub.add_parser("verbalizer", help="verbalizer tools").add_subparsers(dest="verbalizer_command", required=True)
    search = verbalizer.add_parser("search", help="search label words on labeled data and write them as a verbalizer YAML")
    common_options(search)
    search.add_argument("--backbone", required=True, help="masked-LM backbone directory")
    search.add_argument("--template", required=True, help="template YAML file or inline template text with [MASK]")
    search.add_argument("--data", required=True, help="dataset directory (shared format) or a JSONL/CSV file")
    search.add_argument("--split", default="train", help="split to search on")
    search.add_argument("--k", type=whole_number(0, "examples per class"), default=16, help="examples per class to search on (0: the whole split)")
    search.add_argument("--seed", type=whole_number(0, "seed values", 2**32 - 1), default=13, help="seed of the k-shot draw")
    search.add_argument("--words-per-class", type=whole_number(1, "words"), default=3, help="label words to keep per class")
    search.add_argument("--candidates", type=whole_number(1, "words"), default=100, help="per class, the most likely words ranked by likelihood ratio")
    search.add_argument("--mask", type=whole_number(0, "the [MASK] slot"), default=0, help="which [MASK] slot the words fill")
    search.add_argument("--name", default="auto_words", help="name of the written verbalizer")
    search.add_argument("--max-length", type=whole_number(1, "tokens"), default=128, help="maximum sequence length, special tokens included")
    search.add_argument("--batch-size", type=positive_batch, default=32, help="examples per forward pass")
    search.add_argument("--output", "-o", help="verbalizer YAML to write")
    search.add_argument("--device", default="auto", help=DEVICE_HELP)
    search.set_defaults(func=verbalizer_search)
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
    from . import progress

    progress.set_enabled(not getattr(args, "no_progress", False))
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
