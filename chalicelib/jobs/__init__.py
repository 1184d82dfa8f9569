"""Scheduled Lambdas (app.py wires them to EventBridge schedules)."""
