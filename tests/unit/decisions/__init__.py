"""Tests for streamguard.decisions."""
