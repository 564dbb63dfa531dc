"""The ``skillsweep`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import EXIT_BUG, EXIT_INCOMPLETE, EXIT_REFUSED, IncompleteError, InputError, SkillsweepError

_verbose = False


class _App(typer.Typer):
    """The one place an error reaches the user: one line, and an exit code that says what
    happened (see harness.errors); ``skillsweep -v`` adds the traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except SkillsweepError as exc:
            _exit(exc, str(exc), exc.exit_code)
        except Exception as exc:
            _exit(exc, f"unexpected {type(exc).__name__}: {exc} (a bug in skillsweep; "
                       "`skillsweep -v ...` shows the traceback)", EXIT_BUG)


def _exit(exc: BaseException, message: str, code: int) -> None:
    if _verbose:
        traceback.print_exception(exc)
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


app = _App(no_args_is_help=True, add_completion=False,
           help="Evaluate procedural-skill fine-tuning on vLLM. Exit codes: 0 done, 1 incomplete "
                "(re-run to finish), 2 refused (bad input; nothing done), 3 a bug.")
models_app = typer.Typer(no_args_is_help=True, help="The local model store.")
adapters_app = typer.Typer(no_args_is_help=True, help="LoRA adapters on a running server.")
app.add_typer(models_app, name="models")
app.add_typer(adapters_app, name="adapters")
import_app = typer.Typer(no_args_is_help=True, help="Import runs from other tools.")
corpus_app = typer.Typer(no_args_is_help=True, help="SFT corpora.")
app.add_typer(corpus_app, name="corpus")
app.add_typer(import_app, name="import")
bench_app = typer.Typer(no_args_is_help=True, help="Benches: authoring with a teacher.")
app.add_typer(bench_app, name="bench")

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = EXIT_REFUSED) -> SkillsweepError:
    """An error for :class:`_App` to report: ``raise _fail(...)``."""
    return IncompleteError(message) if code == EXIT_INCOMPLETE else InputError(message)


def _require(ok: bool, option: str, value, accepted: str) -> None:
    """Refuse an option value before any work starts, naming the option and what is accepted."""
    if not ok:
        raise _fail(f"{option} {value!r}: expected {accepted}")


def _positive(**options: int | float | None) -> None:
    """Options (by parameter name) that must be >= 1 when given."""
    for name, value in options.items():
        _require(value is None or value >= 1, "--" + name.replace("_", "-"), value, "a number >= 1")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more; show tracebacks")] = False) -> None:
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- models

