"""The Azure SGX VM sizes epcsched knows, bundled with the package.

Scenario files and node-pool templates name a size (`sku: Standard_DC4s_v3`) instead of spelling
out its resources. The table ships inside the package (`epcsched/data/skus.csv`, from the Azure
DCsv2 and DCsv3/DCdsv3 documentation) so nothing reads files outside the installed package.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

from epcsched.quantity import MIB

GIB = 2**30


@dataclass(frozen=True, slots=True)
class Sku:
    """One VM size: whole vCPUs, memory and EPC in bytes."""

    name: str
    series: str
    vcpu: int
    memory: int
    """Memory in bytes."""
    epc: int
    """EPC in bytes."""
    note: str = ""

    def resources(self, epc_resource: str, epc_unit: int) -> dict[str, str | int | float]:
        """Node allocatable for a template, with EPC counted in `epc_resource`'s unit."""
        if self.epc % epc_unit:
            raise ValueError(f"{self.name}: EPC {self.epc} bytes is not whole units of {epc_unit}")
        return {
            epc_resource: self.epc // epc_unit,
            "cpu": str(self.vcpu),
            "memory": str(self.memory),
            "pods": "110",
        }


@cache
def sku_table() -> dict[str, Sku]:
    """Every bundled size by name, in the order of the table."""
    text = resources.files("epcsched").joinpath("data/skus.csv").read_text()
    table: dict[str, Sku] = {}
    for row in csv.DictReader(io.StringIO(text)):
        table[row["sku"]] = Sku(
            name=row["sku"],
            series=row["series"],
            vcpu=int(row["vcpu"]),
            memory=int(row["memory_gib"]) * GIB,
            epc=int(row["epc_mib"]) * MIB,
            note=row["note"],
        )
    return table


def lookup(name: str) -> Sku:
    """The size called `name`; KeyError names the known sizes."""
    table = sku_table()
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown SKU {name!r} (known: {', '.join(table)})") from None
