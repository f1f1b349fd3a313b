//! owned by cipher helper
