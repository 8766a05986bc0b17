"""traceaudit: how every TCP connection in a capture ended, and which endings are bugs.

The Python API (``docs/api.md``)::

    import traceaudit
    audit = traceaudit.analyze("capture.pcap", select=["TA1"])
    audit.flows, audit.endpoints, audit.timelines, audit.findings, audit.zeek   # DataFrames
    audit.to_html("report.html"); audit.exit_code
    traceaudit.rules()                                                          # DataFrame

``analyze``, ``Audit`` and ``rules`` are imported on first use: ``import traceaudit`` (and the
command line's start) does not pay for pandas or the pipeline.
"""

from __future__ import annotations

from traceaudit.errors import (CaptureError, CaptureNotFoundError, ConfigError,
                               TraceauditError, UnknownRuleError)

__version__ = "0.1.0"

__all__ = ["Audit", "CaptureError", "CaptureNotFoundError", "ConfigError", "TraceauditError",
           "UnknownRuleError", "analyze", "rules", "__version__"]

_LAZY = {"analyze": "traceaudit.api", "Audit": "traceaudit.api"}


def __getattr__(name: str):
    from importlib import import_module

    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "rules":
        # the ``traceaudit.rules`` package itself: calling it is ``traceaudit.api.rules``
        return import_module("traceaudit.rules")
    raise AttributeError(f"module 'traceaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
