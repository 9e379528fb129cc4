"""Runnable PyTorch snippets included by the pages, one subpackage per topic."""
