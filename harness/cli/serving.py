"""Serving commands: the model store, ``serve``, ``probe``, ``chat`` and adapters on a server."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import app, console, err, fail, group, parse_adapter, positive, refusing, require
from harness.client import Sampling, build_messages, chat
from harness.models import BUILTIN_MODELS, list_models, prepare, resolve, short_name

# serve.* (0.3 s: pydantic models, psutil) and train.* (torch, peft) are imported by the
# commands that use them: `skillsweep --help` and the other commands start without them.

models_app = group("models", "The local model store.")
adapters_app = group("adapters", "LoRA adapters on a running server.")


@models_app.command("prepare")
def models_prepare(
    names: Annotated[Optional[list[str]], typer.Argument(help="built-in model names (default: all)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even if present")] = False,
) -> None:
    """Materialise built-in models into the store (idempotent)."""
    for name in names or list(BUILTIN_MODELS):
        with refusing(FileNotFoundError):
            path = prepare(name.removeprefix("local:"), force=force)
        console.print(f"{name}: {path}", highlight=False)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Built-in models: name, local path, size."""
    entries = list_models()
    if as_json:
        print(json.dumps([{"name": e.name, "ref": f"local:{e.name}", "path": str(e.path),
                           "prepared": e.prepared, "size_bytes": e.size_bytes,
                           "description": e.description} for e in entries], indent=2))
        return
    table = Table("name", "prepared", "size", "path", "description")
    for e in entries:
        table.add_row(f"local:{e.name}", "yes" if e.prepared else "no",
                      f"{e.size_bytes / 2**20:.1f} MiB" if e.prepared else "-", str(e.path), e.description)
    console.print(table)


# Adapters `adapters add` may load into a `serve` server later: LoRA slots (and rank) kept for them.
ROOM_FOR = 2


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="local:<name>, a checkpoint path, or a hub id")],
    adapter: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH, repeatable")] = None,
    port: Annotated[Optional[int], typer.Option(help="default: a free port")] = None,
    served_name: Annotated[Optional[str], typer.Option(help="name of the base model on the endpoint")] = None,
    max_lora_rank: Annotated[Optional[int], typer.Option(help="default: derived from the adapters (at least 16)")] = None,
    max_loras: Annotated[Optional[int], typer.Option(help="GPU slots; default: the LoRA capacity rule")] = None,
    max_model_len: int = 4096,
    kv_cache_gib: Annotated[int, typer.Option(help="KV cache GiB on CPU builds")] = 1,
    lora: Annotated[bool, typer.Option(help="enable runtime LoRA")] = True,
    check: Annotated[bool, typer.Option(help="preflight each adapter against the base")] = True,
) -> None:
    """Start a vLLM server with adapters and keep it up until interrupted."""
    positive(max_lora_rank=max_lora_rank, max_loras=max_loras, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib)
    require(port is None or 0 < port < 65536, "--port", port, "a TCP port, 1-65535")
    from serve.serving import Serving, server_spec

    with refusing(FileNotFoundError):
        base = resolve(model)
    pairs = [parse_adapter(a) for a in adapter or []]
    name = served_name or short_name(model)
    spec = server_spec(base, name, pairs, room_for=ROOM_FOR, enable_lora=lora, max_lora_rank=max_lora_rank,
                       max_loras=max_loras, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib)
    serving = Serving(base, spec, port=port)
    server = serving.server
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and Python then
    # never raises KeyboardInterrupt, which would leave the server running.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    err.print(f"starting vLLM for {model} (log: see below once up)…", highlight=False)
    serving.start()
    try:
        table = Table("served name", "kind", "path")
        table.add_row(name, "base", base.location)
        for loaded, report in serving.load_all(pairs, check=check):
            table.add_row(loaded.served_name, "lora", loaded.path)
            if report and report.identical:
                err.print(f"[yellow]warning:[/] {escape(report.describe())}", highlight=False)
        console.print(table)
        # Stable lines for scripts that start the server and parse where it is.
        assert serving.registry is not None, "start() made it"
        print(f"endpoint: {server.api_base}", flush=True)
        print(f"served: {' '.join(r for r in [name, *(a.served_name for a in serving.registry.list())])}", flush=True)
        print(f"log: {server.log_path}", flush=True)
        while server.running():
            time.sleep(0.5)
        raise fail(f"the vLLM server exited unexpectedly:\n{server.log_tail()}")
    except KeyboardInterrupt:
        err.print("stopping…")
    finally:
        serving.stop()


