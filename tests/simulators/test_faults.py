"""The data-only fault model (simulators.faults) and the FaultBook that brings it to life."""

from __future__ import annotations

import math
import random
import statistics
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

from agent.actions.builtins import BUILTIN_ACTION_NAMES
from agent.plugin import fault_catalogue
from protocol import EquipmentState, Severity
from simulators.catalogue import SimulatedMachine
from simulators.chiller import CHILLER_FAULTS, ChillerPlugin
from simulators.fault_book import FaultBook
from simulators.faults import FaultModel, GuidedFix, RemoteFix, WearOut, occurs_units
from simulators.imaging import IMAGING_FAULTS, ImagingPlugin
from tests.simulators.support import FakeClock, FakeSink, within

ROOT = Path(__file__).resolve().parents[2]
FIX = RemoteFix("box.reset", 0.5)


def model(**overrides: object) -> FaultModel:
    fields: dict[str, object] = {
        "code": "BOX_FAULT",
        "meaning": "the box failed",
        "severity": Severity.ERROR,
        "effect": EquipmentState.DOWN,
        "mtbf": 10.0,
    }
    fields.update(overrides)
    return FaultModel(**fields)  # type: ignore[arg-type]


# -- FaultModel ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"effect": EquipmentState.RUNNING}, "effect must be down or degraded"),
        ({"mtbf": None}, "exactly one of mtbf, wear or condition"),
        ({"condition": "too hot"}, "exactly one of mtbf, wear or condition"),
        ({"mtbf": 0.0}, "mtbf must be a number > 0"),
        ({"self_clear_probability": 1.5}, "probability within 0..1"),
        ({"self_clear_probability": 0.5}, "needs self_clear_minutes"),
        ({"field_only": True, "remote_fixes": (FIX,)}, "field-only fault has no remote"),
        ({"remote_fixes": (FIX, RemoteFix("box.reset", 0.9))}, "listed twice"),
    ],
)
def test_fault_model_refuses_incoherent_data(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model(**overrides)


def test_fixes_and_wear_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="probability"):
        RemoteFix("box.reset", -0.1)
    with pytest.raises(ValueError, match="at least one step"):
        GuidedFix("Do nothing", (), 0.5)
    with pytest.raises(ValueError, match="threshold"):
        WearOut("belt", "box.belt.hours", "hour", 0.0)


def test_trigger_channel_and_plain_data() -> None:
    wear = WearOut("belt", "box.belt.hours", "hour", 100.0, shape=2.0, precursor="box.noise")
    worn = model(mtbf=None, wear=wear, field_only=True)
    assert (worn.trigger, worn.channel) == ("wear", "field")
    assert model(self_clear_probability=0.7, self_clear_minutes=3.0).channel == "self"
    assert model(remote_fixes=(FIX,)).channel == "remote"
    assert model(guided_fixes=(GuidedFix("Kick it", ("kick",), 0.5),)).channel == "customer"
    assert model(mtbf=None, condition="too hot").trigger == "condition"
    data = worn.to_json()
    assert data["wear"]["mean_life"] == pytest.approx(100.0 * math.gamma(1.5), abs=1e-3)
    assert (data["effect"], data["severity"], data["field_only"]) == ("down", "error", True)
    assert model(remote_fixes=(FIX,)).remote_probability("box.reset") == 0.5
    assert model().remote_probability("box.reset") == 0.0
    entry = model(effect=EquipmentState.DEGRADED).catalogue_entry()
    assert (entry.code, entry.effect, entry.meaning) == ("BOX_FAULT", "degraded", "the box failed")


def test_weibull_lives_average_the_mean_life() -> None:
    wear = WearOut("belt", "box.belt.hours", "hour", 1000.0, shape=3.0)
    rng = random.Random(5)
    lives = [wear.draw_life(rng) for _ in range(4000)]
    sd = statistics.pstdev(lives) / math.sqrt(len(lives))
    assert within(statistics.fmean(lives), wear.mean_life, sd)


def test_occurs_units_is_a_poisson_rate() -> None:
    rng = random.Random(3)
    assert not occurs_units(rng, 0.0, 1.0)
    hits = sum(occurs_units(rng, 0.1, 5.0) for _ in range(20_000))
    p = -math.expm1(-0.1 / 5.0)
    assert within(hits, 20_000 * p, math.sqrt(20_000 * p * (1 - p)))


# -- FaultBook ----------------------------------------------------------------------------------


def test_book_raises_clears_and_reports_the_worst_state() -> None:
    sink, clock = FakeSink(), FakeClock()
    down, degraded = model(), model(code="SLOW", effect=EquipmentState.DEGRADED)
    book = FaultBook([down, degraded], seed=1, clock=clock)
    book.sink = sink
    assert book.raise_fault("SLOW")
    assert not book.raise_fault("SLOW")
    assert book.raise_fault("BOX_FAULT")
    assert book.state is EquipmentState.DOWN
    assert book.clear("BOX_FAULT", cleared_by="remote")
    assert not book.clear("BOX_FAULT", cleared_by="remote")
    assert [s for s, _ in sink.states] == [
        EquipmentState.DEGRADED,
        EquipmentState.DOWN,
        EquipmentState.DEGRADED,
    ]
    raised = sink.named("fault.raised")
    assert [(e["code"], e["data"]["effect"]) for e in raised] == [("SLOW", "degraded"), ("BOX_FAULT", "down")]
    [cleared] = sink.named("fault.cleared")
    assert cleared["data"]["cleared_by"] == "remote"


