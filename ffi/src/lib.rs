//! C ABI for tidegate.
