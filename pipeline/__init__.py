"""The data pipeline: read -> filter -> dedup -> mix -> tokenize+pack, as Ray Data jobs."""
