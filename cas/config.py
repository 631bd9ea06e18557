"""Settings: one frozen tree, loaded once in the CLI (TOML file < CAS_* env < flags).

Only this module reads the environment. Constructors take their own slice
(``settings.chunker``, ``settings.server`` ...). Chunker and codec values given
here only matter when a store is created; afterwards the index's record wins
and a different explicit request is a ``ConfigError``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .chunker import ChunkerParams
from .codec import CodecParams
from .errors import ConfigError


def parse_size(text: str | int) -> int:
    """'64K', '4MiB', '1g', '65536' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(i?b)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"not a size: {text!r}")
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " ")


def parse_duration(text: str | int | float) -> float:
    """'0', '90s', '15m', '1h', '7d' -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 0, 90s, 15m, 1h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://cas:***@host/db``): safe to print."""
    return re.sub(r"^([a-z0-9+.-]+://[^:@/]*):[^@/]*@", r"\1:***@", url, flags=re.IGNORECASE)


def parse_addr(text: str) -> tuple[str, int]:
    """'HOST:PORT' or ':PORT' -> (host, port)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"not an address: {text!r} (use HOST:PORT)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


@dataclass(frozen=True)
class BlocksSettings:
    """Where blocks live: ``local`` (DIR/blocks) or ``s3://bucket/prefix``."""

    url: str = "local"
    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    concurrency: int = 8
    retries: int = 5
    pack_size: int = 32 << 20  # target size of a pack (DESIGN §8; docs/design.md says why 32 MiB)


@dataclass(frozen=True)
class IndexSettings:
    """Where the index lives: empty ``url`` is the embedded LMDB in ``DATA/index``;
    ``postgresql://USER:PASS@HOST:PORT/DB`` a PostgreSQL database several nodes may share."""

    url: str = ""
    map_size: int = 1 << 40  # sparse; LMDB grows the file as needed
    pool_size: int = 16  # PostgreSQL connections per process (a transaction holds one)

    @property
    def remote(self) -> bool:
        return is_postgres_url(self.url)


#: the default of ``server.cors_origins``: browser pages served from this machine only
LOOPBACK_ORIGINS = (
    "http://localhost:*", "https://localhost:*", "http://127.0.0.1:*", "https://127.0.0.1:*",
    "http://[::1]:*", "https://[::1]:*",
)


@dataclass(frozen=True)
class ServerSettings:
    s3: tuple[str, int] = ("127.0.0.1", 9000)
    http: tuple[str, int] = ("127.0.0.1", 8080)
    threads: int = 64  # workers per listener: concurrent requests, not open connections
    head_timeout: float = 10.0  # to receive a complete request head
    max_conns_per_ip: int = 64  # open connections per source address and listener (0: no cap)
    tls_cert: str | None = None
    tls_key: str | None = None
    domain: str | None = None
    cors_origins: tuple[str, ...] = LOOPBACK_ORIGINS  # S3 CORS; "*" any, "none" none
    access_log: bool = True


@dataclass(frozen=True)
class GcSettings:
    min_age: float = 3600.0
    interval: float = 0.0
    pin_lease: float = 600.0
    upload_expiry: float = 7 * 86400.0


@dataclass(frozen=True)
class MetaSettings:
    """The metadata log (``cas.meta``, docs/design.md "Metadata log") and journal retention."""

    #: keep the log at all (off: names live only in the index, and ``cas recover`` cannot bring
    #: them back from the backend; for scratch stores and for measuring what the log costs)
    log: bool = True
    #: ship log records to the backend this often; 0: each commit waits until its records are there
    interval: float = 5.0
    #: write a compacted snapshot after this many records shipped since the last one ...
    snapshot_every: int = 10_000
    #: ... and at least this often (when anything changed)
    snapshot_interval: float = 86400.0
    #: keep journal events (``cas events``, ``/api/events``) this long; 0: keep them all
    events_keep: float = 30 * 86400.0


