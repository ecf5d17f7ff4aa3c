"""Commands that move a saved prompt into the rest of the stack: ``predict`` over row files,
``export --to peft`` and ``import peft``. Heavy libraries are imported inside the commands."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import OpenPTError, OutputError
from .outputs import check_output_file


def add_predict_options(cmd: argparse.ArgumentParser) -> None:
    """Options of ``openpt predict`` (beside the prompt, ``--backbone`` and ``--batch-size``)."""
    cmd.add_argument("texts", nargs="*", help="texts to label (the template's {text})")
    cmd.add_argument("--file", help="rows to label: .jsonl, .json (an array of objects), .csv, .tsv (a header row), or any other "
                     "file with one text per line; the output's line is the row's file line (CSV/TSV: the first data row is line 2)")
    cmd.add_argument("--fields", help="template field -> column, e.g. text=sentence,text_b=question (default: same names)")
    cmd.add_argument("--format", default="tsv", help="output format: tsv, jsonl or json (default: tsv)")
    cmd.add_argument("--output", "-o", help="file to write (default: stdout); rows are written as they are scored")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")
    decoding = cmd.add_argument_group("decoding (generation prompts; default: the options saved with the prompt)")
    decoding.add_argument("--max-new-tokens", type=int, help="generated tokens at most")
    decoding.add_argument("--num-beams", type=int, help="beam search width (1: greedy or sampling)")
    decoding.add_argument("--do-sample", action="store_const", const=True, help="sample instead of greedy/beam search")
    decoding.add_argument("--temperature", type=float, help="sampling temperature")
    decoding.add_argument("--top-p", type=float, help="nucleus sampling: smallest token set with this probability")
    decoding.add_argument("--top-k", type=int, help="sample from the k most likely tokens (0: off)")
    decoding.add_argument("--stop", action="append", help="a string that ends the text (cut off; repeatable)")
    decoding.add_argument("--num-return-sequences", type=int, help="texts per row")
    decoding.add_argument("--scores", action="store_const", const=True, help="also write each text's log-likelihood")


def add_commands(sub: Any) -> None:
    """Register ``export`` and ``import`` on the top-level subparsers."""
    export = sub.add_parser("export", help="write a saved prompt in another library's format")
    export.add_argument("prompt", help="saved prompt directory")
    export.add_argument("--to", required=True, choices=["peft"], help="target format")
    export.add_argument("--output", "-o", required=True, help="directory to write (PeftModel.from_pretrained(base, DIR) loads it)")
    export.add_argument("--overwrite", action="store_true", help="replace what openpt wrote in a non-empty --output before")
    export.set_defaults(func=_export)
    imports = sub.add_parser("import", help="turn another library's prompt into a saved openpt prompt")
    source = imports.add_subparsers(dest="import_from", required=True)
    peft = source.add_parser("peft", help="a PEFT prompt-tuning adapter directory")
    peft.add_argument("adapter", help="directory with adapter_config.json and adapter_model.safetensors")
    peft.add_argument("--template", help="template YAML or text (default: the one an openpt export recorded)")
    peft.add_argument("--verbalizer", help="verbalizer YAML (default: the one an openpt export recorded)")
    peft.add_argument("--backbone", help="backbone directory (default: the adapter's base_model_name_or_path)")
    peft.add_argument("--max-length", type=int, help="maximum sequence length (default: recorded, else 128)")
    peft.add_argument("--output", "-o", required=True, help="prompt directory to write")
    peft.add_argument("--overwrite", action="store_true", help="replace what openpt wrote in a non-empty --output before")
    peft.set_defaults(func=_import_peft)


def predict(args: argparse.Namespace, load_prompt: Callable[[argparse.Namespace], Any]) -> int:
    """``openpt predict``: label texts or a row file, streaming, in input order."""
    from .data.streaming import iter_rows, parse_field_map, row_example
    from .model.generation import is_generation_model
    from .predict import FORMATS, PredictionWriter, predict_stream
    from .tasks import task_from_config, task_of
    from .types import InputExample, blank_text

    if args.batch_size < 1:
        raise OpenPTError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.format not in FORMATS:
        raise OpenPTError(f"--format: expected one of {', '.join(FORMATS)}, got {args.format!r}")
    if not args.texts and not args.file:
        raise OpenPTError("no texts given: pass TEXT arguments or --file")
    for n, text in enumerate(args.texts, 1):
        if blank_text(text):
            raise OpenPTError(f"text {n} is empty")
    field_map = parse_field_map(args.fields)
    if args.file and not Path(args.file).is_file():
        raise OpenPTError(f"{args.file}: no such file")
    if args.output:
        check_output_file(args.output, reads=[args.file] if args.file else [])
    if args.file:  # the first row's fields are checked before the backbone loads
        from .model.build import template_spec
        from .model.saving import read_prompt_config

        saved = read_prompt_config(args.prompt)
        provided = task_from_config(saved.get("task")).provided_fields()  # e.g. a yes/no question's {label}
        first = next(iter_rows(args.file), None)
        if first is not None:
            fields = [name for name in template_spec(saved["template"]).fields if name not in provided and name != "target"]
            row_example(first[1], fields, field_map, f"{args.file}:{first[0]}")
    model = load_prompt(args)
    fields = [name for name in model.template.spec.fields if name not in task_of(model).provided_fields() and name != "target"]

    def rows() -> Iterator[tuple[int, InputExample]]:
        for n, text in enumerate(args.texts, 1):
            yield n, InputExample(text, guid=f"text {n}")
        if args.file:
            for line, row in iter_rows(args.file):
                yield line, row_example(row, fields, field_map, f"{args.file}:{line}")

    total = len(args.texts) + (count_lines(args.file) if args.file else 0)
    if is_generation_model(model):
        from .predict_text import TextWriter, decoding_options, generate_stream

        given = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "do_sample": args.do_sample, "temperature": args.temperature,
                 "top_p": args.top_p, "top_k": args.top_k, "stop": args.stop, "num_return_sequences": args.num_return_sequences,
                 "scores": args.scores}
        options = decoding_options(model, given)  # checked before any output
    elif any(getattr(args, key) is not None for key in DECODING_FLAGS):
        raise OpenPTError(f"--{next(k for k in DECODING_FLAGS if getattr(args, k) is not None).replace('_', '-')}: decoding options "
                          "are for generation prompts; this prompt classifies")
    with _output(args.output) as stream, _progress_bar(total, not args.no_progress) as bar:
        if is_generation_model(model):
            text_writer = TextWriter(stream, args.format, options["scores"])
            try:
                written = generate_stream(model, rows(), text_writer.write, options=options, batch_size=args.batch_size, progress=bar.update)
            finally:
                text_writer.close()
        else:
            writer = PredictionWriter(stream, args.format, task_of(model).predicted_names(model))
            try:
                written = predict_stream(model, rows(), writer.write, batch_size=args.batch_size, progress=bar.update)
            finally:
                writer.close()
    if args.output:
        print(f"wrote {written} prediction(s) to {args.output}", file=sys.stderr)
    return 0


DECODING_FLAGS = ("max_new_tokens", "num_beams", "do_sample", "temperature", "top_p", "top_k", "stop", "num_return_sequences", "scores")


def count_lines(path: str) -> int:
    """Lines in a file (the progress bar's total; a header or blank lines make it a slight overcount)."""
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[Any]:
    if path is None:
        yield sys.stdout
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    with stream:
        yield stream


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="row", desc="predict", file=sys.stderr, disable=not (enabled and sys.stderr.isatty()),
              dynamic_ncols=True) as bar:
        yield bar


def _export(args: argparse.Namespace) -> int:
    from .integrations.peft import export_peft

    summary = export_peft(args.prompt, args.output, overwrite=args.overwrite)
    print(f"exported: {summary.exported}")
    print(f"stays in openpt: {summary.stays}")
    print(f"wrote {summary.directory}")
    return 0


def _import_peft(args: argparse.Namespace) -> int:
    from .integrations.peft import import_peft

    output = import_peft(args.adapter, args.output, template=args.template, verbalizer=args.verbalizer,
                         backbone=args.backbone, max_length=args.max_length, overwrite=args.overwrite)
    print(f"wrote {output}")
    return 0
