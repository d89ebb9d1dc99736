"""Tests for streamguard.guards."""
