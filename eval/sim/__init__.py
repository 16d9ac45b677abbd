"""Trace-driven discrete-event simulator of one serving instance. It drives the very same
AgentRadixCache and AgentController objects as the server, on a simulated clock."""
