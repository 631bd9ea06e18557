"""Fuzz target: S3 request XML bodies (``cas.protocols.s3.xml`` and the parsers over it).

Input: one selector byte, then the body. The selector picks the document: DeleteObjects
(:func:`~cas.protocols.s3.object.parse_delete_request`), CompleteMultipartUpload
(:func:`~cas.protocols.s3.multipart.parse_complete_request`), CreateBucketConfiguration
(:func:`cas.protocols.s3.xml.parse`), CORSConfiguration
(:func:`~cas.protocols.s3.cors.parse_configuration`, whose rules must also survive their stored
JSON form) or PublicAccessBlockConfiguration
(:func:`~cas.protocols.s3.bucketconfig.parse_public_access_block`).

Property: the parser returns its result or raises a :class:`~cas.errors.CasError`
(MalformedXML) or an :class:`~cas.protocols.s3.error.S3Error` with a 4xx status; never
another exception. Entity expansion and DTDs are refused (defusedxml), so no bomb hangs or
blows up memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cas.errors import CasError
from cas.protocols.s3 import cors, xml
from cas.protocols.s3.bucketconfig import parse_public_access_block
from cas.protocols.s3.error import S3Error
from cas.protocols.s3.multipart import parse_complete_request
from cas.protocols.s3.object import parse_delete_request


def _bucket_configuration(body: bytes):
    return xml.parse(body, "CreateBucketConfiguration")


def _cors_configuration(body: bytes):
    rules = cors.parse_configuration(body)
    assert cors.rules_from_json(cors.rules_to_json(rules)) == rules


PARSERS = (parse_delete_request, parse_complete_request, _bucket_configuration, _cors_configuration,
           parse_public_access_block)

SEEDS = [
    b"\x00<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object><Object><Key>b&amp;c</Key>"
    b"<VersionId>null</VersionId></Object></Delete>",
    b'\x00<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Object><Key>\xc3\xa9</Key></Object></Delete>",
    b"\x01<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"abc\"</ETag>"
    b"<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part></CompleteMultipartUpload>",
    b"\x01<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag/></Part></CompleteMultipartUpload>",
    b"\x02<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>",
    b'\x00<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><Delete><Object><Key>&b;</Key></Object></Delete>',
    b'\x02<?xml version="1.0" encoding="UTF-16"?><CreateBucketConfiguration/>',
    b"\x03<CORSConfiguration><CORSRule><ID>r</ID><AllowedOrigin>https://*.example.org</AllowedOrigin>"
    b"<AllowedMethod>GET</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader>"
    b"<MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>",
    b"\x03<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PATCH</AllowedMethod>"
    b"</CORSRule></CORSConfiguration>",
    b"\x04<PublicAccessBlockConfiguration><BlockPublicAcls>true</BlockPublicAcls>"
    b"<RestrictPublicBuckets>false</RestrictPublicBuckets></PublicAccessBlockConfiguration>",
]


def one_input(data: bytes) -> None:
    if not data:
        return
    parser = PARSERS[data[0] % len(PARSERS)]
    try:
        parser(data[1:])
    except CasError:
        return
    except S3Error as exc:
        assert 400 <= exc.status < 500, (exc.code, exc.status)


if __name__ == "__main__":
    from tests.fuzz.harness import main

    main(one_input, SEEDS, "s3_xml")
