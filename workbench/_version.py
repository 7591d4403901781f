"""The package version, in a module of its own so that lower layers read it without importing the root package."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tensorrt-workbench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"
