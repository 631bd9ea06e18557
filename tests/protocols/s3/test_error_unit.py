"""The error table and the S3 layer's import boundary."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from cas import errors
from cas.protocols.s3 import error, xml
from cas.protocols.s3.error import to_s3_error

pytestmark = pytest.mark.unit

S3_DIR = Path(error.__file__).parent


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_every_client_error_class_is_a_4xx():
    """No client mistake is a 500: every BadRequest, NotFound, ... maps below 500."""
    client_side = (errors.NotFound, errors.AlreadyExists, errors.Conflict, errors.PreconditionFailed,
                   errors.AccessDenied, errors.BadRequest)
    for base in client_side:
        for cls in [base, *all_subclasses(base)]:
            if cls is errors.BlockNotFound:
                continue  # a missing block is data loss: an internal error
            wire = to_s3_error(cls())
            assert 400 <= wire.status < 500, (cls, wire.code)
            assert wire.code and wire.message


def test_specific_codes():
    assert to_s3_error(errors.BucketNotFound()).code == "NoSuchBucket"
    assert to_s3_error(errors.KeyTooLong()).code == "KeyTooLongError"
    assert (to_s3_error(errors.InvalidRange()).status, to_s3_error(errors.InvalidRange()).code) == (416, "InvalidRange")
    assert to_s3_error(errors.TransientStoreError()).status == 503
    internal = to_s3_error(errors.IntegrityError("block abc is corrupt"))
    assert internal.status == 500 and "abc" not in internal.message  # details stay in the log
    assert to_s3_error(RuntimeError("boom")).code == "InternalError"


def test_error_document_shape():
    from cas.protocols.s3.request import error_response

    response = error_response(None, error.S3Error("NoSuchKey", "gone", 404, Key="a\x00b"), "GET", "/b/a\x00b", "RID")
    root = xml.parse(response.body, "Error")
    assert [xml.local_name(c) for c in root] == ["Code", "Message", "Key", "Resource", "RequestId"]
    assert xml.child_text(root, "RequestId") == "RID"


def test_s3_layer_imports_only_store_and_auth():
    """DESIGN §2: protocol code sees Store and auth, never lmdb, boto3 or blake3."""
    forbidden = {"lmdb", "boto3", "botocore", "blake3", "cas.index", "cas.blocks", "cas.writer"}
    for path in list(S3_DIR.glob("*.py")) + [Path(inspect.getfile(__import__("cas.auth.sigv4").auth.sigv4))]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path.name, name)
