"""WebDAV throughput of cas against plain wsgidav (FilesystemProvider) on cheroot.

Both servers run as separate processes on this machine, on the same disk, with
the same number of cheroot threads and Basic auth, and are driven by the same
client (http.client over one keep-alive connection). Printed: MiB/s or ops/s of
each, and the ratio cas / plain.

Every figure is the median (min–max) of ``--runs`` runs (default 3). Each run starts
both servers afresh on empty directories, one after the other, and the order
alternates run by run (run 1: cas first, run 2: plain first, ...). Dirty pages are
flushed (``sync``, untimed) before each timed step. The PROPFIND figure of a run is
the median of 3 requests. The 4 KiB bodies are unique random bytes; the big body is
the same seeded random stream for both servers (cas's second upload of it is the
dedup case).

    python benchmarks/bench_webdav.py                  # the full run (1 GiB, 2,000 files, 10,000-file folder)
    python benchmarks/bench_webdav.py --size-mib 128 --files 500 --folder-files 2000   # a quick run

Goals: unique uploads >= 50% of plain wsgidav (issue 12; plain neither hashes nor
fsyncs), a second upload of the same data >= 100%, GET >= 100% (issue 4).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

from common import Samples, import_cas, runs_arg, runs_label, sync_inputs, text_table, turns

ROOT = Path(__file__).resolve().parent.parent
import_cas()

from tests.fixtures.seaweed import free_ports  # noqa: E402
from tests.fixtures.serve import CasServe  # noqa: E402

USER, SECRET = "bench", "bench-secret-123"
PIECE = 1 << 20

PLAIN_SERVER = textwrap.dedent("""
    import sys
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp
    root, port, user, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    app = WsgiDAVApp({
        "provider_mapping": {"/dav": root},
        "simple_dc": {"user_mapping": {"*": {user: {"password": secret}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "verbose": 1, "logging": {"enable": False}, "block_size": 256 * 1024,
        "lock_storage": True, "property_manager": True,
    })
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=16, request_queue_size=128, timeout=60)
    server.start()
""")


class Conn:
    """One keep-alive connection with Basic auth."""

    def __init__(self, port: int, prefix: str):
        self.port = port
        self.prefix = prefix
        self.auth = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def request(self, method: str, path: str, body=None, headers=None, chunked=False) -> tuple[int, bytes]:
        hdrs = {"Authorization": self.auth, **(headers or {})}
        target = self.prefix + quote(path)
        if chunked:
            self.conn.putrequest(method, target, skip_accept_encoding=True)
            for k, v in hdrs.items():
                self.conn.putheader(k, v)
            self.conn.putheader("Transfer-Encoding", "chunked")
            self.conn.endheaders()
            for part in body:
                self.conn.send(b"%x\r\n%s\r\n" % (len(part), part))
            self.conn.send(b"0\r\n\r\n")
        else:
            self.conn.request(method, target, body=body, headers=hdrs)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        return resp.status, data

    def get_stream(self, path: str) -> int:
        self.conn.request("GET", self.prefix + quote(path), headers={"Authorization": self.auth})
        resp = self.conn.getresponse()
        n = 0
        while True:
            block = resp.read(PIECE)
            if not block:
                break
            n += len(block)
        assert resp.status == 200, resp.status
        return n

    def close(self):
        self.conn.close()


def start_plain(root: Path) -> tuple[subprocess.Popen, int]:
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-c", PLAIN_SERVER, str(root), str(port), USER, SECRET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("OPTIONS", "/dav/")
            c.getresponse().read()
            c.close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("plain wsgidav did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def run_suite(conn: Conn, base: str, data_seed: bytes, args) -> dict[str, float]:
    """The measurements, against a collection ``base`` that exists and is empty."""
    out: dict[str, float] = {}
    n_pieces = args.size_mib

    def body():
        # deterministic and incompressible: the same bytes for both servers and both uploads
        rng = random.Random(data_seed)
        for _ in range(n_pieces):
            yield rng.randbytes(PIECE)

    size = args.size_mib * PIECE

    sync_inputs()
    t = time.perf_counter()
    status, _ = conn.request("PUT", f"{base}/big-1.bin", body=body(), chunked=True)
    assert status in (200, 201, 204), status
    out["put_unique_mib_s"] = size / (1 << 20) / (time.perf_counter() - t)

    sync_inputs()
    t = time.perf_counter()
    status, _ = conn.request("PUT", f"{base}/big-2.bin", body=body(), chunked=True)
    assert status in (200, 201, 204), status
    out["put_again_mib_s"] = size / (1 << 20) / (time.perf_counter() - t)

    sync_inputs()
    t = time.perf_counter()
    assert conn.get_stream(f"{base}/big-1.bin") == size
    out["get_mib_s"] = size / (1 << 20) / (time.perf_counter() - t)

    status, _ = conn.request("MKCOL", f"{base}/small")
    assert status == 201, status
    payloads = [os.urandom(4096) for _ in range(args.files)]  # unique: nothing dedups
    sync_inputs()
    t = time.perf_counter()
    for i, p in enumerate(payloads):
        status, _ = conn.request("PUT", f"{base}/small/f{i:05d}", body=p)
        assert status in (201, 204), status
    out["put_4k_ops_s"] = args.files / (time.perf_counter() - t)

    sync_inputs()
    t = time.perf_counter()
    for i in range(args.files):
        status, data = conn.request("GET", f"{base}/small/f{i:05d}")
        assert status == 200 and len(data) == 4096
    out["get_4k_ops_s"] = args.files / (time.perf_counter() - t)

    status, _ = conn.request("MKCOL", f"{base}/wide")
    assert status == 201, status
    tiny = b"x" * 16
    for i in range(args.folder_files):
        status, _ = conn.request("PUT", f"{base}/wide/n{i:06d}.txt", body=tiny + str(i).encode())
        assert status in (201, 204), status
    sync_inputs()
    passes = []
    for _ in range(3):
        t = time.perf_counter()
        status, data = conn.request("PROPFIND", f"{base}/wide/", headers={"Depth": "1"})
        passes.append(time.perf_counter() - t)
        assert status == 207 and data.count(b"<ns0:response") + data.count(b"<D:response") >= args.folder_files
    out["propfind_d1_s"] = statistics.median(passes)
    return out


def run_plain(scratch: Path, seed: bytes, args) -> dict[str, float]:
    plain_root = scratch / "plain"
    (plain_root / "bench").mkdir(parents=True)
    proc, port = start_plain(plain_root)
    try:
        conn = Conn(port, "/dav")
        out = run_suite(conn, "/bench", seed, args)
        conn.close()
    finally:
        stop(proc)
        shutil.rmtree(plain_root, ignore_errors=True)
    return out


def run_cas(scratch: Path, seed: bytes, args) -> dict[str, float]:
    cas = CasServe(scratch / "cas", root=(USER, SECRET)).start()
    try:
        conn = Conn(cas.http_port, "/dav")
        status, _ = conn.request("MKCOL", "/bench")
        assert status == 201, status
        out = run_suite(conn, "/bench", seed, args)
        conn.close()
    finally:
        cas.stop()
        shutil.rmtree(scratch / "cas", ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--folder-files", type=int, default=10_000)
    ap.add_argument("--runs", type=runs_arg, default=3, help="runs; figures are medians (default 3)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir on the repo's disk)")
    args = ap.parse_args()

    keys = ["put_unique_mib_s", "put_again_mib_s", "get_mib_s", "put_4k_ops_s", "get_4k_ops_s", "propfind_d1_s"]
    results = {name: {k: Samples() for k in keys} for name in ("cas", "plain")}
    scratch = Path(tempfile.mkdtemp(prefix="bench-webdav-", dir=args.dir or ROOT))
    try:
        for run in range(args.runs):
            seed = os.urandom(16)  # the same big body for both servers in a run
            for name in turns(["cas", "plain"], run):
                print(f"== run {run + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
                figures = (run_cas if name == "cas" else run_plain)(scratch, seed, args)
                for k, v in figures.items():
                    results[name][k].add(v)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = [
        ("PUT unique", "put_unique_mib_s", "MiB/s", True, 0.5),
        ("PUT same data again", "put_again_mib_s", "MiB/s", True, 1.0),
        ("GET", "get_mib_s", "MiB/s", True, 1.0),
        (f"PUT {args.files} x 4 KiB", "put_4k_ops_s", "ops/s", True, None),
        (f"GET {args.files} x 4 KiB", "get_4k_ops_s", "ops/s", True, None),
        (f"PROPFIND D1, {args.folder_files} files", "propfind_d1_s", "s", False, None),
    ]
    print(f"\nWebDAV benchmark: {args.size_mib} MiB object, {args.files} small files, "
          f"{args.folder_files}-file folder (cas vs plain wsgidav FilesystemProvider); {runs_label(args.runs)}, "
          "order alternating\n")
    table = []
    for label, key, unit, higher_better, goal in rows:
        c, p = results["cas"][key], results["plain"][key]
        ratio = c.median / p.median if higher_better else p.median / c.median  # >1 means cas is better
        fmt = ".3f" if unit == "s" else ",.1f"
        table.append([label, c.cell(fmt), p.cell(fmt), unit, f"{ratio:.0%}", f">={goal:.0%}" if goal else ""])
    print(text_table(["operation", "cas", "plain", "unit", "cas/plain", "goal"], table))
    print("\n(cells: median (min–max) over runs; cas/plain of the medians > 100% means cas is faster; "
          "for PROPFIND the ratio is plain time / cas time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
