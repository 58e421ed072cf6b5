"""PS3.15 Annex E: the attribute table (generated data) and the policy that applies it."""
