"""A simulated vLLM engine: vLLM's OpenAI server API, timing from :mod:`serve.sim_model`.

It answers what skillsweep uses of a vLLM server: ``POST /v1/chat/completions`` (non-streaming),
``GET /v1/models`` (base and loaded adapters, with vLLM's ``root`` / ``parent`` fields),
``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``, ``GET /health`` and ``GET /metrics``
(vLLM's metric names). Replies are short deterministic strings (a schema-conforming JSON object
when the request asks for one) with token counts from the model's rules; *when* a reply comes
follows a step-by-step simulation of continuous batching on one GPU, scaled by ``time_scale``
(0.01 = a hundred times faster than the GPU it models), so the real orchestration code can run
at paper scale on a CPU machine.

    python -m serve.sim_engine --port P --gpu h100 --model-size 4b --time-scale 0.01 \
        --served-model-name NAME [--model PATH_OR_ID] [--max-loras N --max-cpu-loras M]

It takes vLLM's own server flags (unknown ones are ignored), so a vLLM command line with the
module swapped starts it. :class:`SimSpec` starts one through :class:`serve.server.VLLMServer`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from serve.sim_model import EngineParams, engine_params, output_tokens, prompt_tokens

# ------------------------------------------------------------------ the engine core


@dataclass(eq=False)
class SimRequest:
    model: str
    adapter: str | None
    prompt: int
    out_len: int
    done: asyncio.Future
    prefilled: int = 0
    generated: int = 0

    @property
    def decoding(self) -> bool:
        return self.prefilled >= self.prompt


@dataclass
class _Step:
    decoding: list[SimRequest]
    prefill: dict[SimRequest, int]
    duration: float  # virtual seconds
    admitted: int


class SimEngine:
    """Continuous batching as vLLM V1 schedules it: each step decodes one token for every running
    sequence and spends what is left of ``max_num_batched_tokens`` on prompt chunks, admitting
    waiting requests in order while there is room (``max_num_seqs``) and, for an adapter, a GPU
    slot (``max_loras`` distinct adapters per batch; a request whose adapter finds none waits,
    later ones may pass it). Adapters live in an LRU host cache of ``max_cpu_loras``; one not in
    it is read from disk again on use."""

    def __init__(self, params: EngineParams, time_scale: float, max_loras: int = 1,
                 max_cpu_loras: int | None = None):
        self.p = params
        self.scale = time_scale
        self.max_loras = max(1, max_loras)
        self.max_cpu_loras = max(self.max_loras, max_cpu_loras or self.max_loras)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.gpu_slots: OrderedDict[str, None] = OrderedDict()
        self.cpu_cache: OrderedDict[str, None] = OrderedDict()
        self.virtual_s = 0.0  # engine time simulated so far (busy time only)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = 0
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def submit(self, model: str, adapter: str | None, prompt: int, out_len: int) -> asyncio.Future:
        request = SimRequest(model, adapter, prompt, out_len, asyncio.get_running_loop().create_future())
        self.waiting.append(request)
        self._arrived.set()
        return request.done

    def forget(self, adapter: str) -> None:
        self.gpu_slots.pop(adapter, None)
        self.cpu_cache.pop(adapter, None)

    # -- one step, pure bookkeeping (no clock)
    def schedule(self) -> _Step:
        p = self.p
        budget = p.max_num_batched_tokens
        decoding = [r for r in self.running if r.decoding]
        budget -= len(decoding)
        prefill: dict[SimRequest, int] = {}
        for r in self.running:
            if not r.decoding and budget > 0:
                prefill[r] = min(r.prompt - r.prefilled, budget)
                budget -= prefill[r]
        active = {r.adapter for r in self.running if r.adapter}
        swaps = disk_loads = admitted = 0
        for r in list(self.waiting):
            if len(self.running) >= p.max_num_seqs or budget <= 0:
                break
            if r.adapter and r.adapter not in active and len(active) >= self.max_loras:
                continue
            self.waiting.remove(r)
            self.running.append(r)
            admitted += 1
            if r.adapter:
                active.add(r.adapter)
                if r.adapter not in self.cpu_cache:
                    disk_loads += 1
                self._touch(self.cpu_cache, r.adapter, self.max_cpu_loras, set())
                if r.adapter not in self.gpu_slots:
                    swaps += 1
                self._touch(self.gpu_slots, r.adapter, self.max_loras, active)
            prefill[r] = min(r.prompt, budget)
            budget -= prefill[r]
        lora = any(r.adapter for r in self.running)
        duration = p.step_s(len(decoding), sum(prefill.values()), lora, swaps) + disk_loads * p.adapter_load_s
        return _Step(decoding, prefill, duration, admitted)

    @staticmethod
    def _touch(cache: OrderedDict, key: str, size: int, keep: set) -> None:
        cache[key] = None
        cache.move_to_end(key)
        for old in list(cache):
            if len(cache) <= size:
                break
            if old not in keep:
                del cache[old]

    def apply(self, step: _Step, steps: int = 1) -> None:
        """Advance ``steps`` identical steps (more than one only for a decode-only step)."""
        for r in step.decoding:
            r.generated += steps
        self.generation_tokens += steps * len(step.decoding)
        for r, chunk in step.prefill.items():
            r.prefilled += chunk
            self.prompt_tokens += chunk
            if r.decoding:  # the step that completes a prompt samples its first token
                r.generated += 1
                self.generation_tokens += 1
        self.virtual_s += steps * step.duration
        still = []
        for r in self.running:
            if r.generated >= r.out_len:
                self.finished += 1
                if not r.done.done():
                    r.done.set_result(r.generated)
            else:
                still.append(r)
        self.running = still

    def repeatable(self, step: _Step) -> int:
        """How many times ``step`` recurs unchanged: until a sequence finishes, if it only decodes."""
        if step.prefill or step.admitted or not step.decoding:
            return 1
        return max(1, min(r.out_len - r.generated for r in step.decoding))

    # -- the clock
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        anchor_wall, anchor_v = loop.time(), self.virtual_s

        def wall_at(v: float) -> float:
            return anchor_wall + (v - anchor_v) * self.scale

        while True:
            self._arrived.clear()
            if not self.running and not self.waiting:
                await self._arrived.wait()
                anchor_wall, anchor_v = loop.time(), self.virtual_s
                continue
            step = self.schedule()
            start, span = self.virtual_s, step.duration * self.scale
            steps = self.repeatable(step)
            if steps > 1:  # sleep through the identical steps, but wake for an arrival
                try:
                    await asyncio.wait_for(self._arrived.wait(), max(0.0, wall_at(start + steps * step.duration)
                                                                     - loop.time()))
                    elapsed = loop.time() - wall_at(start)
                    steps = min(steps, max(1, math.ceil(elapsed / span))) if span > 0 else 1
                except asyncio.TimeoutError:
                    pass
            delay = wall_at(start + steps * step.duration) - loop.time()
            await asyncio.sleep(max(0.0, delay))
            self.apply(step, steps)
            if loop.time() - wall_at(self.virtual_s) > 1.0:
                # More than a second of wall time behind the model (Python cannot keep up at this
                # scale): stop trying to catch up, so no burst of instant steps follows.
                anchor_wall, anchor_v = loop.time(), self.virtual_s


# ------------------------------------------------------------------ the HTTP front end


def schema_instance(schema: dict):
    """A small value that satisfies a JSON schema of the kinds skillsweep asks for."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: schema_instance(props.get(k, {})) for k in schema.get("required", list(props))}
    if kind == "array":
        return [schema_instance(schema.get("items", {})) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind == "boolean":
        return True
    if kind in ("number", "integer"):
        return schema.get("minimum", 0)
    return None


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status)


