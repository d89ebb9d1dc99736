"""Tests for streamguard.stats."""
