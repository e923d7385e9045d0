"""Performance benchmarks (issue 8): the media gateway against a bare relay, and the event path."""
