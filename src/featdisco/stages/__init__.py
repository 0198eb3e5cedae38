"""Pipeline stages: each takes a typed input and returns a typed output, knowing nothing of the stages after it."""
