"""Searches over model designs: SMLDist's classifier-head search."""

from harkd.search.head_search import SearchConfig, load_search_config, parse_search_config, run_head_search

__all__ = ["SearchConfig", "load_search_config", "parse_search_config", "run_head_search"]
