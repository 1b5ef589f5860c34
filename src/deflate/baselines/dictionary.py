"""The dictionary reference of the WDC-PAVE testbed: for each (category, attribute), the longest
training value (any gold spelling) that occurs in the offer's title + description, else n/a.
No parameters, nothing selected: the floor every learned system should clear."""
from __future__ import annotations

from dataclasses import dataclass, field

from deflate.data.records import Record
from deflate.data.splits import attributes_of


@dataclass
class Dictionary:
    values: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # longest first

    @classmethod
    def fit(cls, records: list[Record]) -> "Dictionary":
        seen: dict[tuple[str, str], set[str]] = {}
        for r in records:
            for lab in r.labels:
                seen.setdefault((r.category, lab["attribute"]), set()).update(lab.get("gold") or [lab["value"]])
        return cls({k: sorted(v, key=lambda s: (-len(s), s)) for k, v in sorted(seen.items())})

    def predict(self, records: list[Record], schema: dict) -> dict:
        """``{(offer id, attribute): [value]}`` for every attribute (of the offer's category, see
        :func:`deflate.data.splits.attributes_of`) where a known value is found."""
        pred = {}
        for r in records:
            text = f"{r.name} {r.description}"
            for attr in attributes_of(schema, r.category):
                hit = next((v for v in self.values.get((r.category, attr), []) if v in text), None)
                if hit is not None:
                    pred[(r.id, attr)] = [hit]
        return pred
