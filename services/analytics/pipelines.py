"""The aggregation pipelines of the queries: portable to MongoDB and SecantusDB alike.

Each one starts with a ``$match`` of exactly ``{type: <one type>, ts: {$gte, $lt}}``, the
shape both servers answer with an index scan of ``(type, ts)`` (SecantusDB's planner does
not use an index for ``type: {$in: [...]}``, so the funnel reads each step type with its own
match, joined with ``$unionWith``). Stages used: $match, $group ($sum, $push), $sort,
$limit, $project, $unionWith (MongoDB 4.4+); expressions $dateToString with a fixed-offset
timezone, $switch, $lt/$gt/$lte/$eq/$ne/$and/$or/$cond, $add, $arrayElemAt, $reduce,
$literal, $sortArray (MongoDB 5.2+). Not used: $dateTrunc and IANA zone names on the server
(see `buckets`), $setWindowFields, $bucket (SecantusDB compares each document with every
boundary: minute buckets over 7 days would be 10,080 comparisons per event), $topN.
"""

from __future__ import annotations

from typing import Any, Final

from services.analytics.buckets import Bucketing
from services.analytics.queries import EventRange, FunnelQuery, TopQuery

Pipeline = list[dict[str, Any]]
TIME_FIELD: Final = "ts"
USER_FIELD: Final = "userId"


def match(event_range: EventRange) -> dict[str, Any]:
    return {
        "$match": {
            "type": event_range.type,
            TIME_FIELD: {"$gte": event_range.start, "$lt": event_range.end},
        }
    }


def counts(event_range: EventRange, bucketing: Bucketing) -> Pipeline:
    """``{_id: <bucket key>, count}`` per bucket with events."""
    return [
        match(event_range),
        {"$group": {"_id": bucketing.key_expression(f"${TIME_FIELD}"), "count": {"$sum": 1}}},
    ]


def uniques(event_range: EventRange, bucketing: Bucketing) -> Pipeline:
    """``{_id: <bucket key>, users}``: distinct user ids per bucket (two $group stages, so
    that no stage holds a set of users in one document)."""
    return [
        match(event_range),
        {
            "$group": {
                "_id": {"k": bucketing.key_expression(f"${TIME_FIELD}"), "u": f"${USER_FIELD}"}
            }
        },
        {"$match": {"_id.u": {"$ne": None}}},  # after the $group: one check per user, not event
        {"$group": {"_id": "$_id.k", "users": {"$sum": 1}}},
    ]


def top(query: TopQuery) -> Pipeline:
    """``{_id: <value>, count}``, most frequent first, ties by value."""
    path = f"properties.{query.property}"
    return [
        match(query.range),
        {"$match": {path: {"$exists": True}}},
        {"$group": {"_id": f"${path}", "count": {"$sum": 1}}},
        {"$sort": {"count": -1, "_id": 1}},
        {"$limit": query.limit},
    ]


def funnel(query: FunnelQuery, collection: str) -> Pipeline:
    """``{_id: <steps reached>, users}`` for users who reached at least step 1.

    The step events are grouped by user; each user's, put in time order (``$sortArray``,
    cheaper than a ``$sort`` of every event before the ``$group``), are folded with
    ``$reduce`` into ``{s: steps reached, t0: time of step 1, last: time of the last step
    reached}``. Events at the same instant may come in any order: a step must come strictly
    after the one before, so at most one step is reached per instant either way.
    """
    first, *others = query.ranges()
    step = {
        "$and": [
            {"$lt": ["$$value.s", len(query.steps)]},
            {"$eq": ["$$this.t", {"$arrayElemAt": [{"$literal": list(query.steps)}, "$$value.s"]}]},
            {
                "$or": [
                    {"$eq": ["$$value.s", 0]},
                    {
                        "$and": [
                            {"$gt": ["$$this.ts", "$$value.last"]},
                            {
                                "$lte": [
                                    "$$this.ts",
                                    {
                                        "$add": [
                                            "$$value.t0",
                                            int(query.within.total_seconds()) * 1000,
                                        ]
                                    },
                                ]
                            },
                        ]
                    },
                ]
            },
        ]
    }
    advance = {
        "s": {"$add": ["$$value.s", 1]},
        "t0": {"$cond": [{"$eq": ["$$value.s", 0]}, "$$this.ts", "$$value.t0"]},
        "last": "$$this.ts",
    }
    return [
        match(first),
        *({"$unionWith": {"coll": collection, "pipeline": [match(r)]}} for r in others),
        {"$group": {"_id": f"${USER_FIELD}", "events": {"$push": {"t": "$type", "ts": "$ts"}}}},
        {"$match": {"_id": {"$ne": None}}},
        {
            "$project": {
                "reached": {
                    "$reduce": {
                        "input": {"$sortArray": {"input": "$events", "sortBy": {"ts": 1}}},
                        "initialValue": {"s": 0, "t0": None, "last": None},
                        "in": {"$cond": [step, advance, "$$value"]},
                    }
                }
            }
        },
        {"$match": {"reached.s": {"$gt": 0}}},
        {"$group": {"_id": "$reached.s", "users": {"$sum": 1}}},
    ]
