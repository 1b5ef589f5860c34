"""Plumbing every layer uses: files, weights, checkpoints, params, errors, processes, tracking, bundles."""
