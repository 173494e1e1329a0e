"""Lookups the Cohorts and Explain pages use: user-id prefix search, a random user from a band,
a cohort sample, category options, the days-since-last-visit range."""
import pytest

from core.errors import NotFoundError
from core.insight.cohorts import (
    MAX_SUGGESTIONS,
    CohortSpec,
    cohort_categories,
    cohort_sample,
    cohort_summary,
    days_since_last_range,
    random_user,
    search_users,
)
from tests.test_cohorts import scored  # noqa: F401  (fixture: 100 users u0..u99, scores 0.99 -> 0)


def test_search_users_by_prefix_shortest_first(scored):  # noqa: F811
    assert search_users(scored, "d", "u1") == ["u1"] + [f"u1{k}" for k in range(10)]
    assert search_users(scored, "d", "u99") == ["u99"]
    assert search_users(scored, "d", "nobody") == []
    assert len(search_users(scored, "d", "u", limit=500)) == MAX_SUGGESTIONS
    assert search_users(scored, "d", "u%") == []            # LIKE wildcards are plain text


def test_search_users_reads_events_before_any_scoring(scored):  # noqa: F811
    with scored.write("d", "test: no user stats") as w:
        w.remove("user_stats")
    assert search_users(scored, "d", "u5")[:2] == ["u5", "u50"]


def test_random_user_comes_from_the_band_and_is_repeatable(scored):  # noqa: F811
    scores = dict(scored.fetchall("SELECT user_id, probability FROM scores"))
    for band, ok in (("high", lambda p: p >= 0.5), ("medium", lambda p: 0.2 <= p < 0.5),
                     ("low", lambda p: p < 0.2)):
        drawn = {random_user(scored, "m1", "d", band, seed=s) for s in range(8)}
        assert all(ok(scores[u]) for u in drawn), (band, drawn)
        assert len(drawn) > 1                                # seeds draw different users
    assert random_user(scored, "m1", "d", "high", seed=3) == random_user(scored, "m1", "d", "high", seed=3)
    with pytest.raises(NotFoundError, match=r"has no|not scored"):
        random_user(scored, "nope", "d", "high")
    with pytest.raises(NotFoundError, match=r"Pick another band|no user"):
        random_user(scored, "m1", "d", "high", band_edges=(0.995, 0.999))


def test_cohort_sample_is_a_subset_of_the_cohort(scored):  # noqa: F811
    spec = CohortSpec(mode="top", top_percent=30)
    sample = cohort_sample(scored, "m1", "d", spec, 10)
    assert len(sample) == len(set(sample)) == 10
    assert set(sample) <= {f"u{k}" for k in range(30)}
    assert cohort_sample(scored, "m1", "d", spec, 10) == sample
    assert len(cohort_sample(scored, "m1", "d", spec, 1000)) == cohort_summary(scored, "m1", "d", spec).size


def test_category_options_and_recency_range(scored):  # noqa: F811
    cats = cohort_categories(scored, "d")
    assert list(cats.columns) == ["category", "users"]
    assert cats.set_index("category")["users"].to_dict() == {"c0": 34, "c1": 33, "c2": 33, "c9": 10}
    low, high = days_since_last_range(scored, "d")
    assert low == 0.0 and high == pytest.approx(99 / 24)     # u0's view at T; u99's last view 99 h earlier
    assert days_since_last_range(scored, "nope") == (0.0, 0.0)
