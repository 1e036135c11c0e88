"""Building images from Dockerfiles: ``Image.build`` and ``asupermachine build`` (see docs/builds.md)."""
