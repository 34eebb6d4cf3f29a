"""Test and benchmark inputs: samples nczip writes itself, and the locator for standard corpora."""
