"""Medical-image array functions and small transforms, importable and testable without Kedro."""
