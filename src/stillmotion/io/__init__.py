"""Reading and writing files: images, videos, optical-flow files, atomic output."""
