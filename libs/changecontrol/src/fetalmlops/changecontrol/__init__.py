"""Change control: the predetermined change-control plan and the hash-chained audit trail."""
