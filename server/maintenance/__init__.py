"""Preventive maintenance: threshold rules over telemetry and consumable/wear forecasts."""
