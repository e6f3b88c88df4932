"""Scoring signals shared by the methods (self-information, TF-IDF, attention, position)."""
