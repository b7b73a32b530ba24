"""IEEE 11073-20601 SFLOAT/FLOAT: spec examples, special words, round trips, the 0xF7FF trap."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.errors import DecodeError, EncodeError
from devices.ieee11073 import (
    Number,
    Special,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_from_bytes,
    float_to_bytes,
    sfloat_from_bytes,
    sfloat_to_bytes,
)


@pytest.mark.parametrize(
    ("wire", "mantissa", "exponent", "value"),
    [
        ("65F0", 101, -1, 10.1),  # issue 3: `tbib decode sfloat 65F0` is 10.1
        ("FFF7", 2047, -1, 204.7),  # 0xF7FF: exponent -1, mantissa 2047 -- an ordinary number
        ("7200", 114, 0, 114.0),
        ("FF0F", -1, 0, -1.0),
        ("0008", None, None, None),  # NRes (special)
        ("0018", -2048, 1, -20480.0),  # 0x1800: exponent 1, mantissa -2048 -- ordinary
        ("0380", 3, -8, 3e-8),
        ("FD77", 2045, 7, 2045e7),
        ("FD7F", -3, 7, -3e7),
        ("0300", 3, 0, 3.0),
        ("7DF0", 125, -1, 12.5),
    ],
)
def test_sfloat_examples(wire: str, mantissa: int | None, exponent: int | None, value: float | None) -> None:
    n = sfloat_from_bytes(bytes.fromhex(wire))
    if mantissa is None:
        assert n.special is Special.NRES
        return
    assert n == Number(mantissa, exponent)  # type: ignore[arg-type]
    assert n.value == value


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x07FF, Special.NAN),
        (0x0800, Special.NRES),
        (0x07FE, Special.POS_INF),
        (0x0802, Special.NEG_INF),
        (0x0801, Special.RFU),
    ],
)
def test_sfloat_specials_are_exact_words(raw: int, special: Special) -> None:
    assert decode_sfloat(raw).special is special
    assert encode_sfloat(special) == raw
    for exponent in (1, 0xF, 0x8):  # same mantissa, another exponent: an ordinary number
        other = decode_sfloat(raw | exponent << 12)
        assert other.special is None


@pytest.mark.parametrize(
    ("raw", "special"),
    [
        (0x007FFFFF, Special.NAN),
        (0x00800000, Special.NRES),
        (0x007FFFFE, Special.POS_INF),
        (0x00800002, Special.NEG_INF),
        (0x00800001, Special.RFU),
    ],
)
def test_float_specials(raw: int, special: Special) -> None:
    assert decode_float(raw).special is special
    assert encode_float(special) == raw
    assert decode_float(raw | 0xFF000000).special is None


def test_special_values() -> None:
    assert decode_sfloat(0x07FE).value == math.inf
    assert decode_sfloat(0x0802).value == -math.inf
    assert decode_sfloat(0x07FF).value is None
    assert math.isnan(float(decode_sfloat(0x07FF)))
    assert encode_sfloat(math.nan) == 0x07FF
    assert encode_sfloat(-math.inf) == 0x0802
    assert encode_float(math.inf) == 0x007FFFFE


def test_float_examples() -> None:
    # 36.4 Cel as FLOAT 364e-1: FF 00 01 6C on the wire is "6C 01 00 FF"
    n = float_from_bytes(bytes.fromhex("6C0100FF"))
    assert n == Number(364, -1)
    assert n.value == 36.4
    assert float_to_bytes(36.4) == bytes.fromhex("6C0100FF")
    assert decode_float(0x00000000).value == 0.0
    assert decode_float(0xFFFFFFFF) == Number(-1, -1)
    assert decode_float(0x80000001).value == 1e-128


def test_encode_from_float_shortest() -> None:
    assert Number.from_value(72) == Number(72, 0)
    assert Number.from_value(10.1) == Number(101, -1)
    assert Number.from_value(98.6, bits=32) == Number(986, -1)
    assert encode_sfloat(10.1, exponent=-1) == 0xF065
    assert sfloat_to_bytes(10.1) == bytes.fromhex("65F0")
    assert Number.from_value(2047) == Number(205, 1)  # rounds: 2047 at exponent 0 is the NaN word
    assert encode_sfloat(204.7) == 0xF7FF


def test_encode_errors() -> None:
    with pytest.raises(EncodeError):
        encode_sfloat(Number(2047, 0))  # the NaN word
    with pytest.raises(EncodeError):
        encode_sfloat(Number(5000, 0))
    with pytest.raises(EncodeError):
        encode_sfloat(Number(1, 8))
    with pytest.raises(EncodeError):
        encode_sfloat(1e30)
    with pytest.raises(EncodeError):
        encode_sfloat(100.0, exponent=-2)  # 10000 does not fit 12 bits
    with pytest.raises(DecodeError) as info:
        sfloat_from_bytes(b"\x01", field="systolic")
    assert str(info.value) == "systolic: expected 2 bytes at offset 0, got 1"


@given(st.integers(0, 0xFFFF))
def test_sfloat_word_round_trip(raw: int) -> None:
    assert encode_sfloat(decode_sfloat(raw)) == raw


@given(st.integers(0, 0xFFFFFFFF))
def test_float_word_round_trip(raw: int) -> None:
    assert encode_float(decode_float(raw)) == raw


@given(st.integers(-2045, 2045), st.integers(-8, 7))
def test_sfloat_value_round_trip(mantissa: int, exponent: int) -> None:
    value = Number(mantissa, exponent).value
    assert value is not None
    again = decode_sfloat(encode_sfloat(value))
    assert again.value == value
