"""Quality and speed benchmarks of every registered promptshrink method against peer packages."""
