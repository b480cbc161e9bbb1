"""Simulated equipment and fleets: equipment models driving the real agent runtime.

    from simulators.printer import PrinterPlugin      # the ``sim-printer`` equipment plugin
    from simulators.fleet import SimulatedFleet       # N agents with simulated printers, one process

CLI: ``fleetcare sim run --devices 50``. Demo: ``fleetcare demo`` (docs/demo.md).
"""
