"""Every fuzz target's one-input function over its seeds and over every crash found so far.

This runs in the default suite without atheris: it keeps fixed parser bugs fixed. A new
crash from a fuzzing run goes, minimised, into ``regressions/<target>/`` (one file each).
"""

from __future__ import annotations

import importlib

import pytest

from tests.fuzz.harness import regression_inputs

pytestmark = pytest.mark.unit

TARGETS = ["sigv4", "chunked", "range", "s3_xml", "dav_xml"]


def _cases():
    for target in TARGETS:
        module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
        for i, seed in enumerate(module.SEEDS):
            yield pytest.param(target, seed, id=f"{target}-seed{i}")
        for path in regression_inputs(target):
            yield pytest.param(target, path.read_bytes(), id=f"{target}-{path.name}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("target", "data"), list(_cases()))
def test_input_is_accepted_or_refused_cleanly(target, data):
    importlib.import_module(f"tests.fuzz.fuzz_{target}").one_input(data)


_BOMB = b'<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'


def test_untrusted_xml_is_parsed_by_defusedxml():
    """Request XML of both protocols refuses DTDs and entities (no bomb, no external fetch)."""
    from wsgidav import xml_tools

    from cas.errors import MalformedXML
    from cas.protocols.s3 import xml
    from tests.fuzz import fuzz_dav_xml

    with pytest.raises(MalformedXML):
        xml.parse(_BOMB + b"<Delete><Object><Key>&b;</Key></Object></Delete>", "Delete")
    assert not xml_tools.use_lxml  # wsgidav would parse WebDAV bodies with lxml instead
    store, app = fuzz_dav_xml._app()
    store.put(fuzz_dav_xml.BUCKET, "bomb", [b"x"])
    body = _BOMB + b'<propertyupdate xmlns="DAV:"><set><prop><x xmlns="urn:x">&b;</x></prop></set></propertyupdate>'
    status, _, _ = fuzz_dav_xml._call(app, "PROPPATCH", f"/dav/{fuzz_dav_xml.BUCKET}/bomb", body)
    assert status == 400
