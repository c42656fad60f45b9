"""A row of the results table: pyctr's figure, its peer's, their ratio, and the budget."""

from dataclasses import dataclass, field

from bench.measure import Series


@dataclass
class Row:
    key: str  # stable across runs, for --compare
    scenario: str
    title: str
    pyctr: Series
    peer: Series | None = None
    ratio: float | None = None  # pyctr / peer (pair by pair for timings)
    floor: Series | None = None
    budget: float | None = None  # met when ratio <= budget
    extra: dict = field(default_factory=dict)  # detail kept in the JSON only
    budget_on_figure: bool = False  # the budget bounds pyctr's own figure (a count, MiB), not the ratio

    @property
    def met(self) -> bool | None:
        bounded = self.ratio if not self.budget_on_figure else self.pyctr.median if self.pyctr.ok else None
        if self.budget is None or bounded is None:
            return None
        return bounded <= self.budget

    def to_json(self) -> dict:
        return {
            "key": self.key, "scenario": self.scenario, "title": self.title,
            "pyctr": self.pyctr.to_json(),
            "peer": self.peer.to_json() if self.peer else None,
            "floor": self.floor.to_json() if self.floor else None,
            "ratio": self.ratio, "budget": self.budget, "budget_on_figure": self.budget_on_figure,
            "met": self.met,
            "extra": self.extra,
        }