@models_app.command("prepare")
def models_prepare(
    names: Annotated[Optional[list[str]], typer.Argument(help="built-in model names (default: all)")] = None,
    force: Annotated[bool, typer.Option(help="rebuild even if present")] = False,
) -> None:
    """Materialise built-in models into the store (idempotent)."""
    from harness.models import BUILTIN_MODELS, ModelNotFound, prepare

    for name in names or list(BUILTIN_MODELS):
        try:
            path = prepare(name.removeprefix("local:"), force=force)
        except (ModelNotFound, FileNotFoundError) as exc:
            raise _fail(str(exc))
        console.print(f"{name}: {path}", highlight=False)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Built-in models: name, local path, size."""
    from harness.models import list_models

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


# ---------------------------------------------------------------- serving

def _parse_adapter(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise _fail(f"--adapter {spec!r}: expected NAME=PATH")
    return name, Path(path)


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
    _positive(max_lora_rank=max_lora_rank, max_loras=max_loras, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib)
    _require(port is None or 0 < port < 65536, "--port", port, "a TCP port, 1-65535")
    from harness.models import ModelNotFound, resolve, short_name
    from serve.adapters import AdapterError, inspect_adapter, replica_lora_capacity, validate_adapter
    from serve.registry import AdapterRegistry
    from serve.server import ServerSpec, ServerStartError, VLLMServer

    try:
        base = resolve(model)
    except (ModelNotFound, FileNotFoundError) as exc:
        raise _fail(str(exc))
    pairs = [_parse_adapter(a) for a in adapter or []]
    try:
        infos = [inspect_adapter(p) for _, p in pairs]
        capacity = replica_lora_capacity(base.location, [i.rank for i in infos], min_rank=16, extra=2)
        rank, slots = max_lora_rank or capacity.max_lora_rank, max_loras or capacity.max_loras
        for _, p in pairs:  # fail before a slow server start, not after
            validate_adapter(p, base, rank)
    except AdapterError as exc:
        raise _fail(str(exc))
    name = served_name or short_name(model)
    spec = ServerSpec(model=base.location, served_name=name, enable_lora=lora, max_lora_rank=rank,
                      max_loras=slots, max_cpu_loras=max(slots, capacity.max_cpu_loras),
                      max_model_len=max_model_len, kv_cache_gib=kv_cache_gib)
    server = VLLMServer(spec, port=port, base_identity=base.identity)
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and Python then
    # never raises KeyboardInterrupt, which would leave the server running.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    err.print(f"starting vLLM for {model} (log: see below once up)…", highlight=False)
    try:
        server.start()
    except ServerStartError as exc:
        raise _fail(str(exc))
    try:
        registry = AdapterRegistry(server.api_base, base, name, rank)
        table = Table("served name", "kind", "path")
        table.add_row(name, "base", base.location)
        for alias, path in pairs:
            loaded, report = registry.load(alias, path, check=check)
            table.add_row(loaded.served_name, "lora", loaded.path)
            if report and report.identical:
                err.print(f"[yellow]warning:[/] {escape(report.describe())}", highlight=False)
        console.print(table)
        # Stable lines for scripts that start the server and parse where it is.
        print(f"endpoint: {server.api_base}", flush=True)
        print(f"served: {' '.join(r for r in [name, *(a.served_name for a in registry.list())])}", flush=True)
        print(f"log: {server.log_path}", flush=True)
        while server.running():
            time.sleep(0.5)
        raise _fail(f"the vLLM server exited unexpectedly:\n{server.log_tail()}")
    except KeyboardInterrupt:
        err.print("stopping…")
    finally:
        server.stop()


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
    _require(bool(prompt.strip()), "PROMPT", prompt, "a non-empty prompt")
    _positive(max_tokens=max_tokens)
    _require(temperature >= 0, "--temperature", temperature, "a number >= 0")
    from harness.client import Sampling, build_messages, chat

    model = _served_model(url, model)
    try:
        result = chat(url, model, build_messages(prompt, system),
                      Sampling(temperature=temperature, max_tokens=max_tokens))
    except Exception as exc:  # litellm wraps transport and HTTP errors in many types
        raise _fail(f"{url} model {model}: {exc}")
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
    _positive(max_tokens=max_tokens)
    _require(temperature >= 0, "--temperature", temperature, "a number >= 0")
    from harness.client import Sampling, build_messages, chat

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
    from serve.registry import RegistryError

    try:
        return _registry(url).resolve_name(name, allow_base=True)
    except RegistryError as exc:
        raise _fail(str(exc))


@adapters_app.command("add")
def adapters_add(
    specs: Annotated[list[str], typer.Argument(help="NAME=PATH ...")],
    url: Annotated[str, typer.Option(help="server URL")],
    check: Annotated[bool, typer.Option(help="preflight against the base")] = True,
) -> None:
    """Validate and load adapters into a running server."""
    from serve.adapters import AdapterError
    from serve.registry import RegistryError

    registry = _registry(url)
    for spec in specs:
        alias, path = _parse_adapter(spec)
        try:
            loaded, report = registry.load(alias, path, check=check)
        except (AdapterError, RegistryError) as exc:
            raise _fail(str(exc))
        print(loaded.served_name)
        if report and report.identical:
            err.print(f"[yellow]warning:[/] {escape(report.describe())}", highlight=False)


@adapters_app.command("remove")
def adapters_remove(
    names: Annotated[list[str], typer.Argument(help="served names or unique aliases")],
    url: Annotated[str, typer.Option(help="server URL")],
) -> None:
    """Unload adapters from a running server."""
    from serve.registry import RegistryError

    registry = _registry(url)
    for name in names:
        try:
            print(f"removed {registry.unload(name)}")
        except RegistryError as exc:
            raise _fail(str(exc))


@adapters_app.command("list")
def adapters_list(
    url: Annotated[str, typer.Option(help="server URL")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Adapters loaded on a running server."""
    registry = _registry(url)
    loaded = registry.list()
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
    _positive(rank=rank)
    _require(scale >= 0, "--scale", scale, "a number >= 0")
    from harness.models import ModelNotFound, resolve
    from train.random_adapter import make_random_adapter

    try:
        base = resolve(model)
    except (ModelNotFound, FileNotFoundError) as exc:
        raise _fail(str(exc))
    print(make_random_adapter(base.location, out, rank=rank, seed=seed, scale=scale))


