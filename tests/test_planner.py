"""The pure planner: what leaves memory so a model can come in, decided from plain data."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from sourceprep_models.planner import Demand, Plan, Policy, Refusal, Resident, plan_load

GB = 1000**3


def r(name: str, gb: float, pinned: bool = False, options: str = "") -> Resident:
    return Resident(key=name, name=name, size=int(gb * GB), pinned=pinned, options_key=options)


def d(name: str, gb: float, options: str = "") -> Demand:
    return Demand(key=name, name=name, size=int(gb * GB), options_key=options)


def names(models: tuple[Resident, ...]) -> list[str]:
    return sorted(model.name for model in models)


def test_same_model_same_options_is_a_noop() -> None:
    plan = plan_load([r("qwen3:4b", 3)], d("qwen3:4b", 3), Policy(budget=10 * GB))
    assert isinstance(plan, Plan) and plan.noop and plan.evict == ()


def test_same_model_new_options_is_a_reload_that_frees_the_old_copy() -> None:
    plan = plan_load([r("qwen3:4b", 3, options="ctx=4096"), r("b", 6)], d("qwen3:4b", 4, "ctx=8192"), Policy(10 * GB))
    assert isinstance(plan, Plan) and plan.reload and not plan.noop
    assert names(plan.evict) == ["qwen3:4b"]  # the old copy goes; b stays since 4 + 6 fits
    assert plan.resident_after == 10 * GB


def test_too_large_for_an_empty_machine_is_refused_before_evicting() -> None:
    refusal = plan_load([r("a", 2)], d("huge", 11), Policy(10 * GB))
    assert isinstance(refusal, Refusal)
    assert "even with nothing else loaded" in refusal.reason


def test_fits_alongside_without_evicting() -> None:
    plan = plan_load([r("a", 3), r("b", 3)], d("c", 4), Policy(10 * GB))
    assert isinstance(plan, Plan) and plan.evict == ()


def test_evicts_the_fewest_then_the_cheapest() -> None:
    resident = [r("small", 1), r("mid", 3), r("large", 5)]
    # Need 4 GB free beyond the 1 free: one model must go; "large" is the only single that frees >= 4,
    # but "mid" (3) suffices for need=3 → choose mid over large (fewer bytes to reload).
    plan = plan_load(resident, d("new", 4), Policy(budget=10 * GB))
    assert isinstance(plan, Plan) and names(plan.evict) == ["mid"]


def test_single_model_mode_evicts_every_unpinned_and_keeps_pins() -> None:
    plan = plan_load([r("pin", 2, pinned=True), r("a", 1), r("b", 1)], d("c", 1), Policy(10 * GB, single_model=True))
    assert isinstance(plan, Plan) and names(plan.evict) == ["a", "b"]


def test_pin_is_not_evicted_without_policy() -> None:
    refusal = plan_load([r("pin", 6, pinned=True), r("a", 1)], d("heavy", 8), Policy(10 * GB))
    assert isinstance(refusal, Refusal)
    assert names(refusal.blocking_pins) == ["pin"]
    assert "allow_evict_pinned" in refusal.reason


def test_pin_evicted_with_policy_is_scheduled_for_restore_with_a_warning() -> None:
    plan = plan_load([r("pin", 6, pinned=True), r("a", 1)], d("heavy", 8), Policy(10 * GB, allow_evict_pinned=True))
    assert isinstance(plan, Plan)
    assert names(plan.evict) == ["pin"]  # with the pin's room freed, "a" can stay
    assert names(plan.restore_after) == ["pin"]
    assert plan.warnings and "pinned pin" in plan.warnings[0]


sizes = st.integers(min_value=1, max_value=40)
residents = st.lists(st.tuples(sizes, st.booleans()), max_size=7)


@settings(max_examples=300, deadline=None)
@given(residents, sizes, st.integers(min_value=1, max_value=60), st.booleans(), st.booleans())
def test_plan_properties(
    loaded: list[tuple[int, bool]], incoming: int, budget: int, single: bool, allow_pins: bool
) -> None:
    # Resident sets the real server would hold: they fit the budget together.
    resident = [r(f"m{i}", size, pinned) for i, (size, pinned) in enumerate(loaded)]
    if sum(model.size for model in resident) > budget * GB:
        return
    policy = Policy(budget * GB, single_model=single, allow_evict_pinned=allow_pins)
    result = plan_load(resident, d("new", incoming), policy)
    if isinstance(result, Refusal):
        # Refused only when it truly cannot fit under this policy.
        evictable = [m for m in resident if allow_pins or not m.pinned]
        kept = sum(m.size for m in resident if m not in evictable)
        assert incoming * GB + kept > budget * GB
        return
    assert result.resident_after <= budget * GB  # never exceeds the budget
    if not allow_pins:
        assert not any(model.pinned for model in result.evict)  # never evicts a pin without the policy
    free = budget * GB - sum(model.size for model in resident)
    if not single and incoming * GB <= free:
        assert result.evict == ()  # never evicts when not needed
    if not single and result.evict:
        # Minimal: no smaller set of victims would have been enough.
        need = incoming * GB - free
        for count in range(len(result.evict)):
            for combo in combinations([m for m in resident if allow_pins or not m.pinned], count):
                assert sum(m.size for m in combo) < need
