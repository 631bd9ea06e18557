"""The ``cas`` command: one module per sub-command, each with ``register`` and ``run``.

Logging is configured here and only here. A ``CasError`` that reaches ``main``
is printed as one line and becomes the process's exit code; so are usage errors
(exit 2) and Ctrl-C (exit 130). The exit codes are tabled in README.md.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from logging.handlers import RotatingFileHandler

from .. import __version__
from ..config import load_settings
from ..errors import CasError, ConfigError

COMMANDS = ("serve", "init", "put", "get", "ls", "rm", "mb", "rb", "stats", "user", "locks", "events", "verify", "gc",
            "migrate", "recover")


EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
LOG_FILE_BYTES = 10 << 20  # rotate --log-file at 10 MiB, keeping LOG_FILE_BACKUPS old files
LOG_FILE_BACKUPS = 5


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=os.environ.get("CAS_DATA", "./data"),
                   help="data directory (default: $CAS_DATA or ./data)")
    p.add_argument("--config", help="TOML settings file (default: DATA/cas.toml when present)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: INFO)")
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="write logs to PATH instead of stderr (rotated at 10 MiB, 5 old files kept)")
    p.add_argument("--index", default=None, metavar="URL",
                   help="index: postgresql://USER:PASS@HOST:PORT/DB shared by several nodes "
                        "(default: $CAS_INDEX, else the embedded LMDB in DATA/index)")
    p.add_argument("--blocks", default=None, help="block backend: local (default) or s3://BUCKET[/PREFIX]")
    p.add_argument("--blocks-endpoint", default=None, help="S3 endpoint URL of the block backend")
    p.add_argument("--blocks-access-key", default=None)
    p.add_argument("--blocks-secret-key", default=None)
    p.add_argument("--pack-size", default=None, metavar="SIZE",
                   help="target size of a pack of blocks (default 32M; 1M..1G)")


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="cas", description="content-addressed, deduplicating storage server")
    parser.add_argument("--version", action="version", version=f"cas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        p = module.register(sub)
        _common(p)
        p.set_defaults(_module=module)
    return parser


def settings_from(args: argparse.Namespace, **overrides):
    blocks = {"url": args.blocks, "endpoint": args.blocks_endpoint,
              "access_key": args.blocks_access_key, "secret_key": args.blocks_secret_key,
              "pack_size": args.pack_size}
    sections = {"blocks": blocks, "index": {"url": args.index}}
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return load_settings(args.data, sections, config_file=args.config,
                         chunk_avg=getattr(args, "chunk_avg", None),
                         compression=getattr(args, "compression", None))


def setup_logging(level: str, log_file: str | None = None) -> None:
    from ..protocols.server import RequestIdFilter

    if level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(f"not a log level: {level!r} (use DEBUG, INFO, WARNING or ERROR)")
    if log_file:
        try:
            handler: logging.Handler = RotatingFileHandler(log_file, maxBytes=LOG_FILE_BYTES,
                                                           backupCount=LOG_FILE_BACKUPS)
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {log_file}: {(exc.strerror or str(exc)).lower()}") from exc
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    command = "cas"
    try:
        args = build_parser().parse_args(argv)
        command = f"cas {args.command}"
        settings = settings_from(args, **getattr(args._module, "overrides", lambda a: {})(args))
        setup_logging(args.log_level or settings.log_level or ("INFO" if args.command == "serve" else "WARNING"),
                      getattr(args, "log_file", None))
        return args._module.run(args, settings)
    except CasError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE


def split_target(target: str) -> tuple[str, str]:
    """'bucket/key/with/slashes' -> ('bucket', 'key/with/slashes'); 'bucket' -> ('bucket', '')."""
    bucket, _, key = target.lstrip("/").partition("/")
    return bucket, key
