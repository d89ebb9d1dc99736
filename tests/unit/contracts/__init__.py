"""Tests for streamguard.contracts."""
