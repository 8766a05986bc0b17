"""Flows: TCP segments grouped into connections (incarnations of a 4-tuple), the flow table."""

from traceaudit.flows.table import FLOW_COLUMNS, FlowBuilder, build_flow_table

__all__ = ["FLOW_COLUMNS", "FlowBuilder", "build_flow_table"]
