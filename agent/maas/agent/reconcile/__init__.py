"""Reconcile: observe the engine, diff against the plan, track health, probe replicas, execute
actions."""
