"""``POST /v1/generate``: the real server in a subprocess on a free loopback port, talked to over HTTP,
its answers checked against ``PromptModel.generate`` on the same saved prompts. Every load loop is
bounded in count and time."""
from __future__ import annotations

import concurrent.futures
import signal

import pytest
import torch

from openpt.model.saving import load_prompt
from openpt.types import InputExample

from .helpers import sharpened_copy
from .serve_helpers import ADMIN_KEY, Server, save_prompts
from .test_serve import TEXTS, expected, wait_for_queue

INPUTS = ["name[Aromi] area[riverside]", "name[Zizzi] food[Italian] priceRange[cheap] near[Cafe Rouge]", "name[Blue Spice]",
          "name[The Eagle] eatType[pub] customer rating[high]"]
API_KEY = "api-secret-key"
BATCH_ROWS = 8


@pytest.fixture(scope="module", params=["t5", "gpt2"])
def served(request, tmp_path_factory):
    """A server on a sharpened tiny T5 or GPT-2 holding two generation prompts and a classifier."""
    root = tmp_path_factory.mktemp(f"serve-generate-{request.param}")
    backbone = sharpened_copy(request.getfixturevalue(f"tiny_{request.param}_dir"), root / "backbone")
    saved = save_prompts(backbone, root / "prompts", ["describe", "prefixed", "sentiment"])
    server = Server([str(saved["describe"]), str(saved["prefixed"]), str(saved["sentiment"]), "--api-key", API_KEY, "--max-wait-ms", "20",
                     "--max-batch-rows", str(BATCH_ROWS), "--max-request-rows", "6", "--max-generate-tokens", "12",
                     "--max-generate-sequences", "4"])
    yield request.param, saved, server
    server.stop()


def client(server: Server):
    return server.client(headers={"X-API-Key": API_KEY})