@app.command()
def generate(
    model: Annotated[str, typer.Option(help="model reference; with --url, a served name (base, adapter or alias)")],
    run: Annotated[str, typer.Option(help="run name under results/, or a path")],
    adapter: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH, repeatable (own server or hf)")] = None,
    bench: Annotated[str, typer.Option(help="'builtin', a native bench folder, or the study's files")] = "builtin",
    split: Annotated[str, typer.Option(help="eval, train or all")] = "eval",
    conditions: Annotated[str, typer.Option(help="comma-separated")] = "baseline,curated",
    url: Annotated[Optional[str], typer.Option(help="use a running server instead of starting one")] = None,
    backend: Annotated[str, typer.Option(help="vllm or hf (transformers generate, one at a time)")] = "vllm",
    base: Annotated[bool, typer.Option(help="also generate for the base model when adapters are given")] = True,
    max_tokens: int = 2048,
    repetition_penalty: float = 1.05,
    concurrency: int = 32,
    max_model_len: int = 4096,
) -> None:
    """Generate one greedy response per (task, condition, model) cell; re-running resumes."""
    from harness.bench import BenchError
    from harness.bench.model import SPLITS
    from harness.client import Sampling
    from harness.generation_job import GenerateRequest, run_generation
    from harness.models import ModelNotFound
    from harness.prompts import ConditionError, condition_names
    from harness.runstore import RunInUse
    from serve.adapters import AdapterError
    from serve.registry import RegistryError
    from serve.server import ServerStartError

    _require(backend in ("vllm", "hf"), "--backend", backend, "vllm or hf")
    _require(split in SPLITS, "--split", split, " or ".join(SPLITS))
    _positive(max_tokens=max_tokens, concurrency=concurrency, max_model_len=max_model_len)
    _require(repetition_penalty >= 0, "--repetition-penalty", repetition_penalty, "a number >= 0 (0: none)")
    try:
        names = condition_names(conditions)
    except ConditionError as exc:
        raise _fail(f"--conditions {conditions!r}: {exc}")
    request = GenerateRequest(
        run=run, model=model, adapters=[_parse_adapter(a) for a in adapter or []], bench=bench, split=split,
        conditions=names, include_base=base, url=url, backend=backend,
        sampling=Sampling(max_tokens=max_tokens, repetition_penalty=repetition_penalty or None),
        concurrency=concurrency, max_model_len=max_model_len)
    # Progress: one line per target every 15 s on stderr (harness.progress).
    try:
        summary = run_generation(request)
    except (BenchError, ModelNotFound, AdapterError, RegistryError, ServerStartError, RunInUse,
            ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    print(json.dumps(summary))
    if summary["missing"]:
        stats = summary["stats"]
        if stats["failed"] and not stats["done"]:
            first = (stats["errors"] or ["?"])[0]
            raise _fail(f"every request failed ({stats['failed']} cells; first: {first}); re-running will fail "
                        "the same way until that is fixed", EXIT_INCOMPLETE)
        raise _fail(f"{summary['missing']} cells have no episode (see manifest.json); re-run to retry them",
                    EXIT_INCOMPLETE)


_MODE_HELP = "det-mixed (extractor + LLM for FREE_FORM), llm-only, or deterministic (no LLM)"


@app.command()
def judge(
    run: Annotated[str, typer.Argument(help="run name under results/, or a path (any stored run)")],
    mode: Annotated[str, typer.Option(help=_MODE_HELP)] = "det-mixed",
    judge_model: Annotated[Optional[str], typer.Option("--judge", help="litellm model, e.g. hosted_vllm/NAME or openrouter/openai/gpt-5")] = None,
    label: Annotated[Optional[str], typer.Option(help="name of this verdict set (default: mode:model)")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="judge endpoint, e.g. http://127.0.0.1:8000/v1")] = None,
    concurrency: Annotated[int, typer.Option(help="most judge calls in flight (adapts down on 429)")] = 64,
    timeout: Annotated[float, typer.Option(help="seconds per judge call to an API model (a local hosted_vllm judge has no cap)")] = 60.0,
    max_attempts: int = 6,
    only_unscored: Annotated[bool, typer.Option(help="retry only verdicts that are unscored")] = False,
    bench: Annotated[Optional[str], typer.Option(help="bench, if the run's manifest names none")] = None,
    json_schema: Annotated[bool, typer.Option(help="ask the judge for schema-constrained JSON")] = True,
) -> None:
    """Judge a run's episodes into verdicts.parquet; verdicts already made are skipped.

    `rejudge` is the same command: a new --judge and --label add a verdict set beside the old."""
    from harness.bench import BenchError
    from harness.judging.fanout import RetryPolicy
    from harness.judging.job import JudgeRequest, run_judging
    from harness.runstore import RunInUse

    _positive(concurrency=concurrency, max_attempts=max_attempts)
    _require(timeout > 0, "--timeout", timeout, "seconds > 0")
    request = JudgeRequest(run=run, mode=mode, label=label, judge_model=judge_model, api_base=api_base,
                           concurrency=concurrency, policy=RetryPolicy(max_attempts=max_attempts, timeout_s=timeout),
                           only_unscored=only_unscored, bench=bench, json_schema=json_schema)
    try:
        summary = run_judging(request)
    except (BenchError, RunInUse, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    print(json.dumps(summary))
    stats = summary["stats"]
    if stats["llm_verdicts"] and stats["llm_call_failed"] == stats["llm_verdicts"]:
        reasons = ", ".join(stats["unscored_reasons"]) or "?"
        raise _fail(f"every judge call failed ({stats['llm_verdicts']} verdicts left unscored: {reasons}); check "
                    "--judge and --api-base, then re-run with --only-unscored", EXIT_INCOMPLETE)


app.command("rejudge", help="Judge any stored run again with another judge (same options as judge).")(judge)


@app.command()
def agreement(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_a: Annotated[str, typer.Option(help="verdict set label A")],
    judge_b: Annotated[str, typer.Option(help="verdict set label B")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Agreement of two verdict sets: kappa, raw agreement, 2x2 table, Δ shift, disagreements per skill."""
    from harness.judging.agreement import agreement as compute
    from harness.stats.job import load_verdicts

    verdicts = load_verdicts(run)
    try:
        result = compute(verdicts, judge_a, judge_b)
    except ValueError as exc:
        raise _fail(str(exc))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("model", "n", "agreement", "κ", "κ BL", "κ CU", "Δ A", "Δ B", "shift", "unscored")
    fmt = lambda v: "-" if v is None else f"{v:+.3f}" if isinstance(v, float) and v < 0 else f"{v:.3f}"
    for label, m in result["models"].items():
        table.add_row(label, str(m["n"]), fmt(m["agreement"]), fmt(m["kappa"]), fmt(m["kappa_baseline"]),
                      fmt(m["kappa_curated"]), fmt(m["delta_a"]), fmt(m["delta_b"]), fmt(m["delta_shift"]),
                      str(m["unscored_excluded"]))
    console.print(table)


@import_app.command("skillmix")
def import_skillmix_cmd(
    episodes: Annotated[Path, typer.Argument(help="the study's episodes.json")],
    model_label: Annotated[str, typer.Option(help="label of the model in this run")],
    judge_label: Annotated[str, typer.Option(help="label of the verdict set these episodes carry")],
    out: Annotated[str, typer.Option(help="run name under results/, or a path")],
    mode: Annotated[str, typer.Option(help="det-mixed or llm-only: how the study judged them")] = "det-mixed",
    tasks: Annotated[Optional[Path], typer.Option(help="tasks_eval.json: skills and query types")] = None,
    size: Annotated[Optional[str], typer.Option(help="model size label for plots, e.g. 2B")] = None,
    base: Annotated[Optional[str], typer.Option(help="base model id (default: from the episodes)")] = None,
    stage: Annotated[Optional[str], typer.Option(help="pre or post (default: post when the model has +lora:)")] = None,
) -> None:
    """Import the original study's episode log (several judge labels may share one run)."""
    from harness.importer import ImportError_, import_skillmix

    if mode not in ("det-mixed", "llm-only", "deterministic"):
        raise _fail(f"--mode {mode!r}: expected det-mixed, llm-only or deterministic")
    try:
        print(json.dumps(import_skillmix(episodes, out, model_label=model_label, judge_label=judge_label, mode=mode,
                                         tasks_json=tasks, size=size, base=base, stage=stage)))
    except ImportError_ as exc:
        raise _fail(str(exc))


@app.command()
def stats(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_label: Annotated[Optional[str], typer.Option("--judge", help="verdict set (needed when there are several)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    allow_path_mismatch: Annotated[bool, typer.Option(help="pair runs from different generation paths anyway")] = False,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples")] = 10_000,
    seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Paired statistics per model: pass rates, Δ, McNemar, bootstrap CI, decomposition, per skill, seeds."""
    from harness.pairing import PathMismatch
    from harness.stats.job import run_stats

    _require(bootstrap >= 100, "--bootstrap", bootstrap, "at least 100 resamples")
    try:
        result = run_stats(run, judge_label, allow_path_mismatch=allow_path_mismatch, n_boot=bootstrap, seed=seed)
    except (ValueError, FileNotFoundError, PathMismatch) as exc:
        raise _fail(str(exc))
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    table = Table("model", "n", "BL", "CU", "Δ", "McNemar (a,b,c,d)", "p", "method", "95% CI on Δ", "unscored")
    for label, m in result["models"].items():
        mc = m["mcnemar"]
        table.add_row(label, str(m["n"]), f"{m['baseline']['passed']} ({m['baseline']['rate']:.3f})",
                      f"{m['curated']['passed']} ({m['curated']['rate']:.3f})", f"{m['delta']:+.3f}",
                      f"{mc['a']},{mc['b']},{mc['c']},{mc['d']}", f"{mc['p']:.4g}", mc["method"],
                      f"[{m['delta_ci95'][0]:+.3f}, {m['delta_ci95'][1]:+.3f}]", str(m["unscored_excluded"]))
    console.print(f"judge: {result['judge']}")
    console.print(table)
    for d in result["decomposition"].values():
        console.print(f"SFT {d['pre']} → {d['post']}: ΔBL {d['delta_bl']:+.3f}, ΔCU {d['delta_cu']:+.3f}, "
                      f"Δ-lift {d['delta_lift']:+.3f} [{d['delta_lift_ci95'][0]:+.3f}, {d['delta_lift_ci95'][1]:+.3f}]")


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="run name or path")],
    judge_label: Annotated[Optional[str], typer.Option("--judge", help="verdict set for the main tables")] = None,
    judge_b: Annotated[Optional[str], typer.Option(help="second verdict set for the agreement table")] = None,
    allow_path_mismatch: bool = False,
) -> None:
    """Write report.md, report.html (self-contained), stats.json and PNG plots into the run folder."""
    from harness.pairing import PathMismatch
    from harness.report import render_report

    try:
        print(json.dumps(render_report(run, judge_label, judge_b, allow_path_mismatch)))
    except (ValueError, FileNotFoundError, PathMismatch) as exc:
        raise _fail(str(exc))


@app.command()
def view(
    run: Annotated[str, typer.Argument(help="run name or path")],
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: a free one)")] = 0,
) -> None:
    """Browse a run's cells, responses and verdicts in a local web page (127.0.0.1); Ctrl-C stops it."""
    from harness.browser.server import make_server

    try:
        server = make_server(run, port)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise _fail(str(exc))
    print(f"http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@corpus_app.command("build")
def corpus_build(
    teacher: Annotated[str, typer.Option(help="a litellm model (anthropic/…, openrouter/…) or, with --teacher-url, a served name")],
    out: Annotated[Path, typer.Option(help="corpus JSONL to write")],
    bench: Annotated[str, typer.Option(help="bench whose train split is traced")] = "builtin",
    teacher_url: Annotated[Optional[str], typer.Option(help="a running vLLM server serving the teacher")] = None,
    judge_model: Annotated[Optional[str], typer.Option("--judge", help="litellm judge model (default: deterministic only)")] = None,
    judge_api_base: Optional[str] = None,
    mode: Annotated[str, typer.Option(help="judge dispatch mode")] = "det-mixed",
    max_tokens: int = 2048,
    concurrency: int = 16,
) -> None:
    """Trace the train split with a teacher, judge the traces, keep the passing ones as chat rows."""
    _positive(max_tokens=max_tokens, concurrency=concurrency)
    from harness.client import Sampling
    from train.corpus import CorpusRequest, build_corpus

    try:
        summary = build_corpus(CorpusRequest(teacher=teacher, out=out, bench=bench, teacher_url=teacher_url,
                                             judge=judge_model, judge_api_base=judge_api_base, mode=mode,
                                             sampling=Sampling(max_tokens=max_tokens), concurrency=concurrency))
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    print(json.dumps(summary))


@app.command("probe-battery")
def probe_battery(
    model: Annotated[str, typer.Option(help="model reference; with --url, the base's served name there")],
    run: Annotated[str, typer.Option(help="run name under results/, or a path")],
    adapter: Annotated[Optional[list[str]], typer.Option(help="NAME=PATH (own server), or with --url a served name or alias; repeatable")] = None,
    url: Annotated[Optional[str], typer.Option(help="use a running server instead of starting one")] = None,
    battery: Annotated[str, typer.Option(help="'builtin' or a probes JSONL file")] = "builtin",
    judge_model: Annotated[Optional[str], typer.Option("--judge", help="litellm judge for factual references and trick prompts")] = None,
    judge_api_base: Optional[str] = None,
    max_tokens: int = 256,
    repetition_penalty: float = 1.05,
    concurrency: int = 32,
) -> None:
    """Run the generality probe battery on a base and its adapters, side by side; scores and paired tests."""
    from harness.bench import BenchError
    from harness.client import Sampling
    from harness.probes.job import ProbeRequest, run_probe_battery

    adapters = [_parse_adapter(a) for a in adapter or []] if not url else []
    try:
        summary = run_probe_battery(ProbeRequest(
            run=run, model=model, adapters=adapters, adapter_names=list(adapter or []) if url else [], url=url,
            battery=battery, judge_model=judge_model, judge_api_base=judge_api_base, concurrency=concurrency,
            sampling=Sampling(max_tokens=max_tokens, repetition_penalty=repetition_penalty or None)))
    except (BenchError, ValueError, FileNotFoundError, RuntimeError) as exc:
        raise _fail(str(exc))
    print(json.dumps(summary))
    if summary["missing"]:
        raise _fail(f"{summary['missing']} probe responses are missing (see manifest.json); re-run to retry them")


@bench_app.command("author")
def bench_author(
    skills: Annotated[Path, typer.Argument(help="declarative skills JSONL: name, category, description")],
    out: Annotated[Path, typer.Option(help="bench folder to write (native format); re-running resumes")],
    teacher: Annotated[str, typer.Option(help="a litellm model (anthropic/…, openrouter/…) or, with --teacher-url, a served name")],
    teacher_url: Annotated[Optional[str], typer.Option(help="a running vLLM server serving the teacher")] = None,
    tasks_per_skill: int = 15,
    mix: Annotated[str, typer.Option(help="query-type weights")] = "YES_NO=0.61,FREE_FORM=0.165,SINGLE_WORD=0.115,RANKING=0.11",
    eval_fraction: Annotated[float, typer.Option(help="share of each skill's tasks in the eval split")] = 1 / 3,
    seed: int = 0,
    temperature: float = 0.7,
    max_tokens: int = 2048,
    concurrency: int = 16,
    max_attempts: Annotated[int, typer.Option(help="teacher replies per unit that may fail to parse or validate")] = 3,
    json_schema: Annotated[bool, typer.Option(help="ask for schema-constrained JSON")] = True,
    sampling_seed: Annotated[bool, typer.Option(help="send the seed with each request (off for vLLM's CPU build at temperature > 0)")] = True,
    dedup_threshold: Annotated[float, typer.Option(help="MinHash Jaccard at or above which two tasks are near-duplicates")] = 0.8,
) -> None:
    """Procedural rewrite of each skill, then tasks per skill, split and de-duplicated: a native bench."""
    from harness.authoring.job import AuthorRequest, parse_mix, run_authoring
    from harness.bench import BenchError

    try:
        summary = run_authoring(AuthorRequest(
            skills_file=skills, out=out, teacher=teacher, teacher_url=teacher_url, tasks_per_skill=tasks_per_skill,
            mix=parse_mix(mix), eval_fraction=eval_fraction, seed=seed, temperature=temperature,
            max_tokens=max_tokens, concurrency=concurrency, max_attempts=max_attempts, json_schema=json_schema,
            sampling_seed=sampling_seed, dedup_threshold=dedup_threshold))
    except (BenchError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    print(json.dumps(summary))
    if summary["failed"]:
        raise _fail(f"{len(summary['failed'])} teacher unit(s) failed (see {out}/manifest.json); re-run to retry them")


@app.command()
def train(
    recipe_file: Annotated[Path, typer.Argument(help="recipe YAML (see eval_configs/recipes/)")],
    model: Annotated[Optional[str], typer.Option(help="override the recipe's base model, e.g. local:tiny-qwen3")] = None,
    seed: Annotated[Optional[int], typer.Option(help="train this seed only (default: the recipe's seeds)")] = None,
    out: Annotated[Path, typer.Option(help="folder for <recipe>-s<seed>/ outputs")] = Path("results/adapters"),
    corpus: Annotated[Optional[str], typer.Option(help="override the recipe's corpus")] = None,
) -> None:
    """Train a recipe (LoRA adapter or partial fine-tune) with TRL; writes training_meta.json beside it."""
    _require(seed is None or seed >= 0, "--seed", seed, "an integer >= 0")
    from train.recipe import RecipeError, load_recipe
    from train.template import TemplatePatchError
    from train.trainer import train_recipe

    try:
        recipe = load_recipe(recipe_file)
        metas = train_recipe(recipe, out, seeds=[seed] if seed is not None else None, model=model, corpus=corpus)
    except (RecipeError, TemplatePatchError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    for meta in metas:
        print(json.dumps({k: meta[k] for k in ("recipe_name", "method", "seed", "steps", "train_loss",
                                                "content_hash", "wall_s")}))


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="sweep config YAML")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    estimate: Annotated[bool, typer.Option("--estimate", help="estimate the makespan on --cluster")] = False,
    cluster: Annotated[str, typer.Option(help="GPUSxCLASS or NODESxGPUSxCLASS, e.g. 8xH100, 2x4xH100")] = "8xH100",
) -> None:
    """Validate a sweep config and print its plan: servers, trainings, targets, cells. No GPU needed.
    With --estimate, also its makespan on a GPU pool and the lower bound it is compared with."""
    from harness.estimate import estimate as estimate_makespan, parse_cluster
    from harness.sweep_config import ConfigError, load_config, make_plan

    try:
        planned = make_plan(load_config(config))
        described = planned.describe()
        if estimate:
            described["estimate"] = estimate_makespan(planned, parse_cluster(cluster)).describe()
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc))
    if as_json:
        print(json.dumps(described, indent=2))
        return
    console.print(f"sweep [bold]{described['sweep']}[/]: bench {described['bench']} ({described['split']}, "
                  f"{described['tasks']} tasks) × {', '.join(described['conditions'])}")
    table = Table("target", "kind", "max tokens")
    for t in described["targets"]:
        table.add_row(t["label"], t["kind"], str(t["max_tokens"]))
    console.print(table)
    for server in described["servers"]:
        console.print(f"server: {server}", highlight=False)
    for training in described["trainings"]:
        console.print(f"training: {training}", highlight=False)
    console.print(f"cells: {described['cells']}; verdicts: {described['verdicts']} "
                  f"({', '.join(j['label'] for j in described['judges'])})")
    if estimate:
        e = described["estimate"]
        console.print(f"estimate on {e['cluster']}: makespan {e['makespan_s']:.0f} s (replicas from free GPUs; "
                      f"{e['one_per_base_makespan_s']:.0f} s with one server per base); lower bound "
                      f"{e['lower_bound_s']:.0f} s (work {e['work_bound_s']:.0f} s, critical path "
                      f"{e['critical_path_s']:.0f} s); bound / makespan {e['bound_over_makespan']:.2f}", highlight=False)
        if e["left_out"]:
            console.print(f"left out (no GPU work): {', '.join(e['left_out'])}", highlight=False)


@app.command("run")
def run_sweep(
    config: Annotated[Path, typer.Argument(help="sweep config YAML")],
    run_name: Annotated[Optional[str], typer.Option("--run", help="run name (default: the config's name)")] = None,
    resume: Annotated[bool, typer.Option(help="continue an existing run; finished work is skipped")] = False,
    out: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    address: Annotated[Optional[str], typer.Option(help="Ray dashboard address of a running cluster")] = None,
) -> None:
    """Start (or join) a local Ray instance and submit the sweep as a Ray job; streams its log."""
    from jobs.submit import submit_sweep

    code = submit_sweep(config, run_name=run_name, resume=resume, out=out, address=address, echo=print)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
