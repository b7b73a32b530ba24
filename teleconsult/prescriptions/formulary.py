"""The bundled formulary (``data/formulary.json``): ~250 common products, DCI + strength + form + ATC + antibiotic flag.

Source and licence are stated in the file itself (WHO Essential Medicines List and WHO ATC index, compiled by
hand, CC0). ``load()`` parses and caches it; :meth:`Formulary.search` is a prefix search on the words of the DCI and
of the label, and on the ATC code, insensitive to case and accents.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

from teleconsult.prescriptions.errors import FormularyError

ATC_RE: Final = re.compile(r"^[A-Z]\d{2}([A-Z]([A-Z](\d{2})?)?)?$")
_WORD: Final = re.compile(r"[a-z0-9]+")


def fold(text: str) -> str:
    """Lower case without accents: ``"Paracétamol"`` -> ``"paracetamol"`` (for search and DCI comparison)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().strip()


def slug(text: str, *, compact: bool = False) -> str:
    """``"poudre pour suspension"`` -> ``"poudre-pour-suspension"``; compact: ``"500 mg/5 ml"`` -> ``"500mg-5ml"``."""
    folded = fold(text)
    return "-".join(_WORD.findall(folded.replace(" ", "") if compact else folded))


@dataclass(frozen=True, slots=True)
class Product:
    """One formulary product."""

    id: str
    inn: str
    strength: str
    form: str
    atc: str
    antibiotic: bool

    @property
    def label(self) -> str:
        """``"Amoxicilline 500 mg, gélule"``."""
        return f"{self.inn[:1].upper()}{self.inn[1:]} {self.strength}, {self.form}"


class Formulary:
    """Products by id, with search."""

    def __init__(self, products: list[Product], meta: dict[str, Any]) -> None:
        self.products = tuple(sorted(products, key=lambda p: (fold(p.inn), p.strength, p.form)))
        self.by_id = {p.id: p for p in self.products}
        if len(self.by_id) != len(products):
            raise FormularyError("duplicate product ids in the formulary")
        self.meta = meta
        self._words = {p.id: set(_WORD.findall(fold(p.label))) | {fold(p.inn), p.atc.lower()} for p in self.products}

    def get(self, product_id: str) -> Product | None:
        """The product or None."""
        return self.by_id.get(product_id)

    def search(self, query: str, limit: int = 20) -> list[Product]:
        """Products whose DCI, a word of their label or their ATC code starts with each word of ``query``."""
        terms = _WORD.findall(fold(query))
        if not terms:
            return list(self.products[:limit])
        found = []
        for p in self.products:
            words = self._words[p.id]
            if all(any(w.startswith(t) for w in words) for t in terms):
                found.append(p)
                if len(found) >= limit:
                    break
        return found

    def same_inn(self, a: Product, b: Product) -> bool:
        """Generic substitution is allowed between products of the same DCI."""
        return fold(a.inn) == fold(b.inn)


def _product(row: Any) -> Product:
    if not (isinstance(row, list) and len(row) == 5):
        raise FormularyError(f"bad formulary row {row!r}")
    inn, strength, form, atc, antibiotic = row
    if not all(isinstance(v, str) and v for v in (inn, strength, form, atc)) or not isinstance(antibiotic, bool):
        raise FormularyError(f"bad formulary row {row!r}")
    if not ATC_RE.match(atc):
        raise FormularyError(f"bad ATC code {atc!r}")
    return Product(
        id=f"{slug(inn)}-{slug(strength, compact=True)}-{slug(form)}",
        inn=inn,
        strength=strength,
        form=form,
        atc=atc,
        antibiotic=antibiotic,
    )


def parse(text: str) -> Formulary:
    """Parse the formulary file's JSON text."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not doc.get("source") or not doc.get("licence"):
        raise FormularyError("the formulary must state its source and licence")
    return Formulary([_product(r) for r in doc.get("products", [])], {k: v for k, v in doc.items() if k != "products"})


@cache
def load() -> Formulary:
    """The bundled formulary (parsed once)."""
    text = resources.files("teleconsult.prescriptions").joinpath("data/formulary.json").read_text(encoding="utf-8")
    return parse(text)
