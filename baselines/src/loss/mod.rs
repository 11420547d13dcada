//! Loss weightings: they combine the per-task losses into one scalar loss.
