//! owned by hostkey helper
