"""The grid's work queue on Optuna storage, its workers, and the store locks."""
