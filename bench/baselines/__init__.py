"""Reference servers the project is measured against; none uses the project's code."""
