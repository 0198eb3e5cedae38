"""Evidence and verification: quotes checked against their piece (:mod:`.quotes`), questions
asked of every piece (:mod:`.scan`), agreement with a person's labels (:mod:`.validate`) and
clusters found by a query (:mod:`.find`)."""
