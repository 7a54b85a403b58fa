"""Every benchmark says in words whether its figure reached its target, so a miss cannot hide
in a line of numbers."""


def verdict(value: float, target: float) -> str:
    return "target met" if value >= target else "TARGET NOT MET"
