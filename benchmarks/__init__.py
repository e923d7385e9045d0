"""Performance benchmarks: the media gateway against a bare relay, and the event path."""
