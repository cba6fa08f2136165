"""Kubernetes resource quantities, parsed exactly, and EPC normalised to bytes.

Kubernetes writes the same amount many ways (`128974848`, `129e6`, `123Mi`, `0.5Gi`), and EPC
plugins disagree on the unit of one count (bytes or MiB). Every EPC figure inside epcsched is an
integer number of bytes; this module is the only place that turns text into those integers.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
# Beyond this, a "quantity" is almost certainly garbage and exact arithmetic on it gets costly.
_MAX_EXPONENT = 64

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|m|k|M|G|T|P|E)?"
)

MIB = 2**20

#: The EPC resource names epcsched knows by default and the bytes in one count of each.
DEFAULT_EPC_RESOURCES: dict[str, int] = {
    "sgx.intel.com/epc": 1,
    "kubernetes.azure.com/sgx_epc_mem_in_MiB": MIB,
    "sgx.intel.com/sgx_epc_mem_in_MiB": MIB,
    "alibabacloud.com/sgx_epc_MiB": MIB,
}


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity; the message quotes it."""


def parse_quantity(value: str | int | float) -> Fraction:
    """Return the exact value of a Kubernetes quantity.

    JSON numbers are accepted as the API server accepts them. Strings follow the grammar of
    k8s.io/apimachinery `resource.Quantity`: a signed decimal number followed by a binary-SI
    suffix, a decimal-SI suffix or a decimal exponent.
    """
    if isinstance(value, bool):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or a number")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError(f"invalid quantity {value!r}: not a finite number")
        return Fraction(repr(value))
    if not isinstance(value, str):
        raise QuantityError(f"invalid quantity {value!r}: expected a string or a number")
    text = value.strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"invalid quantity {value!r}")
    number = Fraction(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        number *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        number *= _DECIMAL[suffix]
    else:
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"invalid quantity {value!r}: exponent out of range")
        number *= Fraction(10) ** exponent
    return -number if match["sign"] == "-" else number


def ceil_int(value: Fraction) -> int:
    """Round up as `Quantity.Value()` does: a fractional byte is a whole byte."""
    return math.ceil(value)


def parse_int(value: str | int | float) -> int:
    """Parse a quantity counted in whole units (bytes, pods), rounding up."""
    return ceil_int(parse_quantity(value))


def format_bytes(count: int) -> str:
    """Short human form for reasons and tables: `64Mi`, `93.5Mi`, `16Gi`, `-5Mi`, `512`.

    A count that is not whole in its unit never prints as whole: `1Mi + 1` is `1048577`, not
    `1.0Mi`, which a reader would take for exactly 1Mi.
    """
    if count < 0:
        return "-" + format_bytes(-count)
    for suffix, size in reversed(_BINARY.items()):
        if count >= size:
            whole, rest = divmod(count, size)
            if rest == 0:
                return f"{whole}{suffix}"
            short = f"{count / size:.1f}"
            return str(count) if short.endswith(".0") else short + suffix
    return str(count)


def format_apart(first: int, second: int) -> tuple[str, str]:
    """Both counts in `format_bytes`'s form, or as exact byte counts when that form would print
    two different counts alike: a reason must not read "requested 93.5Mi, free 93.5Mi"."""
    one, two = format_bytes(first), format_bytes(second)
    if one == two and first != second:
        return str(first), str(second)
    return one, two
