"""``openpt serve``: the real server in a subprocess on a free loopback port, talked to over HTTP.
Every load loop is bounded in count and time."""
from __future__ import annotations

import concurrent.futures
import signal
import time

import pytest
import torch

from openpt.model.saving import load_prompt
from openpt.types import InputExample

from .helpers import sharpened_copy
from .serve_helpers import ADMIN_KEY, Server, save_prompts

TEXTS = ["a great and wonderful movie .", "this film was terrible and boring .", "good fun , nice film .", "an awful , bad movie .",
         "what a wonderful film .", "boring . bad . awful ."]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("serve")
    backbone = sharpened_copy(tiny_bert_dir, root / "backbone")
    saved = save_prompts(backbone, root / "prompts", ["sentiment", "deep", "pairs"])
    save_prompts(backbone, root / "library", ["sentiment"], seed=7)  # loadable at run time
    return root, saved


@pytest.fixture(scope="module")
def server(prompts):
    root, saved = prompts
    server = Server([str(saved["sentiment"]), str(saved["deep"]), str(saved["pairs"]), "--prompts-dir", str(root / "library"),
                     "--admin-key", ADMIN_KEY, "--max-wait-ms", "20", "--max-request-rows", "8", "--max-text-chars", "200"])
    yield server
    server.stop()


def expected(directory, texts, text_b=None):
    model = load_prompt(directory)
    return model.predict([InputExample(t, text_b) for t in texts])[1]


def test_concurrent_clients_with_mixed_prompts_get_what_predict_gives(server, prompts):
    _, saved = prompts
    alone = {name: expected(saved[name], TEXTS, "is it good ?" if name == "pairs" else None) for name in saved}
    requests = [(name, [i % len(TEXTS), (i + 1) % len(TEXTS)][: 1 + i % 2]) for i in range(36) for name in [list(saved)[i % 3]]]

    def send(request):
        name, rows = request
        inputs = [{"text": TEXTS[r], **({"text_b": "is it good ?"} if name == "pairs" else {})} for r in rows]
        with server.client() as client:
            return client.post("/v1/classify", json={"prompt": name, "inputs": inputs})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, requests, timeout=300))
    for (name, rows), response in zip(requests, responses):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["prompt"] == name and len(body["results"]) == len(rows)
        for r, result in zip(rows, body["results"]):
            torch.testing.assert_close(torch.tensor(result["probabilities"]), alone[name][r], atol=1e-5, rtol=0)
            assert result["label"] == body["labels"][int(alone[name][r].argmax())]
    with server.client() as client:
        metrics = client.get("/metrics").text
    batches = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("openpt_batches_total")))
    rows_total = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("openpt_rows_total")))
    assert rows_total >= sum(len(rows) for _, rows in requests) and batches < len(requests)  # requests shared batches


