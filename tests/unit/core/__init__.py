"""Tests for streamguard.core."""
