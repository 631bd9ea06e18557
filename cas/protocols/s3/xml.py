"""S3 XML: building response documents and parsing request documents safely.

Responses are built with ElementTree in the S3 namespace. Request bodies are parsed with
``defusedxml`` (no DTDs, no entities, no external references: an XML bomb is a
``MalformedXML``, not a hang), after the caller has bounded their size. Element names are
compared without namespace, since clients differ in whether they send one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from email.utils import formatdate
from xml.etree import ElementTree as ET

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from cas.errors import MalformedXML

NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

#: (name, value) children; a value may be text, a number, a bool, None (omitted),
#: or a list of children for a nested element.
Children = Iterable[tuple[str, object]]


def document(root: str, children: Children, *, namespace: bool = True) -> bytes:
    """A complete XML document: ``<root xmlns=S3>children</root>``."""
    element = ET.Element(root, {"xmlns": NAMESPACE} if namespace else {})
    _append(element, children)
    return _DECLARATION + ET.tostring(element, encoding="utf-8")


# Characters XML 1.0 cannot carry at all, not even as character references.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    """Text safe for an XML 1.0 document: impossible characters become U+FFFD.

    Exact keys with control characters reach clients through ``encoding-type=url``, which
    every SDK requests for listings; an error message only has to stay parseable.
    """
    return _INVALID_XML.sub("\ufffd", value)


def _append(parent: ET.Element, children: Children) -> None:
    for name, value in children:
        if value is None:
            continue
        child = ET.SubElement(parent, name)
        if isinstance(value, bool):
            child.text = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            _append(child, value)
        else:
            child.text = _text(str(value))


def iso_time(t: float) -> str:
    """S3's timestamp in XML: ``2024-01-31T12:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def http_time(t: float) -> str:
    """An HTTP date header value (RFC 7231 IMF-fixdate)."""
    return formatdate(t, usegmt=True)


# -- parsing


def parse(body: bytes, root: str) -> ET.Element:
    """The root element of a request document, which must be named ``root``."""
    if not body.strip():
        raise MalformedXML("The XML you provided was not well-formed or did not validate against our published schema.")
    try:
        element = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError, LookupError) as exc:  # LookupError: unknown encoding="..."
        raise MalformedXML(
            "The XML you provided was not well-formed or did not validate against our published schema."
        ) from exc
    if local_name(element) != root:
        raise MalformedXML(f"The XML root element must be {root}.")
    return element


def local_name(element: ET.Element) -> str:
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if local_name(child) == name]


def child_text(element: ET.Element, name: str, default: str | None = None) -> str | None:
    for child in element:
        if local_name(child) == name:
            return child.text or ""
    return default
