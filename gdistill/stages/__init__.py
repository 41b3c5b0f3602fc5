"""Stages: teach (a guided teacher), match (Stage 1) and halve (Stage 2), each a loss on the shared loop."""
