"""The consumer catalog's version arithmetic: overlaps, gaps and unreachable consumers."""

from __future__ import annotations

from typing import Any

import pytest

from balog.cli.catalog import analyse, catalog, domain, format_ranges, intersect, ranges_of
from balog.consumers import Consumer


def _consumer(name: str, topic: str, cls_type: Any, version: Any) -> Consumer:
    return Consumer(lambda event: None, topic, cls_type=cls_type, version=version, name=name)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, "any"),
        ("<1.0", "<1.0"),
        (">=0.1,<0.5", ">=0.1,<0.5"),
        ("~=0.2", ">=0.2,<1"),
        ("==0.3.*", ">=0.3,<0.4"),
        ("!=0.3", "<0.3 or >0.3"),
        (("<0.1", ">=0.2,<0.3"), "none"),  # a tuple: every condition must hold
        ((">=0.1", "<0.5"), ">=0.1,<0.5"),
        (">=1.0,<1.0", "none"),
        ("==0.1.0", "==0.1.0"),
    ],
)
def test_specifiers_become_version_ranges(version: Any, expected: str) -> None:
    """Each specifier form maps to the versions it admits."""
    assert expected == format_ranges(ranges_of(version))


def test_readable_domain_is_each_supported_major() -> None:
    """balog reads every version of its supported majors."""
    assert format_ranges(domain([0, 2])) == ">=0.0,<1.0 or >=2.0,<3.0"


def test_overlap_is_reported_with_the_shared_versions() -> None:
    """Two consumers on one topic taking one cls_type at common versions is an overlap."""
    consumers = [
        _consumer("a", "t", "metrics", "<0.5"),
        _consumer("b", "t", ("metrics", "log"), ">=0.3,<1.0"),
        _consumer("c", "other", "metrics", "<1.0"),
    ]
    overlaps = [f for f in analyse(consumers) if f.kind == "overlap"]
    assert [(f.topic, f.cls_type, f.versions, f.consumers) for f in overlaps] == [
        ("t", "metrics", ">=0.3,<0.5", ("a", "b"))
    ]


def test_consumer_without_cls_type_overlaps_every_cls_type() -> None:
    """A consumer declared without a cls_type takes them all, so it overlaps a specific one."""
    consumers = [_consumer("all", "t", None, "<1.0"), _consumer("m", "t", "metrics", "<1.0")]
    overlaps = [(f.cls_type, f.consumers) for f in analyse(consumers) if f.kind == "overlap"]
    assert overlaps == [("metrics", ("all", "m"))]


def test_gap_is_reported_and_the_current_version_called_out() -> None:
    """Versions of the readable range that no consumer of a cls_type takes are a gap."""
    consumers = [
        _consumer("old", "t", "metrics", "<0.1"),
        _consumer("new", "t", "metrics", ">=0.2,<1.0"),
    ]
    gaps = [f for f in analyse(consumers, current="0.1.0") if f.kind == "gap"]
    assert [(f.versions, f.topic, f.cls_type) for f in gaps] == [(">=0.1,<0.2", "t", "metrics")]
    assert "including 0.1.0, the version balog produces today" in gaps[0].message


def test_full_coverage_without_overlap_has_no_findings() -> None:
    """Consumers that split the readable range cleanly produce no warning."""
    consumers = [
        _consumer("old", "t", "metrics", "<0.1"),
        _consumer("new", "t", "metrics", ">=0.1,<1.0"),
        _consumer("logs", "t", "log", None),
    ]
    assert analyse(consumers) == []


def test_consumer_of_unreadable_versions_is_unreachable() -> None:
    """A consumer whose range holds no version balog reads can never run."""
    findings = analyse([_consumer("future", "t", "metrics", ">=1.0")])
    assert [f.kind for f in findings] == ["unreachable", "gap"]
    assert findings[1].versions == ">=0.0,<1.0"


def test_catalog_groups_consumers_by_operator_topic() -> None:
    """The catalog lists each consumer under the topic the operator gives it."""

    class Operator:
        def get_topic(self, consumer: Consumer) -> str:
            return consumer.topic.format(env="prod")

        def process_event(self, consumer: Consumer, event: dict[str, Any]) -> Any:
            return None

    listed = catalog([_consumer("m", "events-{env}", "metrics", "<1.0")], Operator())
    assert listed == {
        "events-prod": [
            {
                "name": "m",
                "topic": "events-prod",
                "cls_types": ["metrics"],
                "version": "<1.0",
                "versions": "<1.0",
            }
        ]
    }


def test_intersection_of_point_and_open_range() -> None:
    """An excluded point splits a range; intersecting with that point leaves nothing."""
    assert intersect(ranges_of("!=0.5"), ranges_of("==0.5")) == []
    assert format_ranges(intersect(ranges_of("<=0.5"), ranges_of(">=0.5"))) == "==0.5"
