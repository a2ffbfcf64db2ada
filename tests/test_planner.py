"""The pure planner: what leaves memory so a model can come in, decided from plain data."""

from __future__ import annotations

from itertools import combinations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sourceprep_models.planning.load import Demand, Plan, Policy, Refusal, Resident, plan_load

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
@example(loaded=[(1, False), (1, False), (1, False), (2, True)], incoming=2, budget=5, single=False, allow_pins=True)
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
        need = incoming * GB - free
        unpinned = [m for m in resident if not m.pinned]
        if any(model.pinned for model in result.evict):
            # Rule 5: a pin leaves only when every unpinned model together would not be enough.
            assert sum(m.size for m in unpinned) < need
        else:
            # Minimal: no smaller set of unpinned victims would have been enough (pins are not candidates
            # while unpinned models can free the room, even when fewer pins would).
            for count in range(len(result.evict)):
                for combo in combinations(unpinned, count):
                    assert sum(m.size for m in combo) < need


# -- a server's cap on the number of loaded models (llama.cpp --models-max) ------------------------------


def test_model_cap_evicts_the_smallest_unpinned_instead_of_the_servers_lru() -> None:
    resident = [r("pin", 1, pinned=True), r("big", 4), r("small", 2)]
    plan = plan_load(resident, d("new", 1), Policy(budget=100 * GB, max_models=3))
    assert isinstance(plan, Plan) and names(plan.evict) == ["small"]


def test_model_cap_not_reached_evicts_nothing() -> None:
    plan = plan_load([r("a", 1), r("b", 1)], d("c", 1), Policy(budget=100 * GB, max_models=3))
    assert isinstance(plan, Plan) and plan.evict == ()


def test_model_cap_full_of_pins_is_refused_unless_policy_allows() -> None:
    resident = [r("p1", 1, pinned=True), r("p2", 2, pinned=True)]
    refusal = plan_load(resident, d("c", 1), Policy(budget=100 * GB, max_models=2))
    assert isinstance(refusal, Refusal) and "at most 2 models" in refusal.reason
    assert [pin.name for pin in refusal.blocking_pins] == ["p1"]

    plan = plan_load(resident, d("c", 1), Policy(budget=100 * GB, max_models=2, allow_evict_pinned=True))
    assert isinstance(plan, Plan) and names(plan.evict) == ["p1"] and names(plan.restore_after) == ["p1"]


def test_model_cap_counts_evictions_already_made_for_memory() -> None:
    # 'big' leaves for memory; that also makes room under the cap, so nothing else leaves.
    plan = plan_load([r("big", 8), r("small", 1)], d("c", 4), Policy(budget=10 * GB, max_models=2))
    assert isinstance(plan, Plan) and names(plan.evict) == ["big"]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=0, max_size=6),
    pins=st.lists(st.booleans(), min_size=6, max_size=6),
    cap=st.integers(min_value=1, max_value=4),
)
def test_model_cap_always_holds_after_the_plan(sizes: list[int], pins: list[bool], cap: int) -> None:
    resident = [r(f"m{i}", size, pinned=pins[i]) for i, size in enumerate(sizes)]
    plan = plan_load(resident, d("new", 1), Policy(budget=100 * GB, max_models=cap))
    if isinstance(plan, Refusal):
        assert sum(pins[: len(sizes)]) >= cap  # only pins could have made room
        return
    assert len(resident) - len(plan.evict) + 1 <= cap
    assert not any(victim.pinned for victim in plan.evict)


# -- several servers of one machine: memory victims from any server, cap victims from the capped one --------


def on(server: str, name: str, gb: float, pinned: bool = False) -> Resident:
    return Resident(key=name, name=name, size=int(gb * GB), pinned=pinned, group=server)


