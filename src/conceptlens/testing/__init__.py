"""Checks that ship with conceptlens, for the tests of its extensions (methods, concept sources, ...)."""
