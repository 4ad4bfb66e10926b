//! Version constraints (owned by the functions helper).
