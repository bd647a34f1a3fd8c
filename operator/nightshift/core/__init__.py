"""The functional core: pure decisions with an injected clock (schedule, render, runs, gate, status, plan)."""
