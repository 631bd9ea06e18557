"""cas serve: run the S3 API and the web side (WebDAV, API, UI) on one store."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from ..errors import CannotListen
from ..store import Store

log = logging.getLogger(__name__)


def register(sub):
    p = sub.add_parser("serve", help="run the server (S3 API, WebDAV, web UI)")
    p.add_argument("--s3", default=None, metavar="HOST:PORT", help="S3 API listener (default 127.0.0.1:9000)")
    p.add_argument("--http", default=None, metavar="HOST:PORT",
                   help="WebDAV / web UI / API listener (default 127.0.0.1:8080)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    p.add_argument("--domain", default=None, help="base domain for virtual-host-style S3 requests")
    p.add_argument("--threads", default=None, help="worker threads per listener (default 64)")
    p.add_argument("--head-timeout", default=None, help="time a client has to send a request head (default 10s)")
    p.add_argument("--max-conns-per-ip", default=None,
                   help="open connections per client address and listener (default 64, 0: no cap)")
    p.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN",
                   help="browser origin allowed to call the S3 API (repeatable; '*' any, 'none' none; "
                        "default: loopback origins only)")
    p.add_argument("--anonymous", action="store_true", default=None, help="allow unauthenticated requests")
    p.add_argument("--gc-interval", default=None, help="run GC inside the server this often (e.g. 6h)")
    p.add_argument("--gc-min-age", default=None, help="GC grace period (default 1h)")
    p.add_argument("--meta-interval", default=None,
                   help="write the metadata log to the backend this often (default 5s; 0: before each "
                        "commit is acknowledged)")
    p.add_argument("--jwt-ttl", default=None, help="lifetime of web login tokens (default 1h)")
    p.add_argument("--oidc-issuer", default=None, help="accept RS256/ES256 tokens from this OpenID issuer")
    p.add_argument("--oidc-audience", default=None, help="audience the OpenID tokens must carry")
    p.add_argument("--oidc-jwks-url", default=None, help="JWKS URL (default: from the issuer's discovery document)")
    p.add_argument("--oidc-user-claim", default=None, help="claim naming the cas user (default preferred_username)")
    p.add_argument("--oidc-root", default=None,
                   help="the user claim's value that stands for root (default: no OIDC token is root)")
    p.add_argument("--chunk-avg", default=None, help=argparse_hidden())
    p.add_argument("--compression", default=None, help=argparse_hidden())
    return p


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def overrides(args) -> dict:
    return {
        "server": {"s3": args.s3, "http": args.http, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
                   "domain": args.domain, "threads": args.threads, "head_timeout": args.head_timeout,
                   "max_conns_per_ip": args.max_conns_per_ip, "cors_origins": args.cors_origin},
        "auth": {"allow_anonymous": args.anonymous, "jwt_ttl": args.jwt_ttl, "oidc_issuer": args.oidc_issuer,
                 "oidc_audience": args.oidc_audience, "oidc_jwks_url": args.oidc_jwks_url,
                 "oidc_user_claim": args.oidc_user_claim, "oidc_root": args.oidc_root},
        "gc": {"interval": args.gc_interval, "min_age": args.gc_min_age},
        "meta": {"interval": args.meta_interval},
    }


# the flag that sets each listener's address, for the message when it cannot be bound
LISTENER_FLAGS = {"s3": "--s3", "http": "--http"}


def run(args, settings) -> int:
    from ..protocols.server import Server

    store = Store.open_store(settings)
    try:
        server = Server(store, store.settings)
        # bind before root credentials exist: a failed start must not leave a secret nobody saw
        server.bind()
    except CannotListen as exc:
        store.close()
        raise CannotListen(f"{exc}; choose another with {LISTENER_FLAGS.get(exc.listener, '--' + exc.listener)}",
                           listener=exc.listener) from exc
    except BaseException:
        store.close()
        raise
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        name, secret, created = store.users.ensure_root()
        if created:
            print(f"Generated root credentials (shown once; kept in {settings.data_dir}/root-credentials, mode 0600):\n"
                  f"  access key / user: {name}\n  secret / password: {secret}", flush=True)
        server.start()
        print(f"cas serving {settings.data_dir} (blocks: {store.settings.blocks.url}, index: {settings.index_where})", flush=True)
        print(f"  S3 API   {server.url('s3')}", flush=True)
        print(f"  Web      {server.url('http')}/", flush=True)
        print(f"  WebDAV   {server.url('http')}/dav/", flush=True)
        _start_meta_log(store)
        background = _start_gc_loop(store, stopping)
        while not stopping.wait(1.0):
            pass
        log.info("stopping")
        if background is not None:
            background.join(timeout=10)
    finally:
        server.stop()
        store.close()
    print("cas stopped", file=sys.stderr, flush=True)
    return 0


def _start_meta_log(store) -> None:
    """Ship the metadata log in the background (stopped and flushed by ``store.close``), with
    GC's ref retention among its hourly jobs."""
    if store.meta_log is None:
        return
    try:
        from ..gc.safety import trim_idle_refs
    except ImportError:  # a build without the garbage collector has no refs to keep
        pass
    else:
        store.meta_log.maintenance.append(lambda: trim_idle_refs(store))
    store.meta_log.start()


def _start_gc_loop(store, stopping: threading.Event):
    """Periodic GC inside the server when --gc-interval is set and the GC module is present."""
    interval = store.settings.gc.interval
    if not interval:
        return None
    try:
        from ..gc.sweep import run_periodic
    except ImportError:
        log.warning("--gc-interval given but this build has no garbage collector")
        return None
    t = threading.Thread(target=run_periodic, args=(store, stopping), name="cas-gc", daemon=True)
    t.start()
    return t
