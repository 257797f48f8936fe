"""dermlit."""