def test_self_clearing_happens_with_the_catalogue_probability() -> None:
    flaky = model(self_clear_probability=0.6, self_clear_minutes=5.0)
    book = FaultBook([flaky], seed=11, clock=FakeClock())
    n, by_itself = 600, 0
    for _ in range(n):
        book.raise_fault(flaky.code)
        for _ in range(24):  # two hours in 5-minute steps; mean self-clear time is 5 minutes
            book.step(300.0, usage={}, operating=False)
            if flaky.code not in book.active:
                by_itself += 1
                break
        book.clear(flaky.code, cleared_by="field")
    assert within(by_itself, n * 0.6, math.sqrt(n * 0.6 * 0.4))


def test_remote_and_guided_fixes_succeed_with_their_probability() -> None:
    fixable = model(
        remote_fixes=(RemoteFix("box.reset", 0.3),),
        guided_fixes=(GuidedFix("Kick it", ("kick the box",), 0.8),),
    )
    book = FaultBook([fixable], seed=2, clock=FakeClock())
    n = 800
    remote = guided = 0
    for _ in range(n):
        book.raise_fault(fixable.code)
        remote += book.remote_fix("box.reset")[fixable.code]
        book.clear(fixable.code, cleared_by="field")
        book.raise_fault(fixable.code)
        guided += book.guided_fix(fixable.code)
        book.clear(fixable.code, cleared_by="field")
    assert within(remote, n * 0.3, math.sqrt(n * 0.3 * 0.7))
    assert within(guided, n * 0.8, math.sqrt(n * 0.8 * 0.2))
    assert book.remote_fix("box.reset") == {}  # nothing active: nothing to fix


def test_fix_attempts_never_shift_when_faults_arrive() -> None:
    """Fixes draw from their own stream: a run with remote maintenance and one without see
    the same fault arrivals (what ``sim compare`` relies on)."""

    def arrivals(fix: bool) -> list[int]:
        fixable = model(mtbf=2.0, remote_fixes=(RemoteFix("box.reset", 0.5),))
        book = FaultBook([fixable], seed=9, clock=FakeClock())
        times = []
        for step in range(2000):
            if book.step(600.0, usage={}, operating=True):
                times.append(step)
            if fixable.code in book.active:
                if fix:
                    book.remote_fix("box.reset")
                book.clear(fixable.code, cleared_by="field")
        return times

    assert arrivals(fix=True) == arrivals(fix=False)
    assert len(arrivals(fix=False)) > 100


def test_wear_out_strikes_at_the_drawn_life_and_replacement_restarts_it() -> None:
    wear = WearOut("belt", "box.belt.hours", "hour", 50.0, shape=4.0)
    worn = model(code="BELT_SNAPPED", mtbf=None, wear=wear, field_only=True)
    book = FaultBook([worn], seed=4, clock=FakeClock())
    life = book.lives[worn.code]
    book.add_usage("belt", life * 0.99)
    assert book.step(1.0, usage={}, operating=True) == []
    book.add_usage("belt", life * 0.02)
    assert book.step(1.0, usage={}, operating=True) == [worn.code]
    assert book.field_repair() == [worn.code]
    assert book.usage["belt"] == 0.0
    assert book.lives[worn.code] != life


# -- the shipped catalogues -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "faults"),
    [
        (ImagingPlugin("sim-imaging-cat", {"seed": 1}), IMAGING_FAULTS),
        (ChillerPlugin("sim-chiller-cat", {"seed": 1}), CHILLER_FAULTS),
    ],
    ids=["imaging", "chiller"],
)
def test_catalogue_names_only_actions_and_metrics_the_machine_has(
    machine: SimulatedMachine, faults: tuple[FaultModel, ...]
) -> None:
    actions = {spec.name for spec in machine.actions()}  # type: ignore[attr-defined]
    metrics = machine.read_metrics(FakeClock().now())  # type: ignore[attr-defined]
    for fault in faults:
        for fix in fault.remote_fixes:
            assert fix.action in actions, fault.code
        for action in fault.diagnostics:
            assert action in actions | set(BUILTIN_ACTION_NAMES), fault.code
        if fault.wear is not None:
            assert fault.wear.counter in metrics, fault.code
            assert fault.wear.precursor in metrics, fault.code
    assert [spec.code for spec in fault_catalogue(machine)] == [f.code for f in faults]
    assert machine.fault_models() == {f.code: f for f in faults}


def test_every_kind_of_fault_is_in_each_catalogue() -> None:
    """Self-clearing, remote-fixable, customer-fixable and field-only faults in both models."""
    for faults in (IMAGING_FAULTS, CHILLER_FAULTS):
        assert any(f.self_clear_probability > 0 for f in faults)
        assert any(f.remote_fixes for f in faults)
        assert any(f.guided_fixes for f in faults)
        assert any(f.field_only for f in faults)
        assert any(f.wear is not None and f.field_only for f in faults)


def test_entry_points_name_the_new_plugins() -> None:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        "fleetcare.equipment"
    ]
    for name, cls in (("sim-imaging", ImagingPlugin), ("sim-chiller", ChillerPlugin)):
        module, _, attr = table[name].partition(":")
        assert getattr(import_module(module), attr) is cls
        assert cls.name == name
