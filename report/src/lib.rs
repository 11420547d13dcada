//! Plots of taskweave runs (placeholder: being written).
