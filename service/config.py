"""Service settings, read from ``PROMPTSHRINK_*`` environment variables (the CLI flags set the same variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from promptshrink import registry
from promptshrink.api import DEFAULT_METHOD
from promptshrink.question_split import DEFAULT_QUESTION_MARKERS

ENV_PREFIX = "PROMPTSHRINK_"


def _split(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one service process; defaults suit a single small host."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    method: str = DEFAULT_METHOD
    model: str | None = None
    device: str | None = None
    api_keys: frozenset[str] = field(default_factory=frozenset)
    cors_origins: frozenset[str] = field(default_factory=frozenset)
    compress_threads: int = max(1, os.cpu_count() or 1)
    max_queue: int = 64
    max_body_bytes: int = 1 << 20
    max_batch_items: int = 64
    batch_wait_ms: float = 5.0
    batch_max_tokens: int = 65536
    batch_max_items: int = 64
    request_timeout_s: float = 60.0
    # slow senders (service/timeouts.py): request headers, then the whole body, must arrive within these
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: int = 5
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)  # empty: loopback names when bound to loopback
    retry_after_s: int = 1
    allowed_options: frozenset[str] = frozenset({"unit", "adaptive"})  # adaptive: the budget as a ceiling
    allow_hf_tokenizers: bool = False
    warmup: bool = True
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    allow_anonymous_upstream_key: bool = False
    upstream_timeout_s: float = 120.0
    max_upstream: int = 256
    proxy_compress: bool = True
    proxy_method: str | None = None
    proxy_rate: float | None = 0.5
    proxy_target_tokens: int | None = None
    proxy_question_markers: frozenset[str] = frozenset(DEFAULT_QUESTION_MARKERS)
    proxy_policies: str | None = None  # JSON {route: policy} for the compressing proxy routes (policy.py)
    methods: frozenset[str] = field(default_factory=frozenset)
    load_wait_s: float = 10.0
    public_metrics: bool = False
    public_docs: bool = True
    # Ray Serve (`promptshrink serve --ray`, service/ray_app.py): replicas, resources per replica, autoscaling.
    ray_address: str | None = None
    ray_replicas: int = 1
    ray_min_replicas: int | None = None
    ray_max_replicas: int | None = None
    ray_target_ongoing_requests: float = 2.0
    ray_cpus_per_replica: float = 1.0
    ray_gpus_per_replica: float = 0.0

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
