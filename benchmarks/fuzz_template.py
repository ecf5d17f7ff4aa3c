"""Fuzz the template parser and formatter with a seeded random generator (no network, no hypothesis DB).

Three generators, ``--cases`` cases in all (default 12,000, split evenly):

* ``arbitrary``: random strings over an alphabet of tag characters (``[ ] { } \\ * # : ! "``, the
  letters of SOFT/MASK/text, digits, spaces, newlines) mixed with random Unicode; parse_template
  must either return segments or raise :class:`openpt.errors.SpecError` with line >= 1 and
  column >= 1; anything else (another exception type, a hang) is a failure. Parsed segments must
  format and re-parse to the same segments.
* ``mutated``: valid templates (inline and OpenPrompt syntax) with 1-4 random character edits
  (insert, delete, replace, swap): same checks.
* ``segments``: random segment lists (text with special characters, placeholders with and
  without ``!full``, masks, soft runs with length / init text / name); format -> parse must give the
  same (normalised) segments, and parse -> format -> parse must be stable.

    python benchmarks/fuzz_template.py --cases 12000 --seed 0

Exit status 1 when any case fails; the first failures are printed with their input.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from openpt.errors import SpecError  # noqa: E402
from openpt.template.parser import MAX_SOFT, format_template, merge_segments, parse_template  # noqa: E402
from openpt.template.segments import Mask, Placeholder, Segment, Soft, Text  # noqa: E402

TAGGY = list("[]{}\\*#:!\"', \n_") + list("SOFTMASKsoftmask") + list("0123456789") + ["text", "text_b", "SOFT", "MASK", "full"]
VALID = [
    "{text} It was [MASK].",
    "[SOFT*20] {text} It was [MASK].",
    "{text_a} Question: {text_b}? [MASK] , [SOFT:so] .",
    "[SOFT#p*4:It was] {text} [SOFT#p] [MASK] \\[literal\\] \\{x\\}",
    "{text!full} [SOFT:great movie] [MASK] [SOFT*2]",
    '{"placeholder":"text_a"} It was {"mask"}.',
    '{"soft": "It was"} {"placeholder":"text_a", "shortenable": false} {"mask"} {"soft": null, "duplicate": 3}',
    '{"meta": "text_b"} {"soft_id": 1} {"text": "so"} {"mask"}',
]


def random_unicode(rng: random.Random) -> str:
    ranges = [(0x20, 0x7E), (0xA0, 0x2FF), (0x370, 0x3FF), (0x4E00, 0x4E80), (0x1F600, 0x1F64F), (0x0, 0x1F), (0x2028, 0x2029)]
    low, high = rng.choice(ranges)
    return chr(rng.randint(low, high))


def arbitrary_text(rng: random.Random) -> str:
    parts = [rng.choice(TAGGY) if rng.random() < 0.8 else random_unicode(rng) for _ in range(rng.randint(0, 40))]
    return "".join(parts)


def mutated_text(rng: random.Random) -> str:
    chars = list(rng.choice(VALID))
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("insert", "delete", "replace", "swap"))
        i = rng.randrange(len(chars) + 1) if chars else 0
        if op == "insert" or not chars:
            chars.insert(i, rng.choice(TAGGY) if rng.random() < 0.7 else random_unicode(rng))
        elif op == "delete":
            del chars[min(i, len(chars) - 1)]
        elif op == "replace":
            chars[min(i, len(chars) - 1)] = rng.choice(TAGGY)
        elif len(chars) > 1:
            j = min(i, len(chars) - 2)
            chars[j], chars[j + 1] = chars[j + 1], chars[j]
    return "".join(chars)


def random_name(rng: random.Random) -> str:
    first = rng.choice("abcxyz_ABC")
    return first + "".join(rng.choice("abcxyz_0189") for _ in range(rng.randint(0, 6)))


def random_segments(rng: random.Random) -> list[Segment]:
    out: list[Segment] = []
    for _ in range(rng.randint(1, 10)):
        kind = rng.choice(("text", "text", "placeholder", "mask", "soft"))
        if kind == "text":
            out.append(Text("".join(rng.choice(TAGGY) if rng.random() < 0.5 else random_unicode(rng) for _ in range(rng.randint(1, 12)))))
        elif kind == "placeholder":
            out.append(Placeholder(rng.choice(["text", "text_b", random_name(rng)]), rng.random() < 0.7))
        elif kind == "mask":
            out.append(Mask())
        else:
            init = None if rng.random() < 0.5 else "".join(rng.choice(TAGGY + ["a", "b"]) for _ in range(rng.randint(1, 8)))
            length = rng.choice([None, 1, 2, rng.randint(1, MAX_SOFT)]) if init else rng.choice([1, 2, rng.randint(1, MAX_SOFT)])
            out.append(Soft(length, init, rng.choice([None, None, "p", "q", random_name(rng)])))
    return out


def normalise(segments: list[Segment]) -> tuple[Segment, ...]:
    """Merge adjacent texts and make every named soft run equal to its first occurrence."""
    first: dict[str, Soft] = {}
    out = []
    for seg in segments:
        if isinstance(seg, Soft) and seg.name is not None:
            seg = first.setdefault(seg.name, seg)
        out.append(seg)
    return merge_segments(out)


def check_text(text: str) -> str:
    """Outcome of one text case: ``parsed`` or ``spec_error``; raises AssertionError on a property violation."""
    try:
        segments = parse_template(text)
    except SpecError as exc:
        assert exc.line is not None and exc.line >= 1 and exc.column is not None and exc.column >= 1, f"unlocated SpecError: {exc}"
        assert "\n" not in str(exc).strip(), f"multi-line message: {exc!r}"
        return "spec_error"
    assert segments and all(isinstance(s, (Text, Placeholder, Mask, Soft)) for s in segments)
    formatted = format_template(segments)
    assert parse_template(formatted) == segments, f"round trip changed: {formatted!r}"
    return "parsed"


def check_segments(segments: list[Segment]) -> str:
    expected = normalise(segments)
    try:
        formatted = format_template(expected)
    except SpecError:
        return "spec_error"  # e.g. a field name the grammar cannot express; a clean refusal
    parsed = parse_template(formatted)
    assert parsed == expected, f"format -> parse changed {expected!r} into {parsed!r} via {formatted!r}"
    assert format_template(parsed) == formatted
    return "round_trip"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the summary as JSON here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    generators: dict[str, tuple[Callable[[random.Random], Any], Callable[[Any], str]]] = {
        "arbitrary": (arbitrary_text, check_text),
        "mutated": (mutated_text, check_text),
        "segments": (random_segments, check_segments),
    }
    outcomes: Counter[str] = Counter()
    failures: list[dict[str, str]] = []
    start = time.perf_counter()
    per = args.cases // len(generators)
    for name, (generate, check) in generators.items():
        for _ in range(per):
            case = generate(rng)
            try:
                outcomes[f"{name}:{check(case)}"] += 1
            except AssertionError as exc:
                outcomes[f"{name}:FAILED"] += 1
                failures.append({"generator": name, "input": repr(case), "problem": str(exc)})
            except Exception as exc:  # noqa: BLE001  -- the point of a fuzzer: any other exception is a finding
                outcomes[f"{name}:FAILED"] += 1
                failures.append({"generator": name, "input": repr(case), "problem": f"{type(exc).__name__}: {exc}"})
    seconds = time.perf_counter() - start
    summary = {"cases": per * len(generators), "seed": args.seed, "seconds": round(seconds, 2), "outcomes": dict(sorted(outcomes.items())),
               "failures": len(failures), "first_failures": failures[:10]}
    for key, count in sorted(outcomes.items()):
        print(f"{key:28s} {count:7d}")
    print(f"{summary['cases']} cases, {len(failures)} failures, {seconds:.1f}s (seed {args.seed})")
    for failure in failures[:10]:
        print(f"FAIL [{failure['generator']}] {failure['input']}: {failure['problem']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
