"""What a run measured: the results file, steady-state summaries, environment capture, the floor and statistics."""