@app.command()
def probe(
    prompt: Annotated[str, typer.Argument()],
    url: Annotated[str, typer.Option(help="server URL, e.g. http://127.0.0.1:8000")],
    model: Annotated[str, typer.Option(help="served name: base or adapter")],
    system: Annotated[Optional[str], typer.Option()] = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Answer one prompt (greedy by default). MODEL may be an adapter's alias."""
    require(bool(prompt.strip()), "PROMPT", prompt, "a non-empty prompt")
    positive(max_tokens=max_tokens)
    require(temperature >= 0, "--temperature", temperature, "a number >= 0")
    model = _served_model(url, model)
    try:
        result = chat(url, model, build_messages(prompt, system),
                      Sampling(temperature=temperature, max_tokens=max_tokens))
    except Exception as exc:  # litellm wraps transport and HTTP errors in many types
        raise fail(f"{url} model {model}: {exc}") from exc
    if as_json:
        print(json.dumps({"model": model, "text": result.text, "finish_reason": result.finish_reason,
                          "prompt_tokens": result.prompt_tokens,
                          "completion_tokens": result.completion_tokens,
                          "latency_s": round(result.latency_s, 4)}))
    else:
        print(result.text)


@app.command("chat")
def chat_cmd(
    url: Annotated[str, typer.Option(help="server URL")],
    model: Annotated[str, typer.Option(help="served name: base or adapter")],
    system: Annotated[Optional[str], typer.Option()] = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
) -> None:
    """Interactive chat. /system TEXT sets the system prompt, /reset clears, /exit quits."""
    positive(max_tokens=max_tokens)
    require(temperature >= 0, "--temperature", temperature, "a number >= 0")
    model = _served_model(url, model)
    history: list[dict] = []
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens)
    err.print(f"chatting with {model} at {url} (/exit to quit)", highlight=False)
    for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: console.input("[bold]> [/]"), None):
        line = line.rstrip("\n")
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history = []
            continue
        if line.startswith("/system"):
            system = line[len("/system"):].strip() or None
            history = []
            continue
        if not line.strip():
            continue
        try:
            reply = chat(url, model, build_messages(line, system, history), sampling)
        except Exception as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            continue
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": reply.text}]
        console.print(reply.text, highlight=False, markup=False)


# ---------------------------------------------------------------- adapters

def _registry(url: str):
    from serve.registry import AdapterRegistry

    return AdapterRegistry.connect(url)  # an unreachable server is a RegistryError naming the URL


def _served_model(url: str, name: str) -> str:
    return _registry(url).resolve_name(name, allow_base=True)


@adapters_app.command("add")
def adapters_add(
    specs: Annotated[list[str], typer.Argument(help="NAME=PATH ...")],
    url: Annotated[str, typer.Option(help="server URL")],
    check: Annotated[bool, typer.Option(help="preflight against the base")] = True,
) -> None:
    """Validate and load adapters into a running server."""
    registry = _registry(url)
    for spec in specs:
        alias, path = parse_adapter(spec)
        loaded, report = registry.load(alias, path, check=check)
        print(loaded.served_name)
        if report and report.identical:
            err.print(f"[yellow]warning:[/] {escape(report.describe())}", highlight=False)


@adapters_app.command("remove")
def adapters_remove(
    names: Annotated[list[str], typer.Argument(help="served names or unique aliases")],
    url: Annotated[str, typer.Option(help="server URL")],
) -> None:
    """Unload adapters from a running server."""
    registry = _registry(url)
    for name in names:
        print(f"removed {registry.unload(name)}")


@adapters_app.command("list")
def adapters_list(
    url: Annotated[str, typer.Option(help="server URL")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Adapters loaded on a running server."""
    loaded = _registry(url).list()
    if as_json:
        print(json.dumps([{"served_name": a.served_name, "alias": a.alias, "path": a.path,
                           "base": a.base} for a in loaded], indent=2))
        return
    table = Table("served name", "path", "base")
    for a in loaded:
        table.add_row(a.served_name, a.path, a.base)
    console.print(table)


@adapters_app.command("random")
def adapters_random(
    model: Annotated[str, typer.Option(help="base model reference")],
    out: Annotated[Path, typer.Option(help="adapter folder to write")],
    rank: int = 8,
    seed: int = 0,
    scale: Annotated[float, typer.Option(help="std of the random LoRA weights; 0 = PEFT's no-op init")] = 0.5,
) -> None:
    """Write a random-weight LoRA adapter for a base (pipeline checks, probes)."""
    positive(rank=rank)
    require(scale >= 0, "--scale", scale, "a number >= 0")
    from train.random_adapter import make_random_adapter

    with refusing(FileNotFoundError):
        base = resolve(model)
    print(make_random_adapter(base.location, out, rank=rank, seed=seed, scale=scale))
