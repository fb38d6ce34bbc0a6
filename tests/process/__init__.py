"""Process-level crash tests: replicas in their own OS processes, killed, paused and restarted."""
