"""Customers and sites: criticality, contract hours, which customer and site a device belongs
to when."""

from __future__ import annotations

from server.customers.service import (
    SITE_SEPARATOR,
    UNASSIGNED_REASONS,
    UNSET,
    DeviceAssignment,
    UnassignedDevice,
    assign_device,
    assign_sites_from_inventory,
    assignment_history,
    create_customer,
    create_site,
    get_customer,
    get_site,
    list_customers,
    list_sites,
    qualified_name,
    record_assignment,
    unassigned_devices,
    update_customer,
    update_site,
)

__all__ = [
    "SITE_SEPARATOR",
    "UNASSIGNED_REASONS",
    "UNSET",
    "DeviceAssignment",
    "UnassignedDevice",
    "assign_device",
    "assign_sites_from_inventory",
    "assignment_history",
    "create_customer",
    "create_site",
    "get_customer",
    "get_site",
    "list_customers",
    "list_sites",
    "qualified_name",
    "record_assignment",
    "unassigned_devices",
    "update_customer",
    "update_site",
]
