from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from agent import PluginError, PluginNotFound, PluginSettings
from agent.collectors import PluginCollector, clean_metrics
from agent.plugins import build_plugin, check_plugin, load_plugins
from tests.agent.support import FakePlugin

ENTRY_POINTS = [
    EntryPoint("fake", "tests.agent.support:fake_factory", "fleetcare.equipment"),
    EntryPoint("broken", "tests.agent.no_such_module:factory", "fleetcare.equipment"),
]


@pytest.fixture(autouse=True)
def _entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "agent.plugins.entry_points", lambda group: [e for e in ENTRY_POINTS if e.group == group]
    )


def test_plugins_load_from_entry_point_with_options() -> None:
    plugin = build_plugin("fake", "dev-1", {"name": "printer", "metrics": {"printer.toner.percent": 40.0}})
    assert plugin.name == "printer"
    assert plugin.read_metrics(None) == {"printer.toner.percent": 40.0}  # type: ignore[arg-type]


def test_plugins_missing_entry_point_names_the_plugin_and_the_available_ones() -> None:
    with pytest.raises(PluginNotFound) as info:
        load_plugins([PluginSettings(name="acme-printer")], "dev-1")
    assert info.value.plugin == "acme-printer"
    assert "'acme-printer'" in str(info.value)
    assert "broken, fake" in str(info.value)


def test_plugins_import_error_is_reported_with_the_plugin_name() -> None:
    with pytest.raises(PluginError, match=r"'broken'.*cannot import"):
        build_plugin("broken", "dev-1", {})


def test_plugins_factory_failure_is_reported_with_the_plugin_name() -> None:
    with pytest.raises(PluginError, match=r"'fake'.*no equipment at the configured address"):
        build_plugin("fake", "dev-1", {"explode": True})


def test_plugins_configured_twice_are_refused() -> None:
    with pytest.raises(PluginError, match="more than once"):
        load_plugins([PluginSettings(name="fake"), PluginSettings(name="fake")], "dev-1")


def test_plugins_instances_must_have_the_plugin_surface() -> None:
    assert check_plugin(FakePlugin(), "fake").name == "fake"
    with pytest.raises(PluginError, match="lacks read_metrics"):
        check_plugin(
            object.__new__(type("Half", (), {"name": "x", "equipment_info": 1, "actions": 1, "run": 1})), "x"
        )


def test_plugin_collector_adapts_read_metrics() -> None:
    collector = PluginCollector(FakePlugin(metrics={"a.b": 1.0}))
    assert collector.name == "plugin[fake]"
    assert collector.collect(None) == {"a.b": 1.0}  # type: ignore[arg-type]


def test_clean_metrics_drops_invalid_names_and_non_finite_values() -> None:
    readings = {"ok.metric": 1, "Bad Name": 2.0, "nan.metric": float("nan"), "flag.metric": True, "x.y": 2.5}
    assert clean_metrics("test", readings) == {"ok.metric": 1.0, "x.y": 2.5}
