"""The consumer catalog: who takes which events, and where two overlap or none covers a range.

Version specifiers (``<1.0``, ``>=0.1,<0.5``, ``~=0.2``, ``!=0.3``, ``==0.*``) are turned into
unions of intervals of versions, so that "both take" and "none takes" are set operations. The
analysis works on release versions: pre-releases and post-releases are not treated apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from packaging.specifiers import Specifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from balog.consumers import Consumer, ConsumerOperator, DefaultConsumerOperator

__all__ = [
    "ALL",
    "Bound",
    "Finding",
    "Interval",
    "analyse",
    "catalog",
    "domain",
    "format_ranges",
    "ranges_of",
]

ANY_CLS_TYPE = "*"


@dataclasses.dataclass(frozen=True)
class Bound:
    """One end of an interval; ``version`` ``None`` is infinity on that side."""

    version: Version | None
    inclusive: bool


@dataclasses.dataclass(frozen=True)
class Interval:
    low: Bound
    high: Bound

    def is_empty(self) -> bool:
        lo, hi = self.low.version, self.high.version
        if lo is None or hi is None:
            return False
        if lo < hi:
            return False
        return not (lo == hi and self.low.inclusive and self.high.inclusive)


Ranges = list[Interval]

ALL: Ranges = [Interval(Bound(None, False), Bound(None, False))]


def _point(v: Version) -> Ranges:
    return [Interval(Bound(v, True), Bound(v, True))]


def _at_least(v: Version, inclusive: bool = True) -> Ranges:
    return [Interval(Bound(v, inclusive), Bound(None, False))]


def _below(v: Version, inclusive: bool = False) -> Ranges:
    return [Interval(Bound(None, False), Bound(v, inclusive))]


def _span(lo: Version, hi: Version) -> Ranges:
    """``[lo, hi)``."""
    return [Interval(Bound(lo, True), Bound(hi, False))]


def _next_prefix(release: Sequence[int]) -> Version:
    """The first version after every version starting with ``release`` (``1.2`` -> ``1.3``)."""
    bumped = [*release[:-1], release[-1] + 1]
    return Version(".".join(str(p) for p in bumped))


def _release(text: str) -> tuple[int, ...]:
    return Version(text).release


def _specifier_ranges(spec: Specifier) -> Ranges:
    op, text = spec.operator, spec.version
    if text.endswith(".*"):
        base = text[:-2]
        lo = Version(base)
        hi = _next_prefix(_release(base))
        if op == "==":
            return _span(lo, hi)
        if op == "!=":
            return [*_below(lo), *_at_least(hi)]
    v = Version(text)
    if op in {"==", "==="}:
        return _point(v)
    if op == "!=":
        return [*_below(v), *_at_least(v, inclusive=False)]
    if op == ">=":
        return _at_least(v)
    if op == ">":
        return _at_least(v, inclusive=False)
    if op == "<=":
        return _below(v, inclusive=True)
    if op == "<":
        return _below(v)
    if op == "~=":
        release = v.release
        return _span(v, _next_prefix(release[:-1]))
    raise ValueError(f"unsupported specifier operator {op!r}")  # pragma: no cover


def _low_key(b: Bound) -> tuple[int, Any, int]:
    # -inf first; at equal versions an inclusive low bound starts earlier than an exclusive one.
    if b.version is None:
        return (0, None, 0)
    return (1, b.version, 0 if b.inclusive else 1)


def _lower_of_lows(a: Bound, b: Bound) -> Bound:
    return a if _low_key(a) <= _low_key(b) else b


def _higher_of_lows(a: Bound, b: Bound) -> Bound:
    return a if _low_key(a) >= _low_key(b) else b


def _high_key(b: Bound) -> tuple[int, Any, int]:
    # +inf last; at equal versions an inclusive high bound ends later than an exclusive one.
    if b.version is None:
        return (2, None, 0)
    return (1, b.version, 1 if b.inclusive else 0)


def _lower_of_highs(a: Bound, b: Bound) -> Bound:
    return a if _high_key(a) <= _high_key(b) else b


def _higher_of_highs(a: Bound, b: Bound) -> Bound:
    return a if _high_key(a) >= _high_key(b) else b


def _touches(high: Bound, low: Bound) -> bool:
    """True when an interval ending at ``high`` and one starting at ``low`` leave no gap."""
    if high.version is None or low.version is None:
        return True
    if high.version > low.version:
        return True
    if high.version == low.version:
        return high.inclusive or low.inclusive
    return False


def normalise(ranges: Iterable[Interval]) -> Ranges:
    """Sorted, merged, without empty intervals."""
    items = sorted((r for r in ranges if not r.is_empty()), key=lambda r: _low_key(r.low))
    out: Ranges = []
    for r in items:
        if out and _touches(out[-1].high, r.low):
            last = out[-1]
            out[-1] = Interval(last.low, _higher_of_highs(last.high, r.high))
        else:
            out.append(r)
    return out


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: Ranges = []
    for x in a:
        for y in b:
            r = Interval(_higher_of_lows(x.low, y.low), _lower_of_highs(x.high, y.high))
            if not r.is_empty():
                out.append(r)
    return normalise(out)


def union(*parts: Ranges) -> Ranges:
    return normalise(r for part in parts for r in part)


def complement(a: Ranges) -> Ranges:
    out: Ranges = []
    cursor = Bound(None, False)  # the low bound of the next gap
    for r in normalise(a):
        if r.low.version is not None:
            gap = Interval(cursor, Bound(r.low.version, not r.low.inclusive))
            if cursor.version is None or not gap.is_empty():
                out.append(gap)
        if r.high.version is None:
            return normalise(out)
        cursor = Bound(r.high.version, not r.high.inclusive)
    out.append(Interval(cursor, Bound(None, False)))
    return normalise(out)


def subtract(a: Ranges, b: Ranges) -> Ranges:
    return intersect(a, complement(b))


def ranges_of(version: str | Iterable[str] | None) -> Ranges:
    """The versions a consumer's ``version`` declaration takes (``None``: every version).

    Every member of a tuple must hold, as a comma inside one specifier means "and"."""
    if version is None:
        return list(ALL)
    texts = [version] if isinstance(version, str) else list(version)
    current = list(ALL)
    for text in texts:
        for spec in SpecifierSet(text):
            try:
                current = intersect(current, normalise(_specifier_ranges(spec)))
            except InvalidVersion:  # a legacy "===" string: it matches nothing we produce
                current = []
    return current


def domain(majors: Iterable[int]) -> Ranges:
    """The schema versions balog can read: ``[m, m+1)`` for each supported major ``m``."""
    return union(*(_span(Version(f"{m}.0"), Version(f"{m + 1}.0")) for m in majors))


def _fmt(v: Version) -> str:
    return str(v)


def format_interval(r: Interval) -> str:
    lo, hi = r.low, r.high
    if lo.version is not None and lo.version == hi.version:
        return f"=={_fmt(lo.version)}"
    parts = []
    if lo.version is not None:
        parts.append(f"{'>=' if lo.inclusive else '>'}{_fmt(lo.version)}")
    if hi.version is not None:
        parts.append(f"{'<=' if hi.inclusive else '<'}{_fmt(hi.version)}")
    return ",".join(parts) or "any"


def format_ranges(ranges: Ranges) -> str:
    """Specifier-like text: ``>=0.1,<0.5 or ==0.7``; ``any`` for every version, ``none``."""
    if not ranges:
        return "none"
    return " or ".join(format_interval(r) for r in normalise(ranges))


# -- the catalog --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Finding:
    """An overlap, a gap or an unreachable consumer found in the catalog."""

    kind: str  # "overlap", "gap" or "unreachable"
    topic: str
    cls_type: str
    versions: str
    consumers: tuple[str, ...]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "cls_type": self.cls_type,
            "versions": self.versions,
            "consumers": list(self.consumers),
            "message": self.message,
        }


def _cls_types(consumer: Consumer) -> tuple[str, ...] | None:
    return consumer.cls_type


def _version_text(consumer: Consumer) -> str:
    """The version condition as one specifier: every member of a tuple must hold."""
    value = consumer.version
    if value is None:
        return "any"
    return ",".join(value)


def catalog(
    consumers: Iterable[Consumer], operator: ConsumerOperator | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The consumers by topic (as the operator names it), each as a JSON-able mapping."""
    op = operator or DefaultConsumerOperator()
    topics: dict[str, list[dict[str, Any]]] = {}
    for consumer in consumers:
        topic = op.get_topic(consumer)
        cls_types = _cls_types(consumer)
        topics.setdefault(topic, []).append(
            {
                "name": consumer.name,
                "topic": topic,
                "cls_types": None if cls_types is None else list(cls_types),
                "version": _version_text(consumer),
                "versions": format_ranges(ranges_of(consumer.version)),
            }
        )
    return dict(sorted(topics.items()))


