"""Randomised stress: writer threads put, overwrite, copy, move, delete and upload overlapping content
while GC runs in a loop with ``--min-age 0`` (in this process and, on the local backend, as `cas gc`
processes). At the end every acknowledged object reads back byte-identical, ``verify --deep`` is
clean, and a final gc leaves no unreferenced block and no orphan.

Bounded: ``CAS_TEST_STRESS_SECONDS`` (default about two minutes over both backends); the ``slow``
variant runs ten minutes.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from cas.config import load_settings
from cas.errors import Conflict
from cas.gc.sweep import collect
from cas.gc.verify import verify
from tests.fixtures.gc import BUCKET, GC_KINDS, block_ids, data, open_gc_store, run_cas, stored_ids

pytestmark = [pytest.mark.concurrency, pytest.mark.integration]

THREADS = 3


@pytest.fixture(params=GC_KINDS)
def stress_store(request, tmp_path):
    settings = load_settings(tmp_path / "data", {"gc": {"min_age": 0}}, chunk_avg="4K", env={})
    s = open_gc_store(request.param, settings, request)
    s.create_bucket(BUCKET)
    s.kind = request.param
    yield s
    s.close()


def _worker(store, i: int, seed: int, blobs: list[bytes], model: dict, stop: threading.Event, stats: dict):
    r = random.Random(seed * 1000 + i)
    keys = [f"t{i}/k{j}" for j in range(8)]
    n = 0
    while not stop.is_set():
        n += 1
        op = r.random()
        key = r.choice(keys)
        if op < 0.40:
            body = b"".join(r.choice(blobs) for _ in range(r.randint(1, 3)))
            if r.random() < 0.3:
                body += data(r.randrange(1, 20_000), seed * 100_000 + i * 10_000 + n)
            store.put(BUCKET, key, body)
            model[key] = body
        elif op < 0.55:
            if key in model:
                store.delete(BUCKET, key)
                del model[key]
        elif op < 0.65:
            src = r.choice(keys)
            if src in model and src != key:
                store.copy(BUCKET, src, BUCKET, key)
                model[key] = model[src]
        elif op < 0.72:
            src = r.choice(keys)
            if src in model and src != key:
                store.move(BUCKET, src, BUCKET, key)
                model[key] = model.pop(src)
        elif op < 0.82:
            up = store.create_upload(BUCKET, key)
            parts = [r.choice(blobs) for _ in range(r.randint(1, 3))]
            infos = [store.upload_part(up, k + 1, p) for k, p in enumerate(parts)]
            if r.random() < 0.25:
                store.abort_upload(up)
            elif r.random() < 0.1:
                pass  # left open: its parts must stay
            else:
                store.complete_upload(up, [(p.number, p.etag) for p in infos], min_part_size=0)
                model[key] = b"".join(parts)
        if key in model:
            got = store.get_bytes(BUCKET, key)
            assert got == model[key], f"{key} changed under GC"
        stats["ops"] += 1


def _stress(store, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    blobs = [data(rng.randrange(5_000, 120_000), seed * 100 + i) for i in range(12)]
    stop = threading.Event()
    errors: list[BaseException] = []
    models = [{} for _ in range(THREADS)]
    stats = {"ops": 0, "gc": 0, "gc_cli": 0, "deleted": 0}

    def guard(fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
            stop.set()

    def gc_loop():
        while not stop.is_set():
            try:
                rep = collect(store, delete=True, min_age=0, lock_wait=30)
                stats["gc"] += 1
                stats["deleted"] += rep.deleted + rep.orphans
            except Conflict:
                pass
            time.sleep(rng.uniform(0, 0.2))

    def gc_cli_loop():
        while not stop.wait(rng.uniform(1, 4)):
            out = run_cas(store.settings.data_dir, "gc", "--delete", "--min-age", "0", "--wait", "30")
            assert out.returncode in (0, Conflict.exit_code), out.stderr.decode()
            stats["gc_cli"] += 1

    threads = [threading.Thread(target=guard, args=(_worker, store, i, seed, blobs, models[i], stop, stats))
               for i in range(THREADS)]
    threads.append(threading.Thread(target=guard, args=(gc_loop,)))
    if store.kind == "local":
        threads.append(threading.Thread(target=guard, args=(gc_cli_loop,)))
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(180)
        assert not t.is_alive(), "a stress thread did not stop"
    if errors:
        raise errors[0]
    assert stats["ops"] > 20 and stats["gc"] > 2 and stats["deleted"] > 0, stats
    expected = {k: v for m in models for k, v in m.items()}
    for key, body in expected.items():
        assert store.get_bytes(BUCKET, key) == body, key
    r = verify(store, deep=True)
    assert r.clean, "\n".join(map(str, r.findings))
    with store.index.read() as t:
        open_uploads = [u for u, _ in t.iter_uploads()]
    for u in open_uploads:
        store.abort_upload(u)
    collect(store, delete=True, min_age=0)
    r = verify(store, deep=True)
    assert r.clean and r.blocks_unreferenced == 0 and r.orphans == 0, r.summary()
    assert stored_ids(store) == block_ids(store)
    assert r.objects == len(expected)


@pytest.mark.timeout(600)
def test_stress_gc_while_writing(stress_store):
    default = "75" if stress_store.kind == "local" else "40"
    seconds = float(os.environ.get("CAS_TEST_STRESS_SECONDS", default))
    _stress(stress_store, seconds, int(os.environ.get("CAS_TEST_SEED", "11")))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_stress_gc_while_writing_long(stress_store):
    _stress(stress_store, float(os.environ.get("CAS_TEST_STRESS_LONG_SECONDS", "600")),
            int(os.environ.get("CAS_TEST_SEED", "12")))


