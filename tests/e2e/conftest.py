"""The end-to-end tests use the session stack of tests/conftest.py (see tests/e2e/stack.py)."""
