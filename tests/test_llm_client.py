"""The LLM client against the real replay server with the real openai client: faults, retries, usage, cache."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import openai
import pytest

from automodel.agents.llm import llm_configured, make_llm_brain, resolve_config
from automodel.agents.llm.client import ChatClient, retry_after_seconds
from automodel.agents.llm.pricing import load_prices, price_for, price_table
from automodel.errors import LLMConfigError, LLMServiceError
from automodel.search.calls import save_calls
from automodel.testing.replay_server import ReplayServer, ScriptError, load_script

NOENV: dict[str, str] = {}  # tests never read the person's OPENAI_* variables
ASK = [{"role": "system", "content": "ROLE: analyst\nYou decide."}, {"role": "user", "content": "history"}]


def client_for(server: ReplayServer, **settings) -> ChatClient:
    settings.setdefault("backoff_base", 0.05)
    return ChatClient(resolve_config(model="gpt-4o-mini", base_url=server.base_url, env=NOENV, **settings))


def test_429_with_retry_after_is_honoured():
    with ReplayServer([{"status": 429, "retry_after": 0.6}, {"reply": "hello"}]) as server:
        chat = client_for(server)
        result = chat.complete("analyst", ASK)
        times = [r["time"] for r in server.requests]
    assert result.text == "hello"
    assert len(times) == 2 and times[1] - times[0] >= 0.6, "the second request must wait the server's Retry-After"
    rec = result.record
    assert rec.attempts == 2 and rec.waited_s == pytest.approx(0.6, abs=0.01) and rec.error is None


def test_500_dropped_connection_and_garbage_are_retried_with_backoff():
    with ReplayServer(
        [{"status": 500}, {"status": 503}, {"disconnect": True}, {"garbage": True}, {"reply": "fine"}]
    ) as server:
        result = client_for(server).complete("analyst", ASK)
        assert [r["action"].split(": ")[1] for r in server.requests] == [
            "status 500",
            "status 503",
            "disconnect",
            "garbage",
            "reply",
        ]
    assert result.text == "fine" and result.record.attempts == 5
    assert result.record.waited_s > 0


def test_hung_connection_times_out_and_is_retried():
    with ReplayServer([{"hang": 30}, {"reply": "after the hang"}]) as server:
        start = time.monotonic()
        result = client_for(server, timeout=0.5).complete("analyst", ASK)
        elapsed = time.monotonic() - start
    assert result.text == "after the hang"
    assert 0.5 <= elapsed < 5, f"the 0.5 s timeout should end the hang, took {elapsed:.1f}s"


def test_an_unreadable_200_answer_is_a_server_fault():
    with ReplayServer([{"garbage": True}] * 2) as server:
        with pytest.raises(LLMServiceError) as err:
            client_for(server, max_attempts=2).complete("analyst", ASK)
        assert len(server.requests) == 2
    assert "unreadable response" in str(err.value)


def test_retries_are_bounded_and_end_in_a_clear_error():
    with ReplayServer([{"status": 500}] * 3) as server:
        chat = client_for(server, max_attempts=3)
        with pytest.raises(LLMServiceError) as err:
            chat.complete("analyst", ASK)
        assert len(server.requests) == 3
    assert "failed the analyst request 3 times" in str(err.value) and "HTTP 500" in str(err.value)
    assert chat.calls[-1].error and chat.calls[-1].attempts == 3


def test_total_wait_is_capped_even_when_the_server_asks_for_more():
    with ReplayServer([{"status": 429, "retry_after": 120}, {"reply": "never reached"}]) as server:
        start = time.monotonic()
        with pytest.raises(LLMServiceError) as err:
            client_for(server, max_total_wait=5).complete("analyst", ASK)
        assert time.monotonic() - start < 3 and len(server.requests) == 1
    assert "retry budget" in str(err.value)


@pytest.mark.parametrize("status, says", [(401, "rejected the key"), (404, "Pass --model")])
def test_auth_and_unknown_model_are_configuration_errors_not_retried(status, says):
    with ReplayServer([{"status": status}, {"reply": "x"}]) as server:
        with pytest.raises(LLMConfigError) as err:
            client_for(server).complete("analyst", ASK)
        assert len(server.requests) == 1
    assert says in str(err.value)


def test_usage_cost_and_the_placeholder_key():
    with ReplayServer([{"reply": "ok", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}]) as server:
        chat = client_for(server)
        rec = chat.complete("analyst", ASK).record
        params = server.requests[0]["params"]
    assert (rec.prompt_tokens, rec.completion_tokens) == (1000, 500)
    assert rec.cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)  # gpt-4o-mini list price
    assert params["model"] == "gpt-4o-mini" and "max_tokens" not in params


def test_reply_cache_replays_a_run_offline_exactly(tmp_path):
    cache = tmp_path / "cache"
    with ReplayServer([{"reply": "first answer", "finish_reason": "stop"}]) as server:
        live = ChatClient(resolve_config(base_url=server.base_url, cache_dir=cache, env=NOENV))
        assert live.complete("analyst", ASK).text == "first answer"
    # No server, no key: only the cache answers, and it answers exactly.
    offline = ChatClient(resolve_config(cache_dir=cache, env=NOENV))
    again = offline.complete("analyst", ASK)
    assert again.text == "first answer" and again.record.cached and again.record.cost_usd == 0.0
    with pytest.raises(LLMConfigError) as err:
        offline.complete("analyst", ASK + [{"role": "user", "content": "something new"}])
    assert "has no reply for this analyst prompt" in str(err.value)


def test_no_key_and_no_server_says_how_to_fix_it():
    with pytest.raises(LLMConfigError) as err:
        make_llm_brain(env=NOENV)
    text = str(err.value)
    assert "OPENAI_API_KEY" in text and "--base-url http://localhost:8000/v1" in text and "--agent expert" in text
    assert not llm_configured(env=NOENV)
    assert llm_configured(env={"OPENAI_BASE_URL": "http://localhost:11434/v1"})
    assert llm_configured(base_url="http://localhost:8000/v1", env=NOENV)
    cfg = resolve_config(env={"OPENAI_API_KEY": "sk-test", "AUTOMODEL_LLM_MODEL": "gpt-4.1-mini"})
    assert cfg.model == "gpt-4.1-mini" and cfg.public()["api_key"] == "set"
    with pytest.raises(LLMConfigError):
        resolve_config(base_url="localhost:8000", env=NOENV)


def test_save_calls_writes_prompts_replies_and_an_index(tmp_path):
    with ReplayServer([{"reply": "one"}, {"reply": "two"}]) as server:
        brain = make_llm_brain(base_url=server.base_url, env=NOENV)
        brain.chat.complete("analyst", ASK)
        first = save_calls(brain.take_calls(), tmp_path, "analyst")
        brain.chat.complete("model_engineer", ASK)
        second = save_calls(brain.take_calls(), tmp_path, "engineer")
    folder = tmp_path / "llm"
    assert sorted(p.name for p in folder.iterdir()) == [
        "01_analyst_analyst.prompt.md",
        "01_analyst_analyst.reply.md",
        "02_engineer_model_engineer.prompt.md",
        "02_engineer_model_engineer.reply.md",
        "calls.jsonl",
    ]
    assert (folder / "02_engineer_model_engineer.reply.md").read_text() == "two"
    assert "## system\n\nROLE: analyst" in (folder / "01_analyst_analyst.prompt.md").read_text()
    lines = [json.loads(x) for x in (folder / "calls.jsonl").read_text().splitlines()]
    assert [x["file"] for x in lines] == ["01_analyst_analyst", "02_engineer_model_engineer"]
    assert lines[0]["prompt_tokens"] > 0 and lines[0]["attempts"] == 1
    assert first.calls == second.calls == 1 and brain.usage().calls == 2
    assert brain.usage().prompt_tokens == first.prompt_tokens + second.prompt_tokens


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert (
        0
        <= retry_after_seconds(
            {"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))}
        )
        <= 4
    )
    assert retry_after_seconds({"retry-after": "soon"}) is None


# ---- the price table


def test_price_table_knows_snapshots_and_takes_user_prices(tmp_path):
    assert price_for("gpt-4o-mini-2024-07-18", price_table(NOENV)) == price_for("gpt-4o-mini", price_table(NOENV))
    assert price_for("my-local-llama", price_table(NOENV)) is None
    table = price_table({"AUTOMODEL_PRICES": '{"my-local-llama": {"input": 0, "output": 0}, "gpt-4o": [1, 2]}'})
    assert price_for("my-local-llama", table).cost(10**6, 10**6) == 0
    assert price_for("gpt-4o", table).output == 2
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("qwen2.5-coder:\n  input: 0.1\n  output: 0.2\n")
    assert price_for("qwen2.5-coder", price_table({"AUTOMODEL_PRICES": str(yaml_file)})).input == 0.1
    bad = tmp_path / "bad.json"
    bad.write_text('{"m": {"input": "cheap"}}')
    with pytest.raises(LLMConfigError) as err:
        load_prices(bad)
    assert str(bad) in str(err.value) and "'m'" in str(err.value)


# ---- the replay server itself


def test_server_matches_steps_by_role_and_repeats_the_last_good_reply():
    script = {
        "roles": {"analyst": ["a1", {"reply": "a2-broken"}], "engineer": ["code"]},
        "steps": [{"role": "architect", "reply": "arch"}],
    }
    with ReplayServer(script) as server:
        oa = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)

        def ask(role):
            r = oa.chat.completions.create(
                model="m", messages=[{"role": "system", "content": f"ROLE: {role}"}, {"role": "user", "content": "hi"}]
            )
            return r.choices[0].message.content

        assert [
            ask("analyst"),
            ask("model_engineer"),
            ask("analyst"),
            ask("architect"),
            ask("analyst"),
            ask("data_engineer"),
        ] == ["a1", "code", "a2-broken", "arch", "a2-broken", "code"]
        with pytest.raises(openai.BadRequestError) as err:
            ask("summarizer")
        assert "no step left for role 'summarizer'" in str(err.value)
        assert [m.id for m in oa.models.list().data] == ["replay-model"]
        assert [r["role"] for r in server.requests_for("analyst")] == ["analyst"] * 3
        oa.close()


def test_truncated_step_and_exhausted_script_without_repeat():
    script = {"repeat_last": False, "steps": [{"reply": "0123456789", "truncate": 4}]}
    with ReplayServer(script) as server:
        oa = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        r = oa.chat.completions.create(model="m", messages=ASK)
        assert (r.choices[0].message.content, r.choices[0].finish_reason) == ("0123", "length")
        assert r.usage.completion_tokens == 1
        with pytest.raises(openai.BadRequestError):
            oa.chat.completions.create(model="m", messages=ASK)
        oa.close()


def test_bad_scripts_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ScriptError, match="neither a reply"):
        load_script([{"role": "analyst"}])
    with pytest.raises(ScriptError, match="unknown key"):
        load_script([{"reply": "x", "sleep": 3}])
    with pytest.raises(ScriptError, match="cannot read reply_file"):
        load_script([{"reply_file": "nope.md"}], base=tmp_path)


def test_server_runs_from_the_command_line(tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("- reply: from the command line\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automodel.testing.replay_server",
            "--script",
            str(script),
            "--port",
            str(port),
            "--log",
            str(tmp_path / "log.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "listening on" not in line:
            line = proc.stdout.readline()
            assert line, "the server exited before listening"
        url = re.search(r"listening on (\S+)", line).group(1)
        assert url == f"http://127.0.0.1:{port}/v1"
        oa = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        assert oa.chat.completions.create(model="m", messages=ASK).choices[0].message.content == "from the command line"
        oa.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])["role"] == "analyst"


def test_openai_environment_variables_are_honoured(monkeypatch):
    with ReplayServer(["via env"]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("AUTOMODEL_LLM_MODEL", "local-coder")
        brain = make_llm_brain()
        assert brain.name == "llm:local-coder" and brain.chat.complete("analyst", ASK).text == "via env"
        assert server.requests[0]["model"] == "local-coder"
    assert os.environ["OPENAI_BASE_URL"] == server.base_url
