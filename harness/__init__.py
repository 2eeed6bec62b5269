"""fuseval's benchmark runner: serving, generation, judging, the run store and statistics."""
