"""fleetcare: remote maintenance for equipment at customer sites."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fleetcare")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
