"""A state machine of put / copy / move / delete / gc / reopen against a dict model (hypothesis).

Whatever sequence of operations runs, every name reads back exactly the bytes the model says,
listings agree with the model, a GC with no grace never takes a block a name still uses, and
``verify --deep`` finds nothing. Contents share chunks on purpose (a few seeds cut at the same
places), so dedup, copies of one manifest and blocks shared by several names are all exercised.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from cas.config import load_settings
from cas.errors import ObjectNotFound
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.store import Store
from tests.fixtures.core import bytes_of

pytestmark = pytest.mark.unit

BUCKET = "model"
#: building blocks of contents: pieces of a few seeds, so objects share whole blocks
_PIECES = [bytes_of(96 << 10, seed) for seed in range(4)]
KEYS = st.sampled_from(["a", "b", "dir/c", "dir/sub/d", "e.txt", "dir/"])


@st.composite
def contents(draw) -> bytes:
    parts = draw(st.lists(st.tuples(st.integers(0, len(_PIECES) - 1), st.integers(0, 96 << 10)),
                          min_size=0, max_size=4))
    tail = draw(st.binary(max_size=64))
    return b"".join(_PIECES[i][:n] for i, n in parts) + tail


class StoreModel(RuleBasedStateMachine):
    keys = Bundle("keys")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="cas-model-"))
        self.settings = load_settings(self.dir / "data", {"gc": {"min_age": 0}}, env={})
        self.store = Store.open_store(self.settings)
        self.store.create_bucket(BUCKET)
        self.model: dict[str, bytes] = {}

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=keys, key=KEYS, data=contents())
    def put(self, key, data):
        info = self.store.put(BUCKET, key, data)
        assert info.size == len(data)
        self.model[key] = data
        return key

    @rule(src=keys, dst=KEYS)
    def copy(self, src, dst):
        if src not in self.model:
            with pytest.raises(ObjectNotFound):
                self.store.copy(BUCKET, src, BUCKET, dst)
            return
        self.store.copy(BUCKET, src, BUCKET, dst)
        self.model[dst] = self.model[src]

    @rule(src=keys, dst=KEYS)
    def move(self, src, dst):
        if src not in self.model:
            with pytest.raises(ObjectNotFound):
                self.store.move(BUCKET, src, BUCKET, dst)
            return
        self.store.move(BUCKET, src, BUCKET, dst)
        data = self.model.pop(src)
        self.model[dst] = data

    @rule(key=keys)
    def delete(self, key):
        if key not in self.model:
            with pytest.raises(ObjectNotFound):
                self.store.delete(BUCKET, key)
            return
        self.store.delete(BUCKET, key)
        del self.model[key]

    @rule()
    def gc(self):
        report = collect(self.store, delete=True, min_age=0)
        assert not report.interrupted

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def reopen(self):
        self.store.close()
        self.store = Store.open_store(self.settings)

    @invariant()
    def names_read_back(self):
        listing = self.store.list(BUCKET, limit=1000)
        assert {e.key: e.size for e in listing.entries} == {k: len(v) for k, v in self.model.items()}
        for key, data in self.model.items():
            assert self.store.get_bytes(BUCKET, key) == data, key

    @rule()
    def verify_deep(self):
        report = verify(self.store, deep=True)
        assert report.clean, [f.to_dict() for f in report.findings]


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=25, stateful_step_count=20, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
