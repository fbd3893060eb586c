"""Composition: settings, the ``Rotator`` that owns every part, the reference app."""