def test_bad_requests_get_their_status_and_one_line(server):
    with server.client() as client:
        cases = [
            ({"prompt": "nope", "inputs": [{"text": "x"}]}, 404, "unknown prompt 'nope'"),
            ({"prompt": "sentiment", "inputs": [{"text": "x"}] * 9}, 413, "9 inputs, at most 8"),
            ({"prompt": "sentiment", "inputs": [{"text": "x" * 201}]}, 413, "inputs[0].text: 201 characters"),
            ({"prompt": "sentiment"}, 422, "inputs: Field required"),
            ({"prompt": "sentiment", "inputs": [{"text": 3}]}, 422, "inputs.0.text"),
            ({"prompt": "sentiment", "inputs": [], "extra": 1}, 422, "extra"),
            ({"prompt": "pairs", "inputs": [{"text": "x"}]}, 422, "no field 'text_b'"),  # one bad row fails its request only
        ]
        for body, status, message in cases:
            response = client.post("/v1/classify", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"] and "\n" not in response.json()["error"]
        assert client.post("/v1/classify", content=b"{" * 2_000_000, headers={"content-type": "application/json"}).status_code == 413
        assert client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
        assert client.post("/v1/classify", json={"prompt": "sentiment", "inputs": [{"text": "fine"}]}).status_code == 200
        assert client.get("/health").json() == {"status": "ok", "prompts": 3, "queued_rows": 0}
        assert [p["name"] for p in client.get("/v1/prompts").json()["prompts"]] == ["deep", "pairs", "sentiment"]


def test_admin_routes_load_only_from_the_prompts_dir_and_unload(server, prompts):
    root, _ = prompts
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with server.client() as client:
        assert client.post("/v1/prompts", json={"name": "extra", "path": "sentiment"}).status_code == 401
        assert client.post("/v1/prompts", json={"name": "extra", "path": "sentiment"}, headers={"X-API-Key": "wrong"}).status_code == 401
        for path in ("../prompts/deep", str(root / "prompts" / "deep"), "missing"):
            response = client.post("/v1/prompts", json={"name": "extra", "path": path}, headers=admin)
            assert response.status_code == 422, response.text
        response = client.post("/v1/prompts", json={"name": "extra", "path": "sentiment"}, headers=admin)
        assert response.status_code == 201 and response.json()["labels"] == ["negative", "positive"]
        assert client.post("/v1/prompts", json={"name": "extra", "path": "sentiment"}, headers=admin).status_code == 409
        answer = client.post("/v1/classify", json={"prompt": "extra", "inputs": [{"text": TEXTS[0]}]}).json()
        torch.testing.assert_close(torch.tensor(answer["results"][0]["probabilities"]),
                                   expected(root / "library" / "sentiment", TEXTS[:1])[0], atol=1e-5, rtol=0)
        assert client.delete("/v1/prompts/extra").status_code == 401
        assert client.delete("/v1/prompts/extra", headers=admin).status_code == 200
        assert client.delete("/v1/prompts/extra", headers=admin).status_code == 404
        assert client.post("/v1/classify", json={"prompt": "extra", "inputs": [{"text": "x"}]}).status_code == 404


def slow_server(saved, *extra: str) -> Server:
    """A server whose batches wait 2.5 s for more requests (so requests are seen waiting)."""
    return Server([str(saved["sentiment"]), str(saved["deep"]), "--admin-key", ADMIN_KEY, "--max-wait-ms", "2500",
                   "--max-batch-rows", "256", *extra])


def wait_for_queue(server: Server, rows: int, timeout: float = 60.0) -> None:
    """Return once ``rows`` rows wait in the server's queue (fail after ``timeout`` seconds)."""
    with server.client() as client:
        deadline = time.monotonic() + timeout
        while client.get("/health").json()["queued_rows"] < rows:
            assert time.monotonic() < deadline, f"{rows} rows never waited in the queue"
            time.sleep(0.05)


def test_unloading_a_prompt_while_its_requests_wait_fails_only_those(prompts):
    _, saved = prompts
    server = slow_server(saved)
    try:
        def send(name):
            with server.client() as client:
                return client.post("/v1/classify", json={"prompt": name, "inputs": [{"text": TEXTS[0]}, {"text": TEXTS[1]}]})

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(send, name) for name in ["sentiment", "deep"] * 3]
            wait_for_queue(server, 12)
            with server.client() as client:
                assert client.delete("/v1/prompts/deep", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
            responses = [f.result(timeout=120) for f in futures]
        alone = expected(saved["sentiment"], TEXTS[:2])
        for name, response in zip(["sentiment", "deep"] * 3, responses):
            if name == "deep":
                assert response.status_code == 404 and "unloaded" in response.json()["error"]
            else:
                assert response.status_code == 200
                torch.testing.assert_close(torch.tensor([r["probabilities"] for r in response.json()["results"]]), alone, atol=1e-5, rtol=0)
    finally:
        server.stop()


def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(prompts):
    _, saved = prompts
    server = slow_server(saved)
    try:
        def send(n):
            with server.client() as client:
                return client.post("/v1/classify", json={"prompt": ["sentiment", "deep"][n % 2], "inputs": [{"text": TEXTS[n % 6]}] * 2})

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(send, n) for n in range(10)]
            wait_for_queue(server, 20)
            server.process.send_signal(signal.SIGTERM)
            responses = [f.result(timeout=120) for f in futures]
        assert [r.status_code for r in responses] == [200] * 10
        assert all(len(r.json()["results"]) == 2 for r in responses)
        assert server.wait(timeout=120) == 0
        assert "Traceback" not in "".join(server.stderr)
    finally:
        server.stop()


def test_binding_beyond_loopback_needs_an_api_key(prompts, monkeypatch):
    monkeypatch.delenv("OPENPT_API_KEY", raising=False)
    from openpt.cli import main

    _, saved = prompts
    assert main(["serve", str(saved["sentiment"]), "--host", "0.0.0.0"]) == 2
