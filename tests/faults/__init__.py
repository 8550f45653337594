"""Fault-injection tests: processes killed, stopped and cut off, on loopback only."""
