"""token_worker's benchmarks (issue 7): ``python -m bench`` runs them all; see BENCHMARKS.md."""
