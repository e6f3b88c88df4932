"""Service settings, read from ``PROMPTSHRINK_*`` environment variables (the CLI flags set the same variables)."""

from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from promptshrink import registry
from promptshrink.api import DEFAULT_METHOD
from promptshrink.question_split import DEFAULT_QUESTION_MARKERS

ENV_PREFIX = "PROMPTSHRINK_"


def _split(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def setting(default: Any = MISSING, *, doc: str, shown: str | None = None, factory: Any = MISSING) -> Any:
    """A ``Settings`` field with its documentation: ``doc`` says what it does, ``shown`` the default where the
    value itself does not say it (docs/service.md's table is generated from these: ``settings_table``)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc, "shown": shown})


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one service process; defaults suit a single small host."""

    host: str = setting("127.0.0.1", doc="address to bind; before binding beyond loopback set `PROMPTSHRINK_API_KEYS`")
    port: int = setting(8000, doc="port to bind (0: any free port, printed at start)")
    workers: int = setting(1, doc="uvicorn worker processes (not with `--ray`: use `--replicas`)")
    log_level: str = setting("info", doc="request text is only logged at `debug`")
    method: str = setting(
        DEFAULT_METHOD,
        doc="default method (its model is loaded once at start-up)",
    )
    model: str | None = setting(
        None,
        shown="method default",
        doc="the default method's model; with a method that takes none (`auto`, the baselines) refused at start",
    )
    device: str | None = setting(
        None,
        shown="`auto`",
        doc="where LM-scored methods run: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`",
    )
    api_keys: frozenset[str] = setting(
        factory=frozenset,
        doc="comma-separated keys; when set, every `/v1/*` call needs `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>` (compared in constant time)",
    )
    cors_origins: frozenset[str] = setting(factory=frozenset, doc="comma-separated allowed origins")
    compress_threads: int = setting(max(1, os.cpu_count() or 1), shown="CPU count", doc="compression threads")
    max_queue: int = setting(64, doc="how many more jobs may wait for a thread; beyond that: `503` + `Retry-After`")
    max_body_bytes: int = setting(1 << 20, shown="1 MiB", doc="largest request body (`413`)")
    max_batch_items: int = setting(64, doc="most items of one `/v1/compress/batch` request (`413`)")
    batch_wait_ms: float = setting(
        5.0,
        doc="micro-batching: concurrent text requests for an LM-scored method with the same budget wait up to "
        "this long for one batch (0 = off); `/metrics` has `promptshrink_batch_size` and "
        "`promptshrink_batch_wait_seconds`",
    )
    batch_max_tokens: int = setting(65536, doc="micro-batching: most (estimated) tokens of one batch")
    batch_max_items: int = setting(64, doc="micro-batching: most requests of one batch")
    request_timeout_s: float = setting(
        60.0,
        doc="compression time limit (`504`); the compression itself stops at its next window or stage and frees "
        "its thread",
    )
    header_timeout_s: float = setting(
        10.0,
        doc="slow senders (service/timeouts.py): the request headers must arrive within this (`408`, connection "
        "closed; see [reliability](reliability.md))",
    )
    body_timeout_s: float = setting(30.0, doc="slow senders: the whole body must arrive within this (`408`)")
    keep_alive_s: int = setting(5, doc="idle connections close after this")
    allowed_hosts: frozenset[str] = setting(
        factory=frozenset,
        shown="loopback names when bound to loopback, else any",
        doc="`Host` allow-list (`400 host_not_allowed`) against DNS rebinding",
    )
    retry_after_s: int = setting(1, doc="the `Retry-After` of a `503` (queue full, models loading)")
    allowed_options: frozenset[str] = setting(
        frozenset({"unit", "adaptive"}),
        doc="method options a request (and the proxy's policy) may set in `options` (adaptive: the budget as a "
        "ceiling)",
    )
    allow_hf_tokenizers: bool = setting(False, doc="whether requests may name `hf:` tokenizers")
    warmup: bool = setting(True, doc="load the allowed methods' models at start-up (`/readyz` answers 503 until then)")
    upstream_base_url: str | None = setting(None, doc="where the proxy forwards (e.g. `https://api.openai.com/v1`)")
    upstream_api_key: str | None = setting(
        None,
        doc="the server's upstream key, used only for callers authenticated with a service key; the server refuses "
        "to start with it and no `PROMPTSHRINK_API_KEYS`",
    )
    allow_anonymous_upstream_key: bool = setting(
        False,
        doc="opt-in: spend the server's upstream key for unauthenticated callers too (logs a warning at start-up)",
    )
    upstream_timeout_s: float = setting(120.0, doc="upstream call time limit (`504`)")
    max_upstream: int = setting(256, doc="most concurrent upstream calls")
    proxy_compress: bool = setting(True, doc="the proxy's default policy: whether to compress at all")
    proxy_method: str | None = setting(None, shown="server method", doc="the proxy's default policy: method")
    proxy_rate: float | None = setting(0.5, doc="the proxy's default policy: rate")
    proxy_target_tokens: int | None = setting(None, doc="the proxy's default policy: target tokens (instead of rate)")
    proxy_question_markers: frozenset[str] = setting(
        frozenset(DEFAULT_QUESTION_MARKERS),
        shown=", ".join(f"`{m}`" for m in DEFAULT_QUESTION_MARKERS),
        doc="comma-separated; what opens the trailing question/instruction the proxy keeps verbatim",
    )
    proxy_policies: str | None = setting(
        None, doc="JSON `{route: policy}` for every compressing proxy route (service/policy.py, docs/proxy.md)"
    )
    methods: frozenset[str] = setting(
        factory=frozenset,
        shown="default + proxy method + the model-free ones",
        doc="the methods requests may use (others: `422 method_not_allowed` naming these); their models load at "
        "start-up, no others ever",
    )
    load_wait_s: float = setting(
        10.0,
        doc="how long a request waits for its method's start-up load before `503 model_loading` + `Retry-After`",
    )
    public_metrics: bool = setting(False, doc="with keys set: whether `/metrics` answers without a key")
    public_docs: bool = setting(True, doc="with keys set: whether `/docs` and `/openapi.json` answer without a key")
    ray_address: str | None = setting(
        None,
        doc="Ray Serve (`promptshrink serve --ray`, service/ray_app.py): join this Ray cluster instead of starting one",
    )
    ray_replicas: int = setting(1, doc="Ray Serve: replicas (with autoscaling: the initial count)")
    ray_min_replicas: int | None = setting(
        None, shown="1", doc="Ray Serve autoscaling: fewest replicas (0 scales to zero)"
    )
    ray_max_replicas: int | None = setting(
        None, doc="Ray Serve autoscaling: most replicas; setting it turns autoscaling on"
    )
    ray_target_ongoing_requests: float = setting(
        2.0, doc="Ray Serve autoscaling target: requests in progress per replica"
    )
    ray_cpus_per_replica: float = setting(
        1.0,
        doc="Ray Serve: CPUs Ray reserves per replica (fractions allowed); a replica runs at most this many "
        "(rounded up) compression threads",
    )
    ray_gpus_per_replica: float = setting(0.0, doc="Ray Serve: GPUs Ray reserves per replica (fractions allowed)")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``PROMPTSHRINK_<FIELD>`` variables, then non-None ``overrides``."""
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw, cls.__dataclass_fields__[f.name].type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings (for uvicorn worker processes)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, frozenset):
                value = ",".join(sorted(value))
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out

    @property
    def effective_proxy_method(self) -> str:
        return self.proxy_method or self.method

    @property
    def allowed_methods(self) -> frozenset[str]:
        """Methods requests may use: ``methods`` if set, else the default and proxy methods plus the model-free
        ones (a caller must not make the server load models it was not started for)."""
        if self.methods:
            return self.methods
        model_free = {n for n in registry.method_names() if not registry.get_method(n).requires_lm}
        return frozenset({self.method, self.effective_proxy_method, *model_free})

    def method_options(self, method: str) -> dict[str, str]:
        """Server-side options for ``method``: the configured model for the default method."""
        return {"model": self.model} if self.model and method == self.method else {}


def _parse(name: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if "frozenset" in kind:
            return _split(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw


def _shown(f: Field[Any]) -> str:
    """How the table shows a field's default."""
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    value = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
    if value is None or value == frozenset():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, frozenset):
        return f"`{','.join(sorted(value))}`"
    if isinstance(value, float):
        return f"{value:g}"
    return f"`{value}`" if isinstance(value, str) else str(value)


def settings_table() -> str:
    """The markdown table of every setting (variable, default, meaning), from the fields' docs: docs/service.md
    holds it (a test keeps the two equal)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{ENV_PREFIX}{f.name.upper()}` | {_shown(f)} | {f.metadata['doc']} |" for f in fields(Settings)]
    return "\n".join(rows) + "\n"
