"""Data: reading images (images), test sets by manifest (test_sets, archives), training data and its split
(training), packed uint8 shards (prepare writes them, packed reads them)."""
