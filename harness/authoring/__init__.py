"""Authoring a bench with a teacher: procedural rewrite of declarative skills, then task synthesis."""