def analyse(
    consumers: Iterable[Consumer],
    *,
    operator: ConsumerOperator | None = None,
    majors: Iterable[int] = (0,),
    current: str | None = None,
) -> list[Finding]:
    """Overlaps and gaps among ``consumers``, per topic and cls_type.

    - overlap: two consumers on one topic both take some cls_type at some versions (a consumer
      declared without a cls_type takes them all);
    - gap: within the versions balog reads (``majors``), versions of a cls_type that no consumer
      on the topic takes; the ``current`` version (what balog produces today) is called out;
    - unreachable: a consumer that takes no version balog can read.
    """
    op = operator or DefaultConsumerOperator()
    readable = domain(majors)
    by_topic: dict[str, list[Consumer]] = {}
    for consumer in consumers:
        by_topic.setdefault(op.get_topic(consumer), []).append(consumer)
    found: list[Finding] = []
    for topic in sorted(by_topic):
        members = by_topic[topic]
        ranges = {c.name: ranges_of(c.version) for c in members}
        names = sorted({t for c in members for t in (_cls_types(c) or ())})
        buckets = names or [ANY_CLS_TYPE]

        def takes(c: Consumer, cls_type: str) -> bool:
            types = _cls_types(c)
            return types is None or cls_type == ANY_CLS_TYPE or cls_type in types

        for c in members:
            if not intersect(ranges[c.name], readable):
                found.append(
                    Finding(
                        "unreachable",
                        topic,
                        ", ".join(_cls_types(c) or (ANY_CLS_TYPE,)),
                        format_ranges(ranges[c.name]),
                        (c.name,),
                        f"topic {topic}: consumer {c.name} takes version "
                        f"{_version_text(c)}, none of which balog reads "
                        f"(it reads {format_ranges(readable)})",
                    )
                )
        for cls_type in buckets:
            takers = [c for c in members if takes(c, cls_type)]
            for i, a in enumerate(takers):
                for b in takers[i + 1 :]:
                    both = intersect(ranges[a.name], ranges[b.name])
                    if both:
                        text = format_ranges(both)
                        found.append(
                            Finding(
                                "overlap",
                                topic,
                                cls_type,
                                text,
                                (a.name, b.name),
                                f"topic {topic}: cls_type {cls_type} at version {text} is taken "
                                f"by both {a.name} and {b.name}",
                            )
                        )
            covered = union(*(ranges[c.name] for c in takers))
            missing = subtract(readable, covered)
            if missing:
                text = format_ranges(missing)
                note = ""
                if current is not None and intersect(missing, _point(Version(current))):
                    note = f", including {current}, the version balog produces today"
                found.append(
                    Finding(
                        "gap",
                        topic,
                        cls_type,
                        text,
                        tuple(c.name for c in takers),
                        f"topic {topic}: cls_type {cls_type} at version {text} is taken by no "
                        f"consumer{note}",
                    )
                )
    return found


def warnings_as_dicts(warnings: Iterable[Finding]) -> list[Mapping[str, Any]]:
    return [w.as_dict() for w in warnings]
