"""End-to-end jobs composed from the package's steps: `demo` (the whole study into one folder)."""

from drawgap.pipelines.demo import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
