"""The extractor: the negotiated price and outcome of each call, and the job's report."""
