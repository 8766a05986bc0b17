"""Event matrix columns (declared in ``events.pxd``, shared by the compiled core and Python;
``traceaudit.tracking.tracker`` re-exports them)."""
