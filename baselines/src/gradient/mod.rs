//! Gradient weightings: they combine the per-task gradients of the shared
//! parameters (a T×P matrix) into one update, working on the T×T Gramian
//! wherever the method allows.
