//! Vamana graph algorithms: beam search, RobustPrune, build and insert (in progress).