@dataclass
class SimServerConfig:
    model: str
    served_name: str
    gpu: str = "h100"
    model_size: str = "4b"
    time_scale: float = 1.0
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_lora_rank: int = 16
    max_model_len: int = 4096
    max_num_seqs: int | None = None
    mean_output_tokens: int | None = None
    startup_s: float | None = None
    api_key: str | None = field(default=None, repr=False)

    def params(self) -> EngineParams:
        overrides = {k: v for k, v in (("max_num_seqs", self.max_num_seqs), ("startup_s", self.startup_s),
                                       ("mean_output_tokens", self.mean_output_tokens)) if v is not None}
        return engine_params(self.gpu, self.model_size, **overrides)


class SimServer:
    def __init__(self, config: SimServerConfig):
        self.config = config
        self.params = config.params()
        self.engine = SimEngine(self.params, config.time_scale, config.max_loras, config.max_cpu_loras)
        self.adapters: dict[str, str] = {}  # served name -> path
        self.created = int(time.time())
        self._ids = itertools.count()
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        self._running = Gauge("vllm:num_requests_running", "Requests in the batch", labels, registry=self.registry)
        self._waiting = Gauge("vllm:num_requests_waiting", "Requests waiting", labels, registry=self.registry)
        self._prompt = Counter("vllm:prompt_tokens", "Prefilled tokens", labels, registry=self.registry)
        self._generation = Counter("vllm:generation_tokens", "Generated tokens", labels, registry=self.registry)
        self._success = Counter("vllm:request_success", "Finished requests", labels, registry=self.registry)
        self._seen = {"prompt": 0, "generation": 0, "success": 0}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ping", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/load_lora_adapter", self.load_adapter)
        app.router.add_post("/v1/unload_lora_adapter", self.unload_adapter)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app) -> None:
        self.engine.start()

    async def _on_cleanup(self, _app) -> None:
        await self.engine.stop()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        key = self.config.api_key
        if key and request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def health(self, _request) -> web.Response:
        return web.Response(status=200)

    async def version(self, _request) -> web.Response:
        return web.json_response({"version": "sim", "params": asdict(self.params)})

    async def metrics(self, _request) -> web.Response:
        name = self.config.served_name
        e = self.engine
        self._running.labels(name).set(len(e.running))
        self._waiting.labels(name).set(len(e.waiting))
        for key, counter, value in (("prompt", self._prompt, e.prompt_tokens),
                                    ("generation", self._generation, e.generation_tokens),
                                    ("success", self._success, e.finished)):
            counter.labels(name).inc(value - self._seen[key])
            self._seen[key] = value
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    def _card(self, name: str, root: str, parent: str | None) -> dict:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "vllm", "root": root,
                "parent": parent, "max_model_len": self.config.max_model_len,
                "permission": [{"id": f"modelperm-{name}", "object": "model_permission", "created": self.created,
                                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                                "organization": "*", "group": None, "is_blocking": False}]}

    async def models(self, _request) -> web.Response:
        base = self.config.served_name
        data = [self._card(base, self.config.model, None)]
        data += [self._card(name, path, base) for name, path in self.adapters.items()]
        return web.json_response({"object": "list", "data": data})

    async def _json(self, request: web.Request) -> dict | web.Response:
        try:
            body = await request.json()
        except ValueError as exc:
            return _error(400, f"request body is not JSON: {exc}", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "BadRequestError")
        return body

    async def chat(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        model = body.get("model")
        if model != self.config.served_name and model not in self.adapters:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if body.get("stream"):
            return _error(400, "the simulated engine does not stream", "BadRequestError")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list", "BadRequestError")
        prompt = prompt_tokens(messages)
        limit = self.config.max_model_len
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or max(1, limit - prompt))
        if prompt + max_tokens > limit:
            return _error(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                               f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the "
                               "completion). Please reduce the length of the messages or completion.",
                          "BadRequestError")
        digest = hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()
        out_len = output_tokens(digest, int(max_tokens), self.params.mean_output_tokens)
        adapter = model if model in self.adapters else None
        generated = await self.engine.submit(model, adapter, prompt, out_len)
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            content = json.dumps(schema_instance((fmt.get("json_schema") or {}).get("schema") or {}))
        elif fmt.get("type") == "json_object":
            content = "{}"
        else:
            content = f"Simulated reply {digest[:12]} from {model}."
        return web.json_response({
            "id": f"chatcmpl-sim-{next(self._ids)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "tool_calls": []},
                         "logprobs": None, "finish_reason": "length" if generated >= max_tokens else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated},
        })

    async def load_adapter(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(400, "both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput")
        if name in self.adapters:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        config_file = Path(path) / "adapter_config.json"
        try:
            rank = int(json.loads(config_file.read_text()).get("r", 0))
        except (OSError, ValueError) as exc:
            return _error(404, f"Loading lora {name} failed: no adapter found at {path} ({exc})", "NotFoundError")
        if rank > self.config.max_lora_rank:
            return _error(400, f"LoRA rank {rank} is greater than max_lora_rank {self.config.max_lora_rank}.",
                          "BadRequestError")
        await asyncio.sleep(self.params.adapter_load_s * self.config.time_scale)
        self.adapters[name] = str(path)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_adapter(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("lora_name")
        if name not in self.adapters:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.adapters[name]
        self.engine.forget(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


# ------------------------------------------------------------------ starting one


@dataclass(frozen=True)
class SimSpec:
    """A simulated engine as :class:`serve.server.VLLMServer` starts it (same process handling,
    health wait and server record as a real vLLM server)."""

    model: str
    served_name: str
    gpu: str = "h100"
    model_size: str = "4b"
    time_scale: float = 1.0
    enable_lora: bool = True
    max_lora_rank: int = 16
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_model_len: int | None = 4096
    max_num_seqs: int | None = None
    mean_output_tokens: int | None = None
    startup_s: float | None = None
    dtype: str = "bfloat16"
    seed: int = 0
    kv_cache_gib: int = 1  # unused; read by serve.server.server_env
    cpu_bind: str | None = None  # unused; read by serve.server.server_env
    extra_args: tuple[str, ...] = ()
    # When the start-up began (seconds since the epoch; None: when the engine's process starts):
    # a replica's owner passes its own process's start. Not an engine argument: left out of them.
    started_at: float | None = None
    engine: str = field(default="sim", init=False)

    def engine_args(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "started_at"}

    def command(self, port: int, host: str = "127.0.0.1") -> list[str]:
        cmd = [sys.executable, "-m", "serve.supervise", sys.executable, "-m", "serve.sim_engine",
               "--model", self.model, "--served-model-name", self.served_name, "--host", host,
               "--port", str(port), "--gpu", self.gpu, "--model-size", self.model_size,
               "--time-scale", str(self.time_scale), "--max-lora-rank", str(self.max_lora_rank),
               "--max-loras", str(self.max_loras)]
        for flag, value in (("--max-cpu-loras", self.max_cpu_loras), ("--max-model-len", self.max_model_len),
                            ("--max-num-seqs", self.max_num_seqs), ("--startup-s", self.startup_s),
                            ("--mean-output-tokens", self.mean_output_tokens), ("--started-at", self.started_at)):
            if value is not None:
                cmd += [flag, str(value)]
        return cmd + list(self.extra_args)


def parse_args(argv: list[str] | None = None) -> tuple[SimServerConfig, argparse.Namespace]:
    """The simulated engine's configuration from its command line (vLLM's flag names where they exist)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the base's location, listed as its card's root (default: the served name)")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gpu", default="h100", help="GPU class: h100, h200, a100")
    parser.add_argument("--model-size", default="4b", help="parameters, e.g. 0.8b, 2b, 4b, 135m")
    parser.add_argument("--time-scale", type=float, default=1.0, help="wall seconds per simulated second")
    parser.add_argument("--max-loras", type=int, default=1)
    parser.add_argument("--max-cpu-loras", type=int)
    parser.add_argument("--max-lora-rank", type=int, default=16)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--mean-output-tokens", type=int)
    parser.add_argument("--startup-s", type=float, help="simulated start-up time (default: the model's)")
    parser.add_argument("--started-at", type=float,
                        help="when the start-up began, in seconds since the epoch (default: now)")
    parser.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    args, _ignored = parser.parse_known_args(argv)  # vLLM's other flags mean nothing here
    if args.time_scale <= 0:
        parser.error(f"--time-scale must be > 0, got {args.time_scale}")
    try:
        engine_params(args.gpu, args.model_size)
    except ValueError as exc:
        parser.error(str(exc))
    return SimServerConfig(
        model=args.model or args.served_model_name, served_name=args.served_model_name, gpu=args.gpu,
        model_size=args.model_size, time_scale=args.time_scale, max_loras=args.max_loras,
        max_cpu_loras=args.max_cpu_loras, max_lora_rank=args.max_lora_rank, max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs, mean_output_tokens=args.mean_output_tokens, startup_s=args.startup_s,
        api_key=args.api_key), args


def main(argv: list[str] | None = None) -> None:
    """Serve a simulated engine until stopped: ``python -m serve.sim_engine ...``."""
    config, args = parse_args(argv)
    server = SimServer(config)
    # Like vLLM, the port opens only once the engine is up. The modelled start-up includes
    # starting the process, so it counts from when its owner's did, when that is given.
    began = min(time.time(), args.started_at or time.time())
    time.sleep(max(0.0, began + server.params.startup_s * config.time_scale - time.time()))
    print(f"simulated engine {config.served_name} ({config.gpu}, {config.model_size}, time scale "
          f"{config.time_scale}) on http://{args.host}:{args.port}", flush=True)
    web.run_app(server.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