def reference(directory, inputs, options, seed=None):
    """What ``PromptModel.generate`` gives for the same inputs and options (a seeded request: the
    server's batch size, ``max_batch_rows // max(num_beams, num_return_sequences)``, after ``manual_seed``)."""
    model = load_prompt(directory)
    examples = [InputExample(text) for text in inputs]
    if seed is None:
        return model.generate(examples, **options)
    torch.manual_seed(seed)
    expand = max(options.get("num_beams", 1), options.get("num_return_sequences", 1))
    return model.generate(examples, batch_size=BATCH_ROWS // expand, **options)


def check_same(answer, results, options):
    assert len(answer) == len(results)
    for got, want in zip(answer, results):
        assert got["text"] == want.text
        if len(want.texts) > 1:
            assert got["texts"] == want.texts
        if options.get("scores"):
            torch.testing.assert_close(torch.tensor(got.get("scores", [got["score"]])), torch.tensor(want.scores), atol=1e-4, rtol=0)


OPTIONS = [
    {"max_new_tokens": 8},  # greedy
    {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2, "scores": True},
    {"max_new_tokens": 8, "scores": True},
    {"max_new_tokens": 8, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_return_sequences": 2},
]


def test_generate_answers_equal_prompt_model_generate(served):
    kind, saved, server = served
    with client(server) as http:
        for name in ("describe", "prefixed"):
            for n, options in enumerate(OPTIONS):
                seed = 11 + n if options.get("do_sample") else None
                body = {"prompt": name, "inputs": [{"text": t} for t in INPUTS], **options, **({"seed": seed} if seed is not None else {})}
                response = http.post("/v1/generate", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["prompt"] == name
                check_same(response.json()["results"], reference(saved[name], INPUTS, options, seed), options)
            # stop strings: the greedy text up to the first stop string, stripped
            full = reference(saved[name], INPUTS[:1], {"max_new_tokens": 8})[0].text
            assert len(full) > 2, (kind, name, full)
            stop = full[len(full) // 2]
            options = {"max_new_tokens": 8, "stop": [stop]}
            answer = http.post("/v1/generate", json={"prompt": name, "inputs": [{"text": INPUTS[0]}], **options}).json()["results"]
            check_same(answer, reference(saved[name], INPUTS[:1], options), options)
            assert answer[0]["text"] == full[: full.index(stop)].strip() != full


def test_concurrent_clients_mixing_classify_and_generate_get_what_each_gives_alone(served):
    _, saved, server = served
    greedy, beams = OPTIONS[0], {"max_new_tokens": 5, "num_beams": 2}
    alone = {("describe", 0): reference(saved["describe"], INPUTS, greedy), ("describe", 1): reference(saved["describe"], INPUTS, beams),
             ("prefixed", 0): reference(saved["prefixed"], INPUTS, greedy)}
    probs = expected(saved["sentiment"], TEXTS)
    requests = [(["describe", "prefixed", "sentiment"][i % 3], i % 2, [i % 4, (i + 1) % 4][: 1 + i % 2]) for i in range(30)]

    def send(request):
        name, options, rows = request
        with client(server) as http:
            if name == "sentiment":
                return http.post("/v1/classify", json={"prompt": name, "inputs": [{"text": TEXTS[r]} for r in rows]})
            decoding = beams if options and name == "describe" else greedy
            return http.post("/v1/generate", json={"prompt": name, "inputs": [{"text": INPUTS[r]} for r in rows], **decoding})

    before = metric_values(server)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, requests, timeout=300))
    for (name, options, rows), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(rows)
        for r, result in zip(rows, results):
            if name == "sentiment":
                torch.testing.assert_close(torch.tensor(result["probabilities"]), probs[r], atol=1e-5, rtol=0)
            else:
                assert result["text"] == alone[(name, options if name == "describe" else 0)][r].text
    after = metric_values(server)
    grew = {key: after[key] - before.get(key, 0.0) for key in after}
    generated = [(name, options, rows) for name, options, rows in requests if name != "sentiment"]
    assert grew["openpt_generation_inputs_total"] == sum(len(rows) for _, _, rows in generated)
    tokens = sum(len(ids) for name, options, rows in generated for r in rows
                 for ids in alone[(name, options if name == "describe" else 0)][r].token_ids)
    assert grew["openpt_generated_tokens_total"] == tokens
    assert grew["openpt_generation_groups_total"] < len(generated)  # requests shared generate calls
    assert grew['openpt_request_seconds_count{route="/v1/generate"}'] == len(generated)
    assert grew['openpt_request_seconds_count{route="/v1/classify"}'] == len(requests) - len(generated)


def metric_values(server: Server) -> dict[str, float]:
    """Every sample of ``GET /metrics`` by its name and labels."""
    with client(server) as http:
        lines = http.get("/metrics").text.splitlines()
    return {key: float(value) for key, value in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))}