def test_cap_of_one_server_takes_its_victim_there_while_memory_takes_the_cheapest_anywhere() -> None:
    resident = [on("router", "r1", 1), on("router", "r2", 2), on("ollama", "o1", 4), on("ollama", "o2", 3)]
    incoming = Demand(key="r3", name="r3", size=3 * GB, group="router")
    plan = plan_load(resident, incoming, Policy(budget=10 * GB, max_models={"router": 2}))
    # o2 frees exactly the 3 GB needed; then the router holds r1, r2 and r3: its smallest, r1, leaves.
    assert isinstance(plan, Plan) and [victim.name for victim in plan.evict] == ["o2", "r1"]
    assert plan.resident_after == 9 * GB
    # One cap over every model (the single-server reading) counts o1 too, so r2 would leave as well.
    plan = plan_load(resident, incoming, Policy(budget=10 * GB, max_models=2))
    assert isinstance(plan, Plan) and [victim.name for victim in plan.evict] == ["o2", "r1", "r2"]


def test_cap_of_another_server_does_not_limit_this_load() -> None:
    resident = [on("ollama", "o1", 1), on("ollama", "o2", 1), on("router", "r1", 1)]
    incoming = Demand(key="r2", name="r2", size=GB, group="router")
    plan = plan_load(resident, incoming, Policy(budget=100 * GB, max_models={"ollama": 1}))
    assert isinstance(plan, Plan) and plan.evict == ()


def test_cap_full_of_pins_names_the_server() -> None:
    resident = [on("router", "p1", 1, pinned=True), on("router", "p2", 2, pinned=True), on("ollama", "p3", 1, True)]
    incoming = Demand(key="c", name="c", size=GB, group="router")
    refusal = plan_load(resident, incoming, Policy(budget=100 * GB, max_models={"router": 2}))
    assert isinstance(refusal, Refusal) and names(refusal.blocking_pins) == ["p1"]
    assert refusal.reason == (
        "the server 'router' keeps at most 2 models loaded and pinned p1 would have to leave; raise its "
        "--models-max, set memory.allow_evict_pinned = true, or unpin with `sourceprep-models pin --remove`"
    )
    allowed = Policy(budget=100 * GB, max_models={"router": 2}, allow_evict_pinned=True)
    plan = plan_load(resident, incoming, allowed)
    assert isinstance(plan, Plan) and names(plan.evict) == ["p1"] and names(plan.restore_after) == ["p1"]
    assert plan.warnings == (
        "evicting pinned p1: the server 'router' keeps at most 2 models loaded; it will be reloaded when the "
        "heavy work is done",
    )


def test_single_model_mode_means_one_unpinned_model_on_the_machine() -> None:
    resident = [on("router", "r1", 1), on("ollama", "o1", 1), on("ollama", "pin", 1, pinned=True)]
    incoming = Demand(key="r2", name="r2", size=GB, group="router")
    plan = plan_load(resident, incoming, Policy(budget=100 * GB, single_model=True, max_models={"router": 4}))
    assert isinstance(plan, Plan) and names(plan.evict) == ["o1", "r1"]


@settings(max_examples=200, deadline=None)
@given(
    loaded=st.lists(st.tuples(st.integers(1, 5), st.booleans(), st.sampled_from(["router", "ollama"])), max_size=6),
    server=st.sampled_from(["router", "ollama"]),
    caps=st.dictionaries(st.sampled_from(["router", "ollama"]), st.integers(min_value=1, max_value=4)),
)
def test_cap_holds_for_the_incoming_server_and_takes_victims_only_there(
    loaded: list[tuple[int, bool, str]], server: str, caps: dict[str, int]
) -> None:
    resident = [on(group, f"m{i}", size, pinned) for i, (size, pinned, group) in enumerate(loaded)]
    incoming = Demand(key="new", name="new", size=GB, group=server)
    plan = plan_load(resident, incoming, Policy(budget=100 * GB, max_models=caps))
    mine = [model for model in resident if model.group == server]
    if isinstance(plan, Refusal):
        assert server in caps and sum(model.pinned for model in mine) >= caps[server]  # only pins could make room
        return
    assert all(victim.group == server and not victim.pinned for victim in plan.evict)
    if server in caps:
        assert len(mine) - len(plan.evict) + 1 <= caps[server]
    else:
        assert plan.evict == ()
