"""Fixtures of the S3 protocol tests: a boto3 client of each server kind and a fresh bucket."""

from __future__ import annotations

import pytest

from tests.fixtures.s3api import empty_bucket, unique_bucket


@pytest.fixture
def client(cas_s3_any):
    return cas_s3_any.client()


@pytest.fixture
def bucket(client):
    name = unique_bucket()
    client.create_bucket(Bucket=name)
    yield name
    empty_bucket(client, name)
