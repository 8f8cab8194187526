"""The `vllm` backend of `llmops serve`: a supervised `vllm serve` subprocess, forwarded to over HTTP.

    sup = VLLMSupervisor(ws, "smollm2", VLLMSettings(max_lora_rank=16, max_loras=4))
    base_url = sup.start()          # exported model, process up, /health answering, adapters registered
    backend = sup.backend()         # an OpenAIBackend on the base model (`sup.backend("smollm2:qa@2")` for an adapter)
    sup.close()

What it does, in order:

1. **Export** the model version to a plain Hugging Face folder vLLM can read: a copy of the model's folder,
   or for a GGUF (the embedded SmolLM2) the de-quantised folder the transformers backend caches (made
   once if missing). The copy lives in `.llmops/cache/vllm/<name>-<digest>/`, written atomically; its
   files are hard links where the file system allows (the weights are never written), else copies.
2. **Start** `vllm serve FOLDER --host H --port P --served-model-name NAME --enable-lora --max-lora-rank R
   --max-loras N` (`command` and `args` are settings: tests run `python -m llmops.cli serve` in vLLM's
   place), with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` so the adapter routes exist, output to a log
   file, in its own process group. Start-up waits for `GET /health` to answer 200.
3. **Register** the workspace's adapters of that model (the latest version of each and every aliased
   one) through `POST /v1/load_lora_adapter` under the names the server forwards
   (`BASE:ADAPTER@N`), after checking each against vLLM's limits: LoRA only, rank at most
   `max_lora_rank`, target modules among the ones vLLM can adapt for the architecture, no DoRA, no
   `modules_to_save`. An adapter that fails is skipped and named in `refused` (and the log).
4. **Supervise**: a thread polls the process and `/health`; a process that exits, or stops answering
   `unhealthy_after` polls in a row, is killed and started again on the same port, with exponential
   backoff between failed starts, and the adapters are registered again.

Generation goes through `llmops.models.openai_backend.OpenAIBackend` (streaming included).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.errors import BackendError

if TYPE_CHECKING:
    from llmops.models.openai_backend import OpenAIBackend
    from llmops.store.registry import AssetVersion
    from llmops.workspace import Workspace

__all__ = ["LORA_RANKS", "VLLMSettings", "VLLMSupervisor", "adapter_problems", "export_model", "lora_name"]

log = logging.getLogger(__name__)

#: the values vLLM accepts for --max-lora-rank
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: modules vLLM's Llama-family models (Llama, Mistral, Qwen2, SmolLM2) can carry LoRA weights on
LLAMA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens", "lm_head")
VLLM_ARGS = ["{model}", "--host", "{host}", "--port", "{port}", "--served-model-name", "{name}", "--enable-lora",
             "--max-lora-rank", "{max_lora_rank}", "--max-loras", "{max_loras}"]


class VLLMSettings(BaseModel):
    """How the `vllm` backend starts and watches `vllm serve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(["vllm", "serve"], min_length=1, description="The program and its first words.")
    args: list[str] = Field(VLLM_ARGS, description="Arguments after `command`; {model} {host} {port} {name} "
                                                   "{max_lora_rank} {max_loras} are filled in.")
    extra_args: list[str] = Field(default_factory=list, description="More arguments, e.g. --gpu-memory-utilization 0.8.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of the process.")
    host: str = Field("127.0.0.1", description="Where the process listens (loopback: only llmops talks to it).")
    port: int | None = Field(None, ge=1, le=65535, description="Its port; a free one when unset.")
    max_lora_rank: int = Field(16, description=f"vLLM's --max-lora-rank, one of {LORA_RANKS}.")
    max_loras: int = Field(4, ge=1, le=1024, description="Adapters in one batch (vLLM's --max-loras).")
    target_modules: tuple[str, ...] = Field(LLAMA_MODULES, description="Modules vLLM can adapt for this model.")
    health_path: str = Field("/health", description="vLLM answers 200 here when ready.")
    startup_timeout_s: float = Field(900.0, gt=0, description="Longest wait for /health after a start.")
    health_interval_s: float = Field(2.0, gt=0, description="Seconds between health polls.")
    unhealthy_after: int = Field(3, ge=1, description="Failed polls in a row before the process is restarted.")
    backoff_s: float = Field(1.0, gt=0, description="First wait before restarting; doubles after each failed start.")
    max_backoff_s: float = Field(60.0, gt=0)
    api_key: str | None = Field(None, description="Sent as Bearer to the process (vLLM's --api-key, if set).")

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, value: int) -> int:
        if value not in LORA_RANKS:
            raise ValueError(f"vLLM accepts --max-lora-rank {', '.join(map(str, LORA_RANKS))}, not {value}")
        return value


def lora_name(model: "AssetVersion", adapter: "AssetVersion") -> str:
    """The name an adapter version is registered and requested under: `BASE:ADAPTER@N`."""
    return f"{model.name}:{adapter.name}@{adapter.version}"


def adapter_problems(config: dict, settings: VLLMSettings) -> list[str]:
    """Why vLLM (as configured) would refuse this adapter_config.json; empty when it would load it."""
    problems = []
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"rank r={rank!r} is not a positive integer")
    elif rank > settings.max_lora_rank:
        problems.append(f"LoRA rank {rank} is greater than max_lora_rank {settings.max_lora_rank} "
                        f"(start with max_lora_rank >= {rank})")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    unknown = sorted(t for t in targets if t.rsplit(".", 1)[-1] not in settings.target_modules)
    if unknown:
        problems.append(f"target modules {unknown} are not among those vLLM adapts ({', '.join(settings.target_modules)})")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"it is a {config.get('peft_type')} adapter, not LoRA")
    if config.get("use_dora"):
        problems.append("vLLM does not yet support DoRA")
    if config.get("modules_to_save"):
        problems.append("vLLM only supports modules_to_save being None")
    return problems


# -- export ---------------------------------------------------------------------------------------

def _model_folder(spec: dict) -> Path:
    """The Hugging Face folder of a transformers model spec (a GGUF's de-quantised cache, made if missing)."""
    from llmops.models.sources import resolve_source

    if spec.get("backend", "transformers") != "transformers":
        raise BackendError(f"the vllm backend serves local models; this model's backend is {spec.get('backend')!r}")
    source = resolve_source(spec.get("source", "smollm2"))
    if not source.is_gguf:
        return source.folder
    from llmops.models.transformers_backend import _converted_dir, _load_base

    converted = _converted_dir(source)
    if not converted.is_dir():
        log.info("de-quantising %s once for vLLM (it reads safetensors, not this GGUF)", source.model_id)
        _load_base(source)  # saves the de-quantised weights beside the transformers cache
    if not converted.is_dir():
        raise BackendError(f"could not save the de-quantised weights of {source.model_id} in {converted}; "
                           "check that the user cache folder is writable")
    return converted


def export_model(ws: "Workspace", model: "AssetVersion") -> Path:
    """A copy of the model's Hugging Face folder for vLLM, once per version (`.llmops/cache/vllm/`)."""
    from llmops.atomic import atomic_dir

    target = ws.home / "cache" / "vllm" / f"{model.name}-{model.digest[:16]}"
    if target.is_dir():
        return target
    folder = _model_folder(model.spec)
    with atomic_dir(target) as tmp:
        for item in folder.iterdir():
            if item.name.startswith(".") or item.suffix == ".gguf":
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(item, tmp / item.name)
    return target


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """A hard link where the file system allows it (weights are large and nobody writes them), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- the supervisor ---------------------------------------------------------------------------------

class VLLMSupervisor:
    """Starts, watches and restarts one `vllm serve` process for one model version of a workspace."""

    def __init__(self, ws: "Workspace", model: str | "AssetVersion" = "smollm2", settings: VLLMSettings | None = None):
        self.ws = ws
        self.settings = settings or VLLMSettings()
        self.model = model if hasattr(model, "digest") else self._model(model)
        self.port = self.settings.port or _free_port(self.settings.host)
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = self.root_url + "/v1"
        self.registered: dict[str, str] = {}   # lora name -> adapter folder
        self.refused: dict[str, str] = {}      # adapter ref -> why it was not registered
        self.restarts = 0
        self.state = "stopped"
        self.log_path = ws.home / "logs" / f"vllm-{self.port}.log"
        self._proc: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        import httpx

        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        self._http = httpx.Client(base_url=self.root_url, headers=headers, timeout=10.0)

    def _model(self, ref: str) -> "AssetVersion":
        from llmops.chains.steps import _model

        return _model(self.ws, ref)  # the embedded model is registered on first use, as a chain does

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> str:
        """Export, start, wait for health, register adapters, then supervise; returns the API root (…/v1)."""
        self._folder = export_model(self.ws, self.model)
        self._spawn()
        try:
            self._wait_healthy()
        except BackendError:
            self._kill()
            raise
        self.register_adapters()
        self.state = "healthy"
        self._thread = threading.Thread(target=self._supervise, name="llmops-vllm-supervisor", daemon=True)
        self._thread.start()
        return self.base_url

    def close(self) -> None:
        """Stop supervising and end the process (SIGTERM to its group, SIGKILL after 15 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self._kill()
        self._http.close()
        self.state = "stopped"

    def __enter__(self) -> "VLLMSupervisor":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def command(self) -> list[str]:
        s = self.settings
        values = {"model": str(self._folder), "host": s.host, "port": str(self.port), "name": self.model.name,
                  "max_lora_rank": str(s.max_lora_rank), "max_loras": str(s.max_loras)}
        return [*s.command, *(a.format(**values) for a in s.args), *s.extra_args]

    def backend(self, name: str | None = None) -> "OpenAIBackend":
        """An OpenAI backend on the process: the base model, or a registered adapter's name."""
        from llmops.models.openai_backend import OpenAIBackend

        return OpenAIBackend(self.base_url, name or self.model.name, api_key=self.settings.api_key, api_key_env=None)

    # the process ------------------------------------------------------------------------------------
    def _spawn(self) -> None:
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", **self.settings.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command
        log.info("starting %s (log: %s)", " ".join(cmd), self.log_path)
        with open(self.log_path, "ab") as out:
            try:
                self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env, start_new_session=True)
            except OSError as exc:
                raise BackendError(f"cannot start {cmd[0]!r}: {exc.strerror or exc}; install vLLM on this machine "
                                   "(pip install 'llmops[vllm]') or set the vllm command") from None
        self.registered = {}

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def healthy(self) -> bool:
        try:
            return self._http.get(self.settings.health_path).status_code == 200
        except Exception:
            return False

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                raise BackendError(f"{' '.join(self.command[:2])} exited with status {code} while starting; "
                                   f"the end of {self.log_path}:\n{self._log_tail()}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise BackendError(f"{self.root_url}{self.settings.health_path} did not answer within "
                           f"{self.settings.startup_timeout_s:g} s; see {self.log_path}")

    # adapters ---------------------------------------------------------------------------------------
    def adapters(self) -> list["AssetVersion"]:
        """The adapter versions to serve: of this model, the latest of each name and every aliased one."""
        from llmops.errors import NotFound

        out = []
        for latest in self.ws.registry.list("adapter"):
            try:
                versions = self.ws.registry.versions(f"adapter/{latest.name}")
            except NotFound:
                continue
            aliased = set(self.ws.registry.aliases(f"adapter/{latest.name}").values())
            for av in versions:
                base = (av.spec or {}).get("base") if isinstance(av.spec, dict) else None
                if (base or {}).get("ref") != self.model.ref:
                    continue
                if av.version == latest.version or av.version in aliased:
                    out.append(av)
        return out

    def register_adapters(self) -> dict[str, str]:
        """Check each adapter against vLLM's limits, then POST /v1/load_lora_adapter; returns name -> folder."""
        from llmops.finetune.adapters import adapter_folder
        from llmops.serve.lora_admin import LoraError, read_lora_config

        for av in self.adapters():
            name = lora_name(self.model, av)
            if name in self.registered:
                continue
            folder = adapter_folder(self.ws, av)
            try:
                problems = adapter_problems(read_lora_config(folder), self.settings)
            except LoraError as exc:
                problems = [exc.message or f"no adapter_config.json in {folder}"]
            if problems:
                self.refused[av.ref] = "; ".join(problems)
                log.warning("not registering %s with vLLM: %s", av.ref, self.refused[av.ref])
                continue
            r = self._http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)})
            if r.status_code == 200 or (r.status_code == 400 and "already been loaded" in r.text):
                self.registered[name] = str(folder)
                self.refused.pop(av.ref, None)
            else:
                self.refused[av.ref] = f"{self.root_url}/v1/load_lora_adapter answered {r.status_code}: {r.text[:300]}"
                log.warning("vLLM refused %s: %s", av.ref, self.refused[av.ref])
        return dict(self.registered)

    # supervision ------------------------------------------------------------------------------------
    def _supervise(self) -> None:
        s = self.settings
        failures = 0        # failed polls in a row
        failed_starts = 0   # failed restarts in a row
        while not self._stop.wait(s.health_interval_s):
            with self._lock:
                proc = self._proc
                if proc is not None and proc.poll() is None:
                    if self.healthy():
                        failures = 0
                        continue
                    failures += 1
                    if failures < s.unhealthy_after:
                        continue
                    why = f"{s.health_path} failed {failures} times in a row"
                else:
                    why = f"the process exited with status {proc.returncode if proc else None}"
                self.state = "restarting"
                log.error("vLLM at %s: %s; restarting (see %s)", self.root_url, why, self.log_path)
                self._kill()
                delay = min(s.backoff_s * (2 ** failed_starts), s.max_backoff_s)
                if self._stop.wait(delay):
                    return
                try:
                    self._spawn()
                    self._wait_healthy()
                    self.register_adapters()
                except Exception as exc:
                    failed_starts += 1
                    log.error("restarting vLLM failed (%s); trying again", str(exc).splitlines()[0])
                    continue
                failures, failed_starts = 0, 0
                self.restarts += 1
                self.state = "healthy"
