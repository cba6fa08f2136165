"""Kubernetes quantities parse exactly in every form, EPC becomes bytes, garbage is refused."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epcsched.objects import epc_of
from epcsched.quantity import (
    DEFAULT_EPC_RESOURCES,
    MIB,
    QuantityError,
    ceil_int,
    format_apart,
    format_bytes,
    parse_int,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128974848", Fraction(128974848)),
        ("129e6", Fraction(129_000_000)),
        ("129M", Fraction(129_000_000)),
        ("123Mi", Fraction(123 * 2**20)),
        ("0.5Gi", Fraction(2**29)),
        ("1.5k", Fraction(1500)),
        ("100m", Fraction(1, 10)),
        ("1E", Fraction(10**18)),
        ("2Ki", Fraction(2048)),
        ("1Ei", Fraction(2**60)),
        ("12e-3", Fraction(12, 1000)),
        ("1E3", Fraction(1000)),
        (".5", Fraction(1, 2)),
        ("5.", Fraction(5)),
        ("+3", Fraction(3)),
        ("-2Mi", Fraction(-2 * 2**20)),
        (" 64Mi ", Fraction(64 * 2**20)),
        (7, Fraction(7)),
        (0.25, Fraction(1, 4)),
    ],
)
def test_parses_every_form_exactly(text: str | int | float, value: Fraction) -> None:
    assert parse_quantity(text) == value


def test_large_byte_counts_are_not_rounded_through_floats() -> None:
    # 2**60 + 1 is not representable as a float; an exact parser keeps the last byte.
    assert parse_int(str(2**60 + 1)) == 2**60 + 1
    assert parse_int("1.000000000000000001E") == 10**18 + 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Mi",
        "12x",
        "1.2.3",
        "1 Mi",
        "1mi",
        "1KI",
        "e3",
        "1e",
        "--1",
        "1Mi5",
        "0x10",
        "1e999",
        "nan",
        "inf",
    ],
)
def test_rejects_invalid_strings_quoting_them(text: str) -> None:
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, float("nan")])
def test_rejects_non_quantities(value: object) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(value)  # type: ignore[arg-type]


def test_rounding_up_like_kubernetes_value() -> None:
    assert parse_int("100m") == 1
    assert ceil_int(parse_quantity("0.1") * 1000) == 100
    assert ceil_int(parse_quantity("1.0001") * 1000) == 1001


def test_epc_units_follow_the_resource_table() -> None:
    assert DEFAULT_EPC_RESOURCES["sgx.intel.com/epc"] == 1
    assert DEFAULT_EPC_RESOURCES["kubernetes.azure.com/sgx_epc_mem_in_MiB"] == MIB

    def epc(name: str, text: str) -> dict[str, int]:
        return epc_of({name: parse_quantity(text)}, DEFAULT_EPC_RESOURCES)

    assert epc("sgx.intel.com/epc", "64Mi") == {"sgx.intel.com/epc": 64 * MIB}
    assert epc("sgx.intel.com/epc", "98566144") == {"sgx.intel.com/epc": 98566144}
    assert epc("alibabacloud.com/sgx_epc_MiB", "168") == {"alibabacloud.com/sgx_epc_MiB": 168 * MIB}
    assert epc("example.com/not-epc", "1") == {}


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (64 * MIB, "64Mi"),
        (16 * 2**30, "16Gi"),
        (98041856, "93.5Mi"),
        (512, "512"),
        (-5 * MIB, "-5Mi"),
        (0, "0"),
        (1023, "1023"),
        (1024, "1Ki"),
        # Not whole in its unit, and one decimal would print it as whole: the exact count.
        (MIB + 1, "1048577"),
        (2 * MIB - 1, "2097151"),
        # Just under 1.95Mi: 1.9Mi, not whole, so the short form stays.
        (MIB + MIB * 95 // 100, "1.9Mi"),
        (MIB + MIB // 2, "1.5Mi"),
        (-(MIB + 1), "-1048577"),
    ],
)
def test_format_bytes(count: int, text: str) -> None:
    assert format_bytes(count) == text


@pytest.mark.parametrize(
    ("first", "second", "texts"),
    [
        (64 * MIB, 32 * MIB, ("64Mi", "32Mi")),
        (64 * MIB, 64 * MIB, ("64Mi", "64Mi")),
        # 93.52Mi and 93.48Mi both print as 93.5Mi: exact counts tell them apart.
        (98065735, 98023793, ("98065735", "98023793")),
        (MIB + 1, MIB, ("1048577", "1Mi")),
    ],
)
def test_format_apart(first: int, second: int, texts: tuple[str, str]) -> None:
    assert format_apart(first, second) == texts


_SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


@given(st.integers(min_value=0, max_value=10**12), st.sampled_from(sorted(_SUFFIXES)))
def test_integer_with_suffix_round_trips(number: int, suffix: str) -> None:
    assert parse_int(f"{number}{suffix}") == number * _SUFFIXES[suffix]


@given(st.integers(min_value=0, max_value=2**62))
def test_exponent_and_plain_forms_agree(number: int) -> None:
    assert parse_quantity(f"{number}e3") == parse_quantity(str(number * 1000))
    assert parse_quantity(f"{number}000m") == parse_quantity(str(number))


@given(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False))
def test_decimal_strings_parse_to_their_exact_value(number: object) -> None:
    assert parse_quantity(str(number)) == Fraction(str(number))
