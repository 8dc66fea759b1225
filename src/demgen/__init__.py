"""demgen: satellite imagery to Digital Elevation Models, correct in metres and georeferenced."""

__version__ = "0.1.0"
