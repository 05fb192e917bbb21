//! Cross-service tests live in `tests/`; see the modules there.