@dataclass(frozen=True)
class AuthSettings:
    root_user: str | None = None
    root_password: str | None = None
    allow_anonymous: bool = False
    jwt_ttl: float = 3600.0
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_user_claim: str = "preferred_username"
    #: the value of ``oidc_user_claim`` that stands for the root user (unset: no OIDC token is root)
    oidc_root: str | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    codec: CodecParams = field(default_factory=CodecParams)
    #: whether chunker/codec were asked for explicitly (then they must match an existing store)
    explicit_format: bool = False
    blocks: BlocksSettings = field(default_factory=BlocksSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    gc: GcSettings = field(default_factory=GcSettings)
    meta: MetaSettings = field(default_factory=MetaSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    log_level: str = "INFO"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def index_where(self) -> str:
        """Where the index is, for messages: its directory, or its URL without the password."""
        return _index_where(self)

    @property
    def blocks_dir(self) -> Path:
        return self.data_dir / "blocks"


def _index_where(settings: Settings) -> str:
    return redact_url(settings.index.url) if settings.index.remote else str(settings.index_dir)


_SECTIONS = {
    "blocks": BlocksSettings,
    "index": IndexSettings,
    "server": ServerSettings,
    "gc": GcSettings,
    "meta": MetaSettings,
    "auth": AuthSettings,
}


def _coerce(cls, name: str, value):
    """Turn a TOML/env/flag value into the type the dataclass field wants."""
    if name in ("s3", "http"):
        return parse_addr(value) if isinstance(value, str) else tuple(value)
    if name in ("min_age", "interval", "pin_lease", "upload_expiry", "jwt_ttl", "head_timeout",
                "snapshot_interval", "events_keep"):
        return parse_duration(value)
    if name in ("map_size", "pack_size"):
        return parse_size(value)
    if name in ("threads", "concurrency", "retries", "max_conns_per_ip", "snapshot_every", "pool_size"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: not a whole number: {value!r}") from None
    if name in ("allow_anonymous", "access_log", "log"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if name == "cors_origins":
        items = value.split(",") if isinstance(value, str) else value
        return tuple(v.strip() for v in items if v.strip() and v.strip().lower() != "none")
    return value


def _apply(settings: Settings, values: Mapping[str, Mapping[str, object]]) -> Settings:
    changes = {}
    for section, items in values.items():
        cls = _SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"unknown settings section [{section}]")
        known = {f.name for f in fields(cls)}
        for k in items:
            if k not in known:
                raise ConfigError(f"unknown setting {section}.{k}")
        current = getattr(settings, section)
        changes[section] = replace(current, **{k: _coerce(cls, k, v) for k, v in items.items() if v is not None})
    return replace(settings, **changes)


# CAS_* environment variables understood, mapped to (section, field)
_ENV = {
    "CAS_ROOT_USER": ("auth", "root_user"),
    "CAS_ROOT_PASSWORD": ("auth", "root_password"),
    "CAS_ALLOW_ANONYMOUS": ("auth", "allow_anonymous"),
    "CAS_S3_ADDR": ("server", "s3"),
    "CAS_HTTP_ADDR": ("server", "http"),
    "CAS_DOMAIN": ("server", "domain"),
    "CAS_CORS_ORIGINS": ("server", "cors_origins"),
    "CAS_GC_MIN_AGE": ("gc", "min_age"),
    "CAS_META_INTERVAL": ("meta", "interval"),
    "CAS_META_LOG": ("meta", "log"),
    "CAS_OIDC_ISSUER": ("auth", "oidc_issuer"),
    "CAS_OIDC_AUDIENCE": ("auth", "oidc_audience"),
    "CAS_OIDC_JWKS_URL": ("auth", "oidc_jwks_url"),
    "CAS_OIDC_USER_CLAIM": ("auth", "oidc_user_claim"),
    "CAS_OIDC_ROOT": ("auth", "oidc_root"),
    "CAS_INDEX": ("index", "url"),
    "CAS_BLOCKS": ("blocks", "url"),
    "CAS_BLOCKS_ENDPOINT": ("blocks", "endpoint"),
    "CAS_BLOCKS_ACCESS_KEY": ("blocks", "access_key"),
    "CAS_BLOCKS_SECRET_KEY": ("blocks", "secret_key"),
    "CAS_PACK_SIZE": ("blocks", "pack_size"),
}


def load_settings(
    data_dir: str | os.PathLike,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    *,
    chunk_avg: str | int | None = None,
    compression: str | None = None,
    config_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the one Settings: defaults < TOML (``DIR/cas.toml`` or ``config_file``) < env < overrides."""
    env = os.environ if env is None else env
    data = Path(data_dir)
    settings = Settings(data_dir=data)
    path = Path(config_file) if config_file else data / "cas.toml"
    explicit = False
    if config_file and not path.is_file():
        raise ConfigError(f"no settings file {path}")
    if path.is_file():
        try:
            toml = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        store_section = toml.pop("store", {})
        chunk_avg = chunk_avg or store_section.get("chunk_avg")
        compression = compression or store_section.get("compression")
        settings = replace(settings, log_level=str(toml.pop("log_level", settings.log_level)))
        settings = _apply(settings, toml)
    from_env: dict[str, dict[str, object]] = {}
    for var, (section, name) in _ENV.items():
        if env.get(var):
            from_env.setdefault(section, {})[name] = env[var]
    settings = _apply(settings, from_env)
    if overrides:
        settings = _apply(settings, {k: v for k, v in overrides.items() if v})
    if chunk_avg is not None:
        settings = replace(settings, chunker=ChunkerParams.for_average(parse_size(chunk_avg)))
        explicit = True
    if compression is not None:
        settings = replace(settings, codec=CodecParams(compression))
        explicit = True
    settings.chunker.validate()
    settings.codec.validate()
    if settings.index.url and not settings.index.remote:
        raise ConfigError(f"not an index URL: {redact_url(settings.index.url)!r} (use postgresql://USER:PASS@HOST:PORT/DB, "
                          "or nothing for the embedded index in DATA/index)")
    if settings.index.pool_size < 1:
        raise ConfigError(f"index.pool_size must be at least 1, not {settings.index.pool_size}")
    if settings.meta.snapshot_every < 1:
        raise ConfigError(f"meta.snapshot_every must be at least 1, not {settings.meta.snapshot_every}")
    return replace(settings, explicit_format=explicit)


def testonly_crash_point(name: str) -> None:
    """Kill this process at a named point when CAS_TESTONLY_CRASH_AT names it (crash tests)."""
    if os.environ.get("CAS_TESTONLY_CRASH_AT") == name:
        os.kill(os.getpid(), 9)
