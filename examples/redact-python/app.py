"""Example redactor written in Python with componentize-py.

It is built from the same WIT contract as the Rust plugins (no memhost SDK
involved), which is the point: the contract, not our SDK, is the interface.

Finds email addresses (label ``email``) and any of the comma-separated
``extra_terms`` the operator grants (label ``term``). Offsets in findings are
UTF-8 byte offsets, as the contract requires, so character offsets from
``re`` are converted.
"""

import re
from typing import List

from wit_world import exports
from wit_world.exports.redactor import Finding
from wit_world.imports import host

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class Redactor(exports.Redactor):
    def redact(self, text: str) -> List[Finding]:
        findings = []
        for m in EMAIL.finditer(text):
            findings.append(
                Finding(byte_offset(text, m.start()), byte_offset(text, m.end()), "email", "[EMAIL]")
            )
        terms = [t.strip() for t in (host.config("extra_terms") or "").split(",") if t.strip()]
        for term in terms:
            for m in re.finditer(re.escape(term), text, re.IGNORECASE):
                findings.append(
                    Finding(byte_offset(text, m.start()), byte_offset(text, m.end()), "term", "[REDACTED]")
                )
        if findings:
            host.log(host.LogLevel.DEBUG, f"found {len(findings)} span(s)")
        return findings
