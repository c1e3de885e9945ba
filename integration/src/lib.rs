//! End-to-end tests of lclstream live in `tests/`; Python interop scripts in `python/`.
