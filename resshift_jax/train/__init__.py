"""Training: state (state.py), optimiser and lr schedule (optim.py), the pure step (step.py), the loop (loop.py), compile-only checks (compile_check.py)."""