def test_bad_generate_requests_get_their_status_and_one_line(served):
    _, _, server = served
    one = [{"text": INPUTS[0]}]
    cases = [
        ({"prompt": "describe", "inputs": one}, 413, "max_new_tokens: 64 tokens (the prompt's saved default), at most 12 on this server"),
        ({"prompt": "nope", "inputs": one}, 404, "unknown prompt 'nope'"),
        ({"prompt": "sentiment", "inputs": one}, 422, "prompt 'sentiment' classifies (classification); it generates no text; use POST /v1/classify"),
        ({"prompt": "describe", "inputs": one, "num_beams": 0}, 422, "num_beams: expected a beam count >= 1, got 0"),
        ({"prompt": "describe", "inputs": one, "top_p": 1.5}, 422, "top_p: expected a number in (0, 1], got 1.5"),
        ({"prompt": "describe", "inputs": one, "num_return_sequences": 3}, 422,
         "num_return_sequences: without sampling, at most num_beams=1 sequences can be returned, got 3"),
        ({"prompt": "describe", "inputs": one, "stop": "x"}, 422, "stop: expected a list of non-empty strings or null"),
        ({"prompt": "describe", "inputs": one, "seed": 3}, 422, "seed: a seed only matters when sampling"),
        ({"prompt": "describe", "inputs": one, "seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
        ({"prompt": "describe", "inputs": one, "beams": 2}, 422, "beams: Extra inputs are not permitted"),
        ({"prompt": "describe", "inputs": one, "max_new_tokens": 13}, 413, "max_new_tokens: 13 tokens, at most 12 on this server"),
        ({"prompt": "describe", "inputs": one, "num_beams": 5, "max_new_tokens": 4}, 413, "num_beams: 5 sequences per input, at most 4 on this server"),
        ({"prompt": "describe", "inputs": one, "do_sample": True, "num_return_sequences": 6, "max_new_tokens": 4}, 413,
         "num_return_sequences: 6 sequences per input, at most 4 on this server"),
        ({"prompt": "describe", "inputs": one * 7}, 413, "7 inputs, at most 6"),
    ]
    with client(server) as http:
        for body, status, message in cases:
            response = http.post("/v1/generate", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"] and "\n" not in response.json()["error"], response.json()
        wrong = http.post("/v1/classify", json={"prompt": "describe", "inputs": one})
        assert wrong.status_code == 422 and wrong.json()["error"] == ("prompt 'describe' generates text; it has no classes to score; "
                                                                     "use POST /v1/generate")
        assert http.post("/v1/generate", json={"prompt": "describe", "inputs": one, "max_new_tokens": 2}).status_code == 200
        assert http.get("/v1/prompts").json()["prompts"] == [
            {"name": "describe", "task": "generation"}, {"name": "prefixed", "task": "generation"},
            {"name": "sentiment", "task": "classification", "labels": ["negative", "positive"]}]
    with server.client() as anonymous:
        assert anonymous.post("/v1/generate", json={"prompt": "describe", "inputs": one, "max_new_tokens": 4}).status_code == 401
    assert INPUTS[0] not in "".join(server.stderr)  # no request text in the log unless asked


def test_generation_unloaded_while_waiting_fails_alone_and_sigterm_drains(tmp_path, tiny_t5_dir):
    backbone = sharpened_copy(tiny_t5_dir, tmp_path / "backbone")
    saved = save_prompts(backbone, tmp_path / "prompts", ["describe", "prefixed", "sentiment"])
    server = Server([str(saved["describe"]), str(saved["prefixed"]), str(saved["sentiment"]), "--admin-key", ADMIN_KEY,
                     "--max-wait-ms", "2500", "--max-batch-rows", "256"])
    try:
        def send(n):
            name = ["describe", "prefixed", "sentiment"][n % 3]
            with server.client() as http:
                if name == "sentiment":
                    return http.post("/v1/classify", json={"prompt": name, "inputs": [{"text": TEXTS[0]}, {"text": TEXTS[1]}]})
                return http.post("/v1/generate", json={"prompt": name, "inputs": [{"text": INPUTS[0]}, {"text": INPUTS[1]}],
                                                       "max_new_tokens": 6})

        with concurrent.futures.ThreadPoolExecutor(9) as pool:
            futures = [pool.submit(send, n) for n in range(9)]
            wait_for_queue(server, 18)
            with server.client() as http:
                assert http.delete("/v1/prompts/prefixed", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
            server.process.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=120) for f in futures]
        texts = [r.text for r in reference(saved["describe"], INPUTS[:2], {"max_new_tokens": 6})]
        for n, response in enumerate(responses):
            if n % 3 == 1:
                assert response.status_code == 404 and "prompt 'prefixed' was unloaded" in response.json()["error"]
            elif n % 3 == 0:
                assert response.status_code == 200 and [r["text"] for r in response.json()["results"]] == texts
            else:
                assert response.status_code == 200 and len(response.json()["results"]) == 2
        assert server.wait(timeout=120) == 0
        assert "Traceback" not in "".join(server.stderr)
    finally:
        server.stop()
