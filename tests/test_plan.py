"""plan.py: which claimed refreshes beat sends together, and when (pure)."""

from __future__ import annotations

from token_worker.constants import MAX_BATCH
from token_worker.plan import TARGET_TASKS, Send, batch_size, plan_sends
from token_worker.store_claims import Claim


def claims(*runs: float, lapsed: bool = False) -> list[Claim]:
    return [Claim(f"p{i:05d}", r, lapsed) for i, r in enumerate(runs)]


def sent_profiles(sends: list[Send]) -> list[str]:
    return sorted(p for s in sends for p in s.profiles)


def test_batch_size_follows_the_backlog() -> None:
    assert batch_size(0) == 1 and batch_size(1) == 1 and batch_size(TARGET_TASKS) == 1
    assert batch_size(TARGET_TASKS + 1) == 2
    assert batch_size(1000) == 16  # 63 tasks of up to 16
    assert batch_size(10_000) == MAX_BATCH


def test_a_few_due_refreshes_go_one_per_task_each_at_its_due_time() -> None:
    sends = plan_sends(claims(100.0, 100.5, 103.0), now=100.0)
    assert sends == [Send(("p00000",), 0.0), Send(("p00001",), 0.5), Send(("p00002",), 3.0)]


def test_a_cold_fleet_goes_out_in_batches_all_at_once() -> None:
    group = claims(*[50.0] * 1000)
    sends = plan_sends(group, now=50.0)
    assert len(sends) == 63 and {len(s.profiles) for s in sends} == {16, 8}
    assert all(s.countdown == 0.0 for s in sends)
    assert sent_profiles(sends) == sorted(c.profile for c in group)  # each exactly once


def test_a_batch_runs_at_its_latest_members_due_time_never_before_any() -> None:
    runs = [10.0 + i * 0.005 for i in range(200)]  # 200 due within one second
    sends = plan_sends(claims(*runs), now=9.0)
    assert all(len(s.profiles) > 1 for s in sends)
    due = {c.profile: c.runs_at for c in claims(*runs)}
    for s in sends:
        assert all(9.0 + s.countdown >= due[p] for p in s.profiles)
        assert 9.0 + s.countdown - min(due[p] for p in s.profiles) <= 1.0  # late by < 1 s


def test_windows_further_apart_are_separate_groups() -> None:
    runs = [10.0] * 100 + [20.0] * 100
    sends = plan_sends(claims(*runs), now=10.0)
    assert {s.countdown for s in sends} == {0.0, 10.0}
    assert sent_profiles(sends) == sorted(c.profile for c in claims(*runs))


def test_lapsed_claims_go_alone_as_the_task_every_version_takes() -> None:
    lost = [Claim(f"lost{i}", 5.0, True) for i in range(100)]
    fresh = claims(*[5.0] * 100)
    sends = plan_sends(lost + fresh, now=5.0)
    assert all(len(s.profiles) == 1 for s in sends if s.profiles[0].startswith("lost"))
    assert any(len(s.profiles) > 1 for s in sends)
    assert len(sent_profiles(sends)) == 200


def test_overdue_refreshes_are_sent_now_never_with_a_negative_countdown() -> None:
    sends = plan_sends(claims(1.0, 2.0), now=100.0)
    assert [s.countdown for s in sends] == [0.0, 0.0]


def test_max_batch_caps_the_size_and_one_sends_no_batch() -> None:
    many = claims(*[1.0] * 200)  # batch_size(200) is 4
    assert [len(s.profiles) for s in plan_sends(many, now=1.0, max_batch=3)] == \
        [3] * 66 + [2]
    assert {len(s.profiles) for s in plan_sends(many, now=1.0, max_batch=1)} == {1}
    assert {len(s.profiles) for s in plan_sends(many, now=1.0, max_batch=0)} == {1}
    assert {len(s.profiles) for s in plan_sends(many, now=1.0)} == {4}
