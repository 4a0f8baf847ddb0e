"""Safe parsing of uploaded BPMN (XML) files.

Refused: empty input, files over `MAX_BYTES`, anything that is not UTF-8 text (binary data,
UTF-16, Latin-1 with non-ASCII bytes), a DOCTYPE (the door to entity attacks: billion laughs,
external entities reading local files, parameter entities), entity references, elements nested
deeper than libxml2's default limit (256 levels, `huge_tree=False`), and XML that is not
well-formed. The document is always decoded as UTF-8, whatever its XML declaration says (a
declared `ISO-8859-1` over pure ASCII bytes, as in the OMG MIWG models, reads the same).

Every refusal raises `XmlRefused` with the file name, the line (when known) and a plain
sentence. Nothing here touches the network or the file system.
"""
from __future__ import annotations

import re
from io import BytesIO
from typing import Optional

from lxml import etree

from engine.errors import CleanauditError

MAX_BYTES = 5 * 1024 * 1024
"""Largest accepted file (5 MiB). Our biggest process is a few hundred kilobytes."""


class XmlRefused(CleanauditError):
    """An XML document refused before or while parsing; carries filename, line and message."""

    def __init__(self, filename: str, line: Optional[int], message: str):
        self.filename = filename
        self.line = line
        self.message = message
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {message}")


def _parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(
        encoding="utf-8",          # never trust the declaration (UTF-7 and friends)
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def _line_of(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _check_prolog(data: bytes, filename: str) -> None:
    """Walk the prolog (XML declaration, comments, processing instructions) up to the root
    element and refuse anything else that starts with `<!` there (a DOCTYPE)."""
    pos = 0
    n = len(data)
    if data.startswith(b"\xef\xbb\xbf"):
        pos = 3
    while pos < n:
        while pos < n and data[pos] in b" \t\r\n":
            pos += 1
        if pos >= n:
            return
        if data.startswith(b"<?", pos):
            end = data.find(b"?>", pos + 2)
            if end < 0:
                return  # let the parser report it
            pos = end + 2
        elif data.startswith(b"<!--", pos):
            end = data.find(b"-->", pos + 4)
            if end < 0:
                return
            pos = end + 3
        elif data.startswith(b"<!", pos):
            raise XmlRefused(filename, _line_of(data, pos),
                             "DOCTYPE declarations are not allowed (they enable entity attacks)")
        else:
            return


def _check_bytes(data, filename: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise XmlRefused(filename, None, "the file content must be bytes")
    data = bytes(data)
    if len(data) > MAX_BYTES:
        raise XmlRefused(filename, None, too_large_message(len(data)))
    if not data.strip():
        raise XmlRefused(filename, None, "the file is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise XmlRefused(filename, None,
                         "the file is not UTF-8 text (it looks binary or UTF-16); save it as UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise XmlRefused(filename, _line_of(data, exc.start),
                         "the file is not UTF-8 text (invalid byte sequence); save it as UTF-8") from None
    _check_prolog(data, filename)
    return data


def too_large_message(size: int) -> str:
    """The refusal message for a file of `size` bytes over `MAX_BYTES`."""
    return f"the file is too large ({size:,} bytes; at most {MAX_BYTES:,} are accepted)"


def _describe_syntax_error(exc: etree.XMLSyntaxError) -> tuple[Optional[int], str]:
    line = getattr(exc, "lineno", None) or None
    raw = str(getattr(exc, "msg", None) or exc)
    # lxml appends ", line N, column M"; the line is reported separately.
    detail = re.sub(r",? line \d+, column \d+\s*$", "", raw).strip()
    low = detail.lower()
    if "depth" in low or "huge" in low:
        m = re.search(r"depth in document: (\d+)", detail)
        limit = m.group(1) if m else "256"
        return line, f"the XML nests elements too deeply (more than {limit} levels)"
    if "entityref" in low:
        return line, f"the file is not well-formed XML: a bare & must be written &amp; ({detail})"
    if "entity" in low:
        return line, f"entities are not allowed ({detail})"
    if "document is empty" in low or "start tag expected" in low:
        return line, "the file is not XML (no root element found)"
    return line, f"the file is not well-formed XML: {detail}"


def parse_bpmn_bytes(data: bytes, filename: str) -> etree._ElementTree:
    """Parse an uploaded BPMN file safely; raise `XmlRefused` on anything suspicious."""
    data = _check_bytes(data, filename)
    try:
        tree = etree.parse(BytesIO(data), _parser())
    except etree.XMLSyntaxError as exc:
        line, message = _describe_syntax_error(exc)
        raise XmlRefused(filename, line, message) from None
    except (etree.LxmlError, ValueError, MemoryError, RecursionError) as exc:
        raise XmlRefused(filename, None, f"the file could not be parsed as XML ({type(exc).__name__})") from None

    docinfo = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRefused(filename, None, "DOCTYPE declarations are not allowed (they enable entity attacks)")
    root = tree.getroot()
    if root is None:
        raise XmlRefused(filename, None, "the file is not XML (no root element found)")
    for node in root.iter(etree.Entity):
        raise XmlRefused(filename, getattr(node, "sourceline", None),
                         f"entities are not allowed (found {node.text})")
    return tree
