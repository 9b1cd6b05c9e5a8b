"""Shipped helpers and checks for the tests of conceptlens and of its extensions (methods, concept
sources, backbones), so that no test module imports another."""
