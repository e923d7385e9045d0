"""The projector: provider rows materialized from the event log, and the operator API that reads them."""
