"""Stages: from series with their protocol to maps on disk and tidy rows (no pipeline types)."""
