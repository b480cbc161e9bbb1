from __future__ import annotations

import agent


def test_agent_public_api_is_pinned() -> None:
    assert agent.__all__ == [
        "DEFAULT_ALLOWED_ACTIONS",
        "ActionArgumentError",
        "ActionConflict",
        "ActionError",
        "AgentConfigError",
        "AgentError",
        "AgentRuntime",
        "AgentSettings",
        "BrokerSettings",
        "Clock",
        "DataDirInUse",
        "FatalLinkError",
        "LinkDown",
        "LinkError",
        "LinkState",
        "MessageTooLarge",
        "OutboxError",
        "PluginError",
        "PluginNotFound",
        "PluginSettings",
        "PolicySettings",
        "ReconnectSettings",
        "SystemClock",
        "TlsSettings",
        "load_settings",
        "run_agent",
    ]
    for name in agent.__all__:
        assert hasattr(agent, name), name


def test_agent_cli_imports_no_server_or_simulator_code() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys, agent.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in {'server', 'simulators', 'fastapi', 'sqlalchemy'}]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
