"""``resbench list formats`` states each number format's bit layout, quantization parameters included."""

from __future__ import annotations

import json

import pytest

from resbench.cli import main


def _listed(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["list", "formats", *argv]) == 0
    return capsys.readouterr().out


def test_each_format_states_its_layout(capsys: pytest.CaptureFixture[str]) -> None:
    records = {record["name"]: record for record in json.loads(_listed(capsys, "--json"))}
    assert records["fp32"]["layout"] == "32 bits (sign 31, exponent 30..23, mantissa 22..0)"
    assert "sign 7, magnitude 6..0" in records["int8"]["layout"] and "scale s per tensor" in records["int8"]["layout"]
    assert records["uintM-asym"]["layout"].startswith("uint4-asym: 4 bits (msb 3, lower 2..0), unsigned")
    assert "zero point" in records["uintM-asym"]["layout"]
    text = _listed(capsys)
    assert "layout: uint4-asym: 4 bits" in text and "layout: q2.5: 8 bits" in text
