"""Tests for streamguard.policy."""
