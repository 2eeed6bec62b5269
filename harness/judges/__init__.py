"""Judges: LLM judges over any backend, programmatic checks, verdict parsing.

    from harness.judges import parse_rating, parse_verdict
    parse_rating("Rating: [[7.5]]")   # 7.5; None when no rating can be read
    parse_verdict("... [[B]]")        # 'B'; 'A', 'B', 'tie' or None
"""

from harness.judges.parse import parse_json_rating, parse_json_verdict, parse_rating, parse_verdict

__all__ = ["parse_json_rating", "parse_json_verdict", "parse_rating", "parse_verdict"]
